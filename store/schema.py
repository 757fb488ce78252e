"""The store's base: schema migrations, connections, transactions and the writer lock.

:class:`StoreBase` owns the DuckDB file; the concern mixins (:mod:`.runs`, :mod:`.registry`,
:mod:`.judgments`, :mod:`.ratings`, :mod:`.cache`) build on it and :class:`jndqa.store.Store`
composes them.

One process writes at a time: a run takes the writer lock (an ``flock`` on ``<db>.lock`` that
records the run and pid) for its whole duration, and opens DuckDB only for each short
transaction, so reports and ``jndqa runs`` can read between writes. A second writer gets
:class:`StoreBusyError`: "database in use by run N (pid P)".
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StoreBase", "StoreBusyError", "StoreError"]

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
    [  # 5: a general content-keyed cache; the teacher scores move into it as namespace 'teacher'
        """CREATE TABLE cache (
            namespace VARCHAR, key VARCHAR, value JSON, created TIMESTAMP, PRIMARY KEY (namespace, key))""",
        """INSERT INTO cache SELECT 'teacher', key,
            json_object('distance', distance, 'layer_terms', layer_terms, 'spec', spec, 'teacher', teacher), created
            FROM teacher_scores""",
        "DROP TABLE teacher_scores",
    ],
    [  # 6: listening-test ratings (MUSHRA, MOS, JND, preference), their files and their quarantine
        """CREATE TABLE rating_files (
            content_hash VARCHAR PRIMARY KEY, path VARCHAR, format VARCHAR, config VARCHAR, rows INTEGER,
            quarantined INTEGER, ingested TIMESTAMP)""",
        """CREATE TABLE ratings (
            rating_id VARCHAR PRIMARY KEY, ref VARCHAR, test VARCHAR, ref_sha256 VARCHAR, test_sha256 VARCHAR,
            score DOUBLE, scale VARCHAR, listener VARCHAR, item VARCHAR, condition VARCHAR, trial VARCHAR,
            hidden_reference BOOLEAN, source VARCHAR, line INTEGER, extra JSON, file_hash VARCHAR,
            ingested TIMESTAMP)""",
        """CREATE TABLE rating_quarantine (
            file_hash VARCHAR, line INTEGER, source VARCHAR, raw VARCHAR, kind VARCHAR, reason VARCHAR,
            ingested TIMESTAMP, PRIMARY KEY (file_hash, line))""",
    ],
    [  # 7: scores of every metric of a night (DPAM and peers): the metric's name joins the key; each score
        # keeps its value in the metric's own orientation, how the pair was aligned and the metric's extras
        """CREATE TABLE scores_v7 (
            item_sha256 VARCHAR, spec_id VARCHAR, encoder_version VARCHAR, metric VARCHAR, model_id VARCHAR,
            model_version VARCHAR, protocol VARCHAR, value DOUBLE, orientation VARCHAR,
            distance DOUBLE, p_jnd DOUBLE, p_jnd_calibrated BOOLEAN, layer_terms DOUBLE[],
            window_starts DOUBLE[], window_ends DOUBLE[], window_distances DOUBLE[], channel_distances DOUBLE[],
            loudness_reference DOUBLE, loudness_variant DOUBLE, loudness_delta DOUBLE,
            offset_samples BIGINT, correlation DOUBLE, alignment VARCHAR, extra JSON,
            render_seconds DOUBLE, score_seconds DOUBLE, first_run VARCHAR, created TIMESTAMP,
            PRIMARY KEY (item_sha256, spec_id, encoder_version, metric, model_id, model_version, protocol))""",
        """INSERT INTO scores_v7 SELECT item_sha256, spec_id, encoder_version, 'dpam', model_id, model_version,
            protocol, distance, 'distance', distance, p_jnd, p_jnd_calibrated, layer_terms, window_starts,
            window_ends, window_distances, channel_distances, loudness_reference, loudness_variant, loudness_delta,
            offset_samples, correlation, 'samples', NULL, render_seconds, score_seconds, first_run, created
            FROM scores""",
        "DROP TABLE scores",
        "ALTER TABLE scores_v7 RENAME TO scores",
        """CREATE TABLE run_scores_v7 (
            run_id VARCHAR, item_sha256 VARCHAR, spec_id VARCHAR, encoder_version VARCHAR, metric VARCHAR,
            model_id VARCHAR, model_version VARCHAR, protocol VARCHAR, reused BOOLEAN,
            PRIMARY KEY (run_id, item_sha256, spec_id, metric))""",
        """INSERT INTO run_scores_v7 SELECT run_id, item_sha256, spec_id, encoder_version, 'dpam', model_id,
            model_version, protocol, reused FROM run_scores""",
        "DROP TABLE run_scores",
        "ALTER TABLE run_scores_v7 RENAME TO run_scores",
        "ALTER TABLE failures ADD COLUMN metric VARCHAR",
    ],
    [  # 8: golden outputs: every output a run kept (24-bit FLAC by samples hash) and its comparison with
        # the accepted run's output of the same item and variant (label)
        """CREATE TABLE outputs (
            run_id VARCHAR, item_sha256 VARCHAR, spec_id VARCHAR, label VARCHAR, encoder_version VARCHAR,
            sha256 VARCHAR, path VARCHAR, bytes BIGINT, created TIMESTAMP,
            PRIMARY KEY (run_id, item_sha256, spec_id))""",
        """CREATE TABLE golden (
            run_id VARCHAR, item_sha256 VARCHAR, spec_id VARCHAR, label VARCHAR, golden_run VARCHAR,
            golden_spec_id VARCHAR, golden_sha256 VARCHAR, sha256 VARCHAR, status VARCHAR, rule VARCHAR,
            distance DOUBLE, p_jnd DOUBLE, p_jnd_calibrated BOOLEAN, window_starts DOUBLE[], window_ends DOUBLE[],
            window_distances DOUBLE[], created TIMESTAMP, PRIMARY KEY (run_id, item_sha256, label))""",
    ],
    [  # 9: listening tests made from a run (jndqa listen make), for the run page's links
        """CREATE TABLE listen_tests (
            test_id VARCHAR PRIMARY KEY, run_id VARCHAR, kind VARCHAR, folder VARCHAR, trials INTEGER,
            stimuli INTEGER, variants VARCHAR[], created TIMESTAMP)""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store cannot be opened or used as asked."""


class StoreBusyError(StoreError):
    """Another process is writing to the store."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@dataclass
class _LockInfo:
    run_id: str
    pid: int


class StoreBase:
    """A DuckDB file, migrated to :data:`SCHEMA_VERSION` on open; ``read_only`` stores never
    migrate or write."""

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
