"""Metrics as plugins (jndqa.metric.plugin): the interface's contract, discovery through the `jndqa.metrics`
entry points (a real extra distribution on sys.path), and DPAM as the built-in plugin, equal to DPAMScorer."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jndqa.metric import (
    DPAMMetric,
    DPAMScorer,
    Metric,
    MetricError,
    MetricScore,
    MetricUnavailable,
    ModelRef,
    available_metrics,
    load_metric,
)

BUILT_IN = ["dpam", "pesq", "visqol", "visqol-speech", "zimtohrli"]
N = 11025  # 0.5 s of the release's sample clips: dense costs 133x the release network per sample


class Gain(Metric):
    """A metric for these tests: the RMS of test - gain * ref; refuses a test whose first sample is exactly 0.5."""

    id = "gain-rms"
    version = "1"
    rate = 8000
    channels = 1
    needs_alignment = True
    orientation = "distance"

    def __init__(self, gain: float = 1.0):
        self.gain = gain

    def score(self, ref, tests, rate):
        out = []
        for i, t in enumerate(tests):
            if t[0] == 0.5:
                raise MetricError(self.id, "first sample is 0.5", index=i)
            out.append(MetricScore(float(np.sqrt(np.mean((t - self.gain * ref) ** 2)))))
        return out


# ---------------------------------------------------------------- the interface
def test_signed_orientation_and_key():
    m = Gain()
    assert m.sign == -1 and m.signed(0.25) == -0.25  # a distance: negated, so higher means better
    m.orientation = "quality"
    assert m.sign == 1 and m.signed(3.5) == 3.5
    m.orientation = "loudness"
    with pytest.raises(ValueError, match="orientation"):
        m.sign  # noqa: B018
    assert Gain().key == ("gain-rms", "1", "")
    assert Gain().describe()["needs_alignment"] is True


def test_default_score_each_puts_each_failure_in_its_place():
    ref = np.zeros(100, np.float32)
    tests = [np.full(100, 0.25, np.float32), np.full(100, 0.5, np.float32), np.full(100, 0.125, np.float32)]
    with pytest.raises(MetricError, match=r"gain-rms \(test 1\): first sample is 0.5"):
        Gain().score(ref, tests, 8000)
    out = Gain().score_each(ref, tests, 8000)
    assert [getattr(r, "value", None) for r in out] == [0.25, None, 0.125]
    assert isinstance(out[1], MetricError) and out[1].index == 1 and out[1].reason == "first sample is 0.5"


def test_errors_pickle_and_keep_their_fields():
    err = MetricUnavailable("zimtohrli", "the package 'zimtohrli' is not installed", install="pip install x").at(3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MetricUnavailable and back.index == 3 and back.install == "pip install x"
    assert str(back) == "zimtohrli (test 3): the package 'zimtohrli' is not installed; pip install x"


@pytest.mark.parametrize(
    ("signal", "match"),
    [
        (np.zeros((4, 4, 4), np.float32), "shaped"),
        (np.zeros(0, np.float32), "no samples"),
        (np.zeros(100, np.int16), "divide int16 samples by 32768"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.full(100, 1000.0, np.float32), "not on the unit scale"),
    ],
)
def test_bad_input_is_a_metric_error(release, signal, match):
    m = DPAMMetric("official")
    good = np.zeros(2205, np.float32)
    with pytest.raises(MetricError, match=match):
        m.score(good, [signal], 22050)
    with pytest.raises(MetricError, match=f"reference: .*{match}"):
        m.score(signal, [good], 22050)
    with pytest.raises(MetricError, match="sample rate"):
        m.score(good, [good], 22050.5)


# ---------------------------------------------------------------- discovery
def test_built_in_metrics_are_registered():
    assert set(BUILT_IN) <= set(available_metrics())
    m = load_metric("dpam", protocol="official")
    assert isinstance(m, DPAMMetric) and m.protocol == "official"


def test_unknown_name_lists_the_installed_ones():
    with pytest.raises(MetricUnavailable, match=r"no metric named 'nope' is installed \(installed: dpam"):
        load_metric("nope")


def test_bad_options_name_the_metric():
    with pytest.raises(ValueError, match=r"metric 'dpam' .*bad options \{'bogus': 1\}"):
        load_metric("dpam", bogus=1)


USER_METRIC = """
import numpy as np
from jndqa.metric import Metric, MetricScore

