"""Integrated loudness (ITU-R BS.1770-4, as pyloudnorm implements it) and loudness normalisation.

:func:`integrated_loudness` is pyloudnorm's ``Meter(rate).integrated_loudness`` with the same
K-weighting filters (built by ``pyloudnorm.IIRfilter`` with the Meter's parameters), the same
400 ms blocks with 75 % overlap and the same bounds, the same channel weights and the same
absolute (-70 LUFS) and relative (-10 LU) gates, vectorised: the block energies come from a
cumulative sum instead of a Python loop over blocks, which makes it about five times faster on
a 10 s clip and keeps long items cheap. The tests check it against ``pyloudnorm.Meter``.

Loudness is undefined for a signal not longer than one 400 ms gating block, for a silent one
(every block gated out) and for more than 5 channels (BS.1770's channel weights stop there):
those give None, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .reference import Reference

__all__ = ["db_to_gain", "integrated_loudness", "normalize_loudness"]

BLOCK_SECONDS = 0.4
OVERLAP = 0.75
ABSOLUTE_GATE = -70.0
RELATIVE_GATE = -10.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


@lru_cache(maxsize=32)
def _k_weighting(rate: int) -> tuple[np.ndarray, float]:
    """Second-order sections and overall passband gain of pyloudnorm's K-weighting at ``rate``."""
    from pyloudnorm import IIRfilter

    stages = (
        IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    )
    sos = np.array([np.concatenate([np.asarray(f.b) / f.a[0], np.asarray(f.a) / f.a[0]]) for f in stages])
    return sos, float(np.prod([f.passband_gain for f in stages]))


def integrated_loudness(samples: np.ndarray, rate: int) -> float | None:
    """Integrated loudness in LUFS of ``samples`` ``[L]`` or ``[L, C]`` (full scale ±1.0) at
    ``rate``; None when it is undefined (see the module docstring)."""
    from scipy.signal import sosfilt

    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    n, channels = x.shape
    if n <= int(BLOCK_SECONDS * rate) or not 1 <= channels <= len(CHANNEL_WEIGHTS):
        return None
    sos, gain = _k_weighting(rate)
    y = sosfilt(sos, np.ascontiguousarray(x.T, dtype=np.float64), axis=1)  # [C, n]
    # The channel-weighted power per sample; block means of it are the weighted block powers
    # (the gating averages are linear in the channels, so weighting first changes nothing).
    power = np.einsum("c,cn,cn->n", np.asarray(CHANNEL_WEIGHTS[:channels]) * gain**2, y, y)
    step = 1.0 - OVERLAP
    count = int(np.round((n / rate - BLOCK_SECONDS) / (BLOCK_SECONDS * step))) + 1
    j = np.arange(count)
    lower = (BLOCK_SECONDS * (j * step) * rate).astype(np.int64)  # pyloudnorm's bounds, exactly
    upper = np.minimum((BLOCK_SECONDS * (j * step + 1) * rate).astype(np.int64), n)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    z = (csum[upper] - csum[lower]) / (BLOCK_SECONDS * rate)
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10.0 * np.log10(z)
        above_absolute = block_loudness >= ABSOLUTE_GATE
        if not above_absolute.any():
            return None
        relative = -0.691 + 10.0 * np.log10(z[above_absolute].mean()) + RELATIVE_GATE
        gated = (block_loudness > relative) & (block_loudness > ABSOLUTE_GATE)
        if not gated.any():
            return None
        value = -0.691 + 10.0 * np.log10(z[gated].mean())
    return float(value) if math.isfinite(value) else None


def normalize_loudness(reference: Reference, target_lufs: float = -23.0) -> Reference:
    """The reference scaled to ``target_lufs`` integrated loudness (EBU R 128's -23 LUFS by
    default), to be encoded and scored in its place; the gain applied is added to
    ``gain_db``. A reference whose loudness is undefined (too short, silent) comes back
    unchanged. Samples may exceed ±1.0 after a gain above 0 dB: they are not clipped.
    """
    current = reference.loudness
    if current is None:
        return reference
    gain_db = float(target_lufs) - current
    samples = (reference.samples * np.float32(db_to_gain(gain_db))).astype(np.float32)
    return replace(reference, samples=samples, gain_db=reference.gain_db + gain_db)
