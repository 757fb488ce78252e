"""The percentile bootstrap of jndqa.stats: known intervals, coverage, grouped resampling, the
random stream contract."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from jndqa.stats import bootstrap, bootstrap_mean, percentile_interval, resample_indices


def test_a_degenerate_sample_has_a_zero_width_interval():
    # Every resample of identical values has the same mean (0.25 is exact in binary).
    assert bootstrap_mean([0.25] * 9, seed=1) == (0.25, 0.25)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert bootstrap_mean([0.7], seed=rng) == (0.7, 0.7)
    assert rng.bit_generator.state == state  # one unit: nothing to draw


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_intervals_from_the_exact_resampling_distribution(seed):
    # The sum of 4 draws from {1, 2, 3, 4}: P(sum <= 5) = 5/256 ~ 0.020 < 0.025 < P(sum <= 6) = 15/256
    # ~ 0.059, so the 2.5 % quantile of the mean is 6/4 = 1.5 and, by symmetry, the 97.5 % one 3.5.
    # With 20000 resamples the sampled proportions' SD is ~0.001, five times below the 0.0055 margin.
    assert bootstrap_mean([1.0, 2.0, 3.0, 4.0], n_boot=20_000, seed=seed) == (1.5, 3.5)
    # [0, 1]: the mean of 2 draws is 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_mean([0.0, 1.0], n_boot=20_000, seed=seed) == (0.0, 1.0)
    assert bootstrap_mean([0.0, 1.0], n_boot=20_000, seed=seed, level=0.4) == (0.5, 0.5)


def test_coverage_of_the_mean_of_a_normal_sample():
    # 300 samples of 40 from N(0, 1), 90 % intervals: the percentile bootstrap under-covers a little at
    # n = 40 (about 0.89); the binomial SD of the coverage over 300 trials is sqrt(0.9 * 0.1 / 300) ~ 0.017.
    rng = np.random.default_rng(11)
    hits = 0
    for t in range(300):
        lo, hi = bootstrap_mean(rng.standard_normal(40), n_boot=500, level=0.9, seed=t)
        hits += lo <= 0.0 <= hi
    assert 0.84 <= hits / 300 <= 0.95


def test_grouped_resampling_keeps_groups_together():
    sizes = [3, 1, 5, 2, 4]
    keys = np.repeat([f"ref{k}" for k in range(5)], sizes)
    perm = np.random.default_rng(0).permutation(len(keys))
    keys = keys[perm]  # groups need not be contiguous
    resamples = resample_indices(len(keys), 200, seed=3, groups=keys)
    lengths = set()
    for idx in resamples:
        assert np.all(np.diff(idx) >= 0)
        counts = np.bincount(idx, minlength=len(keys))
        drawn = 0
        for g in np.unique(keys):
            c = counts[keys == g]
            assert np.all(c == c[0]), (g, c)  # a group comes whole, or not at all
            drawn += c[0]
        assert drawn == 5  # as many group draws as there are groups
        lengths.add(len(idx))
    assert len(lengths) > 1
    # One group: every resample is the sample itself.
    assert all(np.array_equal(i, np.arange(4)) for i in resample_indices(4, 3, seed=0, groups=["a"] * 4))


def test_the_random_stream_is_documented_and_shareable():
    x = np.arange(7.0) ** 2
    assert np.array_equal(resample_indices(7, 50, seed=4), np.random.default_rng(4).integers(0, 7, size=(50, 7)))
    rng = np.random.default_rng(5)
    first, second = bootstrap_mean(x, seed=rng), bootstrap_mean(x, seed=rng)
    assert first == bootstrap_mean(x, seed=5) and second != first


def test_a_statistic_over_indices_several_at_once_and_vectorized():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(30)
    y = x + 0.5 * rng.standard_normal(30)
    rho = lambda i: spearmanr(x[i], y[i])[0]  # noqa: E731
    mean_x = lambda i: x[i].mean(axis=-1)  # noqa: E731
    lo, hi = bootstrap(rho, 30, n_boot=300, seed=0)
    assert -1 <= lo < spearmanr(x, y)[0] < hi <= 1
    # k statistics per resample: the same resamples as one statistic at a time.
    both_lo, both_hi = bootstrap(lambda i: [rho(i), mean_x(i)], 30, n_boot=300, seed=0)
    assert (both_lo[0], both_hi[0]) == (lo, hi)
    assert (both_lo[1], both_hi[1]) == bootstrap(mean_x, 30, n_boot=300, seed=0)
    # A vectorized statistic gets all resamples at once, the rows of resample_indices.
    seen = []
    bootstrap(lambda i: seen.append(i) or np.zeros(len(i)), 30, n_boot=20, seed=6, vectorized=True)
    (batch,) = seen
    assert np.array_equal(batch, resample_indices(30, 20, seed=6))


def test_undefined_replicates_are_omitted_only_when_asked():
    # Undefined on every resample that contains unit 0, e.g. a ROC AUC of a resample with one class.
    stat = lambda i: np.nan if 0 in i else float(len(i))  # noqa: E731
    assert np.isnan(bootstrap(stat, 5, n_boot=100, seed=0)).all()
    assert bootstrap(stat, 5, n_boot=100, seed=0, omit_undefined=True) == (5.0, 5.0)
    assert np.isnan(percentile_interval([np.nan, np.inf], omit_undefined=True)).all()
    lo, hi = percentile_interval(np.array([[1.0, np.nan], [3.0, np.nan]]), 0.5, omit_undefined=True)
    assert lo[0] == 1.5 and hi[0] == 2.5 and np.isnan(lo[1]) and np.isnan(hi[1])


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="one key per unit"):
        resample_indices(3, 10, groups=["a", "b"])
