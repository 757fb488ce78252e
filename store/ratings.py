"""Listening-test ratings: rating files, their good rows and the quarantined bad rows.

Rows come as plain dicts (``jndqa.datasets.Rating.row()``, ``QuarantinedRow.row()``,
``RatingFile.file_row()``); the store does not read audio or rating files. A rating is keyed by
its content id (``rating_id``), so ingesting the same ratings again, from the same file or a
moved, renamed or re-exported one, stores nothing new; a quarantined line is keyed by its file's
content hash and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .schema import StoreBase, _dicts, _now

__all__ = ["RATING_COLUMNS", "RatingsMixin"]

RATING_COLUMNS = ("rating_id", "ref", "test", "ref_sha256", "test_sha256", "score", "scale", "listener", "item",
                  "condition", "trial", "hidden_reference", "source", "line", "extra")  # fmt: skip
_QUARANTINE_COLUMNS = ("line", "source", "raw", "kind", "reason")


class RatingsMixin(StoreBase):
    """The ``rating_files``, ``ratings`` and ``rating_quarantine`` tables."""

    def ingest_ratings(self, file: dict, rows: Sequence[dict], quarantine: Sequence[dict]) -> dict:
        """Store one rating file's good rows and quarantined rows in one transaction, with Arrow
        bulk writes, idempotently. ``file``: ``content_hash``, ``path``, ``format``, optionally
        ``config``; ``rows``: dicts with :data:`RATING_COLUMNS`; ``quarantine``: dicts with
        ``line``, ``source``, ``raw``, ``kind``, ``reason``. Returns counts: ``new``, ``known``
        (rows already stored), ``quarantined``, ``file_seen_before``."""
        import pyarrow as pa

        now = _now()
        fh = file["content_hash"]
        types = {"score": pa.float64(), "line": pa.int32(), "hidden_reference": pa.bool_()}
        with self.transaction() as con:
            seen = con.execute("SELECT count(*) FROM rating_files WHERE content_hash = ?", [fh]).fetchall()[0][0]
            before = con.execute("SELECT count(*) FROM ratings").fetchall()[0][0]
            if rows:
                schema = pa.schema([(c, types.get(c, pa.string())) for c in RATING_COLUMNS]
                                   + [("file_hash", pa.string()), ("ingested", pa.timestamp("us"))])  # fmt: skip
                table = pa.Table.from_pylist(
                    [{**{c: r.get(c) for c in RATING_COLUMNS}, "file_hash": fh, "ingested": now} for r in rows],
                    schema=schema,
                )
                con.register("new_ratings", table)
                con.execute(f"INSERT OR IGNORE INTO ratings SELECT {', '.join(schema.names)} FROM new_ratings")
                con.unregister("new_ratings")
            after = con.execute("SELECT count(*) FROM ratings").fetchall()[0][0]
            if quarantine:
                schema = pa.schema([("file_hash", pa.string())]
                                   + [(c, pa.int32() if c == "line" else pa.string()) for c in _QUARANTINE_COLUMNS]
                                   + [("ingested", pa.timestamp("us"))])  # fmt: skip
                table = pa.Table.from_pylist(
                    [{"file_hash": fh, **{c: q[c] for c in _QUARANTINE_COLUMNS}, "ingested": now} for q in quarantine],
                    schema=schema,
                )
                con.register("new_quarantine", table)
                con.execute(f"INSERT OR IGNORE INTO rating_quarantine SELECT {', '.join(schema.names)} "
                            "FROM new_quarantine")  # fmt: skip
                con.unregister("new_quarantine")
            con.execute(
                "INSERT OR IGNORE INTO rating_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [fh, str(file["path"]), file["format"], file.get("config"), len(rows), len(quarantine), now],
            )
        return {"new": after - before, "known": len(rows) - (after - before), "quarantined": len(quarantine),
                "file_seen_before": bool(seen)}  # fmt: skip

    def ratings(self, *, scale: str | None = None, ids: Iterable[str] | None = None) -> list[dict]:
        """Stored ratings (dicts with :data:`RATING_COLUMNS`, ``file_hash`` and ``ingested``; ``extra``
        as JSON text), ordered by rating id; only those on ``scale`` and/or with the given ``ids``
        when given (ids not stored are absent)."""
        import pyarrow as pa

        sql, params = "SELECT r.* FROM ratings r", []
        with self.connect() as con:
            if ids is not None:
                con.register("wanted", pa.table({"rating_id": pa.array(list(ids), pa.string())}))
                sql += " JOIN wanted w USING (rating_id)"
            if scale is not None:
                sql += " WHERE r.scale = ?"
                params.append(scale)
            return _dicts(con.execute(sql + " ORDER BY r.rating_id", params))

    def rating_files(self) -> list[dict]:
        """The ingested rating files, oldest first."""
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM rating_files ORDER BY ingested, content_hash"))

    def rating_quarantine(self) -> list[dict]:
        """The quarantined rating lines (``file_hash``, ``line``, ``source``, ``raw``, ``kind``,
        ``reason``, ``ingested``), by source and line."""
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM rating_quarantine ORDER BY source, line"))
