"""A content-keyed cache: values too expensive to recompute, keyed by (namespace, key).

A namespace names what is cached (``teacher``: the dense teacher's scores of the student's
training pairs); a key is the caller's content hash (audio hashes and model, say), so a key
never changes meaning and a value, once stored, stands. Values are anything JSON holds (dicts,
lists, finite numbers, strings); they come back equal, floats bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .schema import StoreBase, StoreError, _now

__all__ = ["CacheMixin"]


class CacheMixin(StoreBase):
    """The ``cache`` table: (namespace, key) → JSON value."""

    def cache_get(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """The cached values of those ``keys`` that are stored in ``namespace``: ``{key: value}``
        (a key not stored is absent)."""
        keys = list(keys)
        if not keys:
            return {}
        import pyarrow as pa

        with self.connect() as con:
            con.register("wanted", pa.table({"key": pa.array(keys, pa.string())}))
            rows = con.execute(
                "SELECT c.key, c.value FROM cache c JOIN wanted w USING (key) WHERE c.namespace = ?", [namespace]
            ).fetchall()
        return {k: json.loads(v) for k, v in rows}

    def cache_put(self, namespace: str, values: Mapping[str, Any]) -> None:
        """Store ``{key: value}`` in ``namespace``, in one bulk write. A key already stored keeps
        its value (a repeated put writes nothing). A value JSON cannot hold (NaN, infinity, an
        object) raises :class:`StoreError` naming the key; nothing is stored then."""
        if not values:
            return
        import pyarrow as pa

        texts = []
        for key, value in values.items():
            try:
                texts.append(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    f"{self.path}: cache {namespace!r} key {key!r}: the value is not JSON ({exc}); "
                    "cache finite numbers, strings, lists and dicts"
                ) from exc
        now = _now()
        table = pa.table({
            "namespace": pa.array([namespace] * len(texts), pa.string()),
            "key": pa.array(list(values), pa.string()),
            "value": pa.array(texts, pa.string()),
            "created": pa.array([now] * len(texts), pa.timestamp("us")),
        })  # fmt: skip
        with self.transaction() as con:
            con.register("new_cache", table)
            con.execute("INSERT OR IGNORE INTO cache SELECT namespace, key, value, created FROM new_cache")
