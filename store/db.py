"""The DuckDB store: schema, migrations, the writer lock, idempotent writes and queries.

The store knows nothing of audio: it keeps rows. One process writes at a time:
a run takes the writer lock (an ``flock`` on ``<db>.lock`` that records the run
and pid) for its whole duration, and opens DuckDB only for each short
transaction, so reports and ``jndqa runs`` can read between writes. A second
writer gets :class:`StoreBusyError`: "database in use by run N (pid P)".

A score's key is (item sha256, variant spec id, encoder version, model id,
model version, protocol): a key already stored is reused, never recomputed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

__all__ = [
    "MODEL_STATUSES",
    "OFFICIAL_VERSION",
    "SCHEMA_VERSION",
    "SCORE_KEY",
    "Store",
    "StoreBusyError",
    "StoreError",
]

SCORE_KEY = ("item_sha256", "spec_id", "encoder_version", "model_id", "model_version", "protocol")

# Each migration brings the schema from version i to i + 1; never edit a released one, append.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, started TIMESTAMP, finished TIMESTAMP, status VARCHAR,
            config_hash VARCHAR, config JSON, model_id VARCHAR, model_version VARCHAR, protocol VARCHAR,
            tool_versions JSON, baseline_run VARCHAR, pid INTEGER, host VARCHAR, summary JSON)""",
        """CREATE TABLE items (
            sha256 VARCHAR PRIMARY KEY, path VARCHAR, rate INTEGER, channels INTEGER,
            duration DOUBLE, loudness DOUBLE, tags VARCHAR[])""",
        "CREATE TABLE run_items (run_id VARCHAR, sha256 VARCHAR, path VARCHAR, PRIMARY KEY (run_id, sha256))",
        "CREATE TABLE variant_specs (spec_id VARCHAR PRIMARY KEY, label VARCHAR, spec JSON)",
        """CREATE TABLE run_variants (
            run_id VARCHAR, spec_id VARCHAR, label VARCHAR, encoder_version VARCHAR,
            PRIMARY KEY (run_id, spec_id))""",
        """CREATE TABLE scores (
            item_sha256 VARCHAR, spec_id VARCHAR, encoder_version VARCHAR, model_id VARCHAR,
            model_version VARCHAR, protocol VARCHAR,
            distance DOUBLE, p_jnd DOUBLE, p_jnd_calibrated BOOLEAN, layer_terms DOUBLE[],
            window_starts DOUBLE[], window_ends DOUBLE[], window_distances DOUBLE[], channel_distances DOUBLE[],
            loudness_reference DOUBLE, loudness_variant DOUBLE, loudness_delta DOUBLE,
            offset_samples BIGINT, correlation DOUBLE, render_seconds DOUBLE, score_seconds DOUBLE,
            first_run VARCHAR, created TIMESTAMP,
            PRIMARY KEY (item_sha256, spec_id, encoder_version, model_id, model_version, protocol))""",
        """CREATE TABLE run_scores (
            run_id VARCHAR, item_sha256 VARCHAR, spec_id VARCHAR, encoder_version VARCHAR,
            model_id VARCHAR, model_version VARCHAR, protocol VARCHAR, reused BOOLEAN,
            PRIMARY KEY (run_id, item_sha256, spec_id))""",
        """CREATE TABLE failures (
            run_id VARCHAR, item VARCHAR, spec_id VARCHAR, label VARCHAR, kind VARCHAR, reason VARCHAR,
            created TIMESTAMP)""",
        "CREATE TABLE accepted (run_id VARCHAR PRIMARY KEY, accepted TIMESTAMP)",
    ],
    [  # 2: decoded audio a run keeps for its report (path is NULL when keeping it failed: see error)
        """CREATE TABLE kept_audio (
            run_id VARCHAR, item_sha256 VARCHAR, spec_id VARCHAR, path VARCHAR, reason VARCHAR, error VARCHAR,
            PRIMARY KEY (run_id, item_sha256, spec_id))""",
    ],
    [  # 3: judgments (with quarantine), the model registry, training runs
        """CREATE TABLE judgment_files (
            content_hash VARCHAR PRIMARY KEY, path VARCHAR, format VARCHAR, rows INTEGER, quarantined INTEGER,
            ingested TIMESTAMP)""",
        """CREATE TABLE judgments (
            judgment_id VARCHAR PRIMARY KEY, ref VARCHAR, test VARCHAR, ref_sha256 VARCHAR, test_sha256 VARCHAR,
            label INTEGER, worker VARCHAR, timestamp VARCHAR, condition VARCHAR, source VARCHAR, line INTEGER,
            extra JSON, file_hash VARCHAR, ingested TIMESTAMP)""",
        """CREATE TABLE quarantine (
            file_hash VARCHAR, line INTEGER, source VARCHAR, raw VARCHAR, kind VARCHAR, reason VARCHAR,
            ingested TIMESTAMP, PRIMARY KEY (file_hash, line))""",
        """CREATE TABLE models (
            version VARCHAR PRIMARY KEY, model_id VARCHAR, kind VARCHAR, parent VARCHAR, status VARCHAR,
            data_hash VARCHAR, weights VARCHAR, weights_sha256 VARCHAR, metrics JSON, calibration JSON,
            params JSON, reason VARCHAR, created TIMESTAMP, decided TIMESTAMP)""",
        """CREATE TABLE trainings (
            training_id VARCHAR PRIMARY KEY, started TIMESTAMP, finished TIMESTAMP, status VARCHAR,
            data_hash VARCHAR, judgments INTEGER, candidate VARCHAR, decision VARCHAR, reason VARCHAR,
            summary JSON)""",
    ],
    [  # 4: the dense teacher's scores of the student's training pairs (expensive: cached)
        """CREATE TABLE teacher_scores (
            key VARCHAR PRIMARY KEY, spec JSON, teacher VARCHAR, distance DOUBLE, layer_terms DOUBLE[],
            created TIMESTAMP)""",
    ],
]
OFFICIAL_VERSION = "dpam-scratch-official"  # the release's scratch weights, the first production model
MODEL_STATUSES = ("candidate", "production", "rejected", "retired", "available")
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store cannot be opened or used as asked."""


class StoreBusyError(StoreError):
    """Another process is writing to the store."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class _LockInfo:
    run_id: str
    pid: int


