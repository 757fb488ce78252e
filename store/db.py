"""The DuckDB store: :class:`Store`, one class composed of one mixin per concern.

- :mod:`.schema`: migrations, connections, transactions, the writer lock (:class:`StoreBase`);
- :mod:`.runs`: runs, items, variants, keyed scores, failures, kept audio, baselines;
- :mod:`.registry`: the model registry and training runs;
- :mod:`.judgments`: judgment files, judgments and their quarantine;
- :mod:`.ratings`: rating files, listening-test ratings and their quarantine;
- :mod:`.cache`: the content-keyed cache;
- :mod:`.outputs`: golden outputs a run kept and their comparisons.

Each mixin subclasses :class:`StoreBase` and uses only its connections; the mixins share no
state and no method names, so their order below does not matter. The store knows nothing of
audio, nor of which metric or model exists: it keeps the rows its callers give it.
"""

from __future__ import annotations

from .cache import CacheMixin
from .judgments import JudgmentsMixin
from .outputs import OutputsMixin
from .ratings import RatingsMixin
from .registry import MODEL_STATUSES, RegistryMixin
from .runs import SCORE_KEY, RunsMixin
from .schema import SCHEMA_VERSION, StoreBusyError, StoreError

__all__ = ["MODEL_STATUSES", "SCHEMA_VERSION", "SCORE_KEY", "Store", "StoreBusyError", "StoreError"]


class Store(RunsMixin, RegistryMixin, JudgmentsMixin, RatingsMixin, CacheMixin, OutputsMixin):
    """A DuckDB file (migrated on open unless ``read_only``: read-only stores never migrate or
    write); see the mixins for its tables and methods."""
