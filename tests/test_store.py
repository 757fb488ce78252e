"""The DuckDB store (a real file): schema, writer lock, idempotent writes, baselines, statistics,
the model registry's seed, the content-keyed cache and its migration."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from jndqa.store import SCHEMA_VERSION, Store, StoreBusyError, StoreError, compare_runs, holm
from jndqa.store.runs import SCORE_KEY
from jndqa.store.schema import MIGRATIONS

MODEL = {"model_id": "dpam-scratch-official", "model_version": "0.0.4", "protocol": "dense"}


def score(item: str, spec: str, distance: float, p_jnd: float = 0.2, enc: str = "lame 3.100") -> dict:
    return {"item_sha256": item, "spec_id": spec, "encoder_version": enc, "metric": "dpam", **MODEL,
            "value": distance, "orientation": "distance", "distance": distance, "p_jnd": p_jnd,
            "window_distances": [distance, distance], "layer_terms": [0.1] * 14}  # fmt: skip


def peer(item: str, spec: str, mos: float, enc: str = "lame 3.100") -> dict:
    """A score of a quality metric (a MOS: higher is better), as the nightly stores a peer's."""
    return {"item_sha256": item, "spec_id": spec, "encoder_version": enc, "metric": "zimtohrli",
            "model_id": "zimtohrli", "model_version": "0.2.1.post1", "protocol": "", "value": mos,
            "orientation": "quality", "extra": json.dumps({"distance": 0.01})}  # fmt: skip


def key(s: dict) -> tuple:
    return tuple(s[k] for k in SCORE_KEY)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "bench.duckdb")


def test_schema_is_versioned_and_migrations_are_idempotent(store, tmp_path):
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == 0
    again = Store(tmp_path / "bench.duckdb")
    assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(store):
    with store.transaction() as con:
        con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this jndqa"):
        store.migrate()


def test_scores_are_keyed_and_reused(store):
    store.begin_run("r1", **MODEL)
    store.add_items("r1", [{"sha256": "a", "path": "a.wav", "rate": 44100, "channels": 1, "duration": 5.0,
                            "loudness": -23.0, "tags": ["speech"]}])  # fmt: skip
    store.add_variants("r1", [{"spec_id": "mp3", "label": "mp3 128k", "spec": {"codec": "libmp3lame"},
                               "encoder_version": "lame 3.100"}])  # fmt: skip
    s = score("a", "mp3", 0.3)
    store.write_scores("r1", [s])
    store.write_scores("r1", [s])  # a repeated write duplicates nothing
    assert store.existing_keys([key(s), key(score("a", "mp3", 0, enc="lame 3.101"))]) == {key(s)}
    store.begin_run("r2", **MODEL)
    store.write_scores("r2", [], reused=[key(s)])
    rows = store.run_scores("r2")
    assert len(rows) == 1 and rows[0]["reused"] and rows[0]["distance"] == 0.3 and rows[0]["first_run"] == "r1"
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 1
    assert store.run_scores("r1")[0]["path"] == "a.wav" and store.run_scores("r1")[0]["label"] == "mp3 128k"


def test_metrics_are_keyed_apart_and_read_by_metric(store):
    store.begin_run("r1", **MODEL)
    store.add_variants("r1", [{"spec_id": "mp3", "label": "mp3 128k", "spec": {}, "encoder_version": "lame 3.100"}])
    d, z = score("a", "mp3", 0.3), peer("a", "mp3", 4.25)
    store.write_scores("r1", [d, z])
    assert store.existing_keys([key(d), key(z)]) == {key(d), key(z)}
    both = store.run_scores("r1")
    assert [(r["metric"], r["value"]) for r in both] == [("dpam", 0.3), ("zimtohrli", 4.25)]
    (only,) = store.run_scores("r1", metric="zimtohrli")
    assert only["extra"] == {"distance": 0.01} and only["distance"] is None and only["orientation"] == "quality"
    assert store.run_scores("r1", metric="dpam")[0]["extra"] == {}
    means = {(m["metric"], m["label"]): m["mean_value"] for m in store.variant_means()}
    assert means == {("dpam", "mp3 128k"): 0.3, ("zimtohrli", "mp3 128k"): 4.25}
    store.write_failures("r1", [{"item": "a.wav", "spec_id": "mp3", "variant": "mp3 128k", "kind": "metric",
                                 "metric": "pesq", "reason": "pesq: no utterances detected"}])  # fmt: skip
    (f,) = store.run_failures("r1")
    assert f["metric"] == "pesq" and f["label"] == "mp3 128k"


