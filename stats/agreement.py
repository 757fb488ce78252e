"""Agreement of a metric with listeners: rank and linear correlations at three levels, with
bootstrap intervals that resample items (recordings).

Inputs, one entry per stimulus (a reference item under one condition): the mean listener score
(higher is better), the metric's value, the stimulus's item and its condition. The metric's value
is signed first (``higher_is_better=False`` for a distance negates it), so every correlation is
+1 when the metric orders stimuli exactly as listeners do.

- stimulus level: Spearman, Pearson and Kendall (tau-b) over all stimuli;
- within item: Spearman over the conditions of each item (items with at least two stimuli and
  neither side constant), averaged over items: does the metric rank the versions of one
  recording as people do?
- system level: per condition, the means over its stimuli of listener score and signed metric;
  Spearman over conditions (at least three).

Each interval is the percentile bootstrap (:func:`jndqa.stats.bootstrap`) over items: a resample
draws items with replacement and keeps all their stimuli. A statistic that is undefined in a
resample (too few distinct values) is left out of that statistic's interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from .bootstrap import bootstrap

__all__ = ["STATISTICS", "Agreement", "agreement", "within_item_spearman"]

STATISTICS = ("stimulus_spearman", "stimulus_pearson", "stimulus_kendall", "within_item_spearman", "system_spearman")


@dataclass(frozen=True)
class Agreement:
    """Correlations with listeners (+1: agreement) and their bootstrap intervals (``<name>_ci``);
    NaN where undefined. ``stimuli``, ``items``, ``conditions``: what went in."""

    stimulus_spearman: float
    stimulus_spearman_ci: tuple[float, float]
    stimulus_pearson: float
    stimulus_pearson_ci: tuple[float, float]
    stimulus_kendall: float
    stimulus_kendall_ci: tuple[float, float]
    within_item_spearman: float
    within_item_spearman_ci: tuple[float, float]
    system_spearman: float
    system_spearman_ci: tuple[float, float]
    stimuli: int
    items: int
    conditions: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN becomes None."""

        def clean(v: Any) -> Any:
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return None if isinstance(v, float) and not np.isfinite(v) else v

        return {k: clean(v) for k, v in asdict(self).items()}


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return x.size >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(sps.spearmanr(x, y)[0]) if _defined(x, y) else float("nan")


def within_item_spearman(listener: Any, signed: Any, items: Sequence[Any]) -> float:
    """Spearman of ``signed`` (higher: better) with ``listener`` over the stimuli of each item, averaged over
    the items where it is defined (at least two stimuli, neither side constant); NaN when none is."""
    y, m = np.asarray(listener, dtype=np.float64), np.asarray(signed, dtype=np.float64)
    _, item = np.unique(np.asarray(items, dtype=object).astype(str), return_inverse=True)
    return float(_statistics(y, m, item, np.zeros(len(y), dtype=np.int64))[3])


def _statistics(listener: np.ndarray, signed: np.ndarray, item: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """The five statistics of :data:`STATISTICS` for one set of stimuli (``item``, ``condition``:
    integer codes)."""
    out = np.full(5, np.nan)
    if _defined(listener, signed):
        out[0] = _spearman(listener, signed)
        out[1] = float(np.corrcoef(listener, signed)[0, 1])
        out[2] = float(sps.kendalltau(listener, signed)[0])
    within = []
    order = np.argsort(item, kind="stable")
    bounds = np.flatnonzero(np.diff(item[order])) + 1
    for idx in np.split(order, bounds):
        r = _spearman(listener[idx], signed[idx])
        if np.isfinite(r):
            within.append(r)
    if within:
        out[3] = float(np.mean(within))
    conds = np.unique(condition)
    if conds.size >= 3:
        sums = np.bincount(condition, minlength=conds.max() + 1)
        keep = sums > 0
        lmean = np.bincount(condition, weights=listener)[keep] / sums[keep]
        mmean = np.bincount(condition, weights=signed)[keep] / sums[keep]
        out[4] = _spearman(lmean, mmean)
    return out


def agreement(
    listener: Sequence[float] | np.ndarray,
    metric: Sequence[float] | np.ndarray,
    items: Sequence[Any],
    conditions: Sequence[Any],
    *,
    higher_is_better: bool,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Agreement:
    """Agreement of ``metric`` with the mean ``listener`` scores of the same stimuli (module
    docstring). ``higher_is_better``: the metric's orientation (True for a quality score, False
    for a distance). Raises ValueError for inputs of different lengths, or fewer than 2 stimuli."""
    y = np.asarray(listener, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if not (y.shape == m.shape and y.ndim == 1 and len(items) == len(conditions) == y.size):
        raise ValueError("listener, metric, items and conditions need one entry per stimulus")
    if y.size < 2:
        raise ValueError(f"agreement needs at least 2 stimuli, got {y.size}")
    if not (np.isfinite(y).all() and np.isfinite(m).all()):
        raise ValueError("listener scores and metric values must be finite (leave out stimuli a metric failed on)")
    signed = m if higher_is_better else -m
    _, item = np.unique(np.asarray(items, dtype=object).astype(str), return_inverse=True)
    _, cond = np.unique(np.asarray(conditions, dtype=object).astype(str), return_inverse=True)
    point = _statistics(y, signed, item, cond)
    if np.unique(item).size >= 2:
        low, high = bootstrap(lambda i: _statistics(y[i], signed[i], item[i], cond[i]), y.size, groups=item,
                              n_boot=n_boot, level=level, seed=seed, omit_undefined=True)  # fmt: skip
    else:  # one item: nothing to resample
        low = high = np.full(5, np.nan)
    values: dict[str, Any] = {}
    for k, name in enumerate(STATISTICS):
        values[name] = float(point[k])
        values[f"{name}_ci"] = (float(low[k]), float(high[k]))
    return Agreement(**values, stimuli=int(y.size), items=int(np.unique(item).size),
                     conditions=int(np.unique(cond).size))  # fmt: skip
