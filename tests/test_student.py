"""The fast student of the dense protocol: the committed weights reproduce their recorded scores,
the training script runs end to end on a tiny set (real ffmpeg codecs, a real DuckDB teacher
cache), the registry and the configs select it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.metric.student import STUDENT_VERSION, load_student, reference_pairs, student_weights

ROOT = Path(__file__).parents[1]


@pytest.mark.usefixtures("release")
def test_committed_student_reproduces_its_recorded_scores():
    from jndqa.metric import DPAMScorer

    path = student_weights()
    recorded = json.loads(path.with_suffix(".json").read_text())
    student = load_student(path)
    assert student.model_id == STUDENT_VERSION == recorded["model_id"]
    assert student.metadata["parent"] == "dpam-scratch-official"
    assert student.metadata["teacher_data_hash"] == recorded["teacher_data_hash"]
    scorer = DPAMScorer("scratch", "student")
    got = [scorer.score(r, t).distance for r, t in reference_pairs()]
    # Recorded by benchmarks/train_student.py right after training (see the .json next to the weights).
    assert got == pytest.approx(recorded["recorded"]["distances"], rel=1e-4)
    assert got == sorted(got)  # more noise, larger distance


@pytest.mark.usefixtures("release")
def test_student_scores_windows_and_channels_like_dense():
    from jndqa.metric import DPAMScorer

    ref, test = reference_pairs(seconds=10.0)[2]
    stereo_ref, stereo_test = np.stack([ref, ref * 0.5], 1), np.stack([test, ref * 0.5], 1)
    s = DPAMScorer("scratch", "student").score(stereo_ref, stereo_test)
    assert [(w.start, w.end) for w in s.windows] == [(0.0, 8.0), (2.0, 10.0)]  # the dense protocol's windows
    assert s.channels[1] == 0.0 and s.worst_channel == 0 and s.distance == s.channels[0]


@pytest.mark.usefixtures("release")
def test_student_with_every_layer_a_trous_is_the_dense_protocol():
    """``dense_from=0``: no BlurPool layer, every layer dilated by 2**i on the sample grid, i.e. the
    dense protocol itself; with the official weights it must give the dense distance (one 3 s
    window) and per-layer terms."""
    import torch

    from jndqa.metric import DPAM, DPAMScorer
    from jndqa.metric.student import StudentDPAM

    ref, test = reference_pairs()[1]
    dense = DPAMScorer("scratch", "dense").score(ref, test)
    student = StudentDPAM(DPAM.official("scratch"), dense_from=0)
    with torch.no_grad():
        layers = student.layer_distances(torch.from_numpy(ref), torch.from_numpy(test)[None])[0]
    assert layers.double().numpy() == pytest.approx(dense.layer_terms, rel=1e-4)
    assert float(layers.sum()) == pytest.approx(dense.distance, rel=1e-4)


def _train_script():
    spec = importlib.util.spec_from_file_location("train_student", ROOT / "benchmarks" / "train_student.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_student"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.usefixtures("release")
def test_training_script_runs_end_to_end_on_a_tiny_set(tmp_path, sample, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, name in enumerate(("ref", "2", "4", "ref")):
        x = np.roll(sample[name], 3000 * k)[: int(2.5 * 22050)] / 32768.0
        sf.write(corpus / f"item{k}.wav", x, 22050, subtype="PCM_16")
    out = tmp_path / "student.safetensors"
    argv = ["--corpus", str(corpus), "--db", str(tmp_path / "teacher.duckdb"), "--out", str(out), "--tiny",
            "--steps", "50", "--epochs", "1"]  # fmt: skip
    script = _train_script()
    assert script.main(argv) == 0
    first = capsys.readouterr().out
    student = load_student(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert student.metadata["teacher_data_hash"] == meta["teacher_data_hash"]
    assert len(meta["recorded"]["distances"]) == 4
    assert "teacher data: 16 pairs" in first and "epoch 1: loss" in first  # 4 items x 2 segments x 2 degradations
    # A second run reuses every cached teacher score and writes the same weights (deterministic;
    # compared tensor by tensor: safetensors' header orders its metadata keys freely).
    from safetensors.torch import load_file

    weights = load_file(out)
    from jndqa.store import Store

    with Store(tmp_path / "teacher.duckdb", read_only=True).connect() as con:
        assert con.execute("SELECT count(*) FROM teacher_scores").fetchone()[0] == 16
    assert script.main(argv) == 0
    again = load_file(out)
    assert again.keys() == weights.keys() and all(bool((again[k] == weights[k]).all()) for k in weights)
    assert load_student(out).metadata == student.metadata


def test_registry_and_config_select_the_student(tmp_path):
    from jndqa.flows.config import load_config
    from jndqa.flows.student import register_student
    from jndqa.store import Store

    store = Store(tmp_path / "jndqa.duckdb")
    register_student(store)
    row = store.model(STUDENT_VERSION)
    assert row["status"] == "available" and row["parent"] == "dpam-scratch-official"
    assert row["data_hash"] == json.loads(student_weights().with_suffix(".json").read_text())["teacher_data_hash"]
    assert store.production_model()["version"] != STUDENT_VERSION
    cfg = tmp_path / "c.yaml"
    cfg.write_text("corpus:\n  root: .\nvariants:\n  - codec: libopus\nmetric:\n  model: dpam-dense-student-v1\n")
    assert load_config(cfg).metric.protocol == "student"
