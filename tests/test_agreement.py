"""Agreement with listeners (jndqa.stats.agreement): known values at every level."""

from __future__ import annotations

import numpy as np
import pytest

from jndqa.stats import agreement

ITEMS = [f"item{i}" for i in range(4) for _ in range(3)]
CONDS = ["low", "mid", "high"] * 4
# Listener means: each item's conditions in order low < mid < high, items at different levels.
LISTENER = np.array([20, 50, 80, 30, 60, 90, 10, 40, 70, 25, 55, 85], dtype=float)


def test_a_perfect_quality_metric_and_its_distance_twin_agree_fully():
    for metric, higher in ((LISTENER / 10, True), (100 - LISTENER, False)):
        a = agreement(LISTENER, metric, ITEMS, CONDS, higher_is_better=higher, n_boot=200)
        for name in ("stimulus_spearman", "stimulus_pearson", "stimulus_kendall", "within_item_spearman",
                     "system_spearman"):  # fmt: skip
            assert getattr(a, name) == pytest.approx(1.0)
            assert getattr(a, f"{name}_ci") == pytest.approx((1.0, 1.0))
        assert (a.stimuli, a.items, a.conditions) == (12, 4, 3)
    reversed_ = agreement(LISTENER, LISTENER, ITEMS, CONDS, higher_is_better=False, n_boot=50)
    assert reversed_.stimulus_spearman == pytest.approx(-1.0) and reversed_.system_spearman == pytest.approx(-1.0)


def test_levels_separate_what_they_measure():
    # A metric that only knows the item (its level), not the condition: stimulus-level correlation is
    # positive, but it cannot rank the conditions of one recording (within item: undefined, a constant)
    # nor the systems (every condition has the same mean: undefined).
    item_level = np.repeat([50.0, 60.0, 40.0, 55.0], 3)
    a = agreement(LISTENER, item_level, ITEMS, CONDS, higher_is_better=True, n_boot=100)
    assert 0 < a.stimulus_spearman < 0.5
    assert np.isnan(a.within_item_spearman) and np.isnan(a.system_spearman)
    assert a.to_dict()["within_item_spearman"] is None
    # A metric that ranks conditions right but with item offsets reversed: within item and system
    # level 1.0, stimulus level lower. Spearman by hand: ranks of LISTENER vs ranks of metric.
    metric = np.tile([1.0, 2.0, 3.0], 4) + np.repeat([0.0, -0.5, 0.5, 0.2], 3)
    a = agreement(LISTENER, metric, ITEMS, CONDS, higher_is_better=True, n_boot=100)
    assert a.within_item_spearman == pytest.approx(1.0) and a.system_spearman == pytest.approx(1.0)
    from scipy.stats import rankdata

    r1, r2 = rankdata(LISTENER), rankdata(metric)
    expected = np.corrcoef(r1, r2)[0, 1]
    assert a.stimulus_spearman == pytest.approx(expected) and a.stimulus_spearman < 1.0
    lo, hi = a.stimulus_spearman_ci
    assert lo <= a.stimulus_spearman <= hi <= 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="one entry per stimulus"):
        agreement([1, 2], [1], ["a", "b"], ["x", "y"], higher_is_better=True)
    with pytest.raises(ValueError, match="finite"):
        agreement([1, 2], [1, float("nan")], ["a", "b"], ["x", "y"], higher_is_better=True)
