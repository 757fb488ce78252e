"""Batched DPAM scoring: many pairs per call, references computed once and reused.

>>> scorer = DPAMScorer("scratch")  # doctest: +SKIP
>>> ref = scorer.reference(load_audio("ref.wav").samples)  # doctest: +SKIP
>>> [s.distance for s in scorer.score_reference(ref, [a.samples, b.samples])]  # doctest: +SKIP

All signals are mono 22,050 Hz on the int16 scale (see :mod:`jndqa.metric.audio`).
Pairs of unequal length are equalised as the release does (the shorter one is
zero-padded at its start). Results do not depend on what else is in the batch.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import equalize_lengths
from .network import DPAM, Features
from .release import MODELS

__all__ = ["PROTOCOLS", "DPAMScorer", "PairScore", "Reference", "resolve_model", "tune_allocator"]

PROTOCOLS = ("official",)
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


def resolve_model(model: str) -> tuple[str, str]:
    """Accept ``scratch`` or ``dpam-scratch-official``; returns (official name, model id)."""
    name = model
    if model.startswith("dpam-") and model.endswith("-official"):
        name = model[len("dpam-") : -len("-official")]
    if name not in MODELS:
        choices = ", ".join([*MODELS, *(f"dpam-{m}-official" for m in MODELS)])
        raise ValueError(f"unknown model {model!r}; choose one of {choices}")
    return name, f"dpam-{name}-official"


@dataclass
class PairScore:
    """One pair's result. ``layer_terms`` are the 14 per-layer contributions."""

    distance: float
    p_jnd: float | None
    layer_terms: list[float] = field(default_factory=list)


@dataclass
class Reference:
    """A reference signal's features, computed once and reused against many tests."""

    samples: torch.Tensor  # [L]
    features: Features

    @property
    def length(self) -> int:
        return int(self.samples.shape[-1])


def _as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 1:
        raise ValueError(f"expected a mono signal of shape [L], got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("empty signal")
    return t.to(dtype)


class DPAMScorer:
    """Scores (reference, test) pairs with one DPAM model and protocol.

    ``model``: ``scratch`` (default), ``finetune``, ``linear_layer``,
    ``pretrained`` or their ids (``dpam-scratch-official``). ``protocol``:
    ``official`` (parity with the release). Inputs are mono, 22,050 Hz, int16 scale.
    """

    def __init__(
        self,
        model: str = "scratch",
        protocol: str = "official",
        *,
        release: Path | None = None,
        network: DPAM | None = None,
        dtype: torch.dtype = torch.float32,
        batch_samples: int = DEFAULT_BATCH_SAMPLES,
        tests_per_chunk: int = 1,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")
        if network is None:
            name, _ = resolve_model(model)
            network = DPAM.official(name, release)
        self.net = network.eval()
        self.model_id = network.model_id
        self.protocol = protocol
        self.dtype = dtype
        self.batch_samples = batch_samples
        self.tests_per_chunk = tests_per_chunk
        tune_allocator()

    # ------------------------------------------------------------- reference
    def reference(self, ref: ArrayLike) -> Reference:
        x = _as_tensor(ref, self.dtype)
        with torch.inference_mode():
            return Reference(x, self.net.features(x[None]))

    def _results(self, terms: torch.Tensor) -> list[PairScore]:
        dist = terms.sum(-1)
        with torch.inference_mode():
            p = self.net.p_jnd(dist)
        out = []
        for i in range(terms.shape[0]):
            out.append(
                PairScore(
                    float(dist[i]),
                    None if p is None else float(p[i]),
                    [float(v) for v in terms[i]],
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