class PeakDiff(Metric):
    id = "mine"
    version = "0.1"
    rate = 16000
    channels = 1
    needs_alignment = True
    orientation = "distance"

    def __init__(self, scale=1.0):
        self.scale = scale

    def score(self, ref, tests, rate):
        return [MetricScore(self.scale * float(np.abs(t - ref).max()), {"rate": rate}) for t in tests]

def not_a_metric():
    return 42
"""


def _dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[jndqa.metrics]\n{entry_points}\n")


def test_a_users_metric_is_found_through_its_entry_point(tmp_path):
    """A real distribution (a dist-info folder and a module) on sys.path of a fresh interpreter: the same
    importlib.metadata lookup that finds jndqa's own metrics finds it, without installing anything."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "usermetric.py").write_text(USER_METRIC)
    _dist(site, "usermetric", "mine = usermetric:PeakDiff\nnotmetric = usermetric:not_a_metric")
    _dist(site, "brokenmetric", "broken = brokenmetric_missing.sub:Metric")
    _dist(site, "twinmetric", "dpam = usermetric:PeakDiff")
    code = textwrap.dedent("""
        import numpy as np
        from jndqa.metric import MetricUnavailable, available_metrics, load_metric
        names = available_metrics()
        assert {"mine", "broken", "notmetric", "zimtohrli"} <= set(names), names
        m = load_metric("mine", scale=2.0)
        ref = np.zeros(16, np.float32)
        [s] = m.score(ref, [np.full(16, 0.25, np.float32)], 16000)
        assert (m.id, m.version, s.value, s.extra) == ("mine", "0.1", 0.5, {"rate": 16000}), (m.id, s)
        for name, kind in (("broken", MetricUnavailable), ("dpam", MetricUnavailable), ("notmetric", TypeError)):
            try:
                load_metric(name)
            except kind as exc:
                print(name, "->", exc)
            else:
                raise AssertionError(name)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" -> ", 1) for line in r.stdout.strip().splitlines())
    assert "registered by brokenmetric as brokenmetric_missing.sub:Metric, but it cannot be imported" in lines["broken"]
    assert "pip install --force-reinstall 'brokenmetric'" in lines["broken"]
    assert "registered more than once" in lines["dpam"] and "twinmetric" in lines["dpam"]
    assert "gave int, not a jndqa.metric.Metric" in lines["notmetric"]


def test_plugin_interface_and_peers_do_not_need_torch(tmp_path):
    """The rooms: the interface, the model identity and the peers import numpy and soxr, not torch (nor
    ffmpeg, DuckDB, Prefect); every name of jndqa.metric still resolves, torch's on first use."""
    code = textwrap.dedent("""
        import sys
        import jndqa.metric, jndqa.metric.plugin, jndqa.peers
        from jndqa.metric import ModelRef, load_metric
        load_metric("dpam")  # built lazily: no torch until it scores
        bad = [m for m in ("torch", "prefect", "duckdb", "ffmpeg", "plotly") if m in sys.modules]
        print(bad)
        for name in jndqa.metric.__all__:
            getattr(jndqa.metric, name)
        import jndqa.metric.train
        from jndqa.metric import train, evaluate
        assert callable(train) and callable(evaluate) and jndqa.metric.train is train, jndqa.metric.train
        bad = [m for m in ("prefect", "duckdb", "ffmpeg", "plotly") if m in sys.modules]
        print(bad, "torch" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "[] True"], r.stdout


# --------------------------------------------------------------- DPAM plugin
def test_dpam_declares_its_identity():
    dense, official, student = DPAMMetric(), DPAMMetric("official"), DPAMMetric("student")
    assert dense.key == ("dpam", "dpam-0.0.4", "dpam-scratch-official:dense") and dense.model == ModelRef.official()
    assert (dense.channels, dense.needs_alignment, dense.orientation, dense.rate) == ("any", True, "distance", 22050)
    assert (official.channels, official.needs_alignment) == (1, False)
    assert official.variant == "dpam-scratch-official:official"
    assert student.model == ModelRef.student() and student.version == ModelRef.student().version
    assert (student.channels, student.needs_alignment) == ("any", True)
    assert DPAMMetric(model="finetune", window_seconds=4, hop_seconds=2).variant == "dpam-finetune-official:dense:w4h2"
    ref = ModelRef.registered("dpam-scratch-ft-abc", Path(__file__), protocol="official")
    assert DPAMMetric(model=ref).key == ("dpam", ref.version, "dpam-scratch-ft-abc:official")
    with pytest.raises(ValueError, match="disagrees"):
        DPAMMetric("dense", model=ref)
    assert pickle.loads(pickle.dumps(DPAMMetric())).key == dense.key


@pytest.mark.parametrize("protocol", ["dense", "official", "student"])
def test_dpam_plugin_equals_the_scorer_exactly(release, sample, protocol):
    """Unit-scale input at 22,050 Hz is exactly the int16-scale samples / 32768, so the plugin scores the very
    samples DPAMScorer gets: the same distance, bit for bit (one test: the scorer's single-pair path; several:
    its reference-reuse path)."""
    ref, t2, t4 = (sample[k][:N] for k in ("ref", "2", "4"))
    metric = DPAMMetric(protocol)
    scorer = DPAMScorer("scratch", protocol)
    [one] = metric.score(ref / 32768, [t4 / 32768], 22050)
    expected_one = scorer.score(ref, t4)
    assert one.value == expected_one.distance and one.extra["p_jnd"] == expected_one.p_jnd
    assert one.extra["protocol"] == protocol and one.extra["model"] == metric.model.id
    assert np.isclose(sum(one.extra["layer_terms"]), one.value, rtol=1e-6, atol=0)  # float32 terms
    many = metric.score(ref / 32768, [ref / 32768, t2 / 32768], 22050)
    expected = scorer.score_reference(scorer.reference(ref), [ref, t2])
    assert [s.value for s in many] == [e.distance for e in expected]
    assert many[0].value == 0.0 and metric.signed(many[1].value) == -many[1].value
    if protocol != "official":
        assert many[0].extra["windows"][0]["start"] == 0.0


def test_dpam_refuses_an_unaligned_pair_and_scores_the_others(release, sample):
    ref, t4 = sample["ref"][:N] / 32768, sample["4"][:N] / 32768
    late = np.concatenate([np.zeros(2000, np.float32), t4])[:N]  # 2,000 samples late, same length
    short = t4[: N - 2000]
    out = DPAMMetric().score_each(ref, [t4, short, late], 22050)
    assert isinstance(out[0], MetricScore) and isinstance(out[2], MetricScore)
    assert isinstance(out[1], MetricError) and out[1].index == 1 and "lengths differ by 2000" in out[1].reason
    with pytest.raises(MetricError, match=r"dpam \(test 1\)"):
        DPAMMetric().score(ref, [t4, short], 22050)
    # official pads the shorter signal at its start, as the release does: it scores the pair
    [padded] = DPAMMetric("official").score(ref, [short], 22050)
    assert padded.value > 0


def test_dpam_resamples_and_mixes_as_its_protocol_says(release, sample):
    """Input at 44.1 kHz is resampled to 22,050 Hz as DPAMScorer.prepare does (the same code under every
    protocol); stereo is scored per channel under dense (the worst channel) and mixed to mono under official."""
    import soxr

    ref = sample["ref"][:N] / 32768
    test = sample["4"][:N] / 32768
    up_ref, up_test = (soxr.resample(x, 22050, 44100, quality="HQ").astype(np.float32) for x in (ref, test))
    scorer = DPAMScorer("scratch", "official")
    [s] = DPAMMetric("official").score(up_ref, [up_test], 44100)
    assert s.value == scorer.score(scorer.prepare(up_ref, 44100), scorer.prepare(up_test, 44100)).distance
    stereo_ref = np.stack([ref, ref], axis=1)
    stereo_test = np.stack([ref, test], axis=1)  # only the right channel differs
    [st] = DPAMMetric().score(stereo_ref, [stereo_test], 22050)
    assert st.extra["worst_channel"] == 1 and st.extra["channels"][0] == 0.0
    assert st.value == st.extra["channels"][1]
    [mono] = DPAMMetric("official").score(stereo_ref, [stereo_test], 22050)
    assert "channels" not in mono.extra and mono.value > 0


def test_dpam_without_weights_is_unavailable(tmp_path):
    m = DPAMMetric(release=tmp_path)  # an empty folder: no checkpoints
    with pytest.raises(MetricUnavailable, match="jndqa setup"):
        m.score(np.zeros(100, np.float32), [np.zeros(100, np.float32)], 22050)
