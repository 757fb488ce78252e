"""Batched DPAM scoring: many pairs per call, references computed once and reused.

>>> scorer = DPAMScorer("scratch", protocol="dense")  # doctest: +SKIP
>>> ref = scorer.reference(load_audio("ref.wav").samples)  # doctest: +SKIP
>>> [s.distance for s in scorer.score_reference(ref, [a.samples, b.samples])]  # doctest: +SKIP

Signals are 22,050 Hz on the int16 scale (see :mod:`jndqa.metric.audio`), mono
``[L]`` or, under ``dense``, multichannel ``[L, C]`` (scored per channel).

Protocols:

- ``official``: parity with the release. Pairs of unequal length are equalised
  as the release does (the shorter one is zero-padded at its start).
- ``dense`` (jndqa's default; :mod:`jndqa.metric.dense`): undecimated, scored
  in windows. Signals must be aligned: lengths may differ by at most
  ``length_tolerance`` samples (the longer one is trimmed at its end), more is
  a :class:`LengthMismatchError`.

Results do not depend on what else is in the batch.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import dense
from .audio import MODEL_RATE, equalize_lengths
from .model import PROTOCOL_RULES, official_name, protocol_rule
from .network import DPAM, Features

__all__ = [
    "PROTOCOLS",
    "ChannelMismatchError",
    "DPAMScorer",
    "LengthMismatchError",
    "PairScore",
    "Reference",
    "WindowScore",
    "tune_allocator",
]

PROTOCOLS = tuple(PROTOCOL_RULES)
DEFAULT_PROTOCOL = "dense"
ArrayLike = np.ndarray | torch.Tensor

# Samples per side held in one batch: bounds memory to about 31 floats per sample
# of features per signal (10 clips of 10 s: ~270 MB per side).
DEFAULT_BATCH_SAMPLES = 2_205_000

_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    Every layer allocates feature maps of several MB; by default glibc serves
    each from a fresh ``mmap`` and the page faults cost more than the
    convolutions (measured with benchmarks/bench_metric.py on 2 cores: 0.036-0.044 s → 0.019-0.022 s
    per 10 s pair).
    Called when a scorer is built, never at import. Set ``JNDQA_MALLOC_TUNING=0`` to skip.
    Returns whether the tuning is in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("JNDQA_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    _ALLOCATOR_TUNED = ok
    return ok


class LengthMismatchError(ValueError):
    """Under ``dense``, reference and test lengths differ by more than the tolerance."""


class ChannelMismatchError(ValueError):
    """Reference and test have different channel counts and no downmix was asked for."""


@dataclass
class WindowScore:
    """One analysis window of a ``dense`` score: its span in seconds and its distance
    (the worst channel's, for multichannel pairs)."""

    start: float
    end: float
    distance: float


@dataclass
class PairScore:
    """One pair's result.

    ``layer_terms``: the 14 per-layer contributions (length-weighted over windows
    under ``dense``; the worst channel's for multichannel pairs). ``windows``: the
    per-window series (``dense``). ``channels``: per-channel distances of a
    multichannel pair, whose ``distance`` is the worst channel's. ``p_jnd``
    comes from the model's classification head, or from the model's calibration fitted under
    this protocol when it has one: then ``p_jnd_calibrated`` is True.
    """

    distance: float
    p_jnd: float | None
    layer_terms: list[float] = field(default_factory=list)
    windows: list[WindowScore] | None = None
    channels: list[float] | None = None
    worst_channel: int | None = None
    p_jnd_calibrated: bool = False


@dataclass
class Reference:
    """A reference signal prepared for reuse against many tests.

    ``official``: its features, computed once. ``dense``: the samples; each window's
    features are computed once per :meth:`DPAMScorer.score_reference` call and
    shared by all the tests of that call (memory stays bounded by one window).
    """

    samples: torch.Tensor  # [L] or [L, C]
    features: Features | None = None

    @property
    def length(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.samples.dim() == 1 else int(self.samples.shape[1])


def _as_tensor(x: ArrayLike, dtype: torch.dtype, multichannel: bool = False) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1 and not (multichannel and t.dim() == 2):
        want = "[L] or [L, channels]" if multichannel else "a mono signal of shape [L]"
        raise ValueError(f"expected {want}, got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("empty signal")
    return t.to(dtype)


class DPAMScorer:
    """Scores (reference, test) pairs with one DPAM model and protocol.

    ``model``: ``scratch`` (default), ``finetune``, ``linear_layer``,
    ``pretrained`` or their ids (``dpam-scratch-official``). ``protocol``:
    ``dense`` (default) or ``official`` (parity with the release). Inputs are
    22,050 Hz, int16 scale. ``window_seconds`` / ``hop_seconds``: the ``dense``
    analysis windows; ``length_tolerance``: samples by which ``dense`` pairs may
    differ in length (the longer is trimmed at its end). ``network``: a :class:`DPAM` to use
    instead of the release's (a registered, fine-tuned model); ``calibrator``: its p_jnd
    calibration fitted under this protocol (:func:`jndqa.metric.load_calibrations` keeps one per
    protocol; :meth:`jndqa.metric.ModelRef.scorer` passes the right one); with it, every p_jnd is the
    calibrator's and ``p_jnd_calibrated`` is True. ``student``: a
    :class:`jndqa.metric.student.StudentDPAM` for the ``student`` protocol (default: the committed one).
    """

    def __init__(
        self,
        model: str = "scratch",
        protocol: str = DEFAULT_PROTOCOL,
        *,
        release: Path | None = None,
        network: DPAM | None = None,
        dtype: torch.dtype = torch.float32,
        batch_samples: int = DEFAULT_BATCH_SAMPLES,
        tests_per_chunk: int = 1,
        window_seconds: float = 8.0,
        hop_seconds: float = 4.0,
        length_tolerance: int = 1024,
        calibrator: Callable[[Any], Any] | None = None,
        student: Any = None,
    ):
        if window_seconds <= 0 or hop_seconds <= 0 or hop_seconds > window_seconds:
            raise ValueError("need 0 < hop_seconds <= window_seconds")
        self.window = round(window_seconds * MODEL_RATE)
        self.hop = round(hop_seconds * MODEL_RATE)
        self.length_tolerance = int(length_tolerance)
        self.rule = protocol_rule(protocol)  # the protocol's preprocessing rule (mono or per channel)
        if network is None:
            network = DPAM.official(official_name(model), release)
        self.net = network.eval()
        self.model_id = network.model_id
        self.calibrator = calibrator
        self.protocol = protocol
        self.student = None
        if protocol == "student":  # the committed student unless one is given
            from .student import load_student, student_weights

            self.student = student if student is not None else load_student(student_weights(), release)
            self.model_id = self.student.model_id
        self.dtype = dtype
        self.batch_samples = batch_samples
        self.tests_per_chunk = tests_per_chunk
        tune_allocator()

    # ------------------------------------------------------------- reference
    def reference(self, ref: ArrayLike) -> Reference:
        if self.rule.windowed:
            return Reference(_as_tensor(ref, self.dtype, multichannel=True))
        x = _as_tensor(ref, self.dtype)
        with torch.inference_mode():
            return Reference(x, self.net.features(x[None]))

    def prepare(self, samples: np.ndarray, rate: int, *, downmix: bool = False) -> np.ndarray:
        """``samples`` (``[L]`` or ``[L, C]``, unit scale, at ``rate``) as this protocol reads them:
        22,050 Hz, int16 scale, mixed to mono when the protocol is (``official``) or ``downmix``."""
        from .audio import prepare_samples

        return prepare_samples(samples, rate, scale="unit", mono=self.rule.mono or downmix).samples

    def check_pair(self, ref_length: int, ref_channels: int, test_length: int, test_channels: int) -> None:
        """Raise the typed error a ``dense`` pair of these shapes would get (no-op for ``official``)."""
        if not self.rule.windowed:
            return
        if ref_channels != test_channels:
            raise ChannelMismatchError(
                f"reference has {ref_channels} channel(s), test has {test_channels}; "
                "ask for a downmix (`--downmix`) to compare them as mono"
            )
        if abs(ref_length - test_length) > self.length_tolerance:
            raise LengthMismatchError(
                f"lengths differ by {abs(ref_length - test_length)} samples at {MODEL_RATE} Hz "
                f"(reference {ref_length}, test {test_length}; tolerance {self.length_tolerance}); "
                "the dense protocol needs aligned signals: align them first (jndqa.variants does) "
                "or raise the tolerance"
            )

    def _results(self, terms: torch.Tensor) -> list[PairScore]:
        dist = terms.sum(-1)
        with torch.inference_mode():
            p = self.net.p_jnd(dist)
        calibrated = self.calibrator is not None
        if calibrated:
            p = torch.as_tensor(self.calibrator(dist.double().numpy()))
        out = []
        for i in range(terms.shape[0]):
            out.append(
                PairScore(
                    float(dist[i]),
                    None if p is None else float(p[i]),
                    [float(v) for v in terms[i]],
                    p_jnd_calibrated=calibrated,
                )
            )
        return out

    def score_reference(
        self, ref: Reference, tests: Sequence[ArrayLike], progress: Callable[[int], None] | None = None
    ) -> list[PairScore]:
        """Score many tests against one reference, computing the reference's features once.

        Tests whose length differs from the reference's are scored as ordinary
        pairs (equalising the lengths changes the reference's padding).
        """
        if self.rule.windowed:
            return self._dense_reference(ref, tests, progress)
        results: list[PairScore | None] = [None] * len(tests)
        same, other = [], []
        for i, t in enumerate(tests):
            (same if len(t) == ref.length else other).append(i)
        with torch.inference_mode():
            for start in range(0, len(same), self.tests_per_chunk):
                idx = same[start : start + self.tests_per_chunk]
                batch = torch.stack([_as_tensor(tests[i], self.dtype) for i in idx])
                terms = self.net.terms_against(ref.features, batch)
                for i, r in zip(idx, self._results(terms), strict=True):
                    results[i] = r
                if progress:
                    progress(len(idx))
        if other:
            scored = self.score_pairs([(ref.samples, tests[i]) for i in other], progress=progress)
            for i, r in zip(other, scored, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------- pairs
    def score_pairs(
        self, pairs: Sequence[tuple[ArrayLike, ArrayLike]], progress: Callable[[int], None] | None = None
    ) -> list[PairScore]:
        """Score arbitrary pairs in batches; each pair's result is independent of the batch."""
        if self.rule.windowed:
            out = []
            for ref, test in pairs:
                out.extend(self._dense_reference(self.reference(ref), [test], progress))
            return out
        prepared = []
        for ref, test in pairs:
            r = _as_tensor(ref, self.dtype)
            t = _as_tensor(test, self.dtype)
            if r.shape != t.shape:
                a, b = equalize_lengths(r.numpy(), t.numpy())
                r, t = torch.from_numpy(a), torch.from_numpy(b)
            prepared.append((r, t))
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i][0]))
        results: list[PairScore | None] = [None] * len(prepared)
        chunk: list[int] = []

        def flush() -> None:
            if not chunk:
                return
            total = max(len(prepared[i][0]) for i in chunk)
            lengths = torch.tensor([len(prepared[i][0]) for i in chunk])
            refs = torch.zeros(len(chunk), total, dtype=self.dtype)
            tests = torch.zeros(len(chunk), total, dtype=self.dtype)
            for row, i in enumerate(chunk):
                n = len(prepared[i][0])
                refs[row, :n] = prepared[i][0]
                tests[row, :n] = prepared[i][1]
            with torch.inference_mode():
                fr = self.net.features(refs, lengths)
                if bool((lengths == total).all()):
                    terms = self.net.terms_against(fr, tests)  # streaming, cache-friendly
                else:
                    terms = self.net.layer_terms(fr, self.net.features(tests, lengths))
            for i, r in zip(chunk, self._results(terms), strict=True):
                results[i] = r
            if progress:
                progress(len(chunk))
            chunk.clear()

        for i in order:
            n = len(prepared[i][0])
            if chunk and (len(chunk) + 1) * max(n, len(prepared[chunk[-1]][0])) > self.batch_samples:
                flush()
            chunk.append(i)
        flush()
        return results  # type: ignore[return-value]

    def score(self, ref: ArrayLike, test: ArrayLike) -> PairScore:
        return self.score_pairs([(ref, test)])[0]

    # ----------------------------------------------------------------- dense
    def _dense_reference(
        self, ref: Reference, tests: Sequence[ArrayLike], progress: Callable[[int], None] | None
    ) -> list[PairScore]:
        xs = [_as_tensor(t, self.dtype, multichannel=True) for t in tests]
        for x in xs:
            self.check_pair(ref.length, ref.channels, int(x.shape[0]), 1 if x.dim() == 1 else int(x.shape[1]))
        if not xs:
            return []
        length = min([ref.length, *(int(x.shape[0]) for x in xs)])
        starts = dense.window_starts(length, self.window, self.hop)
        span = min(self.window, length)
        channels = ref.channels
        # terms[test][channel][window] -> [14]
        terms = torch.zeros(len(xs), channels, len(starts), 14, dtype=torch.float64)
        with torch.inference_mode():
            for c in range(channels):
                r = ref.samples if channels == 1 else ref.samples[:, c]
                for w, s0 in enumerate(starts):
                    if self.student is not None:  # the student: reference activations once per window
                        a = self.student.activations(r[None, s0 : s0 + span].to(torch.float32))
                        for k, x in enumerate(xs):
                            t = x if channels == 1 else x[:, c]
                            b = self.student.activations(t[None, s0 : s0 + span].to(torch.float32))
                            terms[k, c, w] = self.student.layer_terms(a, b)[0].double()
                        continue
                    if len(xs) == 1:  # one test: lockstep, without keeping the reference's features
                        t = xs[0] if channels == 1 else xs[0][:, c]
                        seg = r[s0 : s0 + span], t[s0 : s0 + span]
                        terms[0, c, w] = dense.dense_pair_terms(self.net, *seg, self.dtype).double()
                        continue
                    dref = dense.DenseReference(dense.dense_features(self.net, r[s0 : s0 + span], self.dtype), span)
                    for k, x in enumerate(xs):
                        t = x if channels == 1 else x[:, c]
                        terms[k, c, w] = dense.dense_terms(self.net, dref, t[s0 : s0 + span], self.dtype).double()
                    del dref
        results = []
        for k in range(len(xs)):
            per_window = terms[k].sum(-1)  # [channels, windows]
            per_channel = per_window.mean(-1)  # equal-length windows: the length-weighted mean
            worst = int(per_channel.argmax())
            dist = float(per_channel[worst])
            with torch.inference_mode():
                p = self.net.p_jnd(torch.tensor([dist], dtype=self.dtype))
            if self.calibrator is not None:
                p = torch.as_tensor(self.calibrator(np.array([dist], dtype=np.float64)))
            windows = [
                WindowScore(s0 / MODEL_RATE, (s0 + span) / MODEL_RATE, float(per_window[:, w].max()))
                for w, s0 in enumerate(starts)
            ]
            results.append(
                PairScore(
                    dist,
                    None if p is None else float(p[0]),
                    [float(v) for v in terms[k, worst].mean(0)],
                    windows=windows,
                    channels=[float(v) for v in per_channel] if channels > 1 else None,
                    worst_channel=worst if channels > 1 else None,
                    p_jnd_calibrated=self.calibrator is not None,
                )
            )
            if progress:
                progress(1)
        return results
