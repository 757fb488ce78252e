"""The dense teacher's scores of the student's training pairs (expensive: cached)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .schema import StoreBase, _now

__all__ = ["CacheMixin"]


class CacheMixin(StoreBase):
    """The ``teacher_scores`` table."""

    def teacher_scores(self, keys: Sequence[str]) -> dict[str, dict]:
        """Cached teacher scores of the given pair keys: ``{key: {"distance", "layer_terms"}}``."""
        if not keys:
            return {}
        import pyarrow as pa

        with self.connect() as con:
            con.register("wanted", pa.table({"key": list(keys)}))
            rows = con.execute(
                "SELECT t.key, t.distance, t.layer_terms FROM teacher_scores t JOIN wanted w USING (key)"
            ).fetchall()
        return {k: {"distance": d, "layer_terms": list(lt)} for k, d, lt in rows}

    def add_teacher_scores(self, rows: Sequence[dict]) -> None:
        """Store teacher scores (``key``, ``spec``, ``teacher``, ``distance``, ``layer_terms``)."""
        import pyarrow as pa

        if not rows:
            return
        table = pa.Table.from_pylist(
            [{"key": r["key"], "spec": json.dumps(r["spec"], sort_keys=True), "teacher": r["teacher"],
              "distance": float(r["distance"]), "layer_terms": [float(v) for v in r["layer_terms"]],
              "created": _now()} for r in rows]
        )  # fmt: skip
        with self.transaction() as con:
            con.register("new_teacher", table)
            con.execute("INSERT OR IGNORE INTO teacher_scores SELECT * FROM new_teacher")
