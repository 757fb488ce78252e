"""The ``dense`` protocol against ``official``, side by side: stability, monotonicity, speed, windows, memory, bfloat16.

Run it directly::

    .venv/bin/python benchmarks/bench_dense.py [--quick] [--long] [--only 3,5] [--json] [--cache DIR]

``--only`` runs some of the six items below (item 6 needs item 1's pairs, so it runs item 1
too): rerun the timing items (3, 5) alone when the machine was busy during a full run.

It needs the official DPAM release on disk (``jndqa setup``, or ``$JNDQA_DPAM_DIR``) and,
to make its test material, these Debian packages (``make sysdeps`` installs them as root):
``espeak-ng`` (speech), ``fluidsynth`` + ``timgm6mb-soundfont`` + ``planetblupi-music-midi``
(music), ``ffmpeg`` (MP3 and Opus, with libmp3lame and libopus). A missing one stops the
script with a message naming the package.

Material (generated once, cached in ``--cache``, default ``$TMPDIR/jndqa-bench-dense``):

* speech: four English passages spoken by ``espeak-ng`` with four voices (22,050 Hz), joined
  with 0.3 s pauses, peak-normalised to -6 dBFS;
* music: ``music001.mid`` of Planet Blupi rendered by ``fluidsynth`` with the TimGM6mb
  General MIDI soundfont at 22,050 Hz, mixed to mono, 8 s to 148 s of the render,
  peak-normalised to -6 dBFS (``--long`` also renders 10 minutes in stereo at 48 kHz);
* a 7.5 s excerpt of each (speech 0.2-7.7 s, music 2-9.5 s) for items 1, 2 and 6, and a
  16 s clip of each (speech 8-24 s, music 30-46 s) for item 4.

Degradations, each returning a signal aligned with and as long as its input: MP3 64 kbps
(libmp3lame; the input is upsampled to 44.1 kHz with soxr, encoded, decoded - ffmpeg drops
the 1105-sample codec lead itself, from the LAME header - then any remaining lag is found by
cross-correlation and removed (the lags are printed), and it is resampled back); low-pass
4 kHz (8th-order Butterworth, zero-phase ``sosfiltfilt``); white noise at 20 dB SNR and pink
noise at 25 dB SNR (seeded; SNR against the whole signal's power); Opus 24 kbps (libopus,
through 48 kHz the same way). Every signal is on the int16 scale, rounded and clipped.

What is printed (``--json``: the same numbers as one JSON object). Dense uses
``DPAMScorer``'s default window and hop, read from its signature (items 1, 2, 3, 5, 6),
so the bench follows the scorer when that default changes.

1. Stability. For each material and degradation, the relative change
   ``|d' - d| / max(d, 0.05)`` when both signals lose their first k samples
   (k = 1, 2, 3, 5, 22, 1001) or their last 1..7 samples, for both protocols; median and
   worst, PASS/MISS against the dense goals (median <= 0.5 %, worst <= 3 %), and per
   variant. Shifts of 1-22 samples and trims move the sampling grid; the shift of 1001
   samples also changes what is scored (45 ms leave the item, and with several windows
   each window has 2 x 1001 of its samples replaced), so it is listed apart as well.
2. Monotonicity. Ladders of white noise (40/30/20/10 dB), low-pass (8/6/4/2 kHz) and MP3
   (192/128/96/64/32 kbps) on each excerpt: the distances and the number of inversions
   (pairs where a less degraded step scores higher than a more degraded one). Goal: none.
3. Speed on a 10 s music pair through ``DPAMScorer``: seconds per pair (``score``) and per
   test with reference reuse (``reference`` + ``score_reference`` with 5 tests, the
   reference's cost included), real-time factors, and the fraction of the FLOP floor
   reached, ``(FLOPs / throughput) / time``, at the nominal 90 GFLOP/s and at this machine's
   float32 ``torch.mm`` throughput (2048x2048, best of 5, as ``bench_metric.py``). Dense
   costs exactly 239,712 multiply-adds (2 FLOPs each) per sample per signal; its FLOPs are
   counted over the samples it computes (windows overlap: a 10 s signal in 4 s windows
   with a 2 s hop is 4 windows, 16 s; in 8 s / 4 s windows, 2 windows, 16 s), and also
   shown over the input's samples. Goal: at least 50 % of the floor (judged over the
   computed samples).
4. Windows: per-window versus per-item normalisation statistics. On the 16 s clips and the
   five degradations, the dense distance with windows of 4 s / hop 2 s, 2 s / 1 s,
   4 s / 4 s and 8 s / 4 s (and the scorer's default, if another) against the whole-item
   evaluation (one window as long
   as the clip, statistics over the whole item): relative difference median and worst;
   each setting's stability on the clips (MP3 64 kbps; shifts 1 and 1001, trim 1),
   its time per 16 s pair (one ``DPAMScorer.score`` of the music clip, measured), its
   computed samples per input sample and the reference features one window holds. Then a
   recommendation: among the windowed settings that meet the stability goals, the
   closest to the whole-item result (median), the fastest of those within one point.
5. Memory. Peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` just
   before scoring, so the peak is that of the call) and time of one dense ``score`` of
   a mono pair of 30, 60 and 120 s (music + white noise 20 dB), each in a fresh
   subprocess, and (30 and 120 s) again with ``JNDQA_MALLOC_TUNING=0`` (the scorer's
   allocator tuning keeps freed blocks in the heap; without it they go back to the OS).
   The memory is anonymous memory (``RssAnon``, sampled every millisecond during the call;
   ``VmHWM`` is shown too but counts library pages the kernel may drop when other processes
   need memory). Memory should not grow with length: "flat" = the peak (untuned when it
   ran, else tuned) grows at most 2x while the length grows 4x, where memory proportional
   to length would grow 4x (repeated runs of one case differ by up to ~60 % with the tuned
   allocator, whose retained heap is either about 430 or about 700 MB here, and by ~30 %
   untuned); time should grow linearly: time per window within
   25 % (the number of windows grows linearly with length; time per second of audio also
   follows the overlap of the windows, which rises toward 2x the input for long signals).
   ``--long`` adds a 10-minute stereo 48 kHz pair prepared with ``prepare_samples(...,
   mono=False)`` and scored as ``[L, 2]`` (several minutes).
6. Reduced precision: dense in bfloat16 (``dense_features`` / ``dense_terms`` with
   ``torch.bfloat16``) against float32 on the base pairs of item 1 and on a subset of
   their shifts/trims (1 and 1001; 1): relative change of the distance and its own
   stability; the speed ratio (one 4 s window: features of the reference and terms of a
   test, float32 and bfloat16 repeats interleaved).
   Goal for adopting it: distances move < 0.1 %.

How dense is evaluated in items 1, 4 and 6: with ``dense_features`` / ``dense_terms``
exactly as ``DPAMScorer(protocol="dense")`` does (the same windows from
``dense.window_starts``, the same per-window sums in float64, the mean over windows), with a
cache of per-window results keyed by a hash of the reference and test window samples: a
window whose samples were already scored is not scored again (a trim at the end changes
only the last window; the 4 s / 4 s windows are among the 4 s / 2 s ones). Identical
inputs give identical outputs, so this changes the cost, not the numbers; the script
checks it against ``DPAMScorer.score_reference`` on the item-2 signals that item 1 also
scores (low-pass 4 kHz, white 20 dB, MP3 64 kbps) and reports the largest difference.
Items 2, 3 and 5 use ``DPAMScorer`` itself. Official distances always come from
``DPAMScorer(protocol="official")``.

``--quick`` runs a reduced plan (under 2 minutes on 2 cores): shift 1 and trim 1 only, the
speech ladders only, item 4 on the music clip with MP3 64 kbps and no stability or timing
per setting (its time is then estimated from the computed samples), memory at 8, 16 and
32 s (tuned only), bfloat16 on the speech base pairs only, one timing repeat. The default
run takes about 10 minutes on an idle 2-core machine (much longer when other jobs share
it). Timings are ``time.perf_counter`` under ``torch.inference_mode()`` with torch's
default thread count; they are noisy on a busy machine. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jndqa.metric import (
    DPAM,
    MODEL_RATE,
    DPAMScorer,
    ReleaseNotFoundError,
    dense,
    find_release,
    layer_lengths,
    load_audio,
    prepare_samples,
)
from jndqa.metric.network import N_LAYERS, layer_channels
from jndqa.metric.score import tune_allocator

RATE = MODEL_RATE
EXCERPT_S = 7.5
CLIP_S = 16.0
SPEED_S = 10.0
SPEED_TESTS = 5
SHIFTS = (1, 2, 3, 5, 22, 1001)
LARGE_SHIFT = 1001  # 45 ms of content leave the item (and 2 x 1001 samples change in every window)
TRIMS = (1, 2, 3, 4, 5, 6, 7)
D_FLOOR = 0.05  # relative changes are taken against max(d, D_FLOOR)
GOAL_MEDIAN = 0.005
GOAL_WORST = 0.03
GOAL_FLOOR = 0.5
GOAL_BF16 = 0.001
FLAT_GROWTH = 2.0  # memory "flat": the peak grows at most 2x while the length grows 4x (proportional: 4x)
DENSE_MACS_PER_SAMPLE = 239_712
NOMINAL_GFLOPS = 90.0
MATMUL_N = 2048


def scorer_default_window() -> tuple[float, float]:
    """DPAMScorer's default (window_seconds, hop_seconds): the bench follows the scorer."""
    params = inspect.signature(DPAMScorer.__init__).parameters
    return float(params["window_seconds"].default), float(params["hop_seconds"].default)


