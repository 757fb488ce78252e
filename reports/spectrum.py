"""Spectrogram difference between a reference and a decoded variant, for item pages.

Both files are the run's kept FLACs: same rate, channels and alignment (the run aligned the
variant to its reference before keeping it). Channels are mixed to mono.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SpectrumError", "spectrogram_difference"]


class SpectrumError(ValueError):
    """The two files cannot be compared (unreadable, or different rates)."""


def _mono(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types; name the file either way
        raise SpectrumError(f"{path}: cannot read the kept audio ({exc})") from exc
    return x.mean(axis=1), rate


def _band_power(x: np.ndarray, n_fft: int, hop: int, edges: np.ndarray) -> np.ndarray:
    """Power ``[bands, frames]`` of a Hann-windowed STFT summed into the FFT-bin bands ``edges``."""
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(x[idx] * np.hanning(n_fft).astype(np.float32), axis=1)
    power = spec.real**2 + spec.imag**2  # [frames, bins]
    cum = np.concatenate([np.zeros((frames, 1)), np.cumsum(power, axis=1)], axis=1)
    band = (cum[:, edges[1:]] - cum[:, edges[:-1]]) / np.maximum(np.diff(edges), 1)
    return band.T


def spectrogram_difference(
    reference: str | Path, variant: str | Path, *, frames: int = 160, bands: int = 80, range_db: float = 80.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times s ``[T]``, band centres kHz ``[B]``, variant − reference dB ``[B, T]``), at most
    ``frames`` × ``bands`` cells (linear bands up to Nyquist; whole dB, as int16: a figure's data
    stays small enough for a report of hundreds of them). Levels below
    ``range_db`` under the reference's peak are floored first, so silence in both reads 0 dB."""
    ref, rate = _mono(Path(reference))
    test, test_rate = _mono(Path(variant))
    if rate != test_rate:
        raise SpectrumError(f"{variant}: rate {test_rate} Hz differs from its reference's {rate} Hz")
    n = min(len(ref), len(test))
    ref, test = ref[:n], test[:n]
    n_fft = 2048 if rate > 32000 else 1024
    hop = max(n_fft // 4, int(np.ceil(max(n - n_fft, 1) / max(frames - 1, 1))))
    edges = np.unique(np.linspace(0, n_fft // 2 + 1, bands + 1).astype(int))
    p_ref = _band_power(ref, n_fft, hop, edges)
    p_test = _band_power(test, n_fft, hop, edges)
    floor = 10 * np.log10(max(float(p_ref.max()), 1e-20)) - range_db
    db_ref = np.maximum(10 * np.log10(p_ref + 1e-20), floor)
    db_test = np.maximum(10 * np.log10(p_test + 1e-20), floor)
    diff = np.round(db_test - db_ref).astype(np.int16)
    times = (np.arange(p_ref.shape[1]) * hop + n_fft / 2) / rate
    centres = (edges[:-1] + edges[1:]) / 2 * rate / n_fft / 1000
    return times, centres, diff
