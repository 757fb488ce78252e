"""Full-reference metrics as plugins: one small interface, found through the ``jndqa.metrics`` entry points.

A metric compares test signals with their reference and gives one number per test
(:class:`MetricScore`). DPAM is the built-in one (:class:`jndqa.metric.dpam_plugin.DPAMMetric`,
name ``dpam``); Zimtohrli, ViSQOL and PESQ are optional peers (:mod:`jndqa.peers`,
``pip install 'jndqa[peers]'``). Every metric, built-in or not, is registered the same way, as an entry
point of the group ``jndqa.metrics`` in its distribution's metadata::

    # pyproject.toml of a user's package
    [project.entry-points."jndqa.metrics"]
    mymetric = "mypackage.metric:MyMetric"     # a Metric subclass, or any callable returning a Metric

and is then loaded by name with :func:`load_metric` (``load_metric("mymetric", option=...)``), without
editing jndqa. :func:`available_metrics` lists the registered names.

The contract of :meth:`Metric.score`:

- ``ref`` and every test are float numpy arrays (float32 preferred) at the sample rate ``rate``, on the
  unit scale [-1, 1], shaped ``[L]`` (mono) or ``[L, C]``. A ``[L, 1]`` array is mono. The metric
  resamples to its native :attr:`Metric.rate` itself (soxr, "HQ") and mixes the channels as it needs:
  a metric with ``channels == 1`` averages them; ``"any"`` scores multichannel signals (DPAM: per
  channel, the worst channel's distance).
- It returns one :class:`MetricScore` per test, in order. Batching is per reference: the reference's
  work may be done once for all its tests.
- A pair it cannot score raises :class:`MetricError` with the reason (a signal too short or silent for
  the metric, unaligned signals for a metric that needs alignment, non-finite samples...), never
  another exception for such input. :meth:`Metric.score_each` returns the error in the test's place
  instead, so a caller records a failure per pair and goes on.
- A metric that cannot run at all (its package is not installed, its weights are missing, no metric of
  that name) raises :class:`MetricUnavailable`, a :class:`MetricError`, saying what to install or run.

Orientation and agreement: ``orientation`` is ``"distance"`` (lower is better: DPAM) or ``"quality"``
(higher is better: Zimtohrli's MOS, ViSQOL's MOS-LQO, PESQ's MOS-LQO). :meth:`Metric.signed` turns a value
into one where higher means "better, as listeners would say": a quality as it is, a distance negated
(:attr:`Metric.sign` is +1 or -1). A correlation between signed values and listener scores is +1 when
the metric agrees with the listeners.

This module needs numpy (and soxr when resampling), not torch: the peers import it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_PEAK",
    "Metric",
    "MetricError",
    "MetricScore",
    "MetricUnavailable",
    "Orientation",
    "PairMetric",
    "as_signal",
    "available_metrics",
    "check_rate",
    "installed_version",
    "load_metric",
    "to_native",
]

ENTRY_POINT_GROUP = "jndqa.metrics"
Orientation = Literal["distance", "quality"]
# Samples on the unit scale stay within [-1, 1] up to codec overshoot; a peak above this is int16-scale input.
MAX_PEAK = 4.0


class MetricError(Exception):
    """A metric could not score a pair (or at all). ``metric``: the metric's id; ``reason``: why, for a
    person; ``index``: the position of the test in the call's ``tests`` when one test is at fault
    (None when the reference or the metric is)."""

    def __init__(self, metric: str, reason: str, *, index: int | None = None):
        self.metric = metric
        self.reason = reason
        self.index = index
        where = "" if index is None else f" (test {index})"
        super().__init__(f"{metric}{where}: {reason}")

    def at(self, index: int | None) -> MetricError:
        """The same error attributed to test ``index`` (the error's own type)."""
        err = type(self).__new__(type(self))
        MetricError.__init__(err, self.metric, self.reason, index=index)
        err.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("metric", "reason", "index")})
        return err

    def __reduce__(self):  # picklable across processes, whatever the subclass's __init__
        return _rebuild_error, (type(self), self.metric, self.reason, self.index, self.__dict__)


def _rebuild_error(cls: type[MetricError], metric: str, reason: str, index: int | None, state: dict) -> MetricError:
    err = cls.__new__(cls)
    MetricError.__init__(err, metric, reason, index=index)
    err.__dict__.update(state)
    return err


class MetricUnavailable(MetricError):
    """The metric cannot run here: not registered, its package not installed or not importable, its weights
    missing. ``install``: the command that fixes it, when one does (e.g. ``pip install 'jndqa[peers]'``)."""

    def __init__(self, metric: str, reason: str, *, install: str | None = None):
        self.install = install
        super().__init__(metric, reason if install is None or install in reason else f"{reason}; {install}")


