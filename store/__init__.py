"""DuckDB store: schema, migrations, idempotent writes, queries, baseline comparison.

Knows nothing of audio: it keeps rows. :class:`Store` composes one mixin per concern (see
:mod:`jndqa.store.db`).
"""

from .compare import VariantComparison, compare_runs, holm
from .db import MODEL_STATUSES, SCHEMA_VERSION, SCORE_KEY, Store, StoreBusyError, StoreError

__all__ = [
    "MODEL_STATUSES",
    "SCHEMA_VERSION",
    "SCORE_KEY",
    "Store",
    "StoreBusyError",
    "StoreError",
    "VariantComparison",
    "compare_runs",
    "holm",
]
