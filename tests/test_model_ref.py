"""A model's identity (:class:`jndqa.metric.ModelRef`): built in one place, used for every key."""

from __future__ import annotations

import pickle

import pytest

from jndqa.metric import OFFICIAL_MODEL_VERSION, ModelRef, protocol_rule


def test_official_identity_and_keys():
    m = ModelRef.official("scratch")
    assert ModelRef.official("dpam-scratch-official") == m
    assert m.key == ("dpam-scratch-official", OFFICIAL_MODEL_VERSION, "dense")
    assert OFFICIAL_MODEL_VERSION == "dpam-0.0.4"  # the release's version (dpam 0.0.4 on the package index)
    # The teacher cache's id, as the committed student's metadata records it.
    assert m.cache_id == "dense:w8h4:dpam-scratch-official:dpam-0.0.4"
    assert m.registry_row()["version"] == "dpam-scratch-official" and m.registry_row()["kind"] == "scratch"
    # Window settings other than the defaults are part of the dense key; the tolerance is not.
    assert ModelRef.official("scratch", window_seconds=4, hop_seconds=2).protocol_key == "dense:w4h2"
    assert ModelRef.official("scratch", "official", window_seconds=4, hop_seconds=2).protocol_key == "official"
    assert ModelRef.student(window_seconds=4, hop_seconds=2).protocol_key == "student:w4h2"
    assert ModelRef.official("scratch", length_tolerance=10).key == m.key
    assert pickle.loads(pickle.dumps(m)) == m and len({m, ModelRef.official("scratch")}) == 1


def test_bad_names_and_settings_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of scratch, finetune"):
        ModelRef.official("nope")
    with pytest.raises(ValueError, match="available: dense, official, student"):
        ModelRef.official("scratch", "fast")
    with pytest.raises(ValueError, match="hop_seconds"):
        ModelRef.official("scratch", window_seconds=2, hop_seconds=4)


def test_registered_and_student(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really weights")
    import hashlib

    digest = hashlib.sha256(b"not really weights").hexdigest()
    r = ModelRef.registered("dpam-scratch-ft-abc", weights, protocol="official")
    assert r.key == ("dpam-scratch-ft-abc", digest[:16], "official") and r.weights == str(weights)
    with pytest.raises(ValueError, match="seed registry row"):
        r.registry_row()
    s = ModelRef.student(protocol="dense")  # the student's protocol is always its own
    assert s.protocol == "student" and s.id.startswith("dpam-dense-student-")
    assert ModelRef.for_protocol("scratch", "student") == s
    with pytest.raises(ValueError, match=r"ModelRef\.student"):
        ModelRef.official("scratch", "student")


@pytest.mark.usefixtures("release")
def test_each_protocol_owns_its_preprocessing():
    import numpy as np

    assert protocol_rule("official").mono and not protocol_rule("dense").mono
    stereo = np.stack([np.linspace(-0.5, 0.5, 22050), np.zeros(22050)], axis=1).astype(np.float32)
    for protocol, shape in (("official", (22050,)), ("dense", (22050, 2)), ("student", (22050, 2))):
        scorer = ModelRef.for_protocol("scratch", protocol).scorer()
        assert scorer.rule is protocol_rule(protocol)
        assert scorer.prepare(stereo, 22050).shape == shape
        assert scorer.prepare(stereo, 22050, downmix=True).shape == (22050,)
        if protocol == "official":  # mixed to mono, on the int16 scale
            assert scorer.prepare(stereo, 22050)[-1] == pytest.approx(0.25 * 32768, abs=1)


def test_each_protocol_applies_its_own_calibration(tmp_path, release):
    """A model file keeps one calibration per protocol key; a scorer applies the one fitted under its own
    protocol (then p_jnd is the calibrator's and p_jnd_calibrated is True), and none fitted under another."""
    import numpy as np
    import torch

    from jndqa.metric import DPAM, load_calibration, load_calibrations, save_model
    from jndqa.metric.calibration import PlattCalibrator

    dense_cal, official_cal = PlattCalibrator(a=2.0, b=1.0), PlattCalibrator(a=0.5, b=-1.0)
    both = save_model(DPAM.official("scratch", release), tmp_path / "both.safetensors",
                      calibrations={"dense": dense_cal, "official": official_cal})  # fmt: skip
    legacy = save_model(DPAM.official("scratch", release), tmp_path / "legacy.safetensors", calibration=official_cal)
    assert load_calibrations(both) == {"dense": dense_cal, "official": official_cal}
    assert load_calibrations(legacy) == {"official": official_cal} and load_calibration(legacy) == official_cal
    rng = np.random.default_rng(0)
    x = rng.standard_normal(22050).astype(np.float32) * 3000
    y = x + rng.standard_normal(22050).astype(np.float32) * 300
    for path, protocol, cal in ((both, "dense", dense_cal), (both, "official", official_cal),
                                (legacy, "dense", None), (legacy, "official", official_cal)):  # fmt: skip
        s = ModelRef.registered("m", path, protocol=protocol).scorer(release).score(x, y)
        if cal is None:
            with torch.no_grad():
                head = DPAM.official("scratch", release).p_jnd(torch.tensor([s.distance]))
            assert not s.p_jnd_calibrated and s.p_jnd == pytest.approx(float(head[0]), rel=1e-6)
        else:
            assert s.p_jnd_calibrated and s.p_jnd == pytest.approx(float(cal(s.distance)), rel=1e-12)
