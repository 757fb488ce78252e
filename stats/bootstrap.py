"""The percentile bootstrap, over units or over groups of units (cluster bootstrap).

A sample has ``n`` units (items, pairs) numbered ``0 .. n-1``. A *resample* is an array of
unit indices drawn with replacement; a *statistic* is a function of such an index array (it
closes over the data, so one resample can serve several arrays, e.g. paired differences or
a correlation of two columns). :func:`bootstrap` evaluates the statistic on ``n_boot``
resamples and returns the percentile interval of the replicates:
``low, high = quantile(replicates, [(1 - level) / 2, (1 + level) / 2])`` (numpy's default
linear interpolation).

Resampling (:func:`resample_indices`), deterministic for a seed:

- without groups, each resample draws ``n`` units uniformly with replacement; the draws are
  ``rng.integers(0, n, size=(n_boot, n))``, row ``b`` is resample ``b``;
- with ``groups`` (one hashable key per unit; units of one group are not independent, e.g.
  pairs sharing a reference recording), each resample draws the ``G`` distinct groups with
  replacement (``rng.integers(0, G, G)`` per resample, groups numbered in sorted key order)
  and brings every unit of each drawn group, as many times as the group was drawn; the
  indices come in ascending order, so resamples have varying lengths;
- with a single unit (or a single group) every resample is the sample itself and no random
  numbers are drawn.

``seed`` is an int or a ``numpy.random.Generator``; a Generator is used as is and advanced,
so several intervals can share one random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap", "bootstrap_mean", "percentile_interval", "resample_indices"]

Seed = int | np.random.Generator


def _check(n: int, n_boot: int, level: float | None = None) -> None:
    if n < 1:
        raise ValueError(f"cannot bootstrap an empty sample (n = {n})")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if level is not None and not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resample_indices(
    n: int, n_boot: int, seed: Seed = 0, groups: Sequence[Any] | np.ndarray | None = None
) -> np.ndarray | list[np.ndarray]:
    """``n_boot`` resamples of ``range(n)`` (module docstring): without ``groups`` an int array
    ``[n_boot, n]`` (one resample a row), with ``groups`` (length ``n``) a list of ``n_boot``
    1-D int arrays."""
    _check(n, n_boot)
    rng = np.random.default_rng(seed)
    if groups is None:
        if n == 1:
            return np.zeros((n_boot, 1), dtype=np.int64)
        return rng.integers(0, n, size=(n_boot, n))
    keys = np.asarray(groups)
    if keys.shape != (n,):
        raise ValueError(f"groups must have one key per unit ({n}), got shape {keys.shape}")
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_groups = int(inverse.max()) + 1
    arange = np.arange(n)
    if n_groups == 1:
        return [arange.copy() for _ in range(n_boot)]
    out = []
    for _ in range(n_boot):
        times = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        out.append(np.repeat(arange, times[inverse]))
    return out


def _quantiles(a: np.ndarray, level: float, omit_undefined: bool) -> tuple[float, float]:
    if omit_undefined:
        a = a[np.isfinite(a)]
        if a.size == 0:
            return float("nan"), float("nan")
    lo, hi = np.quantile(a, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def percentile_interval(replicates: Any, level: float = 0.95, *, omit_undefined: bool = False) -> tuple[Any, Any]:
    """The ``level`` percentile interval ``(low, high)`` of bootstrap ``replicates``: an array
    ``[n_boot]`` gives two floats, an array ``[n_boot, k]`` (k statistics per resample) two
    arrays ``[k]``, one interval per column.

    A NaN replicate makes the interval NaN, unless ``omit_undefined``: then replicates that are
    not finite (a statistic undefined on some resamples, e.g. ROC AUC of a resample with one
    class) are left out, column by column, and a column with none left gives NaN."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = np.asarray(replicates, dtype=np.float64)
    if a.ndim == 1:
        return _quantiles(a, level, omit_undefined)
    if a.ndim != 2:
        raise ValueError(f"replicates must be [n_boot] or [n_boot, k], got shape {a.shape}")
    cols = [_quantiles(a[:, j], level, omit_undefined) for j in range(a.shape[1])]
    return np.array([c[0] for c in cols]), np.array([c[1] for c in cols])


def bootstrap(
    statistic: Callable[[np.ndarray], Any],
    n: int,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: Seed = 0,
    vectorized: bool = False,
    omit_undefined: bool = False,
) -> tuple[Any, Any]:
    """Percentile bootstrap interval ``(low, high)`` of ``statistic`` over ``n`` units.

    ``statistic(idx)`` gets a 1-D int array of unit indices (one resample) and returns a float,
    or a 1-D array of ``k`` floats (then ``low`` and ``high`` are arrays ``[k]``, all from the
    same resamples). With ``vectorized`` and no ``groups`` it is called once with all resamples,
    an int array ``[n_boot, n]``, and returns ``[n_boot]`` (or ``[n_boot, k]``) values: a
    statistic that reduces along the last axis, e.g. ``lambda idx: x[idx].mean(axis=-1)``,
    serves both (grouped resamples differ in length, so they always go one at a time).
    ``groups``, ``n_boot``, ``seed``: :func:`resample_indices`; ``level``, ``omit_undefined``:
    :func:`percentile_interval`. Raises ValueError for ``n < 1``, ``n_boot < 1`` or a
    ``level`` outside (0, 1).

    Example, the interval of a Spearman correlation resampling items::

        lo, hi = bootstrap(lambda i: scipy.stats.spearmanr(x[i], y[i])[0], len(x), seed=0)
    """
    _check(n, n_boot, level)
    resamples = resample_indices(n, n_boot, seed, groups)
    if vectorized and groups is None:
        reps = np.asarray(statistic(resamples), dtype=np.float64)
        if reps.shape[:1] != (n_boot,):
            raise ValueError(f"a vectorized statistic must return {n_boot} replicates, got shape {reps.shape}")
    else:
        reps = np.array([np.asarray(statistic(idx), dtype=np.float64) for idx in resamples])
    return percentile_interval(reps, level, omit_undefined=omit_undefined)


def bootstrap_mean(values: Any, *, n_boot: int = 1000, level: float = 0.95, seed: Seed = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D, at least one value),
    resampling single values; a single value is its own interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    return bootstrap(lambda idx: x[idx].mean(axis=-1), len(x), n_boot=n_boot, level=level, seed=seed, vectorized=True)
