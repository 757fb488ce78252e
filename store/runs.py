"""Runs and what they hold: items, variants, keyed scores, failures, kept audio, baselines.

A score's key is (item sha256, variant spec id, encoder version, metric, model id, model version,
protocol): a key already stored is reused, never recomputed. ``metric`` is the name the run config
lists (``dpam``, ``zimtohrli``...); for DPAM the last three are the model's key
(:attr:`jndqa.metric.ModelRef.key`), for another metric its id, version and variant
(:attr:`jndqa.metric.Metric.key`). A run links to at most one score per item, variant and metric.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from .schema import StoreBase, StoreError, _dicts, _now

__all__ = ["SCORE_KEY", "RunsMixin"]

SCORE_KEY = ("item_sha256", "spec_id", "encoder_version", "metric", "model_id", "model_version", "protocol")


class RunsMixin(StoreBase):
    """The ``runs``, ``items``, ``run_items``, ``variant_specs``, ``run_variants``, ``scores``,
    ``run_scores``, ``failures``, ``accepted`` and ``kept_audio`` tables."""

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

    def mark_stale_runs(self) -> int:
        """Mark every run still ``running`` as ``killed``; returns how many. Only the holder of the
        writer lock calls this: no other run can be alive then."""
        with self.transaction() as con:
            return con.execute("UPDATE runs SET status = 'killed' WHERE status = 'running'").fetchone()[0]

    def set_run_baseline(self, run_id: str, baseline: str | None) -> None:
        """Record the run ``run_id`` was compared with (None: none)."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET baseline_run = ? WHERE run_id = ?", [baseline, run_id])

    def set_run_summary(self, run_id: str, summary: dict) -> None:
        """Replace a run's stored summary (JSON)."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [json.dumps(summary), run_id])

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
                    f"INSERT OR IGNORE INTO run_scores SELECT run_id, {', '.join(SCORE_KEY)}, reused FROM new_links"
                )

    def write_failures(self, run_id: str, failures: Sequence[dict]) -> None:
        """Failure rows: ``item``, ``spec_id``, ``variant`` (its label), ``kind``, ``reason`` and ``metric``
        (the metric that could not score, None when the variant itself failed)."""
        if not failures:
            return
        with self.transaction() as con:
            for f in failures:
                con.execute(
                    "INSERT INTO failures (run_id, item, spec_id, label, kind, reason, created, metric) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, f.get("item"), f.get("spec_id"), f.get("variant"), f.get("kind"), f["reason"], _now(),
                     f.get("metric")],
                )  # fmt: skip

    def run_scores(self, run_id: str, metric: str | None = None) -> list[dict]:
        """A run's scores joined with item paths and variant labels: every metric's, or ``metric``'s only.
        ``extra`` is decoded from JSON."""
        where, args = "l.run_id = ?", [run_id]
        if metric is not None:
            where, args = where + " AND l.metric = ?", [run_id, metric]
        with self.connect() as con:
            cur = con.execute(
                f"""SELECT l.run_id, l.reused, s.*, i.path, v.label
                   FROM run_scores l
                   JOIN scores s USING ({", ".join(SCORE_KEY)})
                   LEFT JOIN run_items i ON i.run_id = l.run_id AND i.sha256 = l.item_sha256
                   LEFT JOIN run_variants v ON v.run_id = l.run_id AND v.spec_id = l.spec_id
                   WHERE {where} ORDER BY i.path, v.label, l.metric""",
                args,
            )
            rows = _dicts(cur)
        for r in rows:
            r["extra"] = json.loads(r["extra"]) if r.get("extra") else {}
        return rows

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
        """Mean value and item count of every variant label and metric in every run, for trend charts;
        ``model_id``, ``model_version`` and ``protocol`` are the metric's (for DPAM: the model's)."""
        with self.connect() as con:
            cur = con.execute(
                f"""SELECT l.run_id, r.started, l.metric, l.model_id, l.model_version, l.protocol, v.label,
                          avg(s.value) AS mean_value, count(*) AS items
                   FROM run_scores l
                   JOIN scores s USING ({", ".join(SCORE_KEY)})
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
