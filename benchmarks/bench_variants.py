"""Variants benchmark: encode+decode speed per codec, and what the pipeline adds to ffmpeg's own time.

Run from the repository root::

    .venv/bin/python benchmarks/bench_variants.py [--seconds 10] [--repeat 5] [--ffmpeg PATH]

For each codec, on ``--seconds`` of synthetic stereo 44.1 kHz material (tones, noise, clicks):

- ``ffmpeg``: the bare commands a person would type, file to file, timed as processes
  (``ffmpeg -i ref.wav -c:a CODEC ... encoded`` then ``ffmpeg -i encoded decoded.wav``);
- ``pipeline``: :func:`jndqa.variants.render` as a whole (the same two ffmpeg processes through
  pipes, plus WAV parsing, resampling, channel mapping, alignment and loudness).

Both are given as real-time factors (seconds of audio per second of wall time, the median of
``--repeat`` runs; the two are interleaved so that a busy CPU slows both alike), with the
pipeline's steps (ms). ``overhead`` = pipeline time / ffmpeg time − 1, in wall time and in CPU
time (user + system of this process and its children: steadier than wall time when other work
shares the machine). Goal: at most 20 %, judged on CPU time per codec and on the sum over codecs
(PASS/MISS). The reference's own loudness is measured once per item, not per variant; it is
reported on its own line.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from jndqa.variants import Reference, parse_variants, render, resolve_ffmpeg, tool_versions

RATE = 44100
GOAL = 0.20
CODECS = [
    {"codec": "libmp3lame", "bitrate": "128k"},
    {"codec": "libopus", "bitrate": "96k"},
    {"codec": "aac", "bitrate": "128k"},
    {"codec": "libvorbis", "quality": 5},
    {"codec": "flac"},
    {"codec": "pcm_mulaw"},
    {"codec": "ac3", "bitrate": "192k"},
    {"codec": "mp2", "bitrate": "192k"},
]


def material(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Stereo test material: harmonic tones with decays, panned, over quiet noise, with clicks."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.003 * rng.standard_normal((n, 2))
    for _ in range(int(4 * seconds)):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        start, decay, pan = rng.uniform(0, seconds), rng.uniform(0.2, 1.5), rng.uniform(0.2, 0.8)
        rel = np.clip(t - start, 0, None)
        env = np.where(t >= start, np.clip(rel / 0.01, 0, 1) * np.exp(-rel / decay), 0.0)
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 8) if f0 * h < rate / 2)
        x += 0.08 * (env * tone)[:, None] * np.array([pan, 1 - pan])
    x[rng.integers(0, n, size=int(seconds))] += 0.5
    return np.clip(x, -1, 1).astype(np.float32)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args, **kwargs) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args, **kwargs)
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def bare_ffmpeg(ffmpeg: str, spec, wav: Path, workdir: Path) -> None:
    """The encode and decode commands a person would type, file to file."""
    encoded = workdir / f"encoded.{spec.container}"
    decoded = workdir / "decoded.wav"
    quiet = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    encode = [ffmpeg, *quiet, "-i", str(wav), *spec.ffmpeg_args(), "-f", spec.container, str(encoded)]
    subprocess.run(encode, check=True)
    subprocess.run([ffmpeg, *quiet, "-i", str(encoded), "-c:a", "pcm_f32le", str(decoded)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the material (default 10 s)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per codec; the median is reported")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg binary (default: PATH, then imageio-ffmpeg)")
    args = parser.parse_args(argv)

    ffmpeg = resolve_ffmpeg(args.ffmpeg)
    versions = tool_versions(ffmpeg)
    print(f"ffmpeg {versions['ffmpeg']} ({ffmpeg}); soxr {versions['soxr']}; pyloudnorm {versions['pyloudnorm']}")
    print(f"material: {args.seconds:g} s stereo {RATE} Hz; median of {args.repeat} runs; goal: overhead <= {GOAL:.0%}")
    x = material(args.seconds)
    specs = parse_variants(CODECS)
    _ = Reference.from_array(x[: RATE // 2], RATE, "warm-up").loudness  # imports
    start = time.perf_counter()
    _ = Reference.from_array(x, RATE, "bench").loudness
    print(f"reference loudness, once per item: {1e3 * (time.perf_counter() - start):.1f} ms")
    ref = Reference.from_array(x, RATE, "bench")
    _ = ref.loudness

    header = (
        f"{'codec':<14}{'ffmpeg x RT':>12}{'pipeline x RT':>15}{'overhead':>10}{'(CPU)':>9}   "
        f"{'enc':>5}{'dec':>5}{'resmp':>6}{'align':>6}{'loud':>6}{'other':>6}"
    )
    print(header)
    print("-" * len(header))
    totals = {"bare": 0.0, "pipe": 0.0, "bare_cpu": 0.0, "pipe_cpu": 0.0}
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="jndqa-bench-") as tmp:
        wav = Path(tmp) / "ref.wav"
        sf.write(wav, x, RATE, subtype="FLOAT")
        for spec in specs:
            render(ref, spec, ffmpeg=ffmpeg)  # warm: version probe, caches, reference spectrum
            bare_ffmpeg(ffmpeg, spec, wav, Path(tmp))
            runs: dict[str, list[float]] = {"bare": [], "pipe": [], "bare_cpu": [], "pipe_cpu": []}
            steps = []
            for _ in range(args.repeat):
                wall, cpu, _ = timed(bare_ffmpeg, ffmpeg, spec, wav, Path(tmp))
                runs["bare"].append(wall)
                runs["bare_cpu"].append(cpu)
                wall, cpu, result = timed(render, ref, spec, ffmpeg=ffmpeg)
                runs["pipe"].append(wall)
                runs["pipe_cpu"].append(cpu)
                steps.append(result.timings)
            med = {k: statistics.median(v) for k, v in runs.items()}
            for k, v in med.items():
                totals[k] += v
            step = {k: 1e3 * statistics.median(s[k] for s in steps) for k in steps[0]}
            other = 1e3 * med["pipe"] - sum(step.values())
            overhead, overhead_cpu = med["pipe"] / med["bare"] - 1, med["pipe_cpu"] / med["bare_cpu"] - 1
            verdicts.append(overhead_cpu <= GOAL)
            print(
                f"{spec.label:<14}{args.seconds / med['bare']:>12.1f}{args.seconds / med['pipe']:>15.1f}"
                f"{overhead:>+10.1%}{overhead_cpu:>+9.1%}   "
                f"{step['encode']:>5.0f}{step['decode']:>5.0f}{step['resample']:>6.1f}{step['align']:>6.1f}"
                f"{step['loudness']:>6.1f}{other:>6.0f}  {'PASS' if overhead_cpu <= GOAL else 'MISS'}"
            )
    overall = totals["pipe"] / totals["bare"] - 1
    overall_cpu = totals["pipe_cpu"] / totals["bare_cpu"] - 1
    print("-" * len(header))
    print(
        f"{'all codecs':<14}{len(specs) * args.seconds / totals['bare']:>12.1f}"
        f"{len(specs) * args.seconds / totals['pipe']:>15.1f}{overall:>+10.1%}{overall_cpu:>+9.1%}   "
        f"{'PASS' if overall_cpu <= GOAL else 'MISS'} (goal: CPU overhead <= {GOAL:.0%}; "
        f"{sum(verdicts)}/{len(verdicts)} codecs pass)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
