"""The fast student of the dense protocol: the committed weights reproduce their recorded scores,
the training command runs end to end on a tiny set (real ffmpeg codecs, a real DuckDB teacher
cache), the registry and the configs select it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from jndqa.metric.student import STUDENT_VERSION, load_student, reference_pairs, student_weights


@pytest.mark.usefixtures("release")
def test_committed_student_reproduces_its_recorded_scores():
    from jndqa.metric import DPAMScorer

    path = student_weights()
    recorded = json.loads(path.with_suffix(".json").read_text())
    student = load_student(path)
    assert student.model_id == STUDENT_VERSION == recorded["model_id"]
    assert student.metadata["parent"] == "dpam-scratch-official"
    assert student.metadata["teacher_data_hash"] == recorded["teacher_data_hash"]
    scorer = DPAMScorer("scratch", "student", student=student)
    assert DPAMScorer("scratch", "student").student.metadata == student.metadata  # the default
    got = [scorer.score(r, t).distance for r, t in reference_pairs()]
    # Recorded by jndqa.flows.student right after training (see the .json next to the weights).
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


@pytest.mark.usefixtures("release")
def test_inference_layers_give_the_trained_layers_values():
    """The scorer's layers (``torch.inference_mode``: layer 0 folded from the covariance of the
    input's centred copies, in-place normalisation) against the layers the student is trained
    with (``torch.no_grad``), per layer term, for the committed student and every layer à trous;
    a DC offset and a digitally silent reference included.

    The two paths compute the same function but sum in a different order, so in float32 they
    differ by float32 rounding (about 3e-5 relative, depending on the thread count). Both run in
    float64 here (the student converted with ``.double()``; the inference path keeps the dtype,
    asserted), where the paths agree to about 3e-13. The tolerance, 1e-10 relative, is float64's
    unit roundoff (1.1e-16) times the longest sums involved (means over 66,150 steps: 7e-12 as a
    worst-case bound) times a margin for the 14 layers compounding; it catches each mutation this
    test exists for, all measured: the layer-0 covariance not centred (4e-3), epsilon changed by
    1 % in layer 0 (4e-9; the variance of int16-scale signals dwarfs epsilon there) or in the
    later layers (1e-4)."""
    import torch

    from jndqa.metric import DPAM
    from jndqa.metric.student import StudentDPAM

    ref, test = (torch.from_numpy(x).double() for x in reference_pairs()[1])
    ref = ref + 500.0  # DC: the covariance is of centred copies
    tests = torch.stack([test + 500.0, torch.roll(ref, 7), torch.zeros_like(ref)])
    for student in (load_student(student_weights()), StudentDPAM(DPAM.official("scratch"), dense_from=0)):
        student = student.double()
        for r in (ref, torch.zeros_like(ref)):
            with torch.no_grad():
                trained = student.layer_distances(r, tests)
            with torch.inference_mode():
                fast = student.layer_distances(r, tests)
                assert {a.dtype for a in student.activations(tests[:, :4096])} == {torch.float64}
            assert trained.dtype == fast.dtype == torch.float64
            assert fast.numpy() == pytest.approx(trained.numpy(), rel=1e-10, abs=1e-15)


@pytest.mark.usefixtures("release")
def test_training_command_runs_end_to_end_on_a_tiny_set(tmp_path, sample, capsys):
    from jndqa.flows import student as training

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, name in enumerate(("ref", "2", "4", "ref")):
        x = np.roll(sample[name], 3000 * k)[: int(2.5 * 22050)] / 32768.0
        sf.write(corpus / f"item{k}.wav", x, 22050, subtype="PCM_16")
    out = tmp_path / "student.safetensors"
    argv = ["--corpus", str(corpus), "--db", str(tmp_path / "teacher.duckdb"), "--out", str(out), "--tiny",
            "--steps", "50", "--epochs", "1"]  # fmt: skip
    assert training.main(argv) == 0
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
        assert con.execute("SELECT count(*) FROM cache WHERE namespace = 'teacher'").fetchone()[0] == 16
    assert training.main(argv) == 0
    again = load_file(out)
    assert again.keys() == weights.keys() and all(bool((again[k] == weights[k]).all()) for k in weights)
    assert load_student(out).metadata == student.metadata
    # A second corpus with its own pair counts; continue from the saved student with a 3-tap low-pass.
    # The first corpus's pairs are the tiny run's (same items, seed and counts), so only the
    # second corpus's 1 segment x 3 degradations are new teacher scores.
    extra = tmp_path / "extra"
    extra.mkdir()
    sf.write(extra / "other.wav", np.roll(sample["ref"], 9000)[: int(2.5 * 22050)] / 32768.0, 22050, subtype="PCM_16")
    out3 = tmp_path / "student3.safetensors"
    assert training.main(["--corpus", str(corpus), str(extra), "--segments", "2", "1", "--degradations", "2", "3",
                        "--db", str(tmp_path / "teacher.duckdb"), "--out", str(out3), "--init", str(out),
                        "--blur-taps", "3", "--steps", "0", "--epochs", "1", "--held-out", "other"]) == 0  # fmt: skip
    log = capsys.readouterr().out
    assert "teacher data: 19 pairs" in log and "held-out   pairs     3" in log
    with Store(tmp_path / "teacher.duckdb", read_only=True).connect() as con:
        assert con.execute("SELECT count(*) FROM cache WHERE namespace = 'teacher'").fetchone()[0] == 19
    relaid = load_student(out3)
    assert relaid.blur.flatten().tolist() == [0.25, 0.5, 0.25] and relaid.dense_from == student.dense_from
    assert json.loads(relaid.metadata["heldout_items"]) == ["other.wav"]


@pytest.mark.usefixtures("release")
def test_student_low_pass_is_part_of_the_saved_layout(tmp_path):
    import torch

    from jndqa.metric import DPAM
    from jndqa.metric.student import StudentDPAM, save_student

    official = DPAM.official("scratch")
    ref, test = (torch.from_numpy(x) for x in reference_pairs()[2])
    five = StudentDPAM(official, blur=(1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16))
    loaded = load_student(save_student(five, tmp_path / "five.safetensors"))
    assert loaded.blur.flatten().tolist() == [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16]
    with torch.no_grad():
        three = StudentDPAM(official, blur=(0.25, 0.5, 0.25))
        d5, d5_loaded, d3 = (float(s(ref, test[None])[0]) for s in (five, loaded, three))
    assert d5_loaded == d5 and abs(d5 / d3 - 1) > 1e-3  # a different low-pass, a different network
    for bad in ((0.5, 0.5), (0.25, 0.5, 0.5)):
        with pytest.raises(ValueError, match="odd number of taps summing to 1"):
            StudentDPAM(official, blur=bad)


def test_load_student_refuses_a_file_of_another_format_naming_it(tmp_path):
    """The retired format 1 (fixed statistics in the deep layers) is not read as the current layout."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    meta = {"format": "jndqa-dpam-student/1", "model_id": "dpam-dense-student-v1", "per_signal_layers": "10"}
    save_file({"kernels.0": torch.zeros(32, 1, 3)}, str(path), metadata=meta)
    with pytest.raises(ValueError, match=r"old\.safetensors: not a student model file .*'jndqa-dpam-student/1'"):
        load_student(path)


