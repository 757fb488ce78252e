"""Listener judgments: judgment files, their good rows and the quarantined bad rows."""

from __future__ import annotations

from collections.abc import Sequence

from .schema import StoreBase, _dicts, _now

__all__ = ["JudgmentsMixin"]


class JudgmentsMixin(StoreBase):
    """The ``judgment_files``, ``judgments`` and ``quarantine`` tables."""

    def ingest_judgments(self, file: dict, rows: Sequence[dict], quarantine: Sequence[dict]) -> dict:
        """Store one judgment file's good rows and quarantined rows, idempotently: a judgment already
        stored (same id) and a quarantined line of the same file content are not stored twice.
        ``file``: ``content_hash``, ``path``, ``format``. Returns counts: ``new``, ``known``,
        ``quarantined``, ``file_seen_before``."""
        import pyarrow as pa

        now = _now()
        with self.transaction() as con:
            seen = con.execute("SELECT count(*) FROM judgment_files WHERE content_hash = ?",
                               [file["content_hash"]]).fetchall()[0][0]  # fmt: skip
            before = con.execute("SELECT count(*) FROM judgments").fetchall()[0][0]
            if rows:
                cols = ["judgment_id", "ref", "test", "ref_sha256", "test_sha256", "label", "worker", "timestamp",
                        "condition", "source", "line", "extra"]  # fmt: skip
                table = pa.Table.from_pylist(
                    [{**{c: r.get(c) for c in cols}, "file_hash": file["content_hash"], "ingested": now} for r in rows],
                    schema=pa.schema([(c, pa.int32() if c in ("label", "line") else pa.string()) for c in cols]
                                     + [("file_hash", pa.string()), ("ingested", pa.timestamp("us"))]),
                )  # fmt: skip
                con.register("new_judgments", table)
                con.execute("INSERT OR IGNORE INTO judgments SELECT * FROM new_judgments")
            after = con.execute("SELECT count(*) FROM judgments").fetchall()[0][0]
            for q in quarantine:
                con.execute(
                    "INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [file["content_hash"], q["line"], q["source"], q["raw"], q["kind"], q["reason"], now],
                )
            con.execute(
                "INSERT OR IGNORE INTO judgment_files VALUES (?, ?, ?, ?, ?, ?)",
                [file["content_hash"], str(file["path"]), file["format"], len(rows), len(quarantine), now],
            )
        return {"new": after - before, "known": len(rows) - (after - before), "quarantined": len(quarantine),
                "file_seen_before": bool(seen)}  # fmt: skip

    def judgments(self) -> list[dict]:
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM judgments ORDER BY judgment_id"))

    def quarantined(self) -> list[dict]:
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM quarantine ORDER BY source, line"))