@dataclass(frozen=True)
class MetricScore:
    """One test's result: ``value`` in the metric's own units and orientation, and ``extra``: what else the
    metric reports (JSON-serialisable values; DPAM: ``p_jnd``, ``p_jnd_calibrated``, ``layer_terms``,
    ``windows``, ``channels``...; Zimtohrli: its raw ``distance``)."""

    value: float
    extra: dict[str, Any] = field(default_factory=dict)


class Metric(ABC):
    """A full-reference metric. Subclasses set the declared attributes (as class attributes or in
    ``__init__``) and implement :meth:`score`.

    - ``id``: the name it is registered and stored under; ``version``: what changes its numbers (a
      package version, a weights digest). ``key`` (``(id, version, variant)``) adds the settings that also
      change the numbers (``variant``, ``""`` by default); a stored result is keyed by it.
    - ``rate``: the native sample rate; ``channels``: ``1`` (mixed to mono) or ``"any"``.
    - ``needs_alignment``: whether reference and test must be sample-aligned (same start, lengths equal
      within a tolerance) for the number to mean anything; a metric that aligns internally says False.
    - ``orientation``: ``"distance"`` (lower is better) or ``"quality"`` (higher is better).
    """

    id: str
    version: str
    rate: int
    channels: int | Literal["any"]
    needs_alignment: bool
    orientation: Orientation
    variant: str = ""

    @abstractmethod
    def score(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore]:
        """One :class:`MetricScore` per test (module docstring: the contract); :class:`MetricError` for a
        pair it cannot score, its ``index`` naming the test when one test is at fault."""

    def score_each(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore | MetricError]:
        """As :meth:`score`, but a pair that cannot be scored gets its :class:`MetricError` in its place
        (a reference that cannot be scored: every test gets the error). Other exceptions propagate.

        Default: the whole batch, and when it fails, each test alone. Subclasses that score pair by pair
        override it to avoid the second pass."""
        try:
            return list(self.score(ref, tests, rate))
        except MetricError as err:
            if len(tests) == 1:
                return [err.at(0)]
        out: list[MetricScore | MetricError] = []
        for i, test in enumerate(tests):
            try:
                out.append(self.score(ref, [test], rate)[0])
            except MetricError as err:
                out.append(err.at(i))
        return out

    # ------------------------------------------------------------ agreement
    @property
    def sign(self) -> int:
        """+1 for a quality (higher is better), -1 for a distance: ``sign * value`` grows with quality."""
        if self.orientation == "quality":
            return 1
        if self.orientation == "distance":
            return -1
        raise ValueError(f"{self.id}: orientation must be 'distance' or 'quality', not {self.orientation!r}")

    def signed(self, value: float) -> float:
        """``value`` oriented so that higher means better (a distance negated, a quality as is); a
        correlation of signed values with listener scores is +1 when the metric agrees with listeners."""
        return self.sign * float(value)

    @property
    def key(self) -> tuple[str, str, str]:
        """``(id, version, variant)``: the metric's part of a stored result's key."""
        return self.id, self.version, self.variant

    def describe(self) -> dict[str, Any]:
        """The declared properties, for reports and JSON output."""
        return {"id": self.id, "version": self.version, "variant": self.variant, "rate": self.rate,
                "channels": self.channels, "needs_alignment": self.needs_alignment,
                "orientation": self.orientation}  # fmt: skip

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.version}{' ' + self.variant if self.variant else ''}>"


# ------------------------------------------------------------------ inputs
def check_rate(metric: str, rate: Any) -> int:
    """``rate`` as a positive int; :class:`MetricError` otherwise."""
    try:
        value = int(rate)
    except (TypeError, ValueError):
        value = 0
    if value <= 0 or value != rate:
        raise MetricError(metric, f"sample rate must be a positive integer number of Hz, got {rate!r}")
    return value


def as_signal(metric: str, x: Any, what: str = "signal") -> np.ndarray:
    """``x`` checked against the input contract, as float32 ``[L]`` or ``[L, C]`` (``[L, 1]`` becomes
    ``[L]``): :class:`MetricError` naming ``what`` for another shape, no samples, integer samples,
    non-finite samples, or a peak above :data:`MAX_PEAK` (int16-scale input)."""
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim not in (1, 2):
        raise MetricError(metric, f"{what}: expected samples shaped [L] or [L, channels], got {a.shape}")
    if a.shape[0] == 0 or a.size == 0:
        raise MetricError(metric, f"{what}: no samples")
    if not np.issubdtype(a.dtype, np.floating):
        raise MetricError(metric, f"{what}: expected float samples on the unit scale [-1, 1], got {a.dtype} "
                                  "(divide int16 samples by 32768)")  # fmt: skip
    if not np.isfinite(a).all():
        raise MetricError(metric, f"{what}: contains NaN or infinite samples")
    peak = float(np.abs(a).max())
    if peak > MAX_PEAK:
        raise MetricError(metric, f"{what}: peak {peak:.4g} is not on the unit scale [-1, 1] "
                                  "(int16-scale samples? divide them by 32768)")  # fmt: skip
    return a.astype(np.float32, copy=False)