class Store:
    """A DuckDB file. ``read_only`` stores never migrate or write."""

    def __init__(self, path: str | Path, *, read_only: bool = False, open_timeout: float = 30.0):
        self.path = Path(path)
        self.read_only = read_only
        self.open_timeout = open_timeout
        self._lock_fd: int | None = None
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no such database; run `jndqa run CONFIG --db {self.path}` first")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migrate()

    # ------------------------------------------------------------ connections
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits (up to ``open_timeout``) while another process holds the file."""
        deadline = time.monotonic() + self.open_timeout
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    holder = self.writer()
                    who = f" (in use by run {holder.run_id}, pid {holder.pid})" if holder else ""
                    raise StoreError(f"{self.path}: cannot open the database{who}: {exc}") from exc
                time.sleep(0.05)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------- migrations
    def schema_version(self) -> int:
        with self.connect() as con:
            has_meta = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
            ).fetchone()[0]
            if not has_meta:
                return 0
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return int(row[0]) if row else 0

    def migrate(self) -> int:
        """Bring the schema up to :data:`SCHEMA_VERSION`; returns the number of migrations applied."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this jndqa ({SCHEMA_VERSION}); upgrade jndqa"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction() as con:
                for statement in MIGRATIONS[version]:
                    con.execute(statement)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version + 1)])
        return SCHEMA_VERSION - current

    # ------------------------------------------------------------ writer lock
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def writer(self) -> _LockInfo | None:
        """Who holds the writer lock, if anyone."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                data = os.read(fd, 4096).decode("utf-8", "replace")
                try:
                    info = json.loads(data)
                    return _LockInfo(str(info["run_id"]), int(info["pid"]))
                except (ValueError, KeyError):
                    return _LockInfo("?", -1)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire_writer(self, run_id: str) -> None:
        """Take the writer lock for ``run_id``; :class:`StoreBusyError` names the holder."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.writer()
            who = f"run {holder.run_id} (pid {holder.pid})" if holder else "another process"
            raise StoreBusyError(
                f"{self.path}: database in use by {who}; wait for it to finish or use another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid()}).encode())
        os.fsync(fd)
        self._lock_fd = fd

    def release_writer(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------- runs
    def begin_run(self, run_id: str, **fields: Any) -> None:
        row = {"run_id": run_id, "started": _now(), "status": "running", "pid": os.getpid(), **fields}
        for key in ("config", "tool_versions", "summary"):
            if key in row and not isinstance(row[key], str):
                row[key] = json.dumps(row[key])
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as con:
            con.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", list(row.values()))

    def finish_run(self, run_id: str, status: str, summary: dict | None = None) -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE run_id = ?",
                [_now(), status, json.dumps(summary) if summary is not None else None, run_id],
            )

    def runs(self) -> list[dict]:
        """All runs, newest first, with whether each was accepted as a baseline."""
        with self.connect() as con:
            cur = con.execute(
                """SELECT r.run_id, r.started, r.finished, r.status, r.model_id, r.model_version, r.protocol,
                          r.baseline_run, r.config_hash, a.run_id IS NOT NULL AS accepted,
                          (SELECT count(*) FROM run_scores s WHERE s.run_id = r.run_id) AS scores,
                          (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures
                   FROM runs r LEFT JOIN accepted a USING (run_id) ORDER BY r.started DESC"""
            )
            return _dicts(cur)

    def run(self, run_id: str) -> dict | None:
        with self.connect() as con:
            rows = _dicts(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        return rows[0] if rows else None

    def accept(self, run_id: str) -> None:
        if self.run(run_id) is None:
            raise StoreError(f"{self.path}: no run {run_id!r}; `jndqa runs` lists them")
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO accepted VALUES (?, ?)", [run_id, _now()])

    def resolve_baseline(
        self, policy: str | None, *, model_id: str, model_version: str, protocol: str, exclude: str | None = None
    ) -> tuple[str | None, str]:
        """The baseline run for ``policy`` (``auto``, a run id, or None) and a sentence saying why.

        ``auto``: the latest accepted run with the same model and protocol, else the latest
        complete one. Runs with another model version or protocol are never compared.
        """
        if not policy:
            return None, "no baseline asked for"
        if policy != "auto":
            run = self.run(policy)
            if run is None:
                raise StoreError(f"{self.path}: baseline run {policy!r} not found; `jndqa runs` lists them")
            if (run["model_id"], run["model_version"], run["protocol"]) != (model_id, model_version, protocol):
                return None, (
                    f"baseline {policy} used {run['model_id']} {run['model_version']} / {run['protocol']}, this run "
                    f"uses {model_id} {model_version} / {protocol}: runs with different models or protocols are "
                    "never compared"
                )
            return policy, f"baseline {policy} (given)"
        with self.connect() as con:
            same = "r.model_id = ? AND r.model_version = ? AND r.protocol = ? AND r.run_id IS DISTINCT FROM ?"
            args = [model_id, model_version, protocol, exclude]
            row = con.execute(
                f"SELECT r.run_id FROM runs r JOIN accepted a USING (run_id) WHERE {same} "
                "ORDER BY a.accepted DESC LIMIT 1",
                args,
            ).fetchone()
            if row:
                return row[0], f"baseline {row[0]} (the latest accepted run)"
            row = con.execute(
                f"SELECT r.run_id FROM runs r WHERE {same} AND r.status IN ('passed', 'regressed', 'failed_items') "
                "ORDER BY r.started DESC LIMIT 1",
                args,
            ).fetchone()
        if row:
            return row[0], f"baseline {row[0]} (no run accepted yet: the latest complete run)"
        return None, f"no earlier complete run with {model_id} {model_version} / {protocol}: nothing to compare"

    # ---------------------------------------------------------- items, specs
    def add_items(self, run_id: str, items: Sequence[dict]) -> None:
        """Items (sha256, path, rate, channels, duration, loudness, tags) seen by a run."""
        if not items:
            return
        import pyarrow as pa

        table = pa.Table.from_pylist(
            [{k: it.get(k) for k in ("sha256", "path", "rate", "channels", "duration", "loudness", "tags")}
             for it in items],
            schema=pa.schema([("sha256", pa.string()), ("path", pa.string()), ("rate", pa.int32()),
                              ("channels", pa.int32()), ("duration", pa.float64()), ("loudness", pa.float64()),
                              ("tags", pa.list_(pa.string()))]),
        )  # fmt: skip
        links = pa.table({"run_id": [run_id] * len(items), "sha256": [i["sha256"] for i in items],
                          "path": [i["path"] for i in items]})  # fmt: skip
        with self.transaction() as con:
            con.register("new_items", table)
            con.execute("INSERT OR REPLACE INTO items SELECT * FROM new_items")
            con.register("new_links", links)
            con.execute("INSERT OR IGNORE INTO run_items SELECT * FROM new_links")

    def add_variants(self, run_id: str, variants: Sequence[dict]) -> None:
        """Variant specs (spec_id, label, spec, encoder_version) used by a run."""
        with self.transaction() as con:
            for v in variants:
                con.execute(
                    "INSERT OR IGNORE INTO variant_specs VALUES (?, ?, ?)",
                    [v["spec_id"], v["label"], json.dumps(v.get("spec", {}), sort_keys=True)],
                )
                con.execute(
                    "INSERT OR REPLACE INTO run_variants VALUES (?, ?, ?, ?)",
                    [run_id, v["spec_id"], v["label"], v.get("encoder_version")],
                )

    # ----------------------------------------------------------------- scores
    def existing_keys(self, keys: Iterable[tuple]) -> set[tuple]:
        """Which of the given score keys are already stored."""
        keys = list(keys)
        if not keys:
            return set()
        import pyarrow as pa

        table = pa.table({name: [k[i] for k in keys] for i, name in enumerate(SCORE_KEY)})
        on = " AND ".join(f"s.{c} = k.{c}" for c in SCORE_KEY)
        with self.connect() as con:
            con.register("wanted", table)
            rows = con.execute(f"SELECT {', '.join('k.' + c for c in SCORE_KEY)} FROM wanted k JOIN scores s ON {on}")
            return {tuple(r) for r in rows.fetchall()}

    def write_scores(self, run_id: str, scores: Sequence[dict], reused: Sequence[tuple] = ()) -> None:
        """One transaction: new score rows (an already-stored key is kept, not duplicated) and the
        run's links to them, both computed and reused."""
        import pyarrow as pa

        now = _now()
        with self.transaction() as con:
            if scores:
                cols = [c[0] for c in con.execute("DESCRIBE scores").fetchall()]
                rows = [{**{c: s.get(c) for c in cols}, "first_run": run_id, "created": now} for s in scores]
                con.register("new_scores", pa.Table.from_pylist(rows))
                con.execute(f"INSERT OR IGNORE INTO scores SELECT {', '.join(cols)} FROM new_scores")
            links = [(*(s[c] for c in SCORE_KEY), False) for s in scores] + [(*k, True) for k in reused]
            if links:
                table = pa.table(
                    {"run_id": [run_id] * len(links)}
                    | {name: [link[i] for link in links] for i, name in enumerate(SCORE_KEY)}
                    | {"reused": [link[-1] for link in links]}
                )
                con.register("new_links", table)
                con.execute(
                    "INSERT OR IGNORE INTO run_scores SELECT run_id, item_sha256, spec_id, encoder_version, "
                    "model_id, model_version, protocol, reused FROM new_links"
                )

    def write_failures(self, run_id: str, failures: Sequence[dict]) -> None:
        if not failures:
            return
        with self.transaction() as con:
            for f in failures:
                con.execute(
                    "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [run_id, f.get("item"), f.get("spec_id"), f.get("variant"), f.get("kind"), f["reason"], _now()],
                )

    def run_scores(self, run_id: str) -> list[dict]:
        """A run's scores joined with item paths and variant labels."""
        with self.connect() as con:
            cur = con.execute(
                """SELECT l.run_id, l.reused, s.*, i.path, v.label
                   FROM run_scores l
                   JOIN scores s USING (item_sha256, spec_id, encoder_version, model_id, model_version, protocol)
                   LEFT JOIN run_items i ON i.run_id = l.run_id AND i.sha256 = l.item_sha256
                   LEFT JOIN run_variants v ON v.run_id = l.run_id AND v.spec_id = l.spec_id
                   WHERE l.run_id = ? ORDER BY i.path, v.label""",
                [run_id],
            )
            return _dicts(cur)

    def run_failures(self, run_id: str) -> list[dict]:
        with self.connect() as con:
            return _dicts(con.execute("SELECT * FROM failures WHERE run_id = ? ORDER BY created", [run_id]))

    # ------------------------------------------------------ what reports read
    def run_items(self, run_id: str) -> list[dict]:
        """The items a run saw (path as the run named it, rate, channels, duration, loudness, tags)."""
        with self.connect() as con:
            cur = con.execute(
                """SELECT l.sha256, l.path, i.rate, i.channels, i.duration, i.loudness, i.tags
                   FROM run_items l JOIN items i USING (sha256) WHERE l.run_id = ? ORDER BY l.path""",
                [run_id],
            )
            return _dicts(cur)

    def run_variants(self, run_id: str) -> list[dict]:
        """A run's variants: spec id, label, encoder version and the spec (a dict), in label order."""
        with self.connect() as con:
            cur = con.execute(
                """SELECT v.spec_id, v.label, v.encoder_version, s.spec
                   FROM run_variants v LEFT JOIN variant_specs s USING (spec_id) WHERE v.run_id = ? ORDER BY v.label""",
                [run_id],
            )
            rows = _dicts(cur)
        for r in rows:
            r["spec"] = json.loads(r["spec"]) if r["spec"] else {}
        return rows

    def variant_means(self) -> list[dict]:
        """Mean distance and item count of every variant label in every run, for trend charts."""
        with self.connect() as con:
            cur = con.execute(
                """SELECT l.run_id, r.started, r.model_id, r.model_version, r.protocol, v.label,
                          avg(s.distance) AS mean_distance, count(*) AS items
                   FROM run_scores l
                   JOIN scores s USING (item_sha256, spec_id, encoder_version, model_id, model_version, protocol)
                   JOIN runs r ON r.run_id = l.run_id
                   JOIN run_variants v ON v.run_id = l.run_id AND v.spec_id = l.spec_id
                   GROUP BY ALL ORDER BY r.started, v.label"""
            )
            return _dicts(cur)

    def keep_audio(self, run_id: str, rows: Sequence[dict]) -> None:
        """Record decoded audio kept for a run's report: ``item_sha256``, ``spec_id`` (``""`` for the
        reference), ``path``, ``reason``, ``error`` (when keeping failed)."""
        with self.transaction() as con:
            for r in rows:
                con.execute(
                    "INSERT OR REPLACE INTO kept_audio VALUES (?, ?, ?, ?, ?, ?)",
                    [run_id, r["item_sha256"], r["spec_id"], r.get("path"), r.get("reason"), r.get("error")],
                )

    def kept_audio(self, run_id: str) -> list[dict]:
        with self.connect() as con:
            cur = con.execute(
                "SELECT item_sha256, spec_id, path, reason, error FROM kept_audio WHERE run_id = ? "
                "ORDER BY item_sha256, spec_id",
                [run_id],
            )
            return _dicts(cur)

    # ------------------------------------------------------------ judgments
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

    # ------------------------------------------------------------ teacher scores
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

    # ------------------------------------------------------------ model registry
    def ensure_official(self) -> None:
        """Register the release's scratch weights as the first production model (once)."""
        with self.transaction() as con:
            if con.execute("SELECT count(*) FROM models WHERE version = ?", [OFFICIAL_VERSION]).fetchone()[0]:
                return
            has_production = con.execute("SELECT count(*) FROM models WHERE status = 'production'").fetchone()[0]
            con.execute(
                "INSERT INTO models (version, model_id, kind, parent, status, reason, created, decided) "
                "VALUES (?, ?, 'scratch', NULL, ?, ?, ?, ?)",
                [OFFICIAL_VERSION, OFFICIAL_VERSION, "retired" if has_production else "production",
                 "the official DPAM release (dpam 0.0.4), scratch model", _now(), _now()],
            )  # fmt: skip

    def models(self) -> list[dict]:
        """The registry, newest first (read-only stores without a registry list the official model)."""
        with self.connect() as con:
            rows = _dicts(con.execute("SELECT * FROM models ORDER BY created DESC, version"))
        for r in rows:
            for key in ("metrics", "calibration", "params"):
                r[key] = json.loads(r[key]) if r.get(key) else None
        return rows

    def model(self, version: str) -> dict | None:
        return next((m for m in self.models() if m["version"] == version), None)

    def production_model(self) -> dict:
        """The production model's registry row; the official weights when the registry is empty."""
        prod = [m for m in self.models() if m["status"] == "production"]
        if prod:
            return prod[0]
        return {"version": OFFICIAL_VERSION, "model_id": OFFICIAL_VERSION, "kind": "scratch", "status": "production",
                "weights": None, "weights_sha256": None, "calibration": None, "parent": None}  # fmt: skip

    def model_weights(self, row: dict) -> Path | None:
        """A registry row's weights file (stored relative to the database's folder, so a store
        moves with its models); None for the release's weights."""
        return self.path.parent / row["weights"] if row.get("weights") else None

    def add_model(self, row: dict, status: str = "candidate") -> None:
        """Register a model: a candidate (its weights file already written), or ``available`` for
        a model selectable by name that is never production (the dense student)."""
        if status not in ("candidate", "available"):
            raise StoreError(f"a model is registered as a candidate or available, not {status!r}")
        row = {**row, "status": status, "created": _now()}
        for key in ("metrics", "calibration", "params"):
            if row.get(key) is not None and not isinstance(row[key], str):
                row[key] = json.dumps(row[key])
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


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
