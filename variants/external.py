"""External coders: the spec's ``encode``/``decode`` argument lists, run on WAV files.

The encoder gets a WAV file (16-bit PCM by default, ``wav_format`` says otherwise) and writes
``{output}``; the decoder reads that and writes a WAV file, or ffmpeg decodes it when the spec
has no ``decode``. Everything happens in a private temporary folder that is removed
afterwards. Commands run in the spec's ``base_dir`` (the config's folder), so relative paths
such as ``./bin/my-enc`` work.

Version (:func:`external_version`): the stdout of the spec's ``version`` command when it has
one, else the sha256 of the executables and of the other files named in the commands (a
script given to an interpreter): a rebuilt encoder at the same path is a new version.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np

from .errors import DecoderEmpty, EncoderFailed, EncoderUnavailable
from .proc import run_tool
from .specs import VariantSpec, format_bitrate

__all__ = ["external_version", "read_wav", "substitute", "write_wav"]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}
_HASHES: dict[tuple, str] = {}
_VERSIONS: dict[tuple, str] = {}
_LOCK = threading.Lock()


def substitute(args: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders of an argument list (names were checked with the spec)."""
    return [_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), a) for a in args]


def placeholder_values(spec: VariantSpec, input_path: str, output_path: str, rate: int, channels: int) -> dict:
    values = {"input": input_path, "output": output_path, "rate": str(rate), "channels": str(channels)}
    if spec.bitrate is not None:
        values["bitrate"] = str(spec.bitrate)
        values["kbps"] = format_bitrate(spec.bitrate)[:-1]
    return values


def write_wav(path: str, samples: np.ndarray, rate: int, wav_format: str) -> None:
    """Write ``samples`` as WAV. Integer formats are quantised here (round(x · 2^(bits-1)),
    clipped), the same scale libsndfile and ffmpeg read them back with."""
    import soundfile as sf

    subtype = _SUBTYPES[wav_format]
    if wav_format == "float":
        sf.write(path, samples, rate, subtype=subtype)
        return
    bits = 16 if wav_format == "pcm16" else 24
    scale = float(1 << (bits - 1))
    q = np.clip(np.round(samples.astype(np.float64) * scale), -scale, scale - 1)
    if bits == 16:
        sf.write(path, q.astype(np.int16), rate, subtype=subtype)
    else:
        sf.write(path, (q.astype(np.int32) << 8), rate, subtype=subtype)


def read_wav(path: str, what: str) -> tuple[np.ndarray, int]:
    """Samples ``[n, C]`` float32 and rate of an audio file written by an external decoder."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise DecoderEmpty(f"{what} wrote no output file (or an empty one)")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DecoderEmpty(f"{what} wrote a file that is not readable audio: {exc}") from None
    return np.ascontiguousarray(data), int(rate)


def executable(argv0: str, base_dir: str | None) -> str | None:
    """The file ``argv0`` runs: a path (relative to ``base_dir``) or a name on PATH."""
    if os.sep in argv0 or (os.altsep and os.altsep in argv0):
        p = Path(argv0) if os.path.isabs(argv0) or not base_dir else Path(base_dir, argv0)
        return str(p) if p.is_file() else None
    return shutil.which(argv0)


def _sha256(path: str) -> str:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _HASHES[key] = digest
    return digest


def _named_files(spec: VariantSpec) -> list[str]:
    """Executables of encode/decode, then the other arguments that name existing files."""
    files: list[str] = []
    for args in (spec.encode, spec.decode):
        if not args:
            continue
        exe = executable(args[0], spec.base_dir)
        if exe is None:
            which = "encoder" if args is spec.encode else "decoder"
            raise EncoderUnavailable(
                f"the {which} {args[0]!r} was not found" + (f" (relative to {spec.base_dir})" if spec.base_dir else ""),
                hint="build or install it, or correct the path in the spec",
            )
        files.append(exe)
        for a in args[1:]:
            if _PLACEHOLDER.search(a) or a.startswith("-"):
                continue
            p = Path(a) if os.path.isabs(a) or not spec.base_dir else Path(spec.base_dir, a)
            if p.is_file():
                files.append(str(p))
    return list(dict.fromkeys(files))


def external_version(spec: VariantSpec, timeout: float = 30.0) -> str:
    """The version of a spec's external coder: its ``version`` command's output, or
    ``sha256 <name>:<hex>, ...`` of the files it runs (see the module docstring)."""
    if spec.version:
        exe = executable(spec.version[0], spec.base_dir)
        key = (spec.version, spec.base_dir, _sha256(exe) if exe else None)
        with _LOCK:
            if key in _VERSIONS:
                return _VERSIONS[key]
        out = run_tool(spec.version, what="version command", timeout=timeout, cwd=spec.base_dir)
        text = out.stdout.decode("utf-8", "replace").strip() or out.stderr.strip()
        if not text:
            raise EncoderFailed(
                f"the version command {list(spec.version)} printed nothing",
                hint="make it print the version, or drop 'version' to use the executable's sha256",
            )
        text = " ".join(text.split())[:500]
        with _LOCK:
            _VERSIONS[key] = text
        return text
    parts = [f"{Path(f).name}:{_sha256(f)}" for f in _named_files(spec)]
    return "sha256 " + ", ".join(parts)


def encode_decode(
    spec: VariantSpec,
    input_wav: str,
    workdir: str,
    rate: int,
    channels: int,
    *,
    timeout: float,
) -> tuple[str, float, np.ndarray | None, int | None, float]:
    """Run the external encoder (and decoder, when the spec has one) on ``input_wav``.

    Returns the encoded file's path, the encode seconds, and when decoded here the samples,
    their rate and the decode seconds (None, None, 0.0 when ffmpeg is to decode the file).
    """
    ext = spec.container or "bin"
    encoded = os.path.join(workdir, f"encoded.{ext}")
    values = placeholder_values(spec, input_wav, encoded, rate, channels)
    assert spec.encode is not None
    _named_files(spec)  # a clear EncoderUnavailable before running anything
    done = run_tool(substitute(spec.encode, values), what="the external encoder", timeout=timeout, cwd=spec.base_dir)
    if not os.path.isfile(encoded) or os.path.getsize(encoded) == 0:
        raise EncoderFailed(
            f"the external encoder exited 0 but wrote no {{output}} file (expected {encoded})",
            stderr=done.stderr or None,
            hint="make the encoder write to the path given as {output}",
        )
    if not spec.decode:
        return encoded, done.seconds, None, None, 0.0
    decoded_path = os.path.join(workdir, "decoded.wav")
    values = placeholder_values(spec, encoded, decoded_path, rate, channels)
    dec = run_tool(substitute(spec.decode, values), what="the external decoder", timeout=timeout, cwd=spec.base_dir)
    samples, out_rate = read_wav(decoded_path, "the external decoder")
    return encoded, done.seconds, samples, out_rate, dec.seconds
