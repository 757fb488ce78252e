"""DPAM's per-channel terms of training pairs under a protocol, computed once and cached in the store.

In the ``head`` and ``channels`` modes of training the feature network is frozen, so each pair's
per-layer, per-channel mean absolute feature differences (``[992]``,
:func:`jndqa.metric.pair_terms` under ``official``, :func:`jndqa.metric.dense.dense_channel_terms`
under ``dense``) depend only on the pair's audio, the network's kernels and betas and the protocol.
They are the expensive part (under ``dense``: 240,000 multiply-adds per sample and signal); every
epoch, and every later retraining on the same pairs, reuses them.

Cache: the store's content-keyed ``cache`` table, namespace :data:`NAMESPACE`; the key hashes the
sha256 of the reference and test audio, :func:`feature_digest` of the network (kernels and betas
only: new channel weights or a new head keep the terms valid), the protocol key (``dense``,
``dense:w4h2``, ``official``) and how the pair was lined up (``pad``: the shorter signal zero-padded
at its start, as the release presents judged pairs; ``align``: the test aligned to its reference as
the nightly aligns variants, for rated stimuli such as codec outputs). The value is the 992 terms
as float64, base64 (exact).

Loading: mono, 22,050 Hz, int16 scale (:func:`jndqa.metric.load_audio`). A pair that cannot be read or
aligned is a failure (its index and reason), never an exception; the others are computed.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NAMESPACE", "TermsPair", "TermsResult", "cached_terms", "feature_digest", "terms_key"]

NAMESPACE = "terms"
N_TERMS = 992


@dataclass(frozen=True)
class TermsPair:
    """One pair to compute terms of: audio paths, their content sha256, and ``lineup`` (``pad`` or
    ``align``: module docstring)."""

    ref: str
    test: str
    ref_sha256: str
    test_sha256: str
    lineup: str = "pad"


@dataclass
class TermsResult:
    """``terms``: ``[N, 992]`` float64 (a failed pair's row is NaN); ``failures``: ``{index, ref, test,
    reason}``; ``computed``: how many distinct pairs (by cache key) were computed now; ``cached``: how many
    rows were read from the store (pairs repeated within the call and computed once count in neither);
    ``seconds``: wall time."""

    terms: np.ndarray
    failures: list[dict]
    computed: int
    cached: int
    seconds: float

    @property
    def ok(self) -> np.ndarray:
        """Indices of the pairs that have terms."""
        failed = {f["index"] for f in self.failures}
        return np.array([i for i in range(len(self.terms)) if i not in failed], dtype=np.int64)


def feature_digest(net: Any) -> str:
    """sha256 of the network's kernels and betas (what the terms depend on), 16 hex digits."""
    h = hashlib.sha256()
    for t in [*net.kernels, *net.betas]:
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def terms_key(pair: TermsPair, digest: str, protocol_key: str) -> str:
    """The cache key of ``pair``'s terms under ``protocol_key`` with a network of :func:`feature_digest`
    ``digest``."""
    text = f"{pair.ref_sha256}:{pair.test_sha256}:{digest}:{protocol_key}:{pair.lineup}"
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(row: np.ndarray) -> str:
    return base64.b64encode(np.asarray(row, dtype="<f8").tobytes()).decode("ascii")


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").copy()


def _load(pair: TermsPair, samples_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """The pair as int16-scale mono float32 signals of equal length at 22,050 Hz."""
    from jndqa.metric import load_audio
    from jndqa.metric.audio import MODEL_RATE, equalize_lengths

    ref, test = load_audio(pair.ref).samples, load_audio(pair.test).samples
    if pair.lineup == "align":
        from .pairing import align_pair

        test, _, _ = align_pair(ref, test, MODEL_RATE, samples_only=samples_only)
        return ref, np.ascontiguousarray(test, dtype=np.float32)
    return equalize_lengths(ref, test)


def cached_terms(
    store: Any,
    net: Any,
    pairs: Sequence[TermsPair],
    *,
    protocol: str,
    protocol_key: str,
    window: int = 8 * 22050,
    hop: int = 4 * 22050,
    log: Callable[[str], None] | None = None,
) -> TermsResult:
    """Terms of ``pairs`` under ``protocol`` (``dense`` with ``window`` / ``hop`` samples, or ``official``)
    with ``net``'s kernels and betas: read from ``store``'s cache where present, else computed and stored
    (in batches of 64, so a killed run keeps what it computed). ``log`` gets a progress line per batch."""
    import torch

    if protocol not in ("dense", "official"):
        raise ValueError(f"terms are computed under 'dense' or 'official', not {protocol!r}")
    started = time.perf_counter()
    digest = feature_digest(net)
    keys = [terms_key(p, digest, protocol_key) for p in pairs]
    known = store.cache_get(NAMESPACE, keys) if keys else {}
    out = np.full((len(pairs), N_TERMS), np.nan)
    failures: list[dict] = []
    todo: list[int] = []  # the first pair of each key not in the store
    same: dict[str, list[int]] = {}  # key -> every pair with it
    for i, k in enumerate(keys):
        if k in known:
            out[i] = _decode(known[k])
        else:
            if k not in same:
                todo.append(i)
            same.setdefault(k, []).append(i)
    computed = 0
    for start in range(0, len(todo), 64):
        batch = todo[start : start + 64]
        new: dict[str, str] = {}
        for i in batch:
            p = pairs[i]
            try:
                ref, test = _load(p, samples_only=protocol == "dense")
            except (ValueError, OSError) as exc:  # AudioLoadError is a ValueError; so is a failed alignment
                failures += [{"index": j, "ref": pairs[j].ref, "test": pairs[j].test, "reason": str(exc)}
                             for j in same[keys[i]]]  # fmt: skip
                continue
            with torch.inference_mode():
                if protocol == "dense":
                    from jndqa.metric.dense import dense_channel_terms

                    row = dense_channel_terms(net, torch.from_numpy(ref), torch.from_numpy(test), window, hop)
                else:
                    from jndqa.metric import pair_terms

                    row = pair_terms(net, [(ref, test)], scale="int16")[0]
            out[same[keys[i]]] = row.double().numpy()
            new[keys[i]] = _encode(out[i])
            computed += 1
        store.cache_put(NAMESPACE, new)
        if log:
            log(f"terms under {protocol_key}: {start + len(batch)}/{len(todo)} computed "
                f"({len(pairs) - sum(map(len, same.values()))} from the store)")  # fmt: skip
    cached = len(pairs) - sum(len(same[keys[i]]) for i in todo)
    return TermsResult(out, failures, computed, cached, time.perf_counter() - started)
