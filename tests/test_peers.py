"""The peer metrics (jndqa.peers): Zimtohrli, ViSQOL (audio and speech modes), wide-band PESQ.

Known values and where they come from:

- ViSQOL audio mode, identical pair: 4.7321, the "castanets_identity" row of ViSQOL's conformance table (C++
  ViSQOL v3.3.3's expected value, reproduced in the README of visqol-python 3.8.0). The SVR sees only the
  per-band NSIM, which is 1 in every band for any identical pair, so any identical pair gives this value.
  The conformance audio itself (Google's ViSQOL test data) is not in the package or its sdist; a test must
  not download it, so the other conformance rows are not reproduced here.
- ViSQOL speech mode (polynomial mapper), identical pair: 5.0, the mapping a + exp(b (NSIM - x0)) of
  visqol/quality_mapper.py (a = -262.847869, b = 0.0154302525, x0 = -361.063949, times 1.245063) at NSIM 1,
  5.03, clipped to 5.
- PESQ wide band, identical pair: P.862.2's mapping of the maximum raw PESQ score 4.5,
  0.999 + 4 / (1 + exp(-1.3669 * 4.5 + 3.8224)) in float32 (pesq/pesqmain.h of the pesq 0.0.4 sdist). The
  README's example values (1.0832 for its speech.wav against speech_bab_0dB.wav) need audio the package does
  not ship.
- Zimtohrli: an identical pair has distance 0 and MOS 5; every MOS is 1 + 4 s(d) / s(0) with
  s(d) = 1 / (-5.784e-9 + exp(51.06 d)) (cpp/zimt/mos.h of the zimtohrli 0.2.1.post1 sdist). Zimtohrli
  publishes correlations, not example values.

Beyond those, each peer is checked on a generated speech-like signal and a noise ladder (40, 25, 10 dB SNR):
a more degraded signal scores lower.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import math
import pickle

import numpy as np
import pytest

from jndqa.metric import MetricError, MetricScore, MetricUnavailable, load_metric
from jndqa.peers import INSTALL, PESQ, PeerMetric, ViSQOL, Zimtohrli

RATE = 48000
PINS = {"zimtohrli": "0.2.1.post1", "visqol-python": "3.8.0", "pesq": "0.0.4"}  # pyproject's `peers` extra
LIBRARY = {"zimtohrli": "zimtohrli", "visqol": "visqol", "visqol-speech": "visqol", "pesq": "pesq"}


def needs(name: str):
    """Skip when the peer's library is missing (`make test` installs them; elsewhere: pip install 'jndqa[peers]')."""
    return pytest.mark.skipif(importlib.util.find_spec(LIBRARY[name]) is None, reason=f"{name}: {INSTALL}")


