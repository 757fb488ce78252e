"""Golden outputs in the store: the ``outputs`` a run kept and its ``golden`` comparisons
(:mod:`jndqa.flows.golden` decides them; the store keeps rows and knows nothing of audio), and the
``listen_tests`` made from runs (:mod:`jndqa.flows.listen`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .schema import StoreBase, _dicts, _now

__all__ = ["OutputsMixin"]

_OUTPUT_COLS = ("run_id", "item_sha256", "spec_id", "label", "encoder_version", "sha256", "path", "bytes", "created")
_GOLDEN_COLS = ("run_id", "item_sha256", "spec_id", "label", "golden_run", "golden_spec_id", "golden_sha256",
                "sha256", "status", "rule", "distance", "p_jnd", "p_jnd_calibrated", "window_starts", "window_ends",
                "window_distances", "created")  # fmt: skip


class OutputsMixin(StoreBase):
    """The ``outputs`` and ``golden`` tables. Output paths are stored relative to the database's folder
    when they are under it (a store moves with its outputs)."""

    def _rel(self, path: str | None) -> str | None:
        if path is None:
            return None
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.path.parent.resolve()))
        except ValueError:
            return str(p)

    def _abs(self, path: str | None) -> str | None:
        return None if path is None else str(self.path.parent / path)

    def write_outputs(self, run_id: str, rows: Sequence[dict]) -> None:
        """Outputs kept by ``run_id``: ``item_sha256``, ``spec_id``, ``label``, ``encoder_version``, ``sha256``
        (of the 24-bit samples), ``path``, ``bytes``. Idempotent per (run, item, spec)."""
        if not rows:
            return
        import pyarrow as pa

        now = _now()
        table = pa.Table.from_pylist([{**{k: r.get(k) for k in _OUTPUT_COLS}, "run_id": run_id,
                                       "path": self._rel(r["path"]), "created": now} for r in rows])  # fmt: skip
        with self.transaction() as con:
            con.register("new_outputs", table)
            con.execute(f"INSERT OR REPLACE INTO outputs SELECT {', '.join(_OUTPUT_COLS)} FROM new_outputs")

    def outputs(self, run_id: str) -> list[dict]:
        """The outputs ``run_id`` kept (absolute paths), by item and label."""
        with self.connect() as con:
            rows = _dicts(con.execute("SELECT * FROM outputs WHERE run_id = ? ORDER BY item_sha256, label", [run_id]))
        for r in rows:
            r["path"] = self._abs(r["path"])
        return rows

    def golden_run(self, exclude: str | None = None) -> str | None:
        """The latest accepted run that kept outputs (the golden set), other than ``exclude``; None if none."""
        with self.connect() as con:
            row = con.execute(
                """SELECT a.run_id FROM accepted a WHERE a.run_id IS DISTINCT FROM ?
                   AND EXISTS (SELECT 1 FROM outputs o WHERE o.run_id = a.run_id)
                   ORDER BY a.accepted DESC LIMIT 1""",
                [exclude],
            ).fetchone()
        return row[0] if row else None

    def write_golden(self, run_id: str, rows: Sequence[dict]) -> None:
        """Golden comparisons of ``run_id`` (see :data:`_GOLDEN_COLS`). Idempotent per (run, item, label)."""
        if not rows:
            return
        import pyarrow as pa

        now = _now()
        table = pa.Table.from_pylist([{**{k: r.get(k) for k in _GOLDEN_COLS}, "run_id": run_id, "created": now}
                                      for r in rows],
                                     schema=pa.schema([(k, pa.list_(pa.float64()) if k.startswith("window_") else
                                                        pa.float64() if k in ("distance", "p_jnd") else
                                                        pa.bool_() if k == "p_jnd_calibrated" else
                                                        pa.timestamp("us") if k == "created" else pa.string())
                                                       for k in _GOLDEN_COLS]))  # fmt: skip
        with self.transaction() as con:
            con.register("new_golden", table)
            con.execute(f"INSERT OR REPLACE INTO golden SELECT {', '.join(_GOLDEN_COLS)} FROM new_golden")

    def golden(self, run_id: str) -> list[dict]:
        """``run_id``'s golden comparisons with the item's path and both outputs' paths (absolute)."""
        with self.connect() as con:
            rows = _dicts(con.execute(
                """SELECT g.*, i.path AS item, o.path AS output_path, go.path AS golden_path
                   FROM golden g
                   LEFT JOIN run_items i ON i.run_id = g.run_id AND i.sha256 = g.item_sha256
                   LEFT JOIN outputs o ON o.run_id = g.run_id AND o.item_sha256 = g.item_sha256
                        AND o.spec_id = g.spec_id
                   LEFT JOIN outputs go ON go.run_id = g.golden_run AND go.item_sha256 = g.item_sha256
                        AND go.spec_id = g.golden_spec_id
                   WHERE g.run_id = ? ORDER BY i.path, g.label""", [run_id]))  # fmt: skip
        for r in rows:
            r["output_path"], r["golden_path"] = self._abs(r["output_path"]), self._abs(r["golden_path"])
        return rows

    def referenced_outputs(self, *, keep_runs: Sequence[str] = ()) -> set[str]:
        """Relative paths of outputs an accepted run (or one of ``keep_runs``) refers to."""
        with self.connect() as con:
            rows = con.execute(
                f"""SELECT DISTINCT path FROM outputs WHERE run_id IN (SELECT run_id FROM accepted)
                    {"OR run_id IN (" + ", ".join("?" for _ in keep_runs) + ")" if keep_runs else ""}""",
                list(keep_runs),
            ).fetchall()
        return {r[0] for r in rows if r[0]}

    def outputs_by_build(self) -> dict[tuple[str, str, str], dict]:
        """Every kept output whose file is recorded, keyed by (item sha256, spec id, encoder version): the
        most recent row of each (absolute path). The same build of the same variant on the same item gives
        the same output, so a night that keeps outputs reuses these instead of rendering again."""
        with self.connect() as con:
            rows = _dicts(con.execute(
                """SELECT * FROM outputs QUALIFY row_number() OVER (
                       PARTITION BY item_sha256, spec_id, encoder_version ORDER BY created DESC) = 1"""))  # fmt: skip
        for r in rows:
            r["path"] = self._abs(r["path"])
        return {(r["item_sha256"], r["spec_id"], r["encoder_version"]): r for r in rows}

    def add_listen_test(self, row: dict) -> None:
        """Record a listening test made from a run: ``test_id``, ``run_id``, ``kind``, ``folder`` (absolute),
        ``trials``, ``stimuli``, ``variants`` (labels it plays)."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO listen_tests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [row["test_id"], row["run_id"], row["kind"], str(row["folder"]), row["trials"],
                         row["stimuli"], list(row.get("variants") or []), _now()])  # fmt: skip

    def listen_tests(self, run_id: str) -> list[dict]:
        """The listening tests made from ``run_id`` whose folder still holds its page, newest first."""
        with self.connect() as con:
            rows = _dicts(con.execute("SELECT * FROM listen_tests WHERE run_id = ? ORDER BY created DESC", [run_id]))
        return [r for r in rows if (Path(r["folder"]) / "index.html").is_file()]
