"""One item's work with several metrics, without Prefect: the plan names the metrics each variant still
needs, rendering happens once, and a variant aligned by its envelope only is scored by the metrics
that need no sample alignment (real ffmpeg, real DPAM weights, real Zimtohrli)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from jndqa.flows.config import RunConfig
from jndqa.flows.pipeline import plan_night, process_item
from jndqa.store import Store

# Every STFT bin's phase randomised: a crude resynthesis that keeps the timing, not the waveform
# (tests/test_variants.py checks that it aligns by its envelope only).
SCRAMBLE = "afftfilt=real='hypot(re,im)*cos(random(0)*2*PI)':imag='hypot(re,im)*sin(random(0)*2*PI)':win_size=512"


@pytest.fixture
def corpus(tmp_path):
    rate = 16000
    rng = np.random.default_rng(3)
    t = np.arange(3 * rate) / rate
    syllables = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 4 * (0.3 + 0.7 * (np.sin(2 * np.pi * 0.7 * t) > 0))
    x = syllables * signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(t.size)) * 0.05
    (tmp_path / "corpus").mkdir()
    sf.write(tmp_path / "corpus" / "syllables.wav", x.astype(np.float32), rate, subtype="FLOAT")
    return tmp_path


@pytest.mark.usefixtures("release")
def test_an_envelope_aligned_variant_is_scored_by_the_metrics_that_need_no_alignment(corpus):
    cfg = RunConfig.model_validate({
        "corpus": {"root": str(corpus / "corpus")},
        "variants": [{"label": "resynthesis", "effects": SCRAMBLE}, {"label": "lowpass", "effects": "lowpass=f=3000"}],
        "metrics": ["dpam", "zimtohrli"],
    })  # fmt: skip
    store = Store(corpus / "bench.duckdb")
    plan = plan_night(cfg, store)
    assert [m.name for m in plan.metrics] == ["dpam", "zimtohrli"] and plan.primary.name == "dpam"
    (work,) = plan.work
    assert [v.metrics for v in work.variants] == [("dpam", "zimtohrli")] * 2  # nothing stored yet
    res = process_item(work, plan.metrics, plan.render)
    got = {(s["metric"], next(v.label for v in work.variants if v.spec_id == s["spec_id"])): s for s in res.scores}
    assert sorted(got) == [("dpam", "lowpass"), ("zimtohrli", "lowpass"), ("zimtohrli", "resynthesis")]
    assert got[("zimtohrli", "resynthesis")]["alignment"] == "envelope"
    assert (
        got[("zimtohrli", "lowpass")]["alignment"] == "samples" and got[("dpam", "lowpass")]["alignment"] == "samples"
    )
    # Zimtohrli's MOS (measured 4.22 and 2.48): the item is noise under a syllable envelope, so the resynthesis,
    # which keeps spectrum and envelope, sounds nearly the same, while removing everything above 3 kHz does not.
    assert 1.0 <= got[("zimtohrli", "lowpass")]["value"] + 1.0 < got[("zimtohrli", "resynthesis")]["value"] <= 5.0
    assert got[("dpam", "lowpass")]["value"] == got[("dpam", "lowpass")]["distance"] > 0
    (fail,) = res.failures
    assert fail["metric"] == "dpam" and fail["variant"] == "resynthesis" and "envelope" in fail["reason"]
    assert "the metrics that need no alignment scored it" in fail["reason"]

    # Stored, the next plan asks only for what is missing: DPAM of the resynthesis (it failed).
    store.write_scores(plan.run_id, res.scores)
    again = plan_night(cfg, store)
    (work,) = again.work
    assert [(v.label, v.metrics) for v in work.variants] == [("resynthesis", ("dpam",))]
    assert len(again.reused) == 3