WINDOW = scorer_default_window()
BF16_TIMING_S = 4.0  # the window timed in float32 and bfloat16 (item 6)
WINDOW_SETTINGS = ((4.0, 2.0), (2.0, 1.0), (4.0, 4.0), (8.0, 4.0))  # item 4; the scorer's default is added if absent
PROTOCOLS = ("official", "dense")
MATERIALS = ("speech", "music")
PEAK = 0.5  # material peak, -6 dBFS: headroom for codec overshoot and noise

DEGRADATIONS: dict[str, tuple[str, float]] = {
    "mp3_64k": ("mp3", 64),
    "lowpass_4k": ("lowpass", 4000),
    "white_20db": ("white", 20),
    "opus_24k": ("opus", 24),
    "pink_25db": ("pink", 25),
}
LABELS = {
    "mp3_64k": "MP3 64 kbps",
    "lowpass_4k": "low-pass 4 kHz",
    "white_20db": "white 20 dB",
    "opus_24k": "Opus 24 kbps",
    "pink_25db": "pink 25 dB",
}
# Least to most degraded.
LADDERS: dict[str, list[tuple[str, tuple[str, float]]]] = {
    "white noise SNR": [(f"{s} dB", ("white", s)) for s in (40, 30, 20, 10)],
    "low-pass": [(f"{f // 1000} kHz", ("lowpass", f)) for f in (8000, 6000, 4000, 2000)],
    "MP3": [(f"{b}k", ("mp3", b)) for b in (192, 128, 96, 64, 32)],
}
SEEDS = {"white": 20_201, "pink": 25_202}

SPEECH = [
    (
        "en-us",
        "The quick brown fox jumps over the lazy dog, while a codec regression bench listens to every "
        "sample. Seven silver ships sailed through the harbour at dawn.",
    ),
    (
        "en-gb+f3",
        "She sells sea shells by the sea shore, and the shells she sells are surely sea shells. Please "
        "call Stella and ask her to bring these things with her from the store.",
    ),
    (
        "en-gb-x-rp+m3",
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her "
        "brother Bob. We also need a small plastic snake and a big toy frog for the kids.",
    ),
    (
        "en-us+f4",
        "A quality metric must be stable: shifting both signals by a single sample should not change "
        "its verdict. Thunder rolled over the hills as the children ran home.",
    ),
]
SOUNDFONTS = (
    ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
    ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
    ("/usr/share/sounds/sf2/FluidR3_Mono_GM.sf3", "fluidr3mono-gm-soundfont"),
)
MIDI = ("/usr/share/planetblupi/music/music001.mid", "planetblupi-music-midi")
MUSIC_OFFSET_S = 8.0  # the render's first seconds are an intro
MUSIC_SECONDS = 140.0
LONG_SECONDS = 600.0
EXCERPTS = {"speech": 0.2, "music": 2.0}  # start of the 7.5 s excerpt, s
CLIPS = {"speech": 8.0, "music": 30.0}  # start of the 16 s clip, s

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    name: str
    shifts: tuple[int, ...]
    trims: tuple[int, ...]
    ladder_materials: tuple[str, ...]
    window_materials: tuple[str, ...]
    window_degradations: tuple[str, ...]
    window_stab_degradations: tuple[str, ...]
    window_shifts: tuple[int, ...]
    window_trims: tuple[int, ...]
    time_window_settings: bool
    speed_repeats: int
    memory_seconds: tuple[float, ...]
    memory_untuned: tuple[float, ...]
    bf16_materials: tuple[str, ...]
    bf16_shifts: tuple[int, ...]
    bf16_trims: tuple[int, ...]
    bf16_timing_repeats: int


FULL = Plan(
    name="default",
    shifts=SHIFTS,
    trims=TRIMS,
    ladder_materials=MATERIALS,
    window_materials=MATERIALS,
    window_degradations=tuple(DEGRADATIONS),
    window_stab_degradations=("mp3_64k",),
    window_shifts=(1, 1001),
    window_trims=(1,),
    time_window_settings=True,
    speed_repeats=3,
    memory_seconds=(30.0, 60.0, 120.0),
    memory_untuned=(30.0, 120.0),
    bf16_materials=MATERIALS,
    bf16_shifts=(1, 1001),
    bf16_trims=(1,),
    bf16_timing_repeats=3,
)
QUICK = Plan(
    name="quick",
    shifts=(1,),
    trims=(1,),
    ladder_materials=("speech",),
    window_materials=("music",),
    window_degradations=("mp3_64k",),
    window_stab_degradations=(),
    window_shifts=(),
    window_trims=(),
    time_window_settings=False,
    speed_repeats=1,
    memory_seconds=(8.0, 16.0, 32.0),
    memory_untuned=(),
    bf16_materials=("speech",),
    bf16_shifts=(),
    bf16_trims=(),
    bf16_timing_repeats=1,
)


# ------------------------------------------------------------------- material
class MissingPackage(RuntimeError):
    """A generator or codec this benchmark needs is not installed."""


def missing(what: str, package: str) -> MissingPackage:
    return MissingPackage(
        f"{what} not found: install the Debian package `{package}` "
        f"(`apt-get install {package}` as root, or `make sysdeps`)"
    )


def need_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise missing(f"`{tool}`", package)
    return path


def need_file(candidates: Sequence[tuple[str, str]]) -> str:
    for path, _ in candidates:
        if Path(path).is_file():
            return path
    raise missing(candidates[0][0], " or ".join(p for _, p in candidates))


