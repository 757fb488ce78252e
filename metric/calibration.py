"""Calibration of p(different) from the DPAM distance, fitted on held-out judgments.

A calibrated probability means what it says: among pairs given p ≈ 0.7, about 70 %
are judged different. The release's head does not do that (the scratch head gives
0.217 at d = 0 and is nearly flat below d ≈ 1.5), and a fine-tuned head is only as
calibrated as its validation data allow. A calibrator maps a distance straight to
p(different); it replaces the head for reporting probabilities.

Two methods, both monotone in the distance and serialisable as a few numbers
(:meth:`to_dict` / :func:`calibrator_from_dict`, JSON-safe):

- ``platt`` (the default): ``p = sigmoid(a · log(d + offset) + b)``, logistic
  regression on the log distance (Platt, 1999). Two parameters, so a few hundred
  judgments suffice, and it extrapolates smoothly. The log is used because
  distances are positive and spread over orders of magnitude (0.03 to 5 on the
  release's material); ``offset`` (1e-4, about twice the float32 noise floor of
  the distance, docs/metric.md §8) keeps d = 0 finite. Fitted by Newton's method on
  Platt's smoothed targets ((N₊ + 1)/(N₊ + 2) and 1/(N₋ + 2)), so perfectly
  separated data give finite parameters.
- ``isotonic``: the monotone (non-decreasing in d) step function of least squared
  error, by pool-adjacent-violators; stored as the blocks' mean distances and
  values, applied by linear interpolation between them and held constant
  outside. Needs more data (it has as many parameters as blocks) but assumes no
  shape.

Inputs: distances ``[N]`` (non-negative, as produced by the network under the
protocol the calibrator is meant for: a calibrator fitted on ``official``
distances does not apply to ``dense`` ones), labels ``[N]`` (0 = same, 1 = different).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationError",
    "Calibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "calibrator_from_dict",
    "fit_calibrator",
    "pool_adjacent_violators",
]

CALIBRATION_METHODS = ("platt", "isotonic")
LOG_OFFSET = 1e-4


class CalibrationError(ValueError):
    """Calibration data or a stored calibrator is unusable (shapes, values, unknown method)."""


def _inputs(distance: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distance, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if d.size == 0 or d.shape != y.shape:
        raise CalibrationError(f"need one label per distance and at least one pair, got {d.size} and {y.size}")
    if not np.isfinite(d).all() or d.min() < 0:
        raise CalibrationError("distances must be finite and non-negative")
    if not np.isin(y, (0, 1)).all():
        raise CalibrationError("labels must be 0 (same) or 1 (different)")
    return d, y.astype(np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


@dataclass(frozen=True)
class PlattCalibrator:
    """``p = sigmoid(a · log(d + offset) + b)``."""

    a: float
    b: float
    offset: float = LOG_OFFSET
    method: Literal["platt"] = "platt"

    def __call__(self, distance: Any) -> np.ndarray:
        """Calibrated p(different) for distances (array-like, any shape); float64."""
        d = np.asarray(distance, dtype=np.float64)
        return _sigmoid(self.a * np.log(np.maximum(d, 0.0) + self.offset) + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "offset": self.offset}


@dataclass(frozen=True)
class IsotonicCalibrator:
    """Monotone piecewise-linear map through the points ``(x[k], y[k])``, constant outside."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: Literal["isotonic"] = "isotonic"

    def __call__(self, distance: Any) -> np.ndarray:
        """Calibrated p(different) for distances (array-like, any shape); float64."""
        d = np.asarray(distance, dtype=np.float64)
        return np.interp(d, np.asarray(self.x), np.asarray(self.y))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(self.x), "y": list(self.y)}


Calibrator = PlattCalibrator | IsotonicCalibrator


def _fit_platt(d: np.ndarray, y: np.ndarray, offset: float = LOG_OFFSET, iterations: int = 100) -> PlattCalibrator:
    z = np.log(d + offset)
    mu, sd = float(z.mean()), float(z.std())
    sd = sd if sd > 0 else 1.0
    x = np.stack([(z - mu) / sd, np.ones_like(z)], axis=1)  # standardised for conditioning
    n_pos = y.sum()
    n_neg = y.size - n_pos
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(w: np.ndarray) -> float:
        s = x @ w
        return float(np.sum(np.logaddexp(0, s) - t * s))

    w = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])
    current = loss(w)
    for _ in range(iterations):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-10 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-8:  # backtracking: never accept a step that increases the loss
            trial = w - scale * step
            new = loss(trial)
            if new <= current:
                break
            scale /= 2
        else:
            break
        converged = current - new < 1e-12 * max(1.0, abs(current))
        w, current = trial, new
        if converged:
            break
    a = w[0] / sd
    return PlattCalibrator(a=float(a), b=float(w[1] - a * mu), offset=offset)


def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-decreasing fit to ``y`` (in the given order), by pool-adjacent-violators.

    Returns the block values and, for each block, the index one past its last element.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    values: list[float] = []
    wsum: list[float] = []
    ends: list[int] = []
    for i in range(y.size):
        values.append(float(y[i]))
        wsum.append(float(w[i]))
        ends.append(i + 1)
        while len(values) > 1 and values[-2] > values[-1]:
            v2, w2, e2 = values.pop(), wsum.pop(), ends.pop()
            v1, w1 = values[-1], wsum[-1]
            values[-1] = (v1 * w1 + v2 * w2) / (w1 + w2)
            wsum[-1] = w1 + w2
            ends[-1] = e2
    return np.asarray(values), np.asarray(ends)


def _fit_isotonic(d: np.ndarray, y: np.ndarray) -> IsotonicCalibrator:
    # Equal distances are one point (their mean label, weighted by count): ties cannot be ordered.
    xs, inverse, counts = np.unique(d, return_inverse=True, return_counts=True)
    ys = np.bincount(inverse, weights=y) / counts
    values, ends = pool_adjacent_violators(ys, counts.astype(np.float64))
    starts = np.concatenate([[0], ends[:-1]])
    centres = [float(np.average(xs[s:e], weights=counts[s:e])) for s, e in zip(starts, ends, strict=True)]
    return IsotonicCalibrator(x=tuple(centres), y=tuple(float(v) for v in values))


def fit_calibrator(distance: Any, labels: Any, method: str = "platt") -> Calibrator:
    """Fit a calibrator on held-out (or validation) distances and judgments.

    ``distance``: ``[N]`` non-negative distances from the model and protocol it will
    calibrate; ``labels``: ``[N]`` judgments (0 = same, 1 = different). Never fit on the
    pairs used to train the model: its distances there are optimistic.
    """
    d, y = _inputs(distance, labels)
    if method == "platt":
        return _fit_platt(d, y)
    if method == "isotonic":
        return _fit_isotonic(d, y)
    raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator from :meth:`to_dict` output (e.g. read back from a model file)."""
    try:
        method = data["method"]
        if method == "platt":
            return PlattCalibrator(a=float(data["a"]), b=float(data["b"]), offset=float(data["offset"]))
        if method == "isotonic":
            x = tuple(float(v) for v in data["x"])
            y = tuple(float(v) for v in data["y"])
            if len(x) != len(y) or not x or any(b < a for a, b in itertools.pairwise(x)):
                raise CalibrationError("isotonic calibrator needs as many x as y values, x non-decreasing")
            return IsotonicCalibrator(x=x, y=y)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(f"malformed calibrator {data!r}: {exc}") from exc
    raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
