"""The ffmpeg binary: where it is, what it is, and the argument lists the renderer runs.

Resolution order (:func:`resolve_ffmpeg`): the spec's own ``ffmpeg``, the configured path,
``ffmpeg`` on ``PATH``, the binary shipped in the imageio-ffmpeg wheel. What a binary is
(:func:`ffmpeg_info`: version, library versions, audio encoders) is read once per process and
binary file; a rebuilt binary at the same path is read again.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .codecs import RAW_CONTAINERS, default_container, demuxer_for
from .errors import DecoderEmpty, EncoderUnavailable, VariantError
from .proc import run_tool

__all__ = [
    "FFmpegInfo",
    "encoder_library_version",
    "ffmpeg_info",
    "parse_wav",
    "resolve_ffmpeg",
]

BASE_ARGS = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
INFO_TIMEOUT = 30.0


def resolve_ffmpeg(ffmpeg: str | os.PathLike | None = None, *, base_dir: str | None = None) -> str:
    """The ffmpeg binary to use: ``ffmpeg`` when given (a path, or a name looked up on ``PATH``;
    relative paths resolve against ``base_dir``), else ``ffmpeg`` on ``PATH``, else the
    imageio-ffmpeg binary. Raises :class:`EncoderUnavailable` when a given one is missing or
    none is found.
    """
    if ffmpeg is not None:
        name = os.fspath(ffmpeg)
        if os.sep in name or (os.altsep and os.altsep in name):
            path = Path(base_dir, name) if base_dir and not os.path.isabs(name) else Path(name)
            if path.is_file() and os.access(path, os.X_OK):
                return str(path.resolve())
            raise EncoderUnavailable(
                f"the ffmpeg binary {str(path)!r} does not exist or is not executable",
                hint="correct the spec's 'ffmpeg' path or the configured ffmpeg",
            )
        found = shutil.which(name)
        if found:
            return found
        raise EncoderUnavailable(f"the ffmpeg binary {name!r} is not on PATH", hint="install it or give a full path")
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # RuntimeError when the wheel has no binary for this platform
        raise EncoderUnavailable(
            f"no ffmpeg found: not on PATH, and imageio-ffmpeg has none ({exc})",
            hint="install ffmpeg (Debian: apt-get install ffmpeg) or configure its path",
        ) from None


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class FFmpegInfo:
    """What an ffmpeg binary is."""

    path: str
    version: str  # e.g. "5.1.9-0+deb12u1"
    libraries: dict[str, str]  # e.g. {"libavcodec": "59.37.100", ...} (the versions in use)
    encoders: frozenset[str]  # audio encoder names
    configuration: str = ""
    _lib_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def line(self) -> str:
        """``ffmpeg 5.1.9-0+deb12u1 (libavcodec 59.37.100)``."""
        lavc = self.libraries.get("libavcodec")
        return f"ffmpeg {self.version}" + (f" (libavcodec {lavc})" if lavc else "")


_INFO: dict[tuple, FFmpegInfo] = {}
_LOCK = threading.Lock()


def ffmpeg_info(path: str, timeout: float = INFO_TIMEOUT) -> FFmpegInfo:
    """Version, library versions and audio encoders of the binary at ``path`` (cached)."""
    key = _identity(path)
    with _LOCK:
        if key in _INFO:
            return _INFO[key]
    try:
        version_out = run_tool([path, "-hide_banner", "-version"], what="ffmpeg -version", timeout=timeout).stdout
        enc_out = run_tool([path, "-hide_banner", "-encoders"], what="ffmpeg -encoders", timeout=timeout).stdout
    except VariantError as exc:
        raise EncoderUnavailable(f"{path} does not run as ffmpeg: {exc.reason}", stderr=exc.stderr) from None
    text = version_out.decode("utf-8", "replace")
    m = re.search(r"^ffmpeg version (\S+)", text, re.M)
    if not m:
        raise EncoderUnavailable(f"{path} is not ffmpeg (its -version output does not say so)")
    libraries = {}
    for lm in re.finditer(r"^(lib\w+)\s+[\d. ]+/\s*(\d+)\.\s*(\d+)\.\s*(\d+)", text, re.M):
        libraries[lm.group(1)] = f"{lm.group(2)}.{lm.group(3)}.{lm.group(4)}"
    cm = re.search(r"^configuration: (.*)$", text, re.M)
    encoders = set()
    for line in enc_out.decode("utf-8", "replace").splitlines():
        em = re.match(r"^\s*A[A-Z.]{5}\s+(\S+)", line)
        if em and em.group(1) != "=":
            encoders.add(em.group(1))
    info = FFmpegInfo(path, m.group(1), libraries, frozenset(encoders), cm.group(1) if cm else "")
    with _LOCK:
        _INFO[key] = info
    return info


# --- encoder library versions ---------------------------------------------------------------

# Where the version of an external library shows: in the stream it writes, in its shared
# library, or in a static ffmpeg binary.
_LIB_FILES = {
    "libmp3lame": ("libmp3lame",),
    "libopus": ("libopus",),
    "libvorbis": ("libvorbis",),
    "libspeex": ("libspeex",),
    "libtwolame": ("libtwolame",),
    "libshine": ("libshine",),
    "libfdk_aac": ("libfdk-aac", "libfdk_aac"),
    "libgsm": ("libgsm",),
    "libcodec2": ("libcodec2",),
    "libopencore_amrnb": ("libopencore-amrnb",),
}
_LIB_PATTERNS = {
    "libmp3lame": [rb"LAME(\d+\.\d+[a-z0-9]*)"],
    "libopus": [rb"libopus (\d+\.\d+(?:\.\d+)?(?:[-~+][\w.]+)?)", rb"libopus (unknown)"],
    "libvorbis": [rb"Xiph\.Org libVorbis (\d+\.\d+\.\d+)", rb"Xiph\.Org libVorbis I (\d{8})"],
    "libspeex": [rb"Speex +(\d+\.\d+(?:\.\d+)?)", rb"speex-(\d+\.\d+(?:\.\d+)?)"],
    "libtwolame": [rb"twolame[ -](\d+\.\d+\.\d+)"],
    "libfdk_aac": [rb"FDK Tools[^\x00]{0,40}?(\d+\.\d+\.\d+)"],
}


def _scan(data: bytes, patterns: Sequence[bytes]) -> str | None:
    for pattern in patterns:
        m = re.search(pattern, data)
        if m:
            return m.group(1).decode("ascii", "replace")
    return None


def _scan_file(path: str, patterns: Sequence[bytes], chunk: int = 1 << 24) -> str | None:
    overlap = 256
    tail = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return None
            found = _scan(tail + block, patterns)
            if found:
                return found
            tail = block[-overlap:]


def _linked_libraries(path: str) -> list[str]:
    ldd = shutil.which("ldd")
    if not ldd:
        return []
    try:
        out = run_tool([ldd, path], what="ldd", timeout=INFO_TIMEOUT).stdout.decode("utf-8", "replace")
    except VariantError:
        return []
    return re.findall(r"=>\s*(/\S+)", out)


def _probe_stream(info: FFmpegInfo, codec: str, timeout: float) -> bytes:
    rate, channels = 48000, 2
    noise = (np.random.default_rng(0).standard_normal((rate // 2, channels)) * 0.05).astype("<f4")
    argv = [info.path, *BASE_ARGS, "-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0"]
    argv += ["-c:a", codec, "-f", default_container(codec), "pipe:1"]
    try:
        return run_tool(argv, what=f"probe of {codec}", stdin=noise.tobytes(), timeout=timeout).stdout
    except VariantError:
        return b""


def encoder_library_version(info: FFmpegInfo, codec: str, timeout: float = INFO_TIMEOUT) -> str | None:
    """The version of the external library behind an ffmpeg encoder (``libopus`` -> ``"libopus
    1.3.1"``), when it can be found: in a short stream the encoder writes, in the shared
    library ffmpeg loads, or in a static binary. None for ffmpeg's native encoders (the
    libavcodec version covers them) and when it cannot be found.
    """
    if codec not in _LIB_FILES:
        return None
    with _LOCK:
        if codec in info._lib_cache:
            return info._lib_cache[codec]
    patterns = _LIB_PATTERNS.get(codec, [])
    found = _scan(_probe_stream(info, codec, timeout), patterns) if patterns else None
    if found is None:
        libs = [p for p in _linked_libraries(info.path) if Path(p).name.startswith(_LIB_FILES[codec])]
        for lib in libs:
            real = os.path.realpath(lib)
            found = _scan_file(real, patterns) if patterns else None
            if found is None:
                found = f"({Path(real).name})"  # at least the library file: libtwolame.so.0.0.0
            if found:
                break
        if not libs and patterns:
            found = _scan_file(info.path, patterns)  # statically linked
    result = f"{codec} {found}" if found else None
    with _LOCK:
        info._lib_cache[codec] = result
    return result


# --- argument lists -------------------------------------------------------------------------


def raw_input(rate: int, channels: int) -> list[str]:
    """Arguments reading float32 little-endian interleaved samples from stdin."""
    return ["-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0"]


def wav_output(target: str = "pipe:1", codec: str = "pcm_f32le") -> list[str]:
    return ["-map", "0:a:0", "-c:a", codec, "-f", "wav", target]


def demux_input(container: str, source: str, rate: int | None, channels: int | None) -> list[str]:
    """Arguments reading an encoded stream (``source``: ``pipe:0`` or a file)."""
    args: list[str] = []
    if source == "pipe:0":
        args += ["-f", demuxer_for(container)]
        if container in RAW_CONTAINERS:
            if rate:
                args += ["-ar", str(rate)]
            if channels:
                args += ["-ac", str(channels)]
    return [*args, "-i", source]


# --- WAV from a pipe ------------------------------------------------------------------------


def parse_wav(data: bytes, what: str = "ffmpeg") -> tuple[np.ndarray, int]:
    """Samples ``[n, channels]`` (float32) and rate of a float32 WAV written to a pipe by ffmpeg.

    The RIFF and data sizes of a piped WAV are placeholders, so everything after the ``data``
    chunk header is taken as samples.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise DecoderEmpty(f"{what} wrote no WAV stream ({len(data)} bytes)")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", data[pos + 8 : pos + 16])
            bits = struct.unpack("<H", data[pos + 22 : pos + 24])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None or fmt[3] != 32 or fmt[0] not in (3, 0xFFFE) or fmt[1] < 1:
                raise DecoderEmpty(f"{what} wrote a WAV stream that is not float32 ({fmt})")
            body = memoryview(data)[pos + 8 :]
            frames = len(body) // (4 * fmt[1])
            samples = np.frombuffer(body[: frames * 4 * fmt[1]], dtype="<f4").reshape(frames, fmt[1])
            return samples, fmt[2]
        pos += 8 + size + (size & 1)
    raise DecoderEmpty(f"{what} wrote a WAV stream without a data chunk")
