"""DPAM as a metric plugin: the built-in ``dpam`` of the ``jndqa.metrics`` entry points.

:class:`DPAMMetric` wraps :meth:`jndqa.metric.ModelRef.scorer` (:class:`jndqa.metric.DPAMScorer`) behind
the interface of :mod:`jndqa.metric.plugin`: unit-scale input at any rate, prepared as the protocol reads
it (22,050 Hz, int16 scale, mixed to mono under ``official``), the reference's work done once per call.
Its ``value`` is the scorer's distance for the same prepared pair, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio import MODEL_RATE
from .model import ModelRef
from .plugin import Metric, MetricError, MetricScore, MetricUnavailable, as_signal, check_rate

if TYPE_CHECKING:
    from .score import DPAMScorer, PairScore

__all__ = ["DPAMMetric"]


class DPAMMetric(Metric):
    """DPAM under one protocol and model (``load_metric("dpam", protocol=..., model=...)``).

    ``protocol``: ``dense`` (default), ``official`` or ``student``. ``model``: the release's weights
    (``scratch``, the default, ``finetune``, ``linear_layer``, ``pretrained`` or their ids
    ``dpam-<name>-official``; not used under ``student``), or a :class:`jndqa.metric.ModelRef` (a registered
    model; its own protocol is then used and ``protocol`` must agree or be left out). ``release``: the
    release folder (default: :func:`jndqa.metric.find_release`). ``window_seconds``, ``hop_seconds``,
    ``length_tolerance``: the ModelRef's window settings (its defaults when not given).

    Declared properties: id ``dpam``; version the ModelRef's version (``dpam-0.0.4`` for the release's
    weights); ``variant`` ``<model id>:<protocol key>`` (the rest of :attr:`ModelRef.key`); orientation
    ``distance``; rate 22,050; channels ``"any"`` under ``dense`` and ``student`` (per channel, the worst
    channel's distance), 1 under ``official``; ``needs_alignment`` True under ``dense`` and ``student``
    (lengths may differ by ``length_tolerance`` samples, the longer is trimmed), False under ``official``
    (the shorter signal is zero-padded at its start, as the release does).

    ``extra`` of each score: ``p_jnd``, ``p_jnd_calibrated``, ``layer_terms``, and under the windowed
    protocols ``windows`` (start, end, distance), ``channels`` and ``worst_channel`` for multichannel pairs;
    ``model`` and ``protocol``. A pair the protocol refuses (unaligned lengths, different channel counts
    under ``dense``) is a :class:`MetricError`; missing weights are :class:`MetricUnavailable`.
    """

    id = "dpam"
    rate = MODEL_RATE
    orientation = "distance"

    def __init__(self, protocol: str | None = None, model: str | ModelRef = "scratch", *,
                 release: str | Path | None = None, window_seconds: float | None = None,
                 hop_seconds: float | None = None, length_tolerance: int | None = None):  # fmt: skip
        given = {"window_seconds": window_seconds, "hop_seconds": hop_seconds, "length_tolerance": length_tolerance}
        settings = {k: v for k, v in given.items() if v is not None}
        if isinstance(model, ModelRef):
            if settings:
                raise ValueError("window settings come with the ModelRef; set them there")
            if protocol is not None and protocol != model.protocol:
                raise ValueError(f"protocol {protocol!r} disagrees with the ModelRef's {model.protocol!r}")
            ref = model
        else:
            ref = ModelRef.for_protocol(model, protocol or "dense", **settings)
        self.model = ref
        self.version = ref.version
        self.variant = f"{ref.id}:{ref.protocol_key}"
        self.channels = 1 if ref.rule.mono else "any"
        self.needs_alignment = ref.rule.windowed
        self.release = None if release is None else Path(release)
        self._scorer: DPAMScorer | None = None

    @property
    def protocol(self) -> str:
        return self.model.protocol

    def scorer(self) -> DPAMScorer:
        """The scorer, built on first use and kept; :class:`MetricUnavailable` when the weights are missing
        or unreadable."""
        if self._scorer is None:
            from .checkpoint import CheckpointError
            from .release import ReleaseNotFoundError

            try:
                self._scorer = self.model.scorer(self.release)
            except (ReleaseNotFoundError, CheckpointError) as exc:
                raise MetricUnavailable(self.id, f"the DPAM weights cannot be read: {exc}",
                                        install="fetch them with `jndqa setup`") from exc  # fmt: skip
        return self._scorer

    def __getstate__(self) -> dict[str, Any]:  # picklable: the scorer is rebuilt where it is used
        return {**self.__dict__, "_scorer": None}

    # ----------------------------------------------------------------- scoring
    def _prepare(self, x: Any, rate: int, what: str) -> np.ndarray:
        return self.scorer().prepare(as_signal(self.id, x, what), rate)

    def _check(self, ref: np.ndarray, test: np.ndarray) -> None:
        from .score import ChannelMismatchError, LengthMismatchError

        def channels(x: np.ndarray) -> int:
            return 1 if x.ndim == 1 else int(x.shape[1])

        try:
            self.scorer().check_pair(len(ref), channels(ref), len(test), channels(test))
        except (LengthMismatchError, ChannelMismatchError) as exc:
            raise MetricError(self.id, str(exc)) from exc

    def _result(self, s: PairScore) -> MetricScore:
        extra: dict[str, Any] = {
            "p_jnd": s.p_jnd,
            "p_jnd_calibrated": s.p_jnd_calibrated,
            "layer_terms": list(s.layer_terms),
            "model": self.model.id,
            "protocol": self.model.protocol_key,
        }
        if s.windows is not None:
            extra["windows"] = [asdict(w) for w in s.windows]
        if s.channels is not None:
            extra["channels"] = list(s.channels)
            extra["worst_channel"] = s.worst_channel
        return MetricScore(float(s.distance), extra)

    def _prepare_all(self, ref: Any, tests: Sequence[Any], rate: int) -> tuple[np.ndarray | None, list[Any]]:
        """The prepared reference (None when it cannot be scored) and, per test, its prepared samples or
        its :class:`MetricError`."""
        try:
            rate = check_rate(self.id, rate)
            r = self._prepare(ref, rate, "reference")
        except MetricError as err:
            return None, [err.at(i) for i in range(len(tests))]
        items: list[np.ndarray | MetricError] = []
        for i, test in enumerate(tests):
            try:
                t = self._prepare(test, rate, "test")
                self._check(r, t)
                items.append(t)
            except MetricError as err:
                items.append(err.at(i))
        return r, items

    def _score_prepared(self, r: np.ndarray, items: list[Any]) -> list[MetricScore | MetricError]:
        good = [i for i, x in enumerate(items) if not isinstance(x, MetricError)]
        out: list[MetricScore | MetricError] = list(items)
        if good:
            scorer = self.scorer()
            scores = scorer.score_reference(scorer.reference(r), [items[i] for i in good])
            for i, s in zip(good, scores, strict=True):
                out[i] = self._result(s)
        return out

    def score_each(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore | MetricError]:
        r, items = self._prepare_all(ref, tests, rate)
        return items if r is None else self._score_prepared(r, items)

    def score(self, ref: np.ndarray, tests: Sequence[np.ndarray], rate: int) -> list[MetricScore]:
        r, items = self._prepare_all(ref, tests, rate)
        for x in items:
            if isinstance(x, MetricError):
                raise x
        return self._score_prepared(r, items) if r is not None else []  # type: ignore[return-value]
