"""Evaluation of p(different) predictions against same/different judgments.

Inputs everywhere: ``p`` is an array ``[N]`` of predicted probabilities that a
listener hears a difference (values in [0, 1]), ``labels`` an array ``[N]`` of
judgments (0 = same, 1 = different), ``groups`` (optional) an array ``[N]`` of
hashable keys, one per pair, naming what pairs share (normally the reference
recording's sha256). Pairs of one group are not independent, so confidence
intervals resample whole groups when groups are given (cluster bootstrap).

Metrics (:data:`METRICS`):

- ``accuracy``: fraction of pairs with ``(p >= 0.5) == label``.
- ``auc``: ROC AUC, rank-based (Mann-Whitney U with mid-ranks, so a tie between
  a positive and a negative counts one half); NaN when one class is absent.
- ``log_loss``: mean binary cross-entropy, ``p`` clipped to
  [:data:`LOG_LOSS_EPS`, 1 - :data:`LOG_LOSS_EPS`].
- ``ece``: expected calibration error with :data:`ECE_BINS` equal-width bins on
  p(different) (not on the max-class confidence): bin ``b`` holds
  ``b/10 <= p < (b+1)/10`` (the last bin includes 1.0), and
  ``ECE = sum_b (n_b / N) |mean(p in b) - mean(label in b)|``.

Confidence intervals are percentile bootstrap intervals (:func:`jndqa.stats.bootstrap`),
seeded, ``n_boot`` resamples of pairs or of groups, all metrics from the same resamples;
replicates where a metric is undefined (AUC with one class) are left out of its interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jndqa.stats import bootstrap

__all__ = [
    "ECE_BINS",
    "HIGHER_IS_BETTER",
    "LOG_LOSS_EPS",
    "METRICS",
    "Comparison",
    "Estimate",
    "Evaluation",
    "EvaluationError",
    "PairedDifference",
    "Reliability",
    "accuracy",
    "compare",
    "evaluate",
    "expected_calibration_error",
    "log_loss",
    "reliability",
    "roc_auc",
]

ECE_BINS = 10
LOG_LOSS_EPS = 1e-7
THRESHOLD = 0.5
METRICS = ("accuracy", "auc", "log_loss", "ece")
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "log_loss": False, "ece": False}


class EvaluationError(ValueError):
    """Predictions, labels or groups are malformed (wrong shapes, values out of range, empty)."""


def _check(p: Any, labels: Any, groups: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.size == 0:
        raise EvaluationError("no predictions to evaluate; pass at least one pair")
    if y.shape != p.shape:
        raise EvaluationError(f"{p.size} predictions but {y.size} labels; pass one label per prediction")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise EvaluationError("predictions must be finite probabilities in [0, 1]; apply the head or a calibrator")
    if not np.isin(y, (0, 1)).all():
        raise EvaluationError("labels must be 0 (same) or 1 (different)")
    g = None
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        if g.shape != p.shape:
            raise EvaluationError(f"{p.size} predictions but {g.size} group keys; pass one key per pair")
    return p, y.astype(np.float64), g


# ----------------------------------------------------------------- point metrics
def accuracy(p: Any, labels: Any, threshold: float = THRESHOLD) -> float:
    """Fraction of pairs whose decision ``p >= threshold`` (different) matches the label."""
    p, y, _ = _check(p, labels)
    return float(np.mean((p >= threshold) == (y == 1)))


def roc_auc(scores: Any, labels: Any) -> float:
    """ROC AUC of ``scores`` (any real numbers; higher = more likely different).

    Rank-based: ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with mid-ranks,
    so ties count one half. NaN when all labels are equal.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape or s.size == 0:
        raise EvaluationError(f"{s.size} scores but {y.size} labels; pass one label per score")
    if not np.isfinite(s).all():
        raise EvaluationError("scores must be finite")
    return _auc(s, y == 1)


def _midranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, tied values sharing the mean of their ranks."""
    order = np.argsort(s, kind="stable")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def _auc(s: np.ndarray, pos: np.ndarray) -> float:
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(p: Any, labels: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy in nats, with ``p`` clipped to ``[eps, 1 - eps]``."""
    p, y, _ = _check(p, labels)
    return _log_loss(p, y, eps)