def to_native(x: np.ndarray, rate: int, native: int, mono: bool) -> np.ndarray:
    """``x`` (``[L]`` or ``[L, C]``, float32) averaged to mono when ``mono``, resampled from ``rate`` to
    ``native`` with soxr "HQ" when they differ; float32."""
    if mono and x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64).astype(np.float32)
    if rate != native:
        import soxr

        x = soxr.resample(x, rate, native, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(x, dtype=np.float32)


def installed_version(metric: str, distribution: str, module: str, install: str) -> str:
    """The installed version of ``distribution`` whose import name is ``module``; :class:`MetricUnavailable`
    with ``install`` when it is not installed. Nothing is imported."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or importlib.util.find_spec(module) is None:
        raise MetricUnavailable(metric, f"the package {distribution!r} is not installed", install=install)
    return version


class PairMetric(Metric):
    """A metric that scores one pair at a time at its native rate (the peers): subclasses implement
    :meth:`score_pair`; the reference is checked, mixed (``channels == 1``, the default) and resampled once
    per call."""

    channels = 1

    @abstractmethod
    def score_pair(self, ref: np.ndarray, test: np.ndarray) -> MetricScore:
        """Score one pair: ``ref`` and ``test`` float32 at :attr:`rate`, unit scale, ``[L]`` (``[L, C]`` only
        when ``channels`` is ``"any"``). :class:`MetricError` for a pair it cannot score."""

    def prepare(self, x: Any, rate: int, what: str) -> np.ndarray:
        """An input signal as :meth:`score_pair` takes it."""
        return to_native(as_signal(self.id, x, what), rate, self.rate, mono=self.channels == 1)

    def score_each(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore | MetricError]:
        try:
            rate = check_rate(self.id, rate)
            r = self.prepare(ref, rate, "reference")
        except MetricError as err:
            return [err.at(i) for i in range(len(tests))]
        out: list[MetricScore | MetricError] = []
        for i, test in enumerate(tests):
            try:
                out.append(self.score_pair(r, self.prepare(test, rate, "test")))
            except MetricError as err:
                out.append(err.at(i))
        return out

    def score(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore]:
        rate = check_rate(self.id, rate)
        r = self.prepare(ref, rate, "reference")
        out = []
        for i, test in enumerate(tests):
            try:
                out.append(self.score_pair(r, self.prepare(test, rate, "test")))
            except MetricError as err:
                raise err.at(i) from err
        return out


# --------------------------------------------------------------- discovery
def _entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not any(e.value == ep.value for e in found.get(ep.name, [])):
            found.setdefault(ep.name, []).append(ep)
    return found


def available_metrics() -> list[str]:
    """The names registered in the ``jndqa.metrics`` entry-point group, sorted. A name is listed even when
    its package is missing (:func:`load_metric` then says what to install)."""
    return sorted(_entry_points())


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "the package that registers it"


def load_metric(name: str, **options: Any) -> Metric:
    """The metric registered as ``name`` in the ``jndqa.metrics`` entry points, built with ``options``
    (``load_metric("dpam", protocol="official")``).

    Raises :class:`MetricUnavailable` for a name nobody registered (listing the registered ones), for a
    name registered twice by different packages, and for one whose code cannot be imported (naming the
    package to install); ``ValueError`` for options the metric does not take; ``TypeError`` when the
    entry point does not give a :class:`Metric`."""
    eps = _entry_points()
    if name not in eps:
        names = ", ".join(sorted(eps)) or "none"
        raise MetricUnavailable(
            name, f"no metric named {name!r} is installed (installed: {names}); a metric is registered in "
            f"the {ENTRY_POINT_GROUP!r} entry-point group of its package",
        )  # fmt: skip
    if len(eps[name]) > 1:
        who = "; ".join(f"{e.value} ({_distribution(e)})" for e in eps[name])
        raise MetricUnavailable(name, f"registered more than once: {who}; uninstall one of them")
    ep = eps[name][0]
    dist = _distribution(ep)
    try:
        factory = ep.load()
    except ImportError as exc:
        raise MetricUnavailable(
            name, f"registered by {dist} as {ep.value}, but it cannot be imported ({exc})",
            install=f"reinstall {dist} with its dependencies: pip install --force-reinstall {dist!r}",
        ) from exc  # fmt: skip
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise ValueError(f"metric {name!r} ({ep.value}): bad options {options!r}: {exc}") from exc
    except ValueError:  # no signature to check (a builtin): the call says
        pass
    metric = factory(**options)
    if not isinstance(metric, Metric):
        raise TypeError(f"metric {name!r}: the entry point {ep.value} gave {type(metric).__name__}, "
                        f"not a jndqa.metric.Metric")  # fmt: skip
    return metric