def old_database(path, version: int) -> duckdb.DuckDBPyConnection:
    """A database as the released migrations 1..``version`` made it (open: the caller fills and closes it)."""
    con = duckdb.connect(str(path))
    for statement in (s for migration in MIGRATIONS[:version] for s in migration):
        con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(version)])
    return con


def test_migration_7_keeps_every_dpam_score_under_the_metric_dpam(tmp_path):
    # A version-6 database, as the released migrations 1-6 made it, with one run and one score.
    db = tmp_path / "v6.duckdb"
    con = old_database(db, 6)
    con.execute("INSERT INTO runs (run_id, model_id, model_version, protocol) VALUES ('r1', 'm', 'v', 'dense')")
    con.execute("""INSERT INTO scores (item_sha256, spec_id, encoder_version, model_id, model_version, protocol,
                   distance, p_jnd, offset_samples) VALUES ('a', 's', 'e', 'm', 'v', 'dense', 0.125, 0.3, 7)""")
    con.execute("INSERT INTO run_scores VALUES ('r1', 'a', 's', 'e', 'm', 'v', 'dense', false)")
    con.execute("INSERT INTO failures VALUES ('r1', 'a.wav', 's', 'mp3', 'encode', 'boom', now())")
    con.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    (row,) = store.run_scores("r1")
    assert (row["metric"], row["value"], row["distance"], row["orientation"], row["alignment"]) == (
        "dpam",
        0.125,
        0.125,
        "distance",
        "samples",
    )
    assert row["p_jnd"] == 0.3 and row["offset_samples"] == 7
    assert store.existing_keys([("a", "s", "e", "dpam", "m", "v", "dense")]) == {
        ("a", "s", "e", "dpam", "m", "v", "dense")
    }
    assert store.run_failures("r1")[0]["metric"] is None


