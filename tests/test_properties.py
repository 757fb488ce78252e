"""Properties of DPAM scoring that hold for any signal, checked with hypothesis on short synthetic
signals (a tone plus noise, 0.2-0.5 s at 22,050 Hz, int16 scale) and the official ``scratch``
weights:

- identity: d(x, x) = 0 under ``official`` and ``dense``;
- symmetry: d(x, y) = d(y, x) under ``official`` (the shorter signal is zero-padded at its start,
  whichever it is) and ``dense`` (the longer is trimmed at its end, whichever it is; per-layer
  terms are means of |f(y) - f(x)|);
- batch independence: a pair's ``official`` score does not depend on the other pairs of its
  :meth:`DPAMScorer.score_pairs` call, which are zero-padded to a common length and masked.

Scores are computed in float64. Tolerance: a distance sums, over 14 layers, channel means of
|activation differences|; each activation has been through at most 14 convolutions (sums of at
most a few hundred products) and normalisations, so float64 rounding leaves it a relative error of
order 14 x 10 x 2.2e-16 ~ 3e-14 of its scale (activations are normalised, O(1)). ``TOL`` = 1e-9,
absolute and relative, is four orders above that, and two below float32 rounding (~1e-7), the
size of the differences a mixed-up path or dtype would leave; any real asymmetry or padding leak
is far larger. Examples are few and derandomised (the same on every run), with no example database.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jndqa.metric.audio import MODEL_RATE
from jndqa.metric.score import DPAMScorer

TOL = 1e-9
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None)
# The dense protocol runs every layer undecimated, seconds a pair even on short signals: fewer, shorter examples.
DENSE_SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None)


def synth(seed: int, n: int) -> np.ndarray:
    """A tone (random frequency and level) plus white noise (random level), ``n`` samples."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / MODEL_RATE
    tone = rng.uniform(0, 20_000) * np.sin(2 * np.pi * rng.uniform(40, 8_000) * t + rng.uniform(0, 2 * np.pi))
    return tone + rng.normal(0, rng.uniform(0, 3_000), n)


seeds = st.integers(0, 2**32 - 1)


@st.composite
def signals(draw, min_s: float = 0.2, max_s: float = 0.5) -> np.ndarray:
    return synth(draw(seeds), draw(st.integers(round(min_s * MODEL_RATE), round(max_s * MODEL_RATE))))


@pytest.fixture(scope="module")
def official(scratch):
    return DPAMScorer(network=scratch, protocol="official", dtype=torch.float64)


@pytest.fixture(scope="module")
def dense(scratch):
    return DPAMScorer(network=scratch, protocol="dense", dtype=torch.float64)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


@SETTINGS
@given(x=signals(), y=signals())
def test_official_distance_is_zero_on_identical_signals_and_symmetric(official, x, y):
    assert official.score(x, x).distance <= TOL
    dxy, dyx = official.score(x, y).distance, official.score(y, x).distance
    assert close(dxy, dyx), (dxy, dyx)


@DENSE_SETTINGS
@given(x=signals(0.2, 0.3), seed=seeds, shift=st.integers(-1024, 1024))
def test_dense_distance_is_zero_on_identical_signals_and_symmetric(dense, x, seed, shift):
    # Lengths within the dense protocol's tolerance (1024 samples), either one the longer.
    y = synth(seed, len(x) + shift)
    # x's features serve both of its tests; d(y, x) runs both signals in lockstep (another code path).
    dxx, dxy = (s.distance for s in dense.score_reference(dense.reference(x), [x, y]))
    dyx = dense.score(y, x).distance
    assert dxx <= TOL
    assert close(dxy, dyx), (dxy, dyx)


@SETTINGS
@given(
    pair=st.tuples(signals(), signals()),
    others=st.lists(st.tuples(signals(0.1, 0.5), signals(0.1, 0.5)), min_size=1, max_size=3),
    position=st.integers(0, 3),
    batch_samples=st.sampled_from([12_000, 40_000, 2_205_000]),
)
def test_official_pair_score_does_not_depend_on_the_rest_of_the_batch(official, pair, others, position, batch_samples):
    alone = official.score(*pair)
    at = min(position, len(others))
    batch = [*others[:at], pair, *others[at:]]
    scorer = DPAMScorer(network=official.net, protocol="official", dtype=torch.float64, batch_samples=batch_samples)
    together = scorer.score_pairs(batch)[at]
    assert close(alone.distance, together.distance), (alone.distance, together.distance)
    assert all(close(a, b) for a, b in zip(alone.layer_terms, together.layer_terms, strict=True))
