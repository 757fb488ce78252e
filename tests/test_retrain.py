"""Retraining end to end: simulated judgments, a real DuckDB registry, real Prefect flow runs, the
real official weights as the first production model, and the nightly flow scoring with the
promoted model. The listener is simulated (jndqa.datasets.listener): no crowd runs here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.flows.models import OFFICIAL
from jndqa.store import Store

JNDQA = str(Path(sys.executable).parent / "jndqa")
OFFICIAL_VERSION = OFFICIAL.id  # the store's seed model: the release's scratch weights
SIM = {"levels": 6, "trials": 8, "max_seconds": 2.0}  # small ladders and staircases: a fast, real training set


def make_items(root: Path, sample: dict, n: int, offset: int = 0) -> list[Path]:
    """``n`` distinct 2.5 s mono recordings: the release's speech clips, shifted and mixed with a
    harmonic tone whose pitch depends on the item."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["ref", "2", "4"]
    t = np.arange(int(2.5 * 22050)) / 22050
    paths = []
    for k in range(offset, offset + n):
        speech = np.roll(sample[names[k % 3]] / 32768.0, 2000 * k)[: len(t)]
        tone = sum(0.05 / h * np.sin(2 * np.pi * (110 + 37 * k) * h * t) for h in range(1, 6))
        path = root / f"item{k:02d}.wav"
        sf.write(path, (0.6 * speech + tone).astype(np.float32), 22050, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def judgments(tmp_path_factory, sample):
    """Training judgments (8 references, seed 0), poisoned ones (all labels flipped), and a clean
    golden set on 3 other references (seed 1)."""
    from jndqa.datasets import simulate_judgments

    root = tmp_path_factory.mktemp("judgments")
    items = make_items(root / "items", sample, 8)
    golden_items = make_items(root / "golden-items", sample, 3, offset=8)
    train = simulate_judgments(items, root / "train", seed=0, **SIM)
    poisoned = simulate_judgments(items, root / "poisoned", seed=0, flip_labels=True, **SIM)
    golden = simulate_judgments(golden_items, root / "golden", seed=1, **SIM)
    return {"train": train.csv, "poisoned": poisoned.csv, "golden": golden.csv, "items": items}


def _registry(store: Store) -> list[tuple]:
    return [(m["version"], m["status"], m["weights_sha256"]) for m in store.models()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, judgments, prefect_harness, release):
    """A store whose production model was trained here on the clean judgments."""
    from jndqa.flows.retrain import RetrainSettings, retrain_flow

    db = tmp_path_factory.mktemp("registry") / "jndqa.duckdb"
    summary = retrain_flow(
        [str(judgments["train"])], str(db), vars(RetrainSettings(golden=str(judgments["golden"]), protocol="official"))
    )
    return db, summary


def test_candidate_beats_the_official_model_and_is_promoted(promoted):
    db, s = promoted
    assert s["status"] == "promoted", s.get("reason")
    held, golden = s["metrics"]["test"], s["metrics"]["golden"]
    cand, prod = held["candidate"], held["production"]
    # Measured on the simulated listener's judgments (numbers in the closing note).
    assert cand["accuracy"]["value"] > prod["accuracy"]["value"] + 0.02
    assert cand["ece"]["value"] < prod["ece"]["value"]
    assert cand["log_loss"]["value"] < prod["log_loss"]["value"]
    assert golden["candidate"]["accuracy"]["value"] >= golden["production"]["accuracy"]["value"]
    print("held-out:", json.dumps({k: v["value"] for k, v in cand.items()}), "official:",
          json.dumps({k: v["value"] for k, v in prod.items()}), file=sys.stderr)  # fmt: skip
    store = Store(db, read_only=True)
    models = {m["version"]: m for m in store.models()}
    assert models[OFFICIAL_VERSION]["status"] == "retired"
    new = models[s["candidate"]]
    assert new["status"] == "production" and new["parent"] == OFFICIAL_VERSION and new["data_hash"] == s["data_hash"]
    weights = store.model_weights(new)
    assert (
        weights.is_file()
        and _sha(weights) == new["weights_sha256"]
        and new["calibration"]["official"]["method"] == "platt"
    )
    assert not list((db.parent / "models" / ".training").glob("*"))  # finished: no checkpoint left behind
    assert Path(s["report"]).is_file()


def test_nothing_new_means_nothing_trained(promoted, judgments):
    from jndqa.flows.retrain import RetrainSettings, retrain

    db, first = promoted
    before = _registry(Store(db, read_only=True))
    again = retrain([judgments["train"]], db, RetrainSettings(golden=str(judgments["golden"]), protocol="official"),
                    log=lambda _: None)  # fmt: skip
    assert again["status"] == "skipped" and first["training_id"] in again["reason"]
    assert again["files"][0]["new"] == 0 and again["files"][0]["known"] == again["files"][0]["rows"]
    assert _registry(Store(db, read_only=True)) == before


def test_nightly_scores_with_the_promoted_model(promoted, tmp_path, judgments):
    from jndqa.flows.nightly import run_nightly

    db, s = promoted
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in judgments["items"][:2]:
        shutil.copy(p, corpus / p.name)
    config = tmp_path / "night.yaml"
    config.write_text("corpus:\n  root: corpus/\nvariants:\n  - codec: libmp3lame\n    bitrate: 32k\n"
                      "metric:\n  model: production\n  protocol: official\noutput: out/\n")  # fmt: skip
    summary = run_nightly(config, db=str(db))
    assert summary["status"] == "passed" and summary["model"] == s["candidate"]
    rows = Store(db, read_only=True).run_scores(summary["run_id"])
    assert len(rows) == 2 and {r["model_id"] for r in rows} == {s["candidate"]}
    assert all(r["p_jnd_calibrated"] for r in rows)  # official protocol: the model's calibration applies
    # p_jnd is the stored calibration applied to the distance.
    from jndqa.metric import calibrator_from_dict

    cal = calibrator_from_dict(s["calibration"])
    assert [r["p_jnd"] for r in rows] == pytest.approx([float(cal(r["distance"])) for r in rows], abs=1e-9)


def test_poisoned_judgments_are_rejected_and_production_is_untouched(promoted, judgments, tmp_path):
    from jndqa.flows.retrain import RetrainSettings, retrain

    db, s = promoted
    copy = tmp_path / "store"
    shutil.copytree(db.parent, copy)
    store = Store(copy / "jndqa.duckdb")
    before = _registry(store)
    weights = store.model_weights(store.production_model())
    weights_bytes = weights.read_bytes()
    r = retrain([judgments["poisoned"]], copy / "jndqa.duckdb",
                RetrainSettings(golden=str(judgments["golden"]), protocol="official"),
                log=lambda _: None)  # fmt: skip
    assert r["status"] == "rejected", r["reason"]
    assert r["production"] == s["candidate"] == store.production_model()["version"]
    assert weights.read_bytes() == weights_bytes
    after = _registry(store)
    assert after[: len(before)] == before or set(before) <= set(after)
    rejected = [m for m in store.models() if m["version"] == r["candidate"]]
    assert rejected and rejected[0]["status"] == "rejected" and rejected[0]["reason"] == r["reason"]


def test_every_bad_row_is_quarantined_and_good_rows_stored_once(judgments, tmp_path):
    from jndqa.flows.retrain import ingest

    folder = tmp_path / "j"
    (folder / "audio").mkdir(parents=True)
    a, b, c = (folder / "audio" / n for n in ("a.wav", "b.wav", "c.wav"))
    for p, k in ((a, 0), (b, 1), (c, 2)):
        shutil.copy(judgments["items"][k], p)
    (folder / "audio" / "junk.wav").write_bytes(b"not audio")
    (tmp_path / "outside.wav").write_bytes(a.read_bytes())
    lines = [
        "ref,test,label,worker",
        "audio/a.wav,audio/b.wav,1,w1",  # good
        "audio/a.wav,audio/c.wav,0,w1",  # good
        "audio/a.wav,audio/b.wav,0,w2",  # good: another worker disagrees
        "audio/a.wav,audio/b.wav,1,w1",  # duplicate of line 2
        "audio/a.wav,audio/b.wav,2,w1",  # bad label
        "audio/a.wav,audio/b.wav,yes,w1",  # bad label
        "audio/a.wav,audio/a.wav,1,w1",  # self-pair judged different
        "audio/a.wav,audio/missing.wav,1,w1",  # missing audio
        "audio/a.wav,audio/junk.wav,1,w1",  # unreadable audio
        "audio/a.wav,../outside.wav,1,w1",  # escapes the folder
        "audio/a.wav,1",  # malformed
    ]
    path = folder / "judgments.csv"
    path.write_text("\n".join(lines) + "\n")
    store = Store(tmp_path / "db" / "jndqa.duckdb")
    files, failures = ingest(store, [path])
    assert failures == [] and files[0]["rows"] == 3 and files[0]["new"] == 3 and files[0]["quarantined"] == 8
    q = {row["line"]: row for row in store.quarantined()}
    assert {line: q[line]["kind"] for line in q} == {
        5: "duplicate", 6: "bad-label", 7: "bad-label", 8: "self-pair", 9: "missing-audio",
        10: "unreadable-audio", 11: "path-escape", 12: "malformed",
    }  # fmt: skip
    assert all(row["reason"] and row["raw"] == lines[row["line"] - 1] for row in q.values())
    assert "missing.wav" in q[9]["reason"] and "junk.wav" in q[10]["reason"]
    # Ingested twice (and once more from a renamed copy): every good row is stored once.
    files, _ = ingest(store, [path])
    shutil.copy(path, folder / "renamed.csv")
    files2, _ = ingest(store, [folder / "renamed.csv"])
    assert files[0]["new"] == 0 and files2[0]["new"] == 0
    assert len(store.judgments()) == 3 and len(store.quarantined()) == 8
    assert {(j["label"], j["worker"]) for j in store.judgments()} == {(1, "w1"), (0, "w1"), (0, "w2")}


def test_retrain_command_and_models(promoted, prefect_env, tmp_path, judgments):
    db, s = promoted
    r = subprocess.run([JNDQA, "models", "--db", str(db), "--json"], capture_output=True, text=True, env=prefect_env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    models = {m["version"]: m["status"] for m in json.loads(r.stdout)["models"]}
    assert models[s["candidate"]] == "production" and models[OFFICIAL_VERSION] == "retired"
    r = subprocess.run([JNDQA, "retrain", str(tmp_path / "nope.csv"), "--db", str(db)], capture_output=True,
                       text=True, env=prefect_env, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no such judgment or rating file" in r.stderr


def test_training_report_loads_in_chromium(promoted, browser):
    _, s = promoted
    load = browser.load(Path(s["report"]), ready="document.querySelectorAll('.js-plotly-plot').length === 2")
    assert load.errors == [] and load.dialogs == []
    text = browser.evaluate("document.body.innerText")
    assert "PROMOTED" in text and s["candidate"] in text and "expected calibration error" in text
    # loss curves (training, validation, accuracy) and the reliability diagram (diagonal, candidate, production)
    traces = browser.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => e.data.length)")
    assert traces == [3, 3]


@pytest.mark.slow
def test_interrupted_training_leaves_registry_and_weights_and_resumes(judgments, tmp_path, prefect_env, sample):
    """SIGKILL in the middle of a whole-network training: nothing registered, production's weights
    byte for byte as before; the rerun resumes from the last committed epoch."""
    from jndqa.datasets import simulate_judgments

    small = {"families": ("noise", "eq"), "levels": 5, "trials": 6, "max_seconds": 2.0}
    items = make_items(tmp_path / "items", sample, 5, offset=20)
    first = simulate_judgments(items, tmp_path / "first", seed=3, **small).csv
    second = simulate_judgments(items, tmp_path / "second", seed=4, **small).csv
    db = tmp_path / "store" / "jndqa.duckdb"
    base = [JNDQA, "retrain", "--db", str(db), "--golden", str(judgments["golden"]), "--json", "--protocol", "official"]
    r = subprocess.run([*base[:2], str(first), *base[2:]], env=prefect_env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    store = Store(db)
    before = _registry(store)
    production = store.production_model()
    weights = store.model_weights(production)
    weights_sha = _sha(weights) if weights else None

    cmd = [*base[:2], str(second), *base[2:], "--mode", "all", "--epochs", "4"]
    proc = subprocess.Popen(cmd, env=prefect_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    epoch = -1
    while time.monotonic() < deadline and proc.poll() is None and epoch < 1:
        for f in (db.parent / "models" / ".training").glob("*/state.json"):
            epoch = json.loads(f.read_text())["epoch"]
        time.sleep(0.1)
    assert proc.poll() is None, f"training ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # midway: epoch 1 of 4 committed
    proc.wait(30)
    assert _registry(Store(db, read_only=True)) == before
    assert Store(db, read_only=True).production_model()["version"] == production["version"]
    assert (_sha(weights) if weights else None) == weights_sha

    r = subprocess.run(cmd, env=prefect_env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 1
    assert summary["status"] in ("promoted", "rejected") and summary["candidate"] in {m[0] for m in
                                                                                      _registry(Store(db))}  # fmt: skip


def test_deployments_resolve_and_the_scheduled_retrain_skips_known_judgments(promoted, judgments, tmp_path):
    import importlib

    import yaml
    from prefect import Flow

    spec = yaml.safe_load((Path(__file__).parents[1] / "prefect.yaml").read_text())
    names = set()
    for d in spec["deployments"]:
        module, name = d["entrypoint"].split(":")
        fn = getattr(importlib.import_module(module), name)
        assert isinstance(fn, Flow) and set(d["parameters"]) <= set(fn.parameters.properties), d["name"]
        names.add(d["name"])
    assert names == {"nightly", "retrain"}

    from jndqa.flows.retrain import scheduled_retrain

    db, s = promoted
    copy = tmp_path / "store"
    shutil.copytree(db.parent, copy)
    settings = {"golden": str(judgments["golden"]), "protocol": "official"}
    state = scheduled_retrain(str(Path(judgments["train"]).parent), str(copy / "jndqa.duckdb"), settings,
                              return_state=True)  # fmt: skip
    assert state.is_completed() and "skipped" in state.message and "no new judgments" in state.message
    assert Store(copy / "jndqa.duckdb", read_only=True).production_model()["version"] == s["candidate"]
    empty = tmp_path / "empty"
    empty.mkdir()
    state = scheduled_retrain(str(empty), str(copy / "jndqa.duckdb"), return_state=True)
    assert state.is_completed() and "no judgment files" in state.message