def test_second_writer_is_told_who_holds_the_store(store, tmp_path):
    store.acquire_writer("night-7")
    code = (
        "from jndqa.store import Store, StoreBusyError\n"
        f"s = Store({str(tmp_path / 'bench.duckdb')!r})\n"
        "try:\n    s.acquire_writer('other')\nexcept StoreBusyError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "database in use by run night-7 (pid" in r.stdout, r.stdout + r.stderr
    with pytest.raises(StoreBusyError, match="night-7"):
        Store(tmp_path / "bench.duckdb").acquire_writer("x")
    store.release_writer()
    Store(tmp_path / "bench.duckdb").acquire_writer("x")  # free again


def test_read_only_open_of_a_missing_file(tmp_path):
    with pytest.raises(StoreError, match="no such database"):
        Store(tmp_path / "none.duckdb", read_only=True)


def test_baseline_policy(store):
    store.begin_run("r1", **MODEL)
    store.finish_run("r1", "passed")
    store.begin_run("r2", **MODEL)
    store.finish_run("r2", "passed")
    store.begin_run("r3", **{**MODEL, "protocol": "official"})
    store.finish_run("r3", "passed")
    run, why = store.resolve_baseline("auto", **MODEL, exclude="r9")
    assert run == "r2" and "latest complete" in why
    store.accept("r1")
    assert store.resolve_baseline("auto", **MODEL, exclude="r9")[0] == "r1"
    run, why = store.resolve_baseline("r3", **MODEL)
    assert run is None and "never compared" in why
    assert store.resolve_baseline("auto", **{**MODEL, "model_version": "v2"})[0] is None
    with pytest.raises(StoreError, match="not found"):
        store.resolve_baseline("nope", **MODEL)
    with pytest.raises(StoreError, match="no run"):
        store.accept("nope")
    assert [r["run_id"] for r in store.runs()] == ["r3", "r2", "r1"]
    assert [r["accepted"] for r in store.runs()] == [False, False, True]


def test_run_status_baseline_and_summary_updates(store):
    store.begin_run("r1", **MODEL)
    store.finish_run("r1", "passed", {"verdict": "passed"})
    store.begin_run("r2", **MODEL)
    store.begin_run("r3", **MODEL)
    assert store.mark_stale_runs() == 2  # r2 and r3 were left running: their process died
    assert [store.run(r)["status"] for r in ("r1", "r2", "r3")] == ["passed", "killed", "killed"]
    assert store.mark_stale_runs() == 0
    store.set_run_baseline("r2", "r1")
    store.set_run_summary("r2", {"report": None, "report_error": "OSError: disk full"})
    assert store.run("r2")["baseline_run"] == "r1" and store.run("r1")["baseline_run"] is None
    assert json.loads(store.run("r2")["summary"]) == {"report": None, "report_error": "OSError: disk full"}
    assert json.loads(store.run("r1")["summary"]) == {"verdict": "passed"}


SEED = {"version": "seed-v1", "model_id": "seed-v1", "kind": "scratch", "parent": None, "reason": "the seed"}


def test_ensure_model_seeds_production_once(store):
    assert store.production_model() is None and store.models() == []  # the store knows no model by itself
    store.ensure_model(SEED)
    store.ensure_model({**SEED, "reason": "a second call changes nothing"})
    (row,) = store.models()
    assert row["version"] == "seed-v1" and row["status"] == "production" and row["reason"] == "the seed"
    assert store.production_model()["version"] == "seed-v1" and store.model_weights(row) is None
    # Once a candidate is promoted, a seed registered later is retired, never production.
    store.add_model({"version": "cand", "model_id": "cand", "kind": "scratch", "parent": "seed-v1",
                     "weights": "models/cand.safetensors", "metrics": {"accuracy": 0.8}})  # fmt: skip
    store.decide_model("cand", "production", "better on held-out data")
    store.ensure_model({**SEED, "version": "seed-v2", "model_id": "seed-v2"})
    status = {m["version"]: m["status"] for m in store.models()}
    assert status == {"seed-v1": "retired", "cand": "production", "seed-v2": "retired"}
    assert store.production_model()["metrics"] == {"accuracy": 0.8}
    assert store.model_weights(store.production_model()) == store.path.parent / "models" / "cand.safetensors"
    with pytest.raises(StoreError, match="needs a 'version'"):
        store.ensure_model({"model_id": "x"})


def test_cache_round_trip_is_exact_and_put_is_idempotent(store):
    values = {"a": {"distance": 0.1 + 0.2, "layer_terms": [1e-300, 3.141592653589793, -0.0, 2.5e17]},
              "b": [1, "two", None, {"x": True}], "c": 7.0}  # fmt: skip
    assert store.cache_get("t", ["a"]) == {} and store.cache_get("t", []) == {}
    store.cache_put("t", values)
    assert store.cache_get("t", ["a", "b", "c", "missing"]) == values  # floats bit for bit: == on every one
    assert store.cache_get("other", ["a"]) == {}  # namespaces do not mix
    store.cache_put("t", {"a": "a later value", "d": 4})  # a stored key keeps its value; a new one is added
    assert store.cache_get("t", ["a", "d"]) == {"a": values["a"], "d": 4}
    store.cache_put("other", {"a": 1})
    assert store.cache_get("other", ["a"]) == {"a": 1} and store.cache_get("t", ["a"])["a"] == values["a"]
    with pytest.raises(StoreError, match=r"cache 't' key 'bad'.*not JSON"):
        store.cache_put("t", {"e": 1.0, "bad": [float("nan")]})
    assert store.cache_get("t", ["e", "bad"]) == {}  # nothing of a refused put is stored
    many = {f"k{i}": [i / 7, i] for i in range(5000)}  # one bulk write, one bulk read
    store.cache_put("bulk", many)
    assert store.cache_get("bulk", many) == many


def test_migration_moves_teacher_scores_into_the_cache(tmp_path):
    # A version-4 database, as the released migrations 1-4 made it, with teacher scores and a model.
    db = tmp_path / "v4.duckdb"
    con = old_database(db, 4)
    spec = {"item": "ab12", "start": 100, "length": 88200, "family": "libopus", "level": 16.0, "seed": 3}
    terms = [0.1 * k + 1 / 3 for k in range(14)]
    con.execute("INSERT INTO teacher_scores VALUES ('k1', ?, 'dense:t', 0.30000000000000004, ?, now())",
                [json.dumps(spec), terms])  # fmt: skip
    con.execute("INSERT INTO teacher_scores VALUES ('k2', '{}', 'dense:t', 1e-300, [], now())")
    con.execute("INSERT INTO models (version, model_id, kind, status) VALUES ('old', 'old', 'scratch', 'production')")
    con.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    got = store.cache_get("teacher", ["k1", "k2"])
    assert got["k1"] == {"distance": 0.30000000000000004, "layer_terms": terms, "spec": spec, "teacher": "dense:t"}
    assert got["k2"] == {"distance": 1e-300, "layer_terms": [], "spec": {}, "teacher": "dense:t"}
    with store.connect() as c:
        assert c.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'teacher_scores'"
                         ).fetchone()[0] == 0  # fmt: skip
    store.ensure_model(SEED)  # existing rows stay: the old production model keeps its status
    assert store.production_model()["version"] == "old" and store.model("seed-v1")["status"] == "retired"


def test_holm_matches_hand_computation():
    # p = [0.01, 0.04, 0.03]: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_compare_flags_only_the_degraded_variant():
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(12)]
    base, cand = [], []
    for it in items:
        d = float(rng.uniform(0.1, 0.3))
        base += [score(it, "mp3", d), score(it, "opus", d)]
        cand += [score(it, "mp3", d + float(rng.normal(0, 0.005))), score(it, "opus", d + 0.3, p_jnd=0.6)]
    res = {r.spec_id: r for r in compare_runs(base, cand, threshold=0.05)}
    assert not res["mp3"].regressed and res["opus"].regressed
    assert res["opus"].mean_change == pytest.approx(0.3)
    assert res["opus"].ci[0] == pytest.approx(0.3) and res["opus"].items == 12
    # 12 positive differences: exact two-sided Wilcoxon p = 2 / 2**12; Holm across 2 variants doubles it.
    assert res["opus"].p_value_raw == pytest.approx(2 / 2**12)
    assert res["opus"].p_value == pytest.approx(4 / 2**12)
    assert len(res["opus"].items_crossing) == 12 and res["mp3"].items_crossing == []
    lo, hi = res["mp3"].ci
    assert lo < res["mp3"].mean_change < hi and lo < 0.05


