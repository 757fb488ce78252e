"""``jndqa agree``: simulated MUSHRA ratings of real speech (the release's sample clips), scored by
DPAM, agreement measured, the page drawn in a real Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

JNDQA = str(Path(sys.executable).parent / "jndqa")
READY = "Array.from(document.querySelectorAll('[data-figure]')).every(e => e.querySelector('.main-svg'))"
PLOTS = "Array.from(document.querySelectorAll('[data-figure]')).map(e => (e.data || []).length)"
SHOTS = Path(__file__).parent / "output"


@pytest.fixture(scope="module")
def mushra(tmp_path_factory, sample):
    """Three items (the release's three clips, 2.5 s) under noise and mp3 ladders of 4 levels, rated by 4
    simulated listeners, one of whom fails the hidden-reference post-screening."""
    from jndqa.datasets import simulate_mushra

    root = tmp_path_factory.mktemp("agree")
    items = []
    for name in ("ref", "2", "4"):
        path = root / "items" / f"clip{name}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, sample[name][: int(2.5 * 22050)] / 32768.0, 22050, subtype="PCM_16")
        items.append(path)
    summary = simulate_mushra(items, root / "test", listeners=4, families=("noise", "mp3"), levels=4, seed=0,
                              unreliable=3, max_seconds=2.5)  # fmt: skip
    return root, summary


@pytest.mark.usefixtures("release")
def test_agree_measures_dpam_against_simulated_listeners(mushra, browser):
    root, sim = mushra
    r = subprocess.run([JNDQA, "agree", str(sim.csv), "--metrics", "dpam,no-such-metric", "--out", str(root / "out"),
                        "--db", str(root / "r.duckdb"), "--bootstrap", "300", "--json"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 3, r.stderr  # an unknown metric and a screened-out listener: done, with failures
    out = json.loads(r.stdout)
    # 3 items x (2 families x 4 levels + the low anchor); the hidden references are not stimuli.
    assert (out["stimuli"], out["items"], out["conditions"], out["scale"]) == (27, 3, 9, "mushra")
    # 4 listeners x 3 items x 2 families x 6 stimuli (4 levels, the hidden reference, the anchor); the
    # unreliable listener's 36 rows are quarantined by the post-screening.
    assert out["listeners"] == 3 and out["quarantined"] == 36
    [dpam] = out["metrics"]
    assert dpam["metric"] == "dpam" and dpam["protocol"] == "dense" and dpam["scored"] == 27
    # DPAM dense on its own ground (noise and mp3 ladders): it ranks each recording's versions as the
    # simulated listeners do. Measured here: see the closing note; the bound leaves room for machines.
    assert dpam["within_item_spearman"] > 0.7 and dpam["stimulus_spearman"] > 0.5
    lo, hi = dpam["stimulus_spearman_ci"]
    assert lo <= dpam["stimulus_spearman"] <= hi
    assert [f["metric"] for f in out["failures"]] == ["no-such-metric"]
    assert "no-such-metric" in out["failures"][0]["reason"]
    from jndqa.store import Store

    stored = Store(root / "r.duckdb", read_only=True).ratings()
    assert len(stored) == 3 * 3 * 2 * 6  # the 3 listeners kept, hidden references included
    load = browser.load(Path(out["page"]), ready=READY)
    assert load.errors == [] and load.dialogs == []
    assert "27 stimuli (3 items × 9 conditions), 3 listeners" in browser.evaluate("document.body.innerText")
    assert browser.evaluate(PLOTS) == [1, 1]  # the per-system means, DPAM's scatter
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "agree.png")


def test_agree_without_usable_ratings_exits_2(tmp_path):
    (tmp_path / "r.csv").write_text("ref,test,score\nmissing.wav,gone.wav,50\n")
    r = subprocess.run([JNDQA, "agree", str(tmp_path / "r.csv"), "--scale", "mushra"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no usable ratings" in r.stderr
    r = subprocess.run([JNDQA, "agree", str(tmp_path / "nope.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nope.csv" in r.stderr


def test_score_stimuli_aligns_and_records_what_it_cannot_score(tmp_path):
    """A metric that needs alignment refuses a test that follows its reference only in its envelope."""
    from types import SimpleNamespace

    from jndqa.flows.agree import score_stimuli
    from jndqa.metric.plugin import Metric, MetricScore

    class Energy(Metric):  # a tiny metric of this test: the mean absolute difference (needs alignment)
        id, version, rate, channels, needs_alignment, orientation = "absdiff", "1", 16000, 1, True, "distance"

        def score(self, ref, tests, rate):
            return [MetricScore(float(np.mean(np.abs(ref - t)))) for t in tests]

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    env = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 4
    ref = env * rng.standard_normal(t.size) * 0.1
    late = np.concatenate([np.zeros(300), ref])
    vocoded = env * rng.standard_normal(t.size) * 0.1  # same envelope, other waveform
    for name, x in (("ref", ref), ("late", late), ("vocoded", vocoded)):
        sf.write(tmp_path / f"{name}.wav", x, 16000, subtype="FLOAT")
    stimuli = [SimpleNamespace(ref=tmp_path / "ref.wav", test=tmp_path / f"{n}.wav") for n in ("late", "vocoded")]
    stimuli.append(SimpleNamespace(ref=tmp_path / "ref.wav", test=tmp_path / "missing.wav"))
    res = score_stimuli(Energy(), stimuli)
    assert res.values[0] == pytest.approx(0.0, abs=1e-7) and res.offsets[0] == 300
    assert res.values[1] is None and res.values[2] is None
    assert "envelope" in res.failures[0]["reason"] and res.failures[1]["test"].endswith("missing.wav")


@pytest.mark.usefixtures("release")
def test_agree_scores_with_a_registered_model(mushra, tmp_path):
    """``--model production --db``: DPAM scores with the registry's production model. Here a model whose
    channel weights are the release's doubled: every distance doubles exactly, so every rank correlation is
    the release's, and the reported version is the registered weights'."""
    import torch

    from jndqa.datasets.corpus import file_sha256
    from jndqa.flows.models import seed_registry
    from jndqa.metric import DPAM, save_model
    from jndqa.store import Store

    _, sim = mushra
    lines = sim.csv.read_text().splitlines()
    one = sim.csv.with_name("one-item.csv")  # one recording's page: 9 stimuli, quick
    first_item = lines[1].split(",")[4]
    one.write_text("\n".join([lines[0], *(ln for ln in lines[1:] if ln.split(",")[4] == first_item)]) + "\n")
    net = DPAM.official("scratch")
    with torch.no_grad():
        for w in net.channel_weights:
            w.mul_(2.0)
    db = tmp_path / "store" / "jndqa.duckdb"
    weights = save_model(net, tmp_path / "store" / "models" / "double.safetensors", model_id="double")
    store = Store(db)
    seed_registry(store)
    store.add_model({"version": "double", "model_id": "double", "kind": "scratch", "parent": None,
                     "weights": "models/double.safetensors", "weights_sha256": file_sha256(weights)})  # fmt: skip
    store.decide_model("double", "production", "test: the release's channel weights doubled")
    out = {}
    for model in ("scratch", "production"):
        r = subprocess.run([JNDQA, "agree", str(one), "--db", str(db), "--model", model, "--bootstrap", "100",
                            "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert r.returncode in (0, 3), r.stderr
        out[model] = json.loads(r.stdout)["metrics"][0]
    assert out["production"]["version"] == file_sha256(weights)[:16] != out["scratch"]["version"]
    for key in ("stimulus_spearman", "within_item_spearman", "stimulus_kendall"):
        assert out["production"][key] == out["scratch"][key]
    r = subprocess.run([JNDQA, "agree", str(one), "--model", "production"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2 and "a registered model needs --db" in r.stderr
