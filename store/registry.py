"""The model registry and training runs.

The store knows no particular model: a caller seeds the registry with :meth:`RegistryMixin.ensure_model`
(the flows pass the official release's row), and :meth:`RegistryMixin.production_model` is None
until some model is production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .schema import StoreBase, StoreError, _dicts, _now

__all__ = ["MODEL_STATUSES", "RegistryMixin"]

MODEL_STATUSES = ("candidate", "production", "rejected", "retired", "available")
_JSON_FIELDS = ("metrics", "calibration", "params")


class RegistryMixin(StoreBase):
    """The ``models`` and ``trainings`` tables."""

    def ensure_model(self, row: dict) -> None:
        """Register ``row`` (a registry row: ``version``, ``model_id``, ``kind``, ``parent``,
        ``reason``, optionally weights and JSON fields) once: a version already registered is left
        as it is. The new row is ``production`` when no model is production yet, else ``retired``
        (a seed that arrives after a promotion never displaces production)."""
        if not row.get("version"):
            raise StoreError(f"{self.path}: a registry row needs a 'version'; got {sorted(row)}")
        row = _encoded({k: v for k, v in row.items() if k not in ("status", "created", "decided")})
        with self.transaction() as con:
            if con.execute("SELECT count(*) FROM models WHERE version = ?", [row["version"]]).fetchone()[0]:
                return
            has_production = con.execute("SELECT count(*) FROM models WHERE status = 'production'").fetchone()[0]
            row |= {"status": "retired" if has_production else "production", "created": _now(), "decided": _now()}
            con.execute(f"INSERT INTO models ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                        list(row.values()))  # fmt: skip

    def models(self) -> list[dict]:
        """The registry, newest first, its JSON fields (``metrics``, ``calibration``, ``params``) decoded."""
        with self.connect() as con:
            rows = _dicts(con.execute("SELECT * FROM models ORDER BY created DESC, version"))
        for r in rows:
            for key in _JSON_FIELDS:
                r[key] = json.loads(r[key]) if r.get(key) else None
        return rows

    def model(self, version: str) -> dict | None:
        return next((m for m in self.models() if m["version"] == version), None)

    def production_model(self) -> dict | None:
        """The production model's registry row; None while no model is production (a store never
        seeded with :meth:`ensure_model`)."""
        prod = [m for m in self.models() if m["status"] == "production"]
        return prod[0] if prod else None

    def model_weights(self, row: dict) -> Path | None:
        """A registry row's weights file (stored relative to the database's folder, so a store
        moves with its models); None for a row without a weights file (weights the caller knows by name,
        such as a release's)."""
        return self.path.parent / row["weights"] if row.get("weights") else None

    def add_model(self, row: dict, status: str = "candidate") -> None:
        """Register a model: a candidate (its weights file already written), or ``available`` for
        a model selectable by name that is never production (the dense student)."""
        if status not in ("candidate", "available"):
            raise StoreError(f"a model is registered as a candidate or available, not {status!r}")
        row = _encoded({**row, "status": status, "created": _now()})
        cols = ", ".join(row)
        with self.transaction() as con:
            con.execute(f"INSERT INTO models ({cols}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))

    def decide_model(self, version: str, status: str, reason: str) -> None:
        """Promote a candidate to production (the previous production model is retired, in the
        same transaction) or reject it, with the reason."""
        if status not in ("production", "rejected"):
            raise StoreError(f"a candidate is promoted to production or rejected, not {status!r}")
        with self.transaction() as con:
            if status == "production":
                con.execute("UPDATE models SET status = 'retired', decided = ? WHERE status = 'production'", [_now()])
            con.execute("UPDATE models SET status = ?, reason = ?, decided = ? WHERE version = ?",
                        [status, reason, _now(), version])  # fmt: skip

    def retire_model(self, version: str, reason: str) -> None:
        """Retire an ``available`` model (a replaced student), with the reason."""
        with self.transaction() as con:
            con.execute("UPDATE models SET status = 'retired', reason = ?, decided = ? WHERE version = ? "
                        "AND status = 'available'", [reason, _now(), version])  # fmt: skip

    # ---------------------------------------------------------------- trainings
    def begin_training(self, training_id: str, data_hash: str, judgments: int) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT INTO trainings (training_id, started, status, data_hash, judgments) VALUES (?, ?, ?, ?, ?)",
                [training_id, _now(), "running", data_hash, judgments],
            )

    def finish_training(self, training_id: str, status: str, **fields: Any) -> None:
        if "summary" in fields and not isinstance(fields["summary"], str):
            fields["summary"] = json.dumps(fields["summary"], default=str)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as con:
            extra = f", {sets}" if sets else ""
            con.execute(
                f"UPDATE trainings SET finished = ?, status = ?{extra} WHERE training_id = ?",
                [_now(), status, *fields.values(), training_id],
            )

    def trainings(self) -> list[dict]:
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM trainings ORDER BY started DESC"))


def _encoded(row: dict) -> dict:
    """``row`` with its JSON fields as JSON text."""
    row = dict(row)
    for key in _JSON_FIELDS:
        if row.get(key) is not None and not isinstance(row[key], str):
            row[key] = json.dumps(row[key])
    return row
