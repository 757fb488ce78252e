"""Delay alignment of a decoded variant to its reference, by cross-correlation.

The search starts from the codec's known priming delay (the prior) and looks at every lag
within ``±max_lag`` samples of it. The cross-correlation, summed over channels (so that
anti-phase channels do not cancel), is computed with FFTs over at most ``analysis_seconds``
of the reference (its most energetic stretch) and the matching stretch of the variant; the
reference's spectrum is kept for its other variants. The lag with the largest magnitude wins.
The correlation reported and judged is then computed at that lag over all the samples the two
signals share, normalised by their energies (1.0 for an exact delayed copy, -1.0 for an
inverted one), so a variant that goes wrong outside the analysed stretch still shows.

A variant is not sample-aligned, and :class:`AlignmentFailed` is raised, when that correlation's
magnitude is below ``min_correlation``, when the peak lies on the edge of the lag window (the
delay is probably larger than the window), or when the variant is silent and the reference is
not.

Codecs that resynthesise the signal (vocoders, generative codecs) keep its timing but not its
waveform: sample for sample they correlate weakly with their reference. For them
:func:`find_envelope_offset` aligns the signals' log-energy envelopes (10 ms windows every 1 ms,
searched ±0.5 s around the prior) and accepts the lag when the envelopes' correlation reaches
``min_correlation`` (0.8 by default); the renderer then tries the samples again near that lag (a
waveform copy delayed beyond the lag window aligns by samples). The result says which method
aligned it (``Alignment.method``), so a metric that needs sample alignment can refuse a pair
aligned by envelope only while the others score it.

Effects that keep the bulk of the signal's energy (a low-pass at a few kHz, a
compressor, a gain) stay well above the default threshold of 0.5; effects that remove most of
it (a narrow band-pass of broadband material) may need a lower one.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.fft

from .errors import AlignmentFailed, VariantError

__all__ = [
    "ENVELOPE_HOP_SECONDS",
    "ENVELOPE_WINDOW_SECONDS",
    "MIN_ENVELOPE_CORRELATION",
    "Alignment",
    "apply_offset",
    "find_envelope_offset",
    "find_offset",
    "match_channels",
    "spectrum_cache",
]

ENVELOPE_WINDOW_SECONDS = 0.010
ENVELOPE_HOP_SECONDS = 0.001
ENVELOPE_MAX_LAG_SECONDS = 0.5
MIN_ENVELOPE_CORRELATION = 0.8

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def spectrum_cache(owner: object) -> dict:
    """A dict for what alignment computes once per reference (its spectrum, its cumulative
    energy), kept as long as ``owner`` (the reference) lives."""
    with _CACHE_LOCK:
        cache = _CACHES.get(owner)
        if cache is None:
            cache = _CACHES[owner] = {}
        return cache


@dataclass(frozen=True)
class Alignment:
    """``offset``: the variant's sample ``offset + n`` matches the reference's sample ``n``.
    ``correlation``: at that offset, of the samples (``method`` "samples") or of the envelopes
    ("envelope"); None when the reference is silent (nothing to align on)."""

    offset: int
    correlation: float | None
    method: str = "samples"


def match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Bring ``x`` ``[n, c]`` to ``channels``: kept when equal, mono copied to every channel,
    several averaged to mono. Other layouts raise (the spec should set ``channels``)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return np.ascontiguousarray(np.repeat(x, channels, axis=1))
    if channels == 1:
        return x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    raise VariantError(
        f"the decoded variant has {c} channels and the reference {channels}; there is no obvious mapping",
        hint=f"set channels: {channels} in the spec (or 1 for a mono variant)",
    )


def _energy_csum(ref: np.ndarray, cache: dict | None) -> np.ndarray:
    """Cumulative energy of ``ref`` over time (summed over channels), ``[L + 1]`` float64."""
    csum = cache.get("energy") if cache is not None else None
    if csum is None:
        csum = np.zeros(ref.shape[0] + 1)
        np.cumsum(np.einsum("ij,ij->i", ref, ref, dtype=np.float64), out=csum[1:])
        if cache is not None:
            cache["energy"] = csum
    return csum


def _excerpt(csum: np.ndarray, length: int) -> int:
    """Start of the most energetic stretch of ``length`` samples (``csum``: :func:`_energy_csum`)."""
    if csum.shape[0] - 1 <= length:
        return 0
    return int(np.argmax(csum[length:] - csum[:-length]))


def _overlap_correlation(ref: np.ndarray, var: np.ndarray, offset: int, csum: np.ndarray) -> float:
    """Normalised correlation of ``ref[n]`` with ``var[n + offset]`` over all their common ``n``."""
    lo, hi = max(0, -offset), min(ref.shape[0], var.shape[0] - offset)
    if hi <= lo:
        return 0.0
    v = var[lo + offset : hi + offset]
    num = float(np.einsum("ij,ij->", ref[lo:hi], v, dtype=np.float64))
    den = float(csum[hi] - csum[lo]) * float(np.einsum("ij,ij->", v, v, dtype=np.float64))
    return num / np.sqrt(den) if den > 0 else 0.0


def find_offset(
    ref: np.ndarray,
    var: np.ndarray,
    rate: int,
    *,
    prior: int = 0,
    max_lag: int = 2048,
    min_correlation: float = 0.5,
    analysis_seconds: float = 5.0,
    cache: dict | None = None,
) -> Alignment:
    """The offset of ``var`` against ``ref`` (both ``[n, C]`` float32 at ``rate``) within
    ``prior ± max_lag``, and its normalised correlation. See the module docstring."""
    length = min(ref.shape[0], max(int(analysis_seconds * rate), 1))
    csum = _energy_csum(ref, cache)
    if csum[-1] == 0.0:
        return Alignment(prior, None)  # a silent reference: nothing to align on
    start = _excerpt(csum, length)
    width = 2 * max_lag + 1
    seg_len = length + width - 1
    n = scipy.fft.next_fast_len(seg_len, real=True)
    key = (start, length, n)
    spec_r = cache.get(key) if cache is not None else None
    if spec_r is None:
        r = np.ascontiguousarray(ref[start : start + length].T)  # [C, length]
        spec_r = np.conj(scipy.fft.rfft(r, n=n, axis=1, workers=-1))
        if cache is not None:
            cache[key] = spec_r
    # The variant samples that lags prior-max_lag .. prior+max_lag can reach; zeros outside it.
    lo = start + prior - max_lag
    seg = np.zeros((var.shape[1], seg_len), dtype=np.float32)
    a, b = max(lo, 0), min(lo + seg_len, var.shape[0])
    if b > a:
        seg[:, a - lo : b - lo] = var[a:b].T
    if not seg.any():
        raise AlignmentFailed(f"the decoded variant is silent (or absent) around offset {prior} ± {max_lag}")
    spec_v = scipy.fft.rfft(seg, n=n, axis=1, workers=-1)
    spec_v *= spec_r
    xc = scipy.fft.irfft(spec_v.sum(axis=0), n=n, workers=-1)[:width]
    k = int(np.argmax(np.abs(xc)))
    offset = lo - start + k
    corr = _overlap_correlation(ref, var, offset, csum)
    if abs(corr) < min_correlation:
        raise AlignmentFailed(
            f"the best correlation with the reference is {corr:.3f} (at offset {offset}), "
            f"below the threshold {min_correlation:g}: the variant does not resemble its reference "
            f"within {prior} ± {max_lag} samples"
        )
    if max_lag > 0 and k in (0, width - 1):
        raise AlignmentFailed(
            f"the correlation peaks at the edge of the lag window ({offset} = {prior} "
            f"{'-' if k == 0 else '+'} {max_lag}): the variant's delay is probably larger",
            hint="raise max_lag, or check the effects for a delay",
        )
    return Alignment(offset, float(corr))


def _energies(x: np.ndarray, rate: int) -> np.ndarray:
    """Mean energy (summed over channels) in ``ENVELOPE_WINDOW_SECONDS`` windows every
    ``ENVELOPE_HOP_SECONDS``, float64 ``[frames]``."""
    win = max(round(ENVELOPE_WINDOW_SECONDS * rate), 1)
    hop = max(round(ENVELOPE_HOP_SECONDS * rate), 1)
    csum = np.concatenate([[0.0], np.cumsum(np.einsum("ij,ij->i", x, x, dtype=np.float64))])
    starts = np.arange(0, max(x.shape[0] - win, 0) + 1, hop)
    return (csum[np.minimum(starts + win, x.shape[0])] - csum[starts]) / win


def find_envelope_offset(
    ref: np.ndarray,
    var: np.ndarray,
    rate: int,
    *,
    prior: int = 0,
    max_lag_seconds: float = ENVELOPE_MAX_LAG_SECONDS,
    min_correlation: float = MIN_ENVELOPE_CORRELATION,
) -> Alignment:
    """The offset of ``var`` against ``ref`` (both ``[n, C]`` float32 at ``rate``) from their log-energy
    envelopes, within ``prior ± max_lag_seconds``, to the envelope's hop (1 ms). The correlation is the
    envelopes' Pearson correlation over their overlap at that lag; below ``min_correlation`` the
    variant is :class:`AlignmentFailed`."""
    hop = max(round(ENVELOPE_HOP_SECONDS * rate), 1)
    a, b = _energies(ref, rate), _energies(var, rate)
    if a.size < 2 or b.size < 2:
        raise AlignmentFailed("too short to align by envelope")
    floor = 1e-6 * float(a.mean()) + 1e-20  # 60 dB below the reference's mean: silence is one level
    a, b = np.log(a + floor), np.log(b + floor)
    centre, reach = round(prior / hop), round(max_lag_seconds * rate / hop)
    lags = np.arange(centre - reach, centre + reach + 1)
    lo, hi = np.maximum(0, -lags), np.minimum(a.size, b.size - lags)
    keep = hi - lo >= min(a.size, b.size) // 2  # at least half the shorter envelope overlaps
    if not keep.any():
        raise AlignmentFailed(f"no lag within {prior} ± {max_lag_seconds:g} s overlaps half of the signals")
    lags, lo, hi = lags[keep], lo[keep], hi[keep]
    # Pearson correlation at every lag, from sums over each lag's overlap (FFT for the cross term).
    n = scipy.fft.next_fast_len(a.size + b.size, real=True)
    ab = scipy.fft.irfft(np.conj(scipy.fft.rfft(a, n)) * scipy.fft.rfft(b, n), n)[lags % n]
    ca, caa = np.concatenate([[0.0], np.cumsum(a)]), np.concatenate([[0.0], np.cumsum(a * a)])
    cb, cbb = np.concatenate([[0.0], np.cumsum(b)]), np.concatenate([[0.0], np.cumsum(b * b)])
    m = (hi - lo).astype(np.float64)
    sa, saa = ca[hi] - ca[lo], caa[hi] - caa[lo]
    sb, sbb = cb[hi + lags] - cb[lo + lags], cbb[hi + lags] - cbb[lo + lags]
    cov, va, vb = ab - sa * sb / m, saa - sa * sa / m, sbb - sb * sb / m
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((va > 0) & (vb > 0), cov / np.sqrt(np.maximum(va * vb, 1e-300)), 0.0)
    k = int(np.argmax(r))
    best, corr = int(lags[k]), float(r[k])
    if not np.isfinite(corr) or corr < min_correlation:
        raise AlignmentFailed(
            f"the envelopes correlate at {corr:.3f} at best (offset {best * hop} samples), below "
            f"{min_correlation:g}: the variant does not follow its reference in time"
        )
    return Alignment(best * hop, corr, "envelope")


def apply_offset(var: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``out[n] = var[n + offset]`` for ``n < length``, zeros where ``var`` has no sample:
    drops a positive offset's leading samples (or pads a negative one) and trims or pads the
    end to ``length``."""
    out = np.zeros((length, var.shape[1]), dtype=np.float32)
    src, dst = max(offset, 0), max(-offset, 0)
    count = min(length - dst, var.shape[0] - src)
    if count > 0:
        out[dst : dst + count] = var[src : src + count]
    return out