def speechlike(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A speech stand-in: a 100-140 Hz pulse train through three formant resonators, with noise bursts, in
    4 Hz syllables; peak 0.3."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = round(rate * seconds)
    t = np.arange(n) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    pulses = (np.diff(np.floor(np.cumsum(f0 / rate)), prepend=0) > 0).astype(np.float64)
    y = np.zeros(n)
    for formant, bandwidth in ((700, 130), (1200, 70), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / rate)
        y += lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * formant / rate), r * r], pulses)
    y += 0.02 * rng.standard_normal(n) * (np.sin(2 * np.pi * 7 * t) > 0.5)
    y *= np.clip(2 * np.sin(2 * np.pi * 4 * t), 0, 1)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= math.sqrt(float(np.mean(x.astype(np.float64) ** 2)) / float(np.mean(noise**2)) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


LADDER = (40, 25, 10)


def ladder(seconds: float) -> tuple[np.ndarray, list[np.ndarray]]:
    x = speechlike(seconds)
    return x, [x, *(with_noise(x, snr) for snr in LADDER)]


def assert_ladder(scores: list[MetricScore], identical: float, rel: float = 1e-6) -> None:
    values = [s.value for s in scores]
    assert values[0] == pytest.approx(identical, rel=rel, abs=0), values
    assert all(a > b for a, b in itertools.pairwise(values)), f"not decreasing along {LADDER} dB: {values}"


def test_peers_report_their_package_versions_and_declarations():
    for name, dist in (("zimtohrli", "zimtohrli"), ("visqol", "visqol-python"), ("pesq", "pesq")):
        if importlib.util.find_spec(LIBRARY[name]) is None:
            continue
        m = load_metric(name)
        assert m.version == importlib.metadata.version(dist) == PINS[dist]
        assert (m.orientation, m.channels, m.needs_alignment) == ("quality", 1, False)
        assert m.signed(3.0) == 3.0
        assert pickle.loads(pickle.dumps(m)).key == m.key  # travels to other processes, engine left behind
    if importlib.util.find_spec("visqol"):
        assert (load_metric("visqol").rate, load_metric("visqol-speech").rate) == (48000, 16000)
        assert load_metric("visqol-speech").key == ("visqol-speech", "3.8.0", "polynomial")
        with pytest.raises(ValueError, match="mode must be one of audio, speech"):
            ViSQOL("music")
    if importlib.util.find_spec("pesq"):
        assert (PESQ().rate, PESQ().key) == (16000, ("pesq", "0.0.4", "wb"))


def test_a_missing_peer_package_says_what_to_install():
    """The peers' own check (installed_version), with a distribution that is not installed."""

    class Missing(PeerMetric):
        id = "missing"
        rate = 16000
        distribution = "jndqa-no-such-peer"
        module = "jndqa_no_such_peer"

        def make_engine(self):
            raise AssertionError("never built")

        def score_pair(self, ref, test):
            raise AssertionError("never scored")

    with pytest.raises(MetricUnavailable, match=r"'jndqa-no-such-peer' is not installed; pip install 'jndqa\[peers\]'"):
        Missing()


# ------------------------------------------------------------------ Zimtohrli
@needs("zimtohrli")
def test_zimtohrli_identity_ladder_and_its_mos_mapping():
    x, tests = ladder(1.0)
    scores = Zimtohrli().score(x, tests, RATE)
    assert scores[0].extra["distance"] == 0.0
    assert_ladder(scores, 5.0)
    p = np.float32([1.000e00, -5.784e-09, 5.106e01])  # cpp/zimt/mos.h

    def sigmoid(d):
        return p[0] / (p[1] + np.exp(np.float32(p[2] * d)))

    for s in scores:
        assert s.value == pytest.approx(1 + 4 * sigmoid(s.extra["distance"]) / sigmoid(0.0), rel=1e-5)


@needs("zimtohrli")
def test_zimtohrli_resamples_mixes_and_refuses_what_would_crash_it():
    x = speechlike(0.5, rate=44100)
    stereo = np.stack([x, x], axis=1)
    assert [s.value for s in Zimtohrli().score(stereo, [stereo, x], 44100)] == [5.0, 5.0]
    # The library aborts the process on signals under about 3,950 samples: refused with a reason instead.
    out = Zimtohrli().score_each(x, [x[:2000], x], 44100)
    assert isinstance(out[0], MetricError) and "test lasts 0.0454 s; zimtohrli needs at least 0.1 s" in str(out[0])
    assert out[1].value == 5.0


# ------------------------------------------------------------------ ViSQOL
@needs("visqol")
@pytest.mark.slow
def test_visqol_audio_conformance_identity_and_ladder():
    x, tests = ladder(1.0)  # ViSQOL audio needs about 0.9 s to build its patches
    scores = load_metric("visqol").score(x, [tests[0], tests[1], tests[3]], RATE)
    assert scores[0].value == pytest.approx(4.7321, abs=5e-5)  # castanets_identity, ViSQOL's conformance table
    assert scores[0].value > scores[1].value > scores[2].value
    assert scores[0].extra["vnsim"] == pytest.approx(1.0) and len(scores[0].extra["fvnsim"]) == 32


@needs("visqol")
def test_visqol_speech_identity_and_ladder():
    x, tests = ladder(1.0)
    scores = load_metric("visqol-speech").score(x, tests, RATE)
    assert_ladder(scores, 5.0)
    assert scores[0].extra["mapper"] == "polynomial" and len(scores[0].extra["fvnsim"]) == 21


@needs("visqol")
def test_visqol_refuses_what_it_cannot_score():
    x = speechlike(0.5)
    out = load_metric("visqol").score_each(x, [x], RATE)  # too short for its 45-frame patches
    assert isinstance(out[0], MetricError) and "smaller than minimum patch size" in out[0].reason
    silent = np.zeros(RATE, np.float32)
    out = load_metric("visqol-speech").score_each(silent, [x, x], RATE)
    assert [type(e) for e in out] == [MetricError, MetricError] and "reference is digitally silent" in str(out[1])


# ------------------------------------------------------------------ PESQ
@needs("pesq")
def test_pesq_identity_is_the_mapped_maximum_and_ladder():
    x, tests = ladder(2.0)
    scores = PESQ().score(x, tests, RATE)
    f = np.float32
    mapped_max = f(0.999) + f(4.0) / (f(1.0) + np.exp(f(-1.3669) * f(4.5) + f(3.8224)))  # pesqmain.h, raw 4.5
    assert_ladder(scores, float(mapped_max))
    assert scores[0].value == pytest.approx(4.643888, abs=1e-6)


@needs("pesq")
def test_pesq_refuses_what_it_cannot_score():
    x = speechlike(1.0)
    silent = np.zeros(RATE, np.float32)
    out = PESQ().score_each(x, [x[: RATE // 10], silent, x], RATE)
    # the library's own refusal (cypesq.BufferTooShortError), turned into a MetricError with its reason
    assert "at least 1/4 of a second" in out[0].reason and "BufferTooShortError" in out[0].reason
    assert "test is digitally silent" in out[1].reason
    assert out[2].value == pytest.approx(4.643888, abs=1e-6)