def run_tool(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    except OSError:
        return "absent"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    import soundfile as sf

    tmp = path.with_suffix(".part.wav")
    sf.write(str(tmp), np.clip(x, -1.0, 32767 / 32768), rate, subtype="PCM_16")
    tmp.replace(path)


def normalise(x: np.ndarray) -> np.ndarray:
    return x * (PEAK / max(float(np.max(np.abs(x))), 1e-9))


def render_speech(path: Path) -> None:
    import soundfile as sf

    exe = need_tool("espeak-ng", "espeak-ng")
    parts = []
    with tempfile.TemporaryDirectory() as d:
        for i, (voice, text) in enumerate(SPEECH):
            out = Path(d) / f"s{i}.wav"
            run_tool([exe, "-v", voice, "-s", "160", "-w", str(out), text])
            y, rate = sf.read(str(out), dtype="float64", always_2d=True)
            y = y.mean(1)
            if rate != RATE:
                import soxr

                y = soxr.resample(y, rate, RATE, quality="HQ")
            parts += [y, np.zeros(round(0.3 * RATE))]
    write_wav(path, normalise(np.concatenate(parts)), RATE)


def render_music(path: Path, rate: int, seconds: float, stereo: bool) -> None:
    import soundfile as sf

    exe = need_tool("fluidsynth", "fluidsynth")
    font = need_file(SOUNDFONTS)
    midi = need_file([MIDI])
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "render.wav"
        run_tool([exe, "-ni", "-q", "-g", "0.8", "-r", str(rate), "-F", str(out), font, midi])
        got = sf.info(str(out)).samplerate
        if got != rate:
            raise RuntimeError(f"fluidsynth rendered at {got} Hz, asked for {rate} Hz")
        start = round(MUSIC_OFFSET_S * rate)
        y, _ = sf.read(str(out), start=start, stop=start + round(seconds * rate), dtype="float64", always_2d=True)
    if len(y) < round(seconds * rate) * 0.99:
        raise RuntimeError(f"{midi} rendered to only {len(y) / rate + MUSIC_OFFSET_S:.1f} s")
    y = y if stereo else y.mean(1)
    write_wav(path, normalise(y), rate)


def materials(cache: Path, long: bool) -> dict[str, Any]:
    """Generate (or reuse) the cached renders; returns the signals (int16 scale) and what made them."""
    cache.mkdir(parents=True, exist_ok=True)
    files = {"speech": cache / "speech_22050.wav", "music": cache / "music_22050.wav"}
    if not files["speech"].exists():
        log("rendering speech with espeak-ng")
        render_speech(files["speech"])
    if not files["music"].exists():
        log("rendering music with fluidsynth")
        render_music(files["music"], RATE, MUSIC_SECONDS, stereo=False)
    if long:
        files["music_48k_stereo"] = cache / "music_48000_stereo.wav"
        if not files["music_48k_stereo"].exists():
            log("rendering 10 minutes of stereo music at 48 kHz with fluidsynth")
            render_music(files["music_48k_stereo"], 48000, LONG_SECONDS, stereo=True)
    full = {m: load_audio(files[m]).samples for m in MATERIALS}
    excerpts, clips = {}, {}
    for m in MATERIALS:
        a = round(EXCERPTS[m] * RATE)
        excerpts[m] = full[m][a : a + round(EXCERPT_S * RATE)].copy()
        c = round(CLIPS[m] * RATE)
        clips[m] = full[m][c : c + round(CLIP_S * RATE)].copy()
        if len(clips[m]) != round(CLIP_S * RATE):
            raise RuntimeError(f"{files[m]} is too short for a {CLIP_S:g} s clip at {CLIPS[m]:g} s")
    info = {
        "cache": str(cache),
        "files": {k: str(v) for k, v in files.items()},
        "seconds": {m: len(full[m]) / RATE for m in MATERIALS},
        "speech": f"espeak-ng, voices {', '.join(v for v, _ in SPEECH)}",
        "music": f"fluidsynth {next((Path(f).name for f, _ in SOUNDFONTS if Path(f).is_file()), '?')} "
        f"{Path(MIDI[0]).name}",
        "excerpt_starts_s": EXCERPTS,
        "clip_starts_s": CLIPS,
        "rms_dbfs": {m: 20 * np.log10(float(np.sqrt(np.mean(excerpts[m] ** 2))) / 32768) for m in MATERIALS},
    }
    return {"full": full, "excerpts": excerpts, "clips": clips, "info": info, "files": files}


# --------------------------------------------------------------- degradations
CODEC_LAGS: dict[str, list[int]] = {}


def to_int16(y: np.ndarray) -> np.ndarray:
    return np.clip(np.round(y), -32768, 32767).astype(np.float32)


def fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.concatenate([y, np.zeros(n - len(y), y.dtype)])


def best_lag(src: np.ndarray, out: np.ndarray, lo: int, hi: int) -> int:
    from scipy import signal

    c = signal.correlate(out, src, mode="full", method="fft")
    lags = signal.correlation_lags(len(out), len(src), mode="full")
    keep = (lags >= lo) & (lags <= hi)
    return int(lags[keep][np.argmax(c[keep])])


def check_encoders() -> None:
    ffmpeg = need_tool("ffmpeg", "ffmpeg")
    encoders = run_tool([ffmpeg, "-hide_banner", "-encoders"])
    for enc in ("libmp3lame", "libopus"):
        if enc not in encoders:
            raise MissingPackage(f"ffmpeg has no {enc} encoder: install Debian's `ffmpeg` package")


def codec(x: np.ndarray, kind: str, kbps: float) -> np.ndarray:
    """Encode and decode through ffmpeg at the codec's rate; align by cross-correlation; back to 22,050 Hz."""
    import soundfile as sf
    import soxr

    ffmpeg = need_tool("ffmpeg", "ffmpeg")
    rate, ext, enc = (44100, "mp3", "libmp3lame") if kind == "mp3" else (48000, "opus", "libopus")
    up = soxr.resample(x.astype(np.float64) / 32768, RATE, rate, quality="HQ")
    with tempfile.TemporaryDirectory() as d:
        src, coded, dec = Path(d) / "in.wav", Path(d) / f"c.{ext}", Path(d) / "dec.wav"
        write_wav(src, up, rate)
        run_tool(
            [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:a", enc, "-b:a", f"{kbps:g}k", str(coded)]
        )
        run_tool(
            [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(coded), "-ar", str(rate), "-c:a", "pcm_f32le", str(dec)]
        )
        y, got = sf.read(str(dec), dtype="float64", always_2d=True)
    y = y.mean(1)
    assert got == rate, (got, rate)
    lag = best_lag(up, y, -rate // 100, rate // 5)
    CODEC_LAGS.setdefault(f"{kind} {kbps:g}k @ {rate} Hz", []).append(lag)
    y = y[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), y])
    down = soxr.resample(fit(y, len(up)), rate, RATE, quality="HQ")
    return to_int16(fit(down, len(x)) * 32768)


def lowpass(x: np.ndarray, hz: float) -> np.ndarray:
    from scipy import signal

    sos = signal.butter(8, hz, btype="low", fs=RATE, output="sos")
    return to_int16(signal.sosfiltfilt(sos, x.astype(np.float64)))


def add_noise(x: np.ndarray, snr_db: float, colour: str) -> np.ndarray:
    rng = np.random.default_rng(SEEDS[colour])
    n = rng.standard_normal(len(x))
    if colour == "pink":
        spec = np.fft.rfft(n)
        f = np.fft.rfftfreq(len(n))
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        n = np.fft.irfft(spec, len(n))
    px = float(np.mean(x.astype(np.float64) ** 2))
    n *= np.sqrt(px / (10 ** (snr_db / 10)) / float(np.mean(n**2)))
    return to_int16(x + n)


def apply(x: np.ndarray, spec: tuple[str, float]) -> np.ndarray:
    kind, value = spec
    if kind in ("mp3", "opus"):
        return codec(x, kind, value)
    if kind == "lowpass":
        return lowpass(x, value)
    if kind in ("white", "pink"):
        return add_noise(x, value, kind)
    raise ValueError(kind)


def degrade_all(x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    return [apply(x, DEGRADATIONS[n]) for n in names]


# -------------------------------------------------------------------- scoring
def digest(x: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).digest() + len(x).to_bytes(8, "little")


class DenseEvaluator:
    """Dense distances computed as ``DPAMScorer(protocol="dense")`` does, with a per-window result cache.

    A window's 14 terms depend only on its reference and test samples, so they are
    looked up by a hash of both; the reference window's features are computed only when
    some test of the call misses. ``compute_s`` / ``signal_samples``: time spent and
    signal-samples put through the network (reference and tests), for speed figures.
    """

    def __init__(self, net: DPAM, dtype: torch.dtype = torch.float32):
        self.net, self.dtype = net, dtype
        self.memo: dict[tuple[bytes, bytes], float] = {}
        self.compute_s = 0.0
        self.signal_samples = 0
        self.hits = 0
        self.misses = 0

    def distances(self, ref: np.ndarray, tests: Sequence[np.ndarray], window_s: float, hop_s: float) -> list[float]:
        length = len(ref)
        if any(len(t) != length for t in tests):
            raise ValueError("dense evaluator: reference and tests must have the same length")
        window, hop = round(window_s * RATE), round(hop_s * RATE)
        starts = dense.window_starts(length, window, hop)
        span = min(window, length)
        per = np.zeros((len(tests), len(starts)))
        with torch.inference_mode():
            for w, s0 in enumerate(starts):
                rw = ref[s0 : s0 + span]
                rkey = digest(rw)
                keys = [(rkey, digest(t[s0 : s0 + span])) for t in tests]
                todo = [k for k, key in enumerate(keys) if key not in self.memo]
                self.hits += len(keys) - len(todo)
                self.misses += len(todo)
                if todo:
                    t0 = time.perf_counter()
                    feats = dense.dense_features(self.net, torch.from_numpy(np.ascontiguousarray(rw)), self.dtype)
                    dref = dense.DenseReference(feats, span)
                    for k in todo:
                        tw = torch.from_numpy(np.ascontiguousarray(tests[k][s0 : s0 + span]))
                        self.memo[keys[k]] = float(dense.dense_terms(self.net, dref, tw, self.dtype).double().sum())
                    del dref, feats
                    self.compute_s += time.perf_counter() - t0
                    self.signal_samples += span * (1 + len(todo))
                per[:, w] = [self.memo[key] for key in keys]
        return [float(v) for v in per.mean(1)]

    def seconds_per_signal_second(self) -> float:
        return self.compute_s / max(self.signal_samples / RATE, 1e-9)


def official_distances(scorer: DPAMScorer, ref: np.ndarray, tests: Sequence[np.ndarray]) -> list[float]:
    return [s.distance for s in scorer.score_reference(scorer.reference(ref), list(tests))]


def cut(x: np.ndarray, kind: str, k: int) -> np.ndarray:
    if kind == "shift":
        return x[k:]
    if kind == "trim":
        return x[:-k]
    return x


def variants(shifts: Sequence[int], trims: Sequence[int]) -> list[tuple[str, int]]:
    return [("shift", k) for k in shifts] + [("trim", k) for k in trims]


def rel_change(d_new: float, d_base: float) -> float:
    return abs(d_new - d_base) / max(d_base, D_FLOOR)


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": float("nan"), "worst": float("nan")}
    return {"n": len(values), "median": float(statistics.median(values)), "worst": float(max(values))}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def pct(v: float, digits: int = 2) -> str:
    return "n/a" if v != v else f"{100 * v:.{digits}f} %"


# ------------------------------------------------------------ 1. stability + 6. bf16
def stability(
    mats: dict[str, Any], plan: Plan, off: DPAMScorer, ev: DenseEvaluator, ev16: DenseEvaluator
) -> tuple[dict[str, Any], dict[str, Any]]:
    names = list(DEGRADATIONS)
    var = variants(plan.shifts, plan.trims)
    var16 = set(variants(plan.bf16_shifts, plan.bf16_trims))
    rows, bf_rows = [], []
    s0_32, n0_32 = ev.compute_s, ev.signal_samples
    for m in MATERIALS:
        ref = mats["excerpts"][m]
        log(f"1. stability: degrading the {m} excerpt")
        tests = degrade_all(ref, names)
        mats.setdefault("degraded", {})[m] = dict(zip(names, tests, strict=True))
        base = {"official": official_distances(off, ref, tests)}
        base["dense"] = ev.distances(ref, tests, *WINDOW)
        do16 = m in plan.bf16_materials
        base16 = ev16.distances(ref, tests, *WINDOW) if do16 else None
        changes: dict[str, list[list[tuple[str, float]]]] = {p: [[] for _ in names] for p in PROTOCOLS}
        ch16: list[list[tuple[str, float]]] = [[] for _ in names]
        var_d: dict[str, dict[str, list[float]]] = {p: {} for p in PROTOCOLS}
        var_d16: dict[str, list[float]] = {}
        for kind, k in var:
            log(f"1. stability: {m}, {kind} {k}")
            r, ts = cut(ref, kind, k), [cut(t, kind, k) for t in tests]
            d = {"official": official_distances(off, r, ts), "dense": ev.distances(r, ts, *WINDOW)}
            for p in PROTOCOLS:
                var_d[p][f"{kind} {k}"] = d[p]
                for j in range(len(names)):
                    changes[p][j].append((f"{kind} {k}", rel_change(d[p][j], base[p][j])))
            if do16 and (kind, k) in var16:
                d16 = ev16.distances(r, ts, *WINDOW)
                var_d16[f"{kind} {k}"] = d16
                for j in range(len(names)):
                    ch16[j].append((f"{kind} {k}", rel_change(d16[j], base16[j])))  # type: ignore[index]
        for j, n in enumerate(names):
            row: dict[str, Any] = {"material": m, "degradation": n}
            for p in PROTOCOLS:
                vals = [v for _, v in changes[p][j]]
                worst = max(changes[p][j], key=lambda kv: kv[1]) if vals else ("", float("nan"))
                row[p] = {
                    "distance": base[p][j],
                    **summary(vals),
                    "worst_variant": worst[0],
                    "changes": dict(changes[p][j]),
                    "shift_changes": [v for key, v in changes[p][j] if key.startswith("shift")],
                    "trim_changes": [v for key, v in changes[p][j] if key.startswith("trim")],
                }
            rows.append(row)
            if do16:
                pairs32 = [base["dense"][j], *(var_d["dense"][key][j] for key in var_d16)]
                pairs16 = [base16[j], *(var_d16[key][j] for key in var_d16)]  # type: ignore[index]
                bf_rows.append(
                    {
                        "material": m,
                        "degradation": n,
                        "float32": base["dense"][j],
                        "bfloat16": base16[j],  # type: ignore[index]
                        "rel_diff": [abs(b - a) / a for a, b in zip(pairs32, pairs16, strict=True)],
                        "bf16_stability": [v for _, v in ch16[j]],
                        "f32_stability_same_variants": [v for key, v in changes["dense"][j] if key in var_d16],
                    }
                )
    n_excerpt = round(EXCERPT_S * RATE)
    stab: dict[str, Any] = {
        "rows": rows,
        "variants": [f"{k} {v}" for k, v in var],
        "dense_window": list(WINDOW),
        "excerpt_windows": len(dense.window_starts(n_excerpt, round(WINDOW[0] * RATE), round(WINDOW[1] * RATE))),
    }
    for p in PROTOCOLS:
        allv = [v for r in rows for v in r[p]["changes"].values()]
        stab[p] = {
            "all": summary(allv),
            "shifts": summary([v for r in rows for v in r[p]["shift_changes"]]),
            "trims": summary([v for r in rows for v in r[p]["trim_changes"]]),
            "per_variant": {f"{kind} {k}": summary([r[p]["changes"][f"{kind} {k}"] for r in rows]) for kind, k in var},
        }
        if ("shift", LARGE_SHIFT) in var:
            stab[p][f"all but shift {LARGE_SHIFT}"] = summary(
                [v for r in rows for key, v in r[p]["changes"].items() if key != f"shift {LARGE_SHIFT}"]
            )
    d = stab["dense"]["all"]
    stab["goals"] = {
        "median": {"limit": GOAL_MEDIAN, "value": d["median"], "pass": d["median"] <= GOAL_MEDIAN},
        "worst": {"limit": GOAL_WORST, "value": d["worst"], "pass": d["worst"] <= GOAL_WORST},
    }
    stab["float32_s_per_signal_s"] = (ev.compute_s - s0_32) / max((ev.signal_samples - n0_32) / RATE, 1e-9)
    bf: dict[str, Any] = {"rows": bf_rows}
    return stab, bf


def bf16_speed(net: DPAM, x: np.ndarray, y: np.ndarray, repeats: int) -> dict[str, Any]:
    """One 4 s window, features of the reference + terms of one test, float32 and bfloat16 interleaved."""
    n = min(round(BF16_TIMING_S * RATE), len(x))
    a, b = torch.from_numpy(x[:n].copy()), torch.from_numpy(y[:n].copy())
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    with torch.inference_mode():
        for dt in (torch.float32, torch.bfloat16):  # warm-up
            dense.dense_terms(net, dense.DenseReference(dense.dense_features(net, a, dt), n), b, dt)
        for _ in range(repeats):
            for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                t0 = time.perf_counter()
                dense.dense_terms(net, dense.DenseReference(dense.dense_features(net, a, dt), n), b, dt)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"window_s": n / RATE, "seconds": med, "raw": times, "bf16_speedup": med["float32"] / med["bfloat16"]}


# ----------------------------------------------------------------- 2. ladders
def monotonicity(mats: dict[str, Any], plan: Plan, scorers: dict[str, DPAMScorer]) -> dict[str, Any]:
    out: dict[str, Any] = {"ladders": [], "crosscheck": []}
    for m in plan.ladder_materials:
        ref = mats["excerpts"][m]
        log(f"2. monotonicity: degrading the {m} excerpt")
        specs = [(ladder, label, spec) for ladder, steps in LADDERS.items() for label, spec in steps]
        tests = [apply(ref, spec) for _, _, spec in specs]
        d: dict[str, list[float]] = {}
        for p in PROTOCOLS:
            log(f"2. monotonicity: {m}, {p} (DPAMScorer.score_reference, {len(tests)} tests)")
            d[p] = [s.distance for s in scorers[p].score_reference(scorers[p].reference(ref), tests)]
        i = 0
        for ladder, steps in LADDERS.items():
            row: dict[str, Any] = {"material": m, "ladder": ladder, "steps": [s for s, _ in steps]}
            for p in PROTOCOLS:
                ds = d[p][i : i + len(steps)]
                inv = [(a, b) for a in range(len(ds)) for b in range(a + 1, len(ds)) if ds[a] > ds[b]]
                row[p] = {
                    "distances": ds,
                    "inversions": len(inv),
                    "pairs": [[steps[a][0], steps[b][0]] for a, b in inv],
                }
            out["ladders"].append(row)
            i += len(steps)
        # The same signals as item 1's low-pass 4 kHz, white 20 dB and MP3 64 kbps: the evaluator vs the scorer.
        deg = mats.get("degraded", {}).get(m, {})
        for (_, _, spec), k in zip(specs, range(len(specs)), strict=True):
            for name, dspec in DEGRADATIONS.items():
                if dspec == spec and name in deg and np.array_equal(deg[name], tests[k]):
                    out["crosscheck"].append({"material": m, "degradation": name, "scorer": d["dense"][k]})
    out["inversions"] = {p: sum(r[p]["inversions"] for r in out["ladders"]) for p in PROTOCOLS}
    return out


# -------------------------------------------------------------------- 3. speed
def dense_macs_per_sample() -> int:
    total, c_in = 0, 1
    for i in range(N_LAYERS):
        c_out = layer_channels(i)
        total += c_in * 3 * c_out
        c_in = c_out
    return total


def official_macs(samples: int) -> int:
    total, c_in = 0, 1
    for i, t_out in enumerate(layer_lengths(samples)):
        c_out = layer_channels(i)
        total += t_out * c_in * 3 * c_out
        c_in = c_out
    return total


def dense_computed_samples(length: int, window_s: float, hop_s: float) -> int:
    window, hop = round(window_s * RATE), round(hop_s * RATE)
    return len(dense.window_starts(length, window, hop)) * min(window, length)


def matmul_gflops(n: int = MATMUL_N, tries: int = 5) -> float:
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[list[float], Any]:
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def speed(mats: dict[str, Any], plan: Plan, scorers: dict[str, DPAMScorer], gflops: float) -> dict[str, Any]:
    n = round(SPEED_S * RATE)
    ref = mats["full"]["music"][round(CLIPS["music"] * RATE) :][:n].copy()
    tests = [add_noise(ref, snr, "white") for snr in (10, 20, 30, 40, 50)][:SPEED_TESTS]
    flops_sample = 2 * dense_macs_per_sample()
    computed = dense_computed_samples(n, *WINDOW)
    rows = []
    with torch.inference_mode():
        for p in PROTOCOLS:
            sc = scorers[p]
            reps = max(plan.speed_repeats, 5) if p == "official" else plan.speed_repeats
            warm = 2 if p == "official" else 1
            log(f"3. speed: {p}, single pair x {reps}")
            t_single, _ = timed(lambda sc=sc: sc.score(ref, tests[0]).distance, warm, reps)
            log(f"3. speed: {p}, reference + {len(tests)} tests x {reps}")
            t_reuse, _ = timed(
                lambda sc=sc: [s.distance for s in sc.score_reference(sc.reference(ref), tests)],
                1 if p == "official" else 0,
                reps,
            )
            per_signal = 2 * official_macs(n) if p == "official" else flops_sample * computed
            per_signal_input = 2 * official_macs(n) if p == "official" else flops_sample * n
            for case, times, signals in (
                ("single pair (score)", t_single, 2.0),
                (f"reuse: ref + {len(tests)} tests, per test", [t / len(tests) for t in t_reuse], 1 + 1 / len(tests)),
            ):
                s = statistics.median(times)
                rows.append(
                    {
                        "protocol": p,
                        "case": case,
                        "seconds": s,
                        "raw": times,
                        "x_real_time": SPEED_S / s,
                        "flops": signals * per_signal,
                        "floor_nominal": signals * per_signal / (NOMINAL_GFLOPS * 1e9) / s,
                        "floor_measured": signals * per_signal / (gflops * 1e9) / s,
                        "floor_measured_input_samples": signals * per_signal_input / (gflops * 1e9) / s,
                    }
                )
    dense_rows = [r for r in rows if r["protocol"] == "dense"]
    return {
        "seconds": SPEED_S,
        "samples": n,
        "tests": len(tests),
        "dense_macs_per_sample": dense_macs_per_sample(),
        "dense_flops_per_sample": flops_sample,
        "dense_computed_samples": computed,
        "official_macs_per_sample": official_macs(n) / n,
        "rows": rows,
        "goal": {
            "limit": GOAL_FLOOR,
            "nominal": min(r["floor_nominal"] for r in dense_rows),
            "measured": min(r["floor_measured"] for r in dense_rows),
            "pass_nominal": all(r["floor_nominal"] >= GOAL_FLOOR for r in dense_rows),
            "pass_measured": all(r["floor_measured"] >= GOAL_FLOOR for r in dense_rows),
        },
    }


# ------------------------------------------------------------------ 4. windows
def windows(mats: dict[str, Any], plan: Plan, net: DPAM, off: DPAMScorer, ev: DenseEvaluator) -> dict[str, Any]:
    pairs = list(WINDOW_SETTINGS) + ([] if WINDOW in WINDOW_SETTINGS else [WINDOW])
    settings: list[tuple[str, float, float]] = [(f"{w:g} s / {h:g} s", w, h) for w, h in pairs]
    default_label = f"{WINDOW[0]:g} s / {WINDOW[1]:g} s"
    whole = ("whole item", CLIP_S + 1.0, CLIP_S + 1.0)
    allset = [*settings, whole]
    names = list(plan.window_degradations)
    stab_idx = [names.index(n) for n in plan.window_stab_degradations if n in names]
    var = variants(plan.window_shifts, plan.window_trims)
    rows: list[dict[str, Any]] = []
    stab_changes: dict[str, list[float]] = {s[0]: [] for s in allset}
    for m in plan.window_materials:
        ref = mats["clips"][m]
        log(f"4. windows: degrading the {m} clip")
        tests = degrade_all(ref, names)
        d_off = official_distances(off, ref, tests)
        base: dict[str, list[float]] = {}
        for label, w, h in allset:
            log(f"4. windows: {m}, {label}")
            base[label] = ev.distances(ref, tests, w, h)
        for j, n in enumerate(names):
            rows.append(
                {"material": m, "degradation": n, "official": d_off[j], **{s[0]: base[s[0]][j] for s in allset}}
            )
        if stab_idx:
            for kind, k in var:
                r, ts = cut(ref, kind, k), [cut(tests[j], kind, k) for j in stab_idx]
                for label, w, h in allset:
                    log(f"4. windows: {m}, {kind} {k}, {label}")
                    dv = ev.distances(r, ts, w, h)
                    for i, j in enumerate(stab_idx):
                        stab_changes[label].append(rel_change(dv[i], base[label][j]))
    length = round(CLIP_S * RATE)
    timing: dict[str, float] = {}
    if plan.time_window_settings:
        m = plan.window_materials[-1]
        ref = mats["clips"][m]
        test = apply(ref, DEGRADATIONS["mp3_64k"])
        for label, w, h in allset:
            log(f"4. windows: timing one {m} pair with {label}")
            sc = DPAMScorer("scratch", protocol="dense", network=net, window_seconds=w, hop_seconds=h)
            t0 = time.perf_counter()
            sc.score(ref, test)
            timing[label] = time.perf_counter() - t0
    rate = ev.seconds_per_signal_second()
    feat_bytes = 4 * sum(layer_channels(i) for i in range(N_LAYERS))
    out_settings = []
    for label, w, h in allset:
        devs = [abs(r[label] - r[whole[0]]) / r[whole[0]] for r in rows]
        comp = dense_computed_samples(length, w, h)
        out_settings.append(
            {
                "setting": label,
                "window_s": w if label != whole[0] else CLIP_S,
                "hop_s": h if label != whole[0] else CLIP_S,
                "deviation": summary(devs) if label != whole[0] else summary([0.0] * len(devs)),
                "stability": summary(stab_changes[label]),
                "seconds_per_pair": timing.get(label, 2 * comp / RATE * rate),
                "seconds_measured": label in timing,
                "computed_per_input_sample": comp / length,
                "reference_features_mb": feat_bytes * min(round(w * RATE), length) / 1e6,
            }
        )
    cands = [s for s in out_settings if s["setting"] != whole[0]]
    stable = [
        s
        for s in cands
        if not s["stability"]["n"]
        or (s["stability"]["median"] <= GOAL_MEDIAN and s["stability"]["worst"] <= GOAL_WORST)
    ]
    pool = stable or cands
    best = min(s["deviation"]["median"] for s in pool)
    near = [s for s in pool if s["deviation"]["median"] <= best + 0.01]
    pick = min(near, key=lambda s: s["seconds_per_pair"])
    closest = min(pool, key=lambda s: s["deviation"]["median"])
    reason = "meets the stability goals" if stable else "no setting meets the stability goals"
    reason += (
        f"; deviation from whole-item median {pct(pick['deviation']['median'])}, worst "
        f"{pct(pick['deviation']['worst'])}; stability worst {pct(pick['stability']['worst'], 3)}; "
        f"{pick['seconds_per_pair']:.2f} s per {CLIP_S:g} s pair; {pick['reference_features_mb']:.0f} MB of "
        "reference features per window"
    )
    if pick is closest:
        reason += "; the closest to whole-item"
        others = [s["setting"] for s in near if s is not pick]
        if others:
            reason += f" and the fastest of those within 1 point ({', '.join(others)})"
    else:
        reason += (
            f"; within 1 point of the closest ({closest['setting']}, median {pct(closest['deviation']['median'])}) "
            "and faster"
        )
    default = next(s for s in cands if s["setting"] == default_label)
    if pick is not default:
        reason += (
            f". The default {default['setting']}: median {pct(default['deviation']['median'])}, worst "
            f"{pct(default['deviation']['worst'])}, stability worst {pct(default['stability']['worst'], 3)}, "
            f"{default['seconds_per_pair']:.2f} s per pair"
        )
    return {
        "clip_seconds": CLIP_S,
        "materials": list(plan.window_materials),
        "degradations": names,
        "stability_degradations": list(plan.window_stab_degradations),
        "stability_variants": [f"{k} {v}" for k, v in var],
        "rows": rows,
        "settings": out_settings,
        "default": default_label,
        "recommendation": {
            "setting": pick["setting"],
            "reason": reason,
            "is_default": pick["setting"] == default_label,
        },
    }


# ------------------------------------------------------------------- 5. memory
def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssAnon of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS", "RssAnon")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


class AnonPeak(threading.Thread):
    """Samples RssAnon every millisecond (torch releases the GIL while it computes).

    Anonymous memory is what the scorer allocates; VmHWM also counts file-backed pages
    (the libraries), which the kernel may drop under memory pressure from other processes.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = proc_status()["RssAnon"]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, proc_status()["RssAnon"])
            self.done.wait(0.001)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, proc_status()["RssAnon"])


def memory_child(cache: Path, seconds: float, long: bool) -> dict[str, Any]:
    """One dense score in this (fresh) process; the signals are made before the allocator is tuned."""
    import soundfile as sf

    prep_s = 0.0
    if long:
        x, rate = sf.read(str(cache / "music_48000_stereo.wav"), dtype="float64", always_2d=True)
        rng = np.random.default_rng(SEEDS["white"])
        y = x + rng.standard_normal(x.shape) * np.sqrt(np.mean(x**2) / 100)
        t0 = time.perf_counter()
        ref = prepare_samples(x, rate, scale="unit", mono=False).samples
        test = prepare_samples(y, rate, scale="unit", mono=False).samples
        prep_s = time.perf_counter() - t0
        del x, y
    else:
        music = load_audio(cache / "music_22050.wav").samples
        ref = np.resize(music, round(seconds * RATE)).astype(np.float32)
        test = add_noise(ref, 20, "white")
        del music
    scorer = DPAMScorer("scratch", protocol="dense")
    short = ref[: RATE // 2]
    scorer.score(short, short)  # load the libraries, not timed
    before = proc_status()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    sampler = AnonPeak()
    sampler.start()
    t0 = time.perf_counter()
    s = scorer.score(ref, test)
    elapsed = time.perf_counter() - t0
    anon_peak = sampler.stop()
    after = proc_status()
    return {
        "seconds_audio": ref.shape[0] / RATE,
        "shape": list(ref.shape),
        "windows": len(s.windows or []),
        "distance": s.distance,
        "channels": s.channels,
        "time_s": elapsed,
        "prepare_s": prep_s,
        "rss_before": before["VmRSS"],
        "peak_rss": after["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_is_call_only": reset,
        "anon_before": before["RssAnon"],
        "anon_peak": anon_peak,
        "threads": torch.get_num_threads(),
    }


def run_memory_child(cache: Path, seconds: float, is_long: bool, tuned: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if not tuned:
        env["JNDQA_MALLOC_TUNING"] = "0"
    args = [f"--_child=memory{':long' if is_long else ''}", f"--_seconds={seconds}", f"--cache={cache}"]
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess ({seconds:g} s) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def memory(cache: Path, plan: Plan, long: bool) -> dict[str, Any]:
    cases: list[tuple[float, bool]] = [(s, False) for s in plan.memory_seconds]
    if long:
        cases.append((LONG_SECONDS, True))
    rows = []
    for seconds, is_long in cases:
        what = "10-minute stereo 48 kHz pair" if is_long else f"{seconds:g} s mono pair"
        log(f"5. memory: {what} in a fresh process")
        row = run_memory_child(cache, seconds, is_long, tuned=True)
        row["case"] = what
        row["time_per_audio_s"] = row["time_s"] / row["seconds_audio"]
        row["time_per_window_s"] = row["time_s"] / max(row["windows"], 1) / (row["shape"][1] if is_long else 1)
        if seconds in plan.memory_untuned and not is_long:
            log(f"5. memory: {what} in a fresh process, JNDQA_MALLOC_TUNING=0")
            u = run_memory_child(cache, seconds, is_long, tuned=False)
            row["untuned"] = {k: u[k] for k in ("peak_rss", "rss_before", "anon_peak", "anon_before", "time_s")}
        rows.append(row)
    mono = [r for r in rows if len(r["shape"]) == 1]
    peaks = [r["anon_peak"] - r["anon_before"] for r in mono]
    upeaks = [r["untuned"]["anon_peak"] - r["untuned"]["anon_before"] for r in mono if "untuned" in r]
    per_s = [r["time_per_audio_s"] for r in mono]
    per_w = [r["time_per_window_s"] for r in mono]
    growth = max(peaks) / max(min(peaks), 1)
    ugrowth = max(upeaks) / max(min(upeaks), 1) if len(upeaks) > 1 else None
    return {
        "rows": rows,
        "length_ratio": max(r["seconds_audio"] for r in mono) / min(r["seconds_audio"] for r in mono),
        "peak_growth": growth,
        "peak_growth_untuned": ugrowth,
        "time_per_s_spread": max(per_s) / min(per_s),
        "flat": (ugrowth if ugrowth is not None else growth) <= FLAT_GROWTH,
        "time_per_window_spread": max(per_w) / min(per_w),
        "linear": max(per_w) / min(per_w) <= 1.25,
        "window_features_mb": 4 * sum(layer_channels(i) for i in range(N_LAYERS)) * round(WINDOW[0] * RATE) / 1e6,
    }


# --------------------------------------------------------------------- report
def build_report(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    find_release()
    check_encoders()
    mats = materials(Path(args.cache), args.long)
    net = DPAM.official("scratch").eval()
    scorers = {p: DPAMScorer("scratch", protocol=p, network=net) for p in PROTOCOLS}
    ev = DenseEvaluator(net, torch.float32)
    ev16 = DenseEvaluator(net, torch.bfloat16)
    log("measuring float32 torch.mm throughput")
    gflops = matmul_gflops()
    report: dict[str, Any] = {
        "plan": asdict(plan),
        "env": {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "allocator_tuned": tune_allocator(),
            "matmul_gflops": gflops,
            "ffmpeg": tool_version(["ffmpeg", "-version"]),
            "espeak-ng": tool_version(["espeak-ng", "--version"]),
            "fluidsynth": tool_version(["fluidsynth", "--version"]),
            "python": sys.version.split()[0],
        },
        "materials": mats["info"],
        "items": sorted(args.items),
    }
    items = args.items
    if items & {1, 6}:  # item 6 compares with item 1's float32 distances on the same pairs
        run_plan = plan if 6 in items else replace(plan, bf16_materials=())
        report["stability"], bf = stability(mats, run_plan, scorers["official"], ev, ev16)
        if 6 in items:
            report["bf16"] = bf
    if 2 in items:
        report["monotonicity"] = monotonicity(mats, plan, scorers)
        if "stability" in report:
            diffs = []
            for c in report["monotonicity"]["crosscheck"]:
                row = next(
                    r
                    for r in report["stability"]["rows"]
                    if r["material"] == c["material"] and r["degradation"] == c["degradation"]
                )
                c["evaluator"] = row["dense"]["distance"]
                diffs.append(abs(c["evaluator"] - c["scorer"]) / abs(c["scorer"]))
            report["crosscheck"] = {"pairs": len(diffs), "max_rel_diff": max(diffs) if diffs else float("nan")}
    if 6 in items:
        log("6. bfloat16: kernel timing")
        bf = report["bf16"]
        sp = mats["excerpts"]["speech"]
        bf["timing"] = bf16_speed(net, sp, mats["degraded"]["speech"]["mp3_64k"], plan.bf16_timing_repeats)
        rel = [v for r in bf["rows"] for v in r["rel_diff"]]
        bf["rel_diff"] = summary(rel)
        bf["bf16_stability"] = summary([v for r in bf["rows"] for v in r["bf16_stability"]])
        bf["f32_stability_same_variants"] = summary([v for r in bf["rows"] for v in r["f32_stability_same_variants"]])
        bf["evaluator_s_per_signal_s"] = {
            "float32": report["stability"]["float32_s_per_signal_s"],
            "bfloat16": ev16.seconds_per_signal_second(),
        }
        bf["meets_goal"] = bool(rel) and max(rel) < GOAL_BF16
    if 3 in items:
        report["speed"] = speed(mats, plan, scorers, gflops)
    if 4 in items:
        report["windows"] = windows(mats, plan, net, scorers["official"], ev)
    if 5 in items:
        report["memory"] = memory(Path(args.cache), plan, args.long)
    report["codec_lags"] = {k: sorted(set(v)) for k, v in CODEC_LAGS.items()}
    report["evaluator_cache"] = {"hits": ev.hits, "misses": ev.misses}
    report["elapsed_s"] = time.perf_counter() - T0
    return report


def print_report(r: dict[str, Any]) -> None:
    e, mi = r["env"], r["materials"]
    print(f"dense vs official DPAM 'scratch' ({r['plan']['name']} plan)")
    print(
        f"torch {e['torch']}, torch.get_num_threads() = {e['torch_threads']}, os.cpu_count() = {e['cpu_count']}, "
        f"python {e['python']}, allocator tuned: {e['allocator_tuned']}; float32 torch.mm {MATMUL_N}x{MATMUL_N} "
        f"best of 5: {e['matmul_gflops']:.1f} GFLOP/s"
    )
    print(f"tools: {e['ffmpeg']} | {e['espeak-ng']} | {e['fluidsynth']}")
    print(
        f"material (cache {mi['cache']}): speech = {mi['speech']} ({mi['seconds']['speech']:.1f} s); "
        f"music = {mi['music']} ({mi['seconds']['music']:.1f} s); excerpts {EXCERPT_S:g} s, clips {CLIP_S:g} s, "
        f"{RATE} Hz; excerpt RMS " + ", ".join(f"{m} {v:.1f} dBFS" for m, v in mi["rms_dbfs"].items())
    )
    if r["codec_lags"]:
        print(
            "codec alignment (lag removed, samples at the codec rate): "
            + "; ".join(f"{k}: {v}" for k, v in r["codec_lags"].items())
        )
    print()

    if "stability" in r:
        print_stability(r)
    if "monotonicity" in r:
        print_monotonicity(r)
    if "speed" in r:
        print_speed(r)
    if "windows" in r:
        print_windows(r)
    if "memory" in r:
        print_memory(r)
    if "bf16" in r:
        print_bf16(r)
    print(f"total run time {r['elapsed_s']:.0f} s")


def print_stability(r: dict[str, Any]) -> None:
    s = r["stability"]
    print(
        f"1. STABILITY: |d' - d| / max(d, {D_FLOOR:g}), both signals cut by: {', '.join(s['variants'])} "
        f"({len(s['variants'])} variants)"
    )
    print(
        f"dense windows: {s['dense_window'][0]:g} s / {s['dense_window'][1]:g} s (DPAMScorer's default): a "
        f"{EXCERPT_S:g} s excerpt is {s['excerpt_windows']} window(s)"
    )
    head = (
        f"{'material':<8} {'degradation':<15} | {'official d':>10} {'median':>9} {'worst':>9} {'(at)':<9} | "
        f"{'dense d':>8} {'median':>9} {'worst':>9} {'(at)':<9}"
    )
    print(head)
    print("-" * len(head))
    for row in s["rows"]:
        o, d = row["official"], row["dense"]
        print(
            f"{row['material']:<8} {LABELS[row['degradation']]:<15} | {o['distance']:>10.4f} {pct(o['median']):>9} "
            f"{pct(o['worst']):>9} {o['worst_variant']:<9} | {d['distance']:>8.4f} {pct(d['median'], 3):>9} "
            f"{pct(d['worst'], 3):>9} {d['worst_variant']:<9}"
        )
    parts = [(f"  {k}", s["official"]["per_variant"][k], s["dense"]["per_variant"][k]) for k in s["variants"]]
    parts += [(f"  {k}", s["official"][k], s["dense"][k]) for k in ("shifts", "trims")]
    if f"all but shift {LARGE_SHIFT}" in s["dense"]:
        k = f"all but shift {LARGE_SHIFT}"
        parts.append((f"  {k}", s["official"][k], s["dense"][k]))
    parts.append(("  all", s["official"]["all"], s["dense"]["all"]))
    for label, o, d in parts:
        print(
            f"{label + ' (' + str(d['n']) + ')':<26} | official median {pct(o['median']):>9} worst "
            f"{pct(o['worst']):>9} | dense median {pct(d['median'], 3):>8} worst {pct(d['worst'], 3):>8}"
        )
    g = s["goals"]
    print(
        f"dense goals: median <= {pct(GOAL_MEDIAN, 1)}: {pct(g['median']['value'], 3)} {verdict(g['median']['pass'])}; "
        f"worst <= {pct(GOAL_WORST, 0)}: {pct(g['worst']['value'], 3)} {verdict(g['worst']['pass'])}"
    )
    if "crosscheck" in r:
        c = r["crosscheck"]
        print(
            f"evaluator check: window-cached dense evaluator vs DPAMScorer.score_reference on {c['pairs']} identical "
            "pairs: "
            f"max relative difference {c['max_rel_diff']:.1e}"
        )
    print()


def print_monotonicity(r: dict[str, Any]) -> None:
    mo = r["monotonicity"]
    print("2. MONOTONICITY: distances along each ladder (least to most degraded); inversions = pairs out of order")
    for row in mo["ladders"]:
        steps = row["steps"]
        head = (
            f"{row['material']:<7} {row['ladder']:<16} {'':<9}"
            + "".join(f"{x:>9}" for x in steps)
            + f"  {'inversions':>10}"
        )
        print(head)
        for p in PROTOCOLS:
            ds = row[p]["distances"]
            inv = row[p]["inversions"]
            detail = "" if not inv else "  (" + ", ".join(f"{a}>{b}" for a, b in row[p]["pairs"]) + ")"
            print(f"{'':<24} {p:<9}" + "".join(f"{x:>9.4f}" for x in ds) + f"  {inv:>10}{detail}")
    inv = mo["inversions"]
    print(
        f"total inversions: official {inv['official']}, dense {inv['dense']}; dense goal none: "
        f"{verdict(inv['dense'] == 0)}"
    )
    print()


def print_speed(r: dict[str, Any]) -> None:
    sp = r["speed"]
    macs_ok = "OK" if sp["dense_macs_per_sample"] == DENSE_MACS_PER_SAMPLE else "DIFFERENT"
    print(
        f"3. SPEED: {sp['seconds']:g} s music pair ({sp['samples']:,} samples), DPAMScorer, median of "
        f"{r['plan']['speed_repeats']} (official: at least 5) after warm-up"
    )
    print(
        f"dense: {sp['dense_macs_per_sample']:,} MACs = {sp['dense_flops_per_sample']:,} FLOPs per sample per signal "
        f"(expected {DENSE_MACS_PER_SAMPLE:,}: {macs_ok}); {sp['dense_computed_samples']:,} samples computed per "
        f"signal in {WINDOW[0]:g} s / {WINDOW[1]:g} s windows ({sp['dense_computed_samples'] / sp['samples']:.2f}x "
        f"the input); official: {sp['official_macs_per_sample']:,.1f} MACs per sample"
    )
    head = (
        f"{'protocol':<9} {'case':<28} {'s/unit':>8} {'x realtime':>10} {'GFLOP':>7} {'floor@90':>9} "
        f"{'floor@meas':>10} {'floor@meas(input)':>18} {'max/min':>7}"
    )
    print(head)
    print("-" * len(head))
    for row in sp["rows"]:
        print(
            f"{row['protocol']:<9} {row['case']:<28} {row['seconds']:>8.4f} {row['x_real_time']:>9.1f}x "
            f"{row['flops'] / 1e9:>7.1f} {pct(row['floor_nominal'], 1):>9} {pct(row['floor_measured'], 1):>10} "
            f"{pct(row['floor_measured_input_samples'], 1):>18} {max(row['raw']) / min(row['raw']):>6.2f}x"
        )
    gl = sp["goal"]
    print(
        f"floor@X = FLOPs computed / X / time (dense: over the computed, overlapping window samples; 'input': over the "
        f"input's samples); X = {NOMINAL_GFLOPS:g} GFLOP/s nominal or {r['env']['matmul_gflops']:.1f} measured"
    )
    print(
        f"dense goal >= {pct(GOAL_FLOOR, 0)} of the floor (worst dense row): nominal {pct(gl['nominal'], 1)} "
        f"{verdict(gl['pass_nominal'])}; measured {pct(gl['measured'], 1)} {verdict(gl['pass_measured'])}"
    )
    print()


def print_windows(r: dict[str, Any]) -> None:
    w = r["windows"]
    print(
        f"4. WINDOWS: per-window vs per-item statistics on {w['clip_seconds']:g} s clips "
        f"({', '.join(w['materials'])}); dense distances per setting"
    )
    labels = [x["setting"] for x in w["settings"]]
    head = f"{'material':<8} {'degradation':<15} {'official':>9}" + "".join(f"{x:>13}" for x in labels)
    print(head)
    print("-" * len(head))
    for row in w["rows"]:
        print(
            f"{row['material']:<8} {LABELS[row['degradation']]:<15} {row['official']:>9.4f}"
            + "".join(f"{row[x]:>13.4f}" for x in labels)
        )
    print(
        f"stability on the clips: {', '.join(LABELS[x] for x in w['stability_degradations']) or 'not run'}; "
        f"variants {', '.join(w['stability_variants']) or '-'}"
    )
    head = (
        f"{'setting':<12} {'vs whole: median':>16} {'worst':>9} {'stability: median':>18} {'worst':>9} "
        f"{'s per pair':>11} {'computed/input':>14} {'ref features':>12}"
    )
    print(head)
    print("-" * len(head))

    def mark(x: dict[str, Any]) -> str:
        return " *" if x["setting"] == w["default"] else ""

    for x in w["settings"]:
        t = f"{x['seconds_per_pair']:.2f}" + ("" if x["seconds_measured"] else " est")
        print(
            f"{x['setting'] + mark(x):<12} {pct(x['deviation']['median']):>16} {pct(x['deviation']['worst']):>9} "
            f"{pct(x['stability']['median'], 3):>18} {pct(x['stability']['worst'], 3):>9} {t:>11} "
            f"{x['computed_per_input_sample']:>13.2f}x {x['reference_features_mb']:>9.0f} MB"
        )
    print(f"* = DPAMScorer's default ({w['default']})")
    rec = w["recommendation"]
    print(
        f"recommendation: window/hop {rec['setting']} "
        f"({'the current default' if rec['is_default'] else 'NOT the current default'}): {rec['reason']}"
    )
    print()


def print_memory(r: dict[str, Any]) -> None:
    me = r["memory"]
    mb = 1024 * 1024
    print(
        f"5. MEMORY: one dense score ({WINDOW[0]:g} s / {WINDOW[1]:g} s windows) per fresh process. peak RSS = "
        "VmHWM during the call; anon = RssAnon (what the scorer allocates), peak during the call minus before it; "
        "'untuned' = the same in a process with JNDQA_MALLOC_TUNING=0 (freed blocks go back to the OS: live memory)"
    )
    head = (
        f"{'case':<30} {'windows':>7} {'RSS before':>10} {'peak RSS':>9} {'anon p-b':>9} {'untuned':>9} "
        f"{'time':>8} {'s/s audio':>9} {'s/window':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in me["rows"]:
        u = row.get("untuned")
        ut = "-" if not u else f"{(u['anon_peak'] - u['anon_before']) / mb:.0f} MB"
        print(
            f"{row['case']:<30} {row['windows']:>7} {row['rss_before'] / mb:>7.0f} MB {row['peak_rss'] / mb:>6.0f} MB "
            f"{(row['anon_peak'] - row['anon_before']) / mb:>6.0f} MB {ut:>9} {row['time_s']:>7.2f}s "
            f"{row['time_per_audio_s']:>9.4f} {row['time_per_window_s']:>8.3f}"
            + (f"  (prepare_samples {row['prepare_s']:.1f} s)" if row["prepare_s"] else "")
        )
    ug = me["peak_growth_untuned"]
    print(
        f"length x{me['length_ratio']:g}: anon peak - before grows x{me['peak_growth']:.2f} (tuned)"
        + ("" if ug is None else f", x{ug:.2f} (untuned)")
        + f" -> memory {'flat' if me['flat'] else 'NOT flat'} (one window's reference features: "
        f"{me['window_features_mb']:.0f} MB); time per window spread x{me['time_per_window_spread']:.2f} -> "
        f"{'linear' if me['linear'] else 'NOT linear'} in the number of windows, i.e. in length (time per second "
        f"of audio spread x{me['time_per_s_spread']:.2f}: it also follows the window overlap; s/window is per channel)"
    )
    print()


def print_bf16(r: dict[str, Any]) -> None:
    bf = r["bf16"]
    tm = bf["timing"]
    pl = r["plan"]
    var16 = [f"shift {k}" for k in pl["bf16_shifts"]] + [f"trim {k}" for k in pl["bf16_trims"]]
    print(
        "6. BFLOAT16 dense vs float32 on the item-1 pairs "
        f"(materials {', '.join(pl['bf16_materials'])}; base pairs and {', '.join(var16) or 'no variants'})"
    )
    head = (
        f"{'material':<8} {'degradation':<15} {'float32 d':>10} {'bfloat16 d':>10} {'rel diff median':>16} {'worst':>9}"
    )
    print(head)
    print("-" * len(head))
    for row in bf["rows"]:
        sm = summary(row["rel_diff"])
        print(
            f"{row['material']:<8} {LABELS[row['degradation']]:<15} {row['float32']:>10.4f} {row['bfloat16']:>10.4f} "
            f"{pct(sm['median'], 3):>16} {pct(sm['worst'], 3):>9}"
        )
    f32s = bf["f32_stability_same_variants"]
    print(
        f"all {bf['rel_diff']['n']} pairs: |d_bf16 - d_f32| / d_f32 median {pct(bf['rel_diff']['median'], 3)}, worst "
        f"{pct(bf['rel_diff']['worst'], 3)}; stability on these variants: bfloat16 median "
        f"{pct(bf['bf16_stability']['median'], 3)} worst {pct(bf['bf16_stability']['worst'], 3)} vs float32 median "
        f"{pct(f32s['median'], 3)} worst {pct(f32s['worst'], 3)}"
    )
    es = bf["evaluator_s_per_signal_s"]
    print(
        f"speed, one {tm['window_s']:g} s window (ref features + one test): float32 {tm['seconds']['float32']:.3f} s, "
        f"bfloat16 {tm['seconds']['bfloat16']:.3f} s: bfloat16 {tm['bf16_speedup']:.2f}x float32's speed; over the "
        f"runs above: float32 {es['float32']:.4f}, bfloat16 {es['bfloat16']:.4f} s per signal-second"
    )
    print(
        f"goal 'distance moves < {pct(GOAL_BF16, 1)}': {'met' if bf['meets_goal'] else 'NOT met'} "
        f"(worst {pct(bf['rel_diff']['worst'], 3)})"
    )
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="reduced plan, under 2 minutes on 2 cores")
    p.add_argument("--long", action="store_true", help="add a 10-minute stereo 48 kHz pair to item 5 (minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "jndqa-bench-dense"),
        help="folder for the generated material (default: $TMPDIR/jndqa-bench-dense)",
    )
    p.add_argument(
        "--only",
        default="1,2,3,4,5,6",
        help="comma-separated items to run (default all: 1,2,3,4,5,6); item 6 also runs item 1",
    )
    p.add_argument("--_child", choices=("memory", "memory:long"), help=argparse.SUPPRESS)
    p.add_argument("--_seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.items = {int(x) for x in args.only.split(",") if x.strip()}
    except ValueError:
        p.error("--only takes item numbers 1-6, e.g. --only 3,5")
    if not args.items or not args.items <= {1, 2, 3, 4, 5, 6}:
        p.error("--only takes item numbers 1-6, e.g. --only 3,5")
    try:
        if args._child:
            json.dump(memory_child(Path(args.cache), args._seconds, args._child == "memory:long"), sys.stdout)
            return 0
        report = build_report(args, QUICK if args.quick else FULL)
    except (ReleaseNotFoundError, MissingPackage) as e:
        print(f"bench_dense: {e}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, indent=1, default=float)
        print()
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
