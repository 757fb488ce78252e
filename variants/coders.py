"""The three ways a variant is made, each returning the decoded samples at the decoded rate.

- :func:`ffmpeg_codec`: raw float32 into ffmpeg on stdin, ``effects`` and the encoder, the
  stream through a pipe (a file in a private temporary folder for containers that need
  seeking), ffmpeg decoding with ``post_effects`` to float32 WAV on stdout;
- :func:`external_coder`: the spec's ``encode``/``decode`` commands on WAV files in a private
  temporary folder (ffmpeg prepares the input when there are effects or a rate or channel
  change, and decodes when there is no ``decode``);
- :func:`effects_only`: one ffmpeg filter pass (two with ``post_effects``).

Each call of a tool has the time limit ``timeout``; the seconds it took go into ``timings``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np

from .codecs import FILE_ONLY_CONTAINERS, container_extension, priming
from .errors import EncoderFailed, EncoderUnavailable
from .external import encode_decode, write_wav
from .ffmpeg import BASE_ARGS, FFmpegInfo, demux_input, parse_wav, raw_input, wav_output
from .proc import run_tool
from .reference import Reference
from .specs import VariantSpec

__all__ = ["Decoded", "effects_only", "external_coder", "ffmpeg_codec"]

_NEEDS_SEEK = re.compile(r"seekable|streamed output|Function not implemented|Illegal seek", re.I)
_PCM = {"pcm16": "pcm_s16le", "pcm24": "pcm_s24le", "float": "pcm_f32le"}


@dataclass
class Decoded:
    samples: np.ndarray  # [n, c] float32
    rate: int
    prior: int = 0  # known priming delay, decoded-rate samples
    encoded_bytes: int | None = None
    transport: str = "pipe"


def _raw(samples: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(samples, dtype="<f4")).cast("B")


def _tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="jndqa-variant-")


def _filter_pass(
    info: FFmpegInfo,
    samples: np.ndarray,
    rate: int,
    graph: str | None,
    *,
    timeout: float,
    sample_rate: int | None = None,
    channels: int | None = None,
    what: str = "ffmpeg filter graph",
    env: dict[str, str] | None = None,
) -> tuple[np.ndarray, int, float]:
    argv = [info.path, *BASE_ARGS, *raw_input(rate, samples.shape[1])]
    if graph:
        argv += ["-af", graph]
    if sample_rate:
        argv += ["-ar", str(sample_rate)]
    if channels:
        argv += ["-ac", str(channels)]
    out = run_tool([*argv, *wav_output()], what=what, stdin=_raw(samples), timeout=timeout, env=env)
    data, out_rate = parse_wav(out.stdout, what)
    return data, out_rate, out.seconds


def ffmpeg_codec(info: FFmpegInfo, spec: VariantSpec, ref: Reference, timeout: float, timings: dict) -> Decoded:
    codec, container = spec.codec, spec.container
    assert codec is not None and container is not None
    if codec not in info.encoders:
        import difflib

        close = difflib.get_close_matches(codec, sorted(info.encoders), n=3)
        raise EncoderUnavailable(
            f"{info.path} ({info.line}) has no audio encoder {codec!r}"
            + (f"; close names: {', '.join(close)}" if close else ""),
            hint="check the name with `ffmpeg -encoders`, or point the spec's 'ffmpeg' at a build that has it",
        )
    enc = [info.path, *BASE_ARGS, *raw_input(ref.rate, ref.channels)]
    if spec.effects:
        enc += ["-af", spec.effects]
    enc += spec.ffmpeg_args()
    if spec.sample_rate:
        enc += ["-ar", str(spec.sample_rate)]
    if spec.channels:
        enc += ["-ac", str(spec.channels)]
    enc += ["-f", container]
    dec_tail = (["-af", spec.post_effects] if spec.post_effects else []) + wav_output()
    coded_rate, coded_channels = spec.sample_rate or ref.rate, spec.channels or ref.channels
    raw = _raw(ref.samples)
    if container not in FILE_ONLY_CONTAINERS:
        try:
            out = run_tool([*enc, "pipe:1"], what=f"ffmpeg encoder {codec}", stdin=raw, timeout=timeout)
            timings["encode"] = out.seconds
            if not out.stdout:
                raise EncoderFailed(f"ffmpeg encoder {codec} wrote no stream", stderr=out.stderr or None)
            dec = [info.path, *BASE_ARGS, *demux_input(container, "pipe:0", coded_rate, coded_channels), *dec_tail]
            d = run_tool(dec, what=f"ffmpeg decoder ({container})", stdin=out.stdout, timeout=timeout)
            timings["decode"] = d.seconds
            samples, rate = parse_wav(d.stdout, "the ffmpeg decoder")
            return Decoded(samples, rate, priming(codec, container, False), len(out.stdout), "pipe")
        except EncoderFailed as exc:
            if not (exc.stderr and _NEEDS_SEEK.search(exc.stderr)):
                raise
    with _tempdir() as tmp:
        path = os.path.join(tmp, f"encoded.{container_extension(container)}")
        out = run_tool([*enc, path], what=f"ffmpeg encoder {codec}", stdin=raw, timeout=timeout)
        timings["encode"] = out.seconds
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size == 0:
            raise EncoderFailed(f"ffmpeg encoder {codec} wrote no stream", stderr=out.stderr or None)
        d = run_tool([info.path, *BASE_ARGS, "-i", path, *dec_tail], what="ffmpeg decoder", timeout=timeout)
        timings["decode"] = d.seconds
        samples, rate = parse_wav(d.stdout, "the ffmpeg decoder")
        return Decoded(samples, rate, priming(codec, container, True), size, "files")


def effects_only(info: FFmpegInfo, spec: VariantSpec, ref: Reference, timeout: float, timings: dict) -> Decoded:
    samples, rate = ref.samples, ref.rate
    if spec.effects or spec.sample_rate or spec.channels:
        samples, rate, timings["encode"] = _filter_pass(
            info, samples, rate, spec.effects, timeout=timeout, sample_rate=spec.sample_rate, channels=spec.channels
        )
    if spec.post_effects:
        samples, rate, timings["decode"] = _filter_pass(
            info, samples, rate, spec.post_effects, timeout=timeout, what="ffmpeg post_effects"
        )
    return Decoded(samples, rate)


def external_coder(
    info: FFmpegInfo | None, spec: VariantSpec, ref: Reference, timeout: float, timings: dict
) -> Decoded:
    import soundfile as sf

    assert spec.wav_format is not None
    with _tempdir() as tmp:
        in_wav = os.path.join(tmp, "input.wav")
        pre = 0.0
        if spec.effects or spec.sample_rate or spec.channels:
            assert info is not None
            argv = [info.path, *BASE_ARGS, *raw_input(ref.rate, ref.channels)]
            argv += ["-af", spec.effects] if spec.effects else []
            argv += ["-ar", str(spec.sample_rate)] if spec.sample_rate else []
            argv += ["-ac", str(spec.channels)] if spec.channels else []
            argv += wav_output(in_wav, _PCM[spec.wav_format])
            pre = run_tool(argv, what="ffmpeg (encoder input)", stdin=_raw(ref.samples), timeout=timeout).seconds
        else:
            write_wav(in_wav, ref.samples, ref.rate, spec.wav_format)
        wav_info = sf.info(in_wav)
        encoded, t_enc, samples, rate, t_dec = encode_decode(
            spec, in_wav, tmp, wav_info.samplerate, wav_info.channels, timeout=timeout
        )
        timings["encode"] = pre + t_enc
        size = os.path.getsize(encoded)
        if samples is None:
            assert info is not None
            d = run_tool([info.path, *BASE_ARGS, "-i", encoded, *wav_output()], what="ffmpeg decoder", timeout=timeout)
            samples, rate = parse_wav(d.stdout, "the ffmpeg decoder")
            t_dec = d.seconds
        timings["decode"] = t_dec
    assert rate is not None
    if spec.post_effects:
        assert info is not None
        samples, rate, t_post = _filter_pass(info, samples, rate, spec.post_effects, timeout=timeout)
        timings["decode"] += t_post
    return Decoded(samples, rate, 0, size, "files")