def test_compare_of_a_quality_metric_regresses_when_values_fall():
    # A MOS (higher is better): a drop of 0.5 on 12 items regresses, a rise of 0.5 does not.
    base = [peer(f"i{k}", v, 4.0 + 0.01 * k) for k in range(12) for v in ("worse", "better")]
    cand = [peer(f"i{k}", "worse", 3.5 + 0.01 * k) for k in range(12)]
    cand += [peer(f"i{k}", "better", 4.5 + 0.01 * k) for k in range(12)]
    res = {r.spec_id: r for r in compare_runs(base, cand, threshold=0.1, orientation="quality")}
    assert res["worse"].regressed and not res["better"].regressed
    assert res["worse"].mean_change == pytest.approx(-0.5) and res["worse"].ci[1] == pytest.approx(-0.5)
    assert res["worse"].orientation == "quality"
    # Read as distances, the same numbers regress the other way round.
    flipped = {r.spec_id: r for r in compare_runs(base, cand, threshold=0.1)}
    assert flipped["better"].regressed and not flipped["worse"].regressed
    with pytest.raises(ValueError, match="orientation"):
        compare_runs(base, cand, threshold=0.1, orientation="mos")


def test_compare_is_seeded_and_ignores_unpaired_items():
    base = [score("a", "v", 0.1), score("b", "v", 0.2), score("only-base", "v", 9.0), score("x", "gone", 1.0)]
    cand = [score("a", "v", 0.2), score("b", "v", 0.5), score("only-cand", "v", 9.0)]
    r1 = compare_runs(base, cand, threshold=0.05, seed=3)
    r2 = compare_runs(base, cand, threshold=0.05, seed=3)
    assert [r.as_dict() for r in r1] == [r.as_dict() for r in r2]
    (only,) = r1
    assert only.items == 2 and only.mean_change == pytest.approx(0.2)
