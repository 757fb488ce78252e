"""Preprocessing for DPAM (``docs/metric.md`` §2), with every conversion explicit.

The official loader is ``librosa.load(path, sr=22050)`` then ``round(x · 32768)``.
:func:`load_audio` does the same with soundfile and a named resampler: channels
are averaged to mono, other rates are resampled to 22,050 Hz with soxr's
"HQ" quality (librosa ≥ 0.10's default, ``soxr_hq``), and the samples are put
on the int16 scale the model expects. What was done is recorded in the
returned :class:`PreparedAudio`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "MODEL_RATE",
    "AudioLoadError",
    "PreparedAudio",
    "equalize_lengths",
    "load_audio",
    "prepare_samples",
]

MODEL_RATE = 22050
RESAMPLER = "soxr-hq"


class AudioLoadError(ValueError):
    """An audio file is missing, unreadable, empty or not audio."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class PreparedAudio:
    """A signal ready for the model: 22,050 Hz, int16 scale (float32); ``[L]`` when mixed
    to mono (the default), ``[L, channels]`` when channels were kept."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    resampler: str | None  # None when no resampling was needed
    path: str | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / MODEL_RATE

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])


def prepare_samples(
    x: np.ndarray, rate: int, *, scale: Literal["unit", "int16"], path: str | None = None, mono: bool = True
) -> PreparedAudio:
    """Convert raw samples (``[L]`` or ``[L, channels]``) to the model's input.

    ``scale="unit"``: values in [-1, 1] (soundfile's float output); they are
    multiplied by 32768 and rounded half-to-even, as the release does.
    ``scale="int16"``: values already on the int16 scale; they are rounded too.
    ``mono``: average the channels (the release's behaviour); else keep them.
    """
    if scale not in ("unit", "int16"):
        raise ValueError(f"scale must be 'unit' or 'int16', got {scale!r}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected samples of shape [L] or [L, channels], got {x.shape}")
    channels = 1 if x.ndim == 1 else x.shape[1]
    if x.ndim == 2 and (mono or channels == 1):
        x = x.mean(axis=1)
    resampler = None
    if rate != MODEL_RATE:
        import soxr

        x = soxr.resample(x, rate, MODEL_RATE, quality="HQ")
        resampler = RESAMPLER
    if scale == "unit":
        x = x * x.dtype.type(32768.0)  # a power of two: exact in float32 too
    return PreparedAudio(np.round(x).astype(np.float32), int(rate), int(channels), resampler, path)


def load_audio(path: str | Path, *, mono: bool = True) -> PreparedAudio:
    """Read an audio file and prepare it for DPAM; raises :class:`AudioLoadError` naming the file.

    ``mono=False`` keeps the channels (``[L, channels]`` for multichannel files)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioLoadError(p, "file not found; check the path (relative paths start at the working directory)")
    if not p.is_file():
        raise AudioLoadError(p, "not a regular file")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)  # exact for 16- and 24-bit PCM
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioLoadError(
            p, f"not readable as audio ({exc}); convert it to WAV or FLAC, e.g. `ffmpeg -i IN out.wav`"
        ) from exc
    if data.shape[0] == 0:
        raise AudioLoadError(p, "contains no samples")
    if not np.isfinite(data).all():
        raise AudioLoadError(p, "contains NaN or infinite samples")
    return prepare_samples(data, rate, scale="unit", path=str(p), mono=mono)


def equalize_lengths(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the shorter signal at its **start** to the longer length (the release's ``check_length``)."""
    la, lb = len(a), len(b)
    if la < lb:
        a = np.concatenate([np.zeros(lb - la, dtype=a.dtype), a])
    elif lb < la:
        b = np.concatenate([np.zeros(la - lb, dtype=b.dtype), b])
    return a, b
