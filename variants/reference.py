"""The reference recording a variant is made from and compared with.

Input contract: float32 samples ``[L, C]`` on the usual full scale (±1.0), a sample rate in
Hz, and a name used in messages (the corpus item's path). Constructing a :class:`Reference`
checks it, so a reference that exists is usable; a bad one raises :class:`InputError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["Reference", "load_reference"]


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference recording: ``samples`` float32 ``[L, C]`` (C-contiguous), ``rate`` in Hz,
    ``name`` for messages. ``gain_db`` records a gain already applied to it (by
    :func:`jndqa.variants.normalize_loudness`), 0.0 when none.

    Use :meth:`from_array` to build one from any float array (1-D is taken as mono).
    """

    samples: np.ndarray
    rate: int
    name: str = "reference"
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        x = self.samples
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or not x.flags.c_contiguous:
            raise InputError(
                "samples must be a C-contiguous float32 array [L, C]",
                item=self.name,
                hint="build the reference with Reference.from_array",
            )
        if not isinstance(self.rate, int | np.integer) or not 1000 <= int(self.rate) <= 768000:
            raise InputError(f"sample rate {self.rate!r} is not a rate in Hz", item=self.name)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise InputError(f"the reference is empty (shape {x.shape})", item=self.name)
        if x.shape[1] > 8:
            raise InputError(f"the reference has {x.shape[1]} channels; at most 8 are supported", item=self.name)
        if not np.isfinite(x).all():
            bad = int(np.size(x) - np.isfinite(x).sum())
            raise InputError(f"the reference has {bad} NaN or infinite samples", item=self.name)
        object.__setattr__(self, "rate", int(self.rate))

    @classmethod
    def from_array(cls, samples: np.ndarray, rate: int, name: str = "reference") -> Reference:
        """From a float array ``[L]`` or ``[L, C]``. Integer arrays are refused: their scale is
        not guessed (divide by 32768 yourself for int16)."""
        x = np.asarray(samples)
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(
                f"samples are {x.dtype}, not floating point",
                item=name,
                hint="convert to float on the ±1.0 scale first (e.g. int16 / 32768)",
            )
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise InputError(f"samples must be [L] or [L, C], not shape {x.shape}", item=name)
        return cls(np.ascontiguousarray(x, dtype=np.float32), int(rate), name)

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    @cached_property
    def loudness(self) -> float | None:
        """Integrated loudness (BS.1770, LUFS); None when too short or silent. Computed once."""
        from .loudness import integrated_loudness

        return integrated_loudness(self.samples, self.rate)


def load_reference(path: str | os.PathLike, name: str | None = None, *, ffmpeg: str | None = None) -> Reference:
    """Read an audio file as a :class:`Reference` (soundfile; ffmpeg for what libsndfile cannot
    read, such as m4a). Raises :class:`InputError` naming the file when it is missing,
    unreadable, empty or not finite.
    """
    name = name if name is not None else os.fspath(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file", item=name)
    import soundfile as sf

    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as sf_error:
        data, rate = _read_with_ffmpeg(p, name, ffmpeg, sf_error)
    return Reference.from_array(data, int(rate), name)


def _read_with_ffmpeg(path: Path, name: str, ffmpeg: str | None, first: Exception) -> tuple[np.ndarray, int]:
    from .errors import VariantError
    from .ffmpeg import BASE_ARGS, parse_wav, resolve_ffmpeg, wav_output
    from .proc import run_tool

    try:
        binary = resolve_ffmpeg(ffmpeg)
        out = run_tool([binary, *BASE_ARGS, "-i", str(path), *wav_output()], what="ffmpeg reading", timeout=120.0)
        data, rate = parse_wav(out.stdout)
    except VariantError as exc:
        raise InputError(
            f"{path} is not readable audio (libsndfile: {first}; ffmpeg: {exc.reason})", item=name
        ) from None
    return data, rate