def _log_loss(p: np.ndarray, y: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    q = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def expected_calibration_error(p: Any, labels: Any, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of p(different) (see the module docstring)."""
    p, y, _ = _check(p, labels)
    return _ece(p, y, bins)


def _ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    b = _bin_index(p, bins)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=p, minlength=bins) - np.bincount(b, weights=y, minlength=bins))
    return float(gap.sum() / count.sum())  # sum_b (n_b/N) |mean p - mean y| = sum_b |sum p - sum y| / N


@dataclass
class Reliability:
    """Data for a reliability diagram: per equal-width bin of p(different), its centre, the
    mean prediction and the observed fraction judged different (NaN for empty bins), and
    the number of pairs."""

    centres: list[float]
    mean_predicted: list[float]
    observed: list[float]
    counts: list[int]

    def to_dict(self) -> dict[str, list]:
        return asdict(self)


def reliability(p: Any, labels: Any, bins: int = ECE_BINS) -> Reliability:
    """Reliability-diagram data for ``bins`` equal-width bins on [0, 1]."""
    p, y, _ = _check(p, labels)
    b = _bin_index(p, bins)
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=bins) / count
        obs = np.bincount(b, weights=y, minlength=bins) / count
    centres = (np.arange(bins) + 0.5) / bins
    return Reliability(centres.tolist(), mean_p.tolist(), obs.tolist(), count.astype(int).tolist())


def _all_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean((p >= THRESHOLD) == (y == 1))),
        "auc": _auc(p, y == 1),
        "log_loss": _log_loss(p, y),
        "ece": _ece(p, y),
    }


@dataclass
class Estimate:
    """A point estimate with its bootstrap interval ``[low, high]`` (NaN when undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _intervals(
    metrics: Callable[[np.ndarray], dict[str, float]],
    n: int,
    groups: np.ndarray | None,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Bootstrap intervals of every metric of :data:`METRICS` from the same resamples (of pairs,
    or of whole groups); ``low`` and ``high`` by metric name."""

    def values(idx: np.ndarray) -> list[float]:
        d = metrics(idx)
        return [d[m] for m in METRICS]

    low, high = bootstrap(values, n, groups=groups, n_boot=n_boot, level=level, seed=seed, omit_undefined=True)
    return dict(zip(METRICS, map(float, low), strict=True)), dict(zip(METRICS, map(float, high), strict=True))


@dataclass
class Evaluation:
    """Metrics of one set of predictions, with bootstrap intervals and reliability data."""

    n: int
    positives: int
    groups: int | None
    accuracy: Estimate
    auc: Estimate
    log_loss: Estimate
    ece: Estimate
    reliability: Reliability
    level: float
    n_boot: int
    seed: int

    def values(self) -> dict[str, float]:
        """The point values, e.g. for the retraining summary's ``metrics`` object."""
        return {m: getattr(self, m).value for m in METRICS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        raise EvaluationError(f"level must be in (0, 1), got {level}")


def evaluate(
    p: Any, labels: Any, groups: Any = None, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Evaluation:
    """Accuracy, ROC AUC, log loss and ECE of ``p`` with ``level`` bootstrap intervals.

    ``groups`` makes the bootstrap resample whole groups (pairs of one reference are
    correlated); without it single pairs are resampled. Deterministic for a given ``seed``.
    """
    p, y, g = _check(p, labels, groups)
    _check_boot(n_boot, level)
    point = _all_metrics(p, y)
    low, high = _intervals(lambda idx: _all_metrics(p[idx], y[idx]), p.size, g, n_boot, level, seed)
    est = {m: Estimate(point[m], low[m], high[m]) for m in METRICS}
    return Evaluation(
        n=int(p.size),
        positives=int(y.sum()),
        groups=None if g is None else len(np.unique(g)),
        reliability=reliability(p, y),
        level=level,
        n_boot=n_boot,
        seed=seed,
        **est,
    )


@dataclass
class PairedDifference:
    """One metric for a candidate and the production model on the same pairs, and
    ``difference`` = candidate − production with its paired bootstrap interval.
    ``higher_is_better`` says which sign is an improvement."""

    candidate: float
    production: float
    difference: Estimate
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    """A paired comparison of two models' predictions on the same pairs."""

    n: int
    metrics: dict[str, PairedDifference]
    level: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    candidate: Any,
    production: Any,
    labels: Any,
    groups: Any = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Candidate vs production p(different) on the same pairs: per-metric differences with a
    paired bootstrap interval (each resample uses the same pairs, or groups, for both)."""
    pc, y, g = _check(candidate, labels, groups)
    pp, _, _ = _check(production, labels)
    _check_boot(n_boot, level)
    mc, mp = _all_metrics(pc, y), _all_metrics(pp, y)

    def difference(idx: np.ndarray) -> dict[str, float]:
        a, b = _all_metrics(pc[idx], y[idx]), _all_metrics(pp[idx], y[idx])
        return {m: a[m] - b[m] for m in METRICS}

    low, high = _intervals(difference, pc.size, g, n_boot, level, seed)
    metrics = {
        m: PairedDifference(mc[m], mp[m], Estimate(mc[m] - mp[m], low[m], high[m]), HIGHER_IS_BETTER[m])
        for m in METRICS
    }
    return Comparison(int(pc.size), metrics, level, n_boot, seed)