@pytest.mark.usefixtures("release")
def test_finetune_resumes_exactly_where_it_stopped(tmp_path):
    """Two epochs in one go, and one epoch, a stop, then a resumed run from the checkpoint: the
    same parameters to the bit (the Adam moments travel with the checkpoint)."""
    import torch

    from jndqa.metric import DPAM
    from jndqa.metric.student import StudentDPAM, finetune

    torch.use_deterministic_algorithms(True)
    official = DPAM.official("scratch")
    rng = np.random.default_rng(0)
    segments = []
    for k in range(3):
        ref = (rng.standard_normal(11025) * 3000).astype(np.float32)
        tests = np.stack([ref + (rng.standard_normal(11025) * s).astype(np.float32) for s in (100, 1000)])
        segments.append((ref, tests, np.array([1.0, 2.0]) * (k + 1), np.full((2, 14), 0.1 * (k + 1))))

    def run(checkpoint, seconds):
        student = StudentDPAM(official, model_id="t")
        finetune(student, segments, epochs=2, lr=1e-3, checkpoint=checkpoint, seconds=seconds)
        return {k: v.clone() for k, v in student.state_dict().items()}

    whole = run(None, None)
    ckpt = tmp_path / "ckpt.safetensors"
    first = run(ckpt, 0.0)  # stops after the first epoch
    assert (tmp_path / "ckpt.safetensors.adam").is_file()
    resumed = run(ckpt, None)
    assert any(not torch.equal(first[k], whole[k]) for k in whole)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_student_corpus_builder_renders_real_sources_and_skips_a_missing_one(tmp_path, monkeypatch):
    """One source of each kind (fluidsynth, the soundtrack, the effects, espeak-ng, festival), the
    real Debian packages; a missing MIDI file is reported and skipped, not replaced."""
    from jndqa.datasets import student_corpus as sc

    monkeypatch.setattr(sc, "MIDI_EXCERPTS", [("music000.mid", 2.0), ("no-such.mid", 2.0)])
    monkeypatch.setattr(sc, "SOUNDTRACK_EXCERPTS", [("introzik.ogg", 10.0)])
    monkeypatch.setattr(sc, "ESPEAK_VOICES", [("de", 150, 45, 0)])
    monkeypatch.setattr(sc, "FESTIVAL", [("voice_kal_diphone", 3)])
    lines: list[str] = []
    rows = sc.build_student_corpus(tmp_path / "extra", log=lines.append)
    got = {r["path"]: r["source"] for r in rows}
    assert list(got) == ["music/music000_002s.wav", "music/introzik_010s.wav", "music/fb_effects.wav",
                         "speech/espeak_de.wav", "speech/festival_kal_3.wav"]  # fmt: skip
    assert any("music/no-such_002s.wav: skipped" in line for line in lines)
    for rel in got:
        info = sf.info(tmp_path / "extra" / rel)
        assert 2.0 < info.duration <= 15.0, rel
    assert sf.info(tmp_path / "extra" / "music/music000_002s.wav").duration == pytest.approx(8.0, abs=1e-3)
    with open(tmp_path / "extra" / "corpus.csv") as f:
        assert f.read().count("\n") == 1 + len(rows)


def test_registry_and_config_select_the_student(tmp_path):
    from jndqa.flows.config import ConfigError, load_config
    from jndqa.flows.student import register_student
    from jndqa.store import Store

    store = Store(tmp_path / "jndqa.duckdb")
    # A store from before v3 lists the earlier students as available: registering v3 retires them.
    for old in ("dpam-dense-student-v1", "dpam-dense-student-v2"):
        store.add_model({"version": old, "model_id": old, "kind": "student"}, status="available")
    register_student(store)
    assert store.model("dpam-dense-student-v1")["status"] == "retired"
    assert "replaced by dpam-dense-student-v2" in store.model("dpam-dense-student-v1")["reason"]
    assert store.model("dpam-dense-student-v2")["status"] == "retired"
    assert "replaced by dpam-dense-student-v3" in store.model("dpam-dense-student-v2")["reason"]
    row = store.model(STUDENT_VERSION)
    assert row["status"] == "available" and row["parent"] == "dpam-scratch-official"
    assert row["data_hash"] == json.loads(student_weights().with_suffix(".json").read_text())["teacher_data_hash"]
    assert store.production_model() is None  # available, never production (no model was seeded here)
    cfg = tmp_path / "c.yaml"
    text = "corpus:\n  root: .\nvariants:\n  - codec: libopus\nmetric:\n  model: {}\n"
    cfg.write_text(text.format(STUDENT_VERSION))
    assert STUDENT_VERSION == "dpam-dense-student-v3" and load_config(cfg).metric.protocol == "student"
    for old in ("dpam-dense-student-v1", "dpam-dense-student-v2"):
        cfg.write_text(text.format(old))
        with pytest.raises(ConfigError, match=rf"{old} is retired.*model: dpam-dense-student-v3"):
            load_config(cfg)
