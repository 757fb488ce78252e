"""Seconds per stimulus of every installed metric, side by side on the same pairs.

    .venv/bin/python benchmarks/bench_metrics.py [--corpus DIR] [--references 2] [--seconds 10]
                                                 [--metrics dpam:dense,zimtohrli,...] [--json]

Pairs. With ``--corpus DIR`` (e.g. the demo corpus, ``jndqa demo``'s ``corpus/``): ``--references`` audio
files (WAV or FLAC under DIR, sorted by path, picked evenly over the list so that speech and music both
appear), each read with soundfile at its own rate and channels and cut to its first ``--seconds``. Without
it: ``--references`` generated signals of ``--seconds`` at 48 kHz, alternately a speech stand-in (mono) and
a music stand-in (stereo), seeded. Every reference gets the same three tests, all aligned and of its
length: white noise at 30 dB and at 15 dB SNR (seeded), and an 8th-order Butterworth low-pass at 4 kHz
(zero phase).

Metrics. Every name of ``jndqa.metric.available_metrics()``, DPAM under each of its protocols
(``dpam:dense``, ``dpam:official``, ``dpam:student``); a metric that cannot be loaded (its package missing)
is listed with the reason and skipped. ``--metrics`` picks some.

Timing. Per metric, a warm-up call on a 1.2 s generated pair first (imports, weights, one-off set-up;
reported as ``setup_s``); then one ``score_each(ref, tests, rate)`` call per reference, timed with
``time.perf_counter``, in this process, with each library's default threading. Seconds per stimulus:
the total over the references / the number of tests; it includes the metric's resampling and channel
mixing, as a caller sees it. ``x_realtime``: seconds of test audio per second of compute. The mean value
per test kind shows each metric's orientation (a distance grows, a quality falls, with degradation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jndqa.metric import MetricError, MetricScore, available_metrics, load_metric

RATE = 48000
TEST_KINDS = ("noise 30 dB", "noise 15 dB", "low-pass 4 kHz")
WARMUP_SECONDS = 1.2  # ViSQOL's audio mode needs about 0.9 s to build its patches


# ---------------------------------------------------------------------------- signals
def speech_standin(seconds: float, seed: int) -> np.ndarray:
    """A pulse train (100-140 Hz) through three formant resonators, in 4 Hz syllables; mono, peak 0.3."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = round(RATE * seconds)
    t = np.arange(n) / RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * rng.uniform(0.3, 0.7) * t)
    pulses = (np.diff(np.floor(np.cumsum(f0 / RATE)), prepend=0) > 0).astype(np.float64)
    y = np.zeros(n)
    for formant, bandwidth in ((700, 130), (1200, 70), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / RATE)
        y += lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * formant / RATE), r * r], pulses)
    y += 0.02 * rng.standard_normal(n) * (np.sin(2 * np.pi * 7 * t) > 0.5)
    y *= np.clip(2 * np.sin(2 * np.pi * 4 * t), 0, 1)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def music_standin(seconds: float, seed: int) -> np.ndarray:
    """Decaying harmonic notes, four per second, panned; stereo, peak 0.3."""
    rng = np.random.default_rng(seed)
    n = round(RATE * seconds)
    y = np.zeros((n, 2))
    for start in np.arange(0, seconds, 0.25):
        f = 220 * 2 ** (rng.integers(0, 24) / 12)
        a = int(start * RATE)
        tt = np.arange(min(int(0.8 * RATE), n - a)) / RATE
        note = sum(np.sin(2 * np.pi * f * k * tt) / k for k in (1, 2, 3)) * np.exp(-4 * tt)
        pan = rng.uniform(0.2, 0.8)
        y[a : a + len(tt), 0] += (1 - pan) * note
        y[a : a + len(tt), 1] += pan * note
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def degrade(x: np.ndarray, rate: int, seed: int) -> list[np.ndarray]:
    """The three tests of a reference (TEST_KINDS), float32, aligned, same shape."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    power = float(np.mean(x.astype(np.float64) ** 2))
    tests = []
    for snr in (30, 15):
        noise = rng.standard_normal(x.shape)
        tests.append((x + noise * math.sqrt(power / float(np.mean(noise**2)) / 10 ** (snr / 10))).astype(np.float32))
    sos = butter(8, 4000, fs=rate, output="sos")
    tests.append(sosfiltfilt(sos, x, axis=0).astype(np.float32))
    return tests


def corpus_references(folder: Path, count: int, seconds: float) -> list[tuple[str, np.ndarray, int]]:
    import soundfile as sf

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file())
    if not files:
        sys.exit(f"{folder}: no WAV or FLAC files")
    picks = [files[round(i * (len(files) - 1) / max(count - 1, 1))] for i in range(min(count, len(files)))]
    out = []
    for p in dict.fromkeys(picks):
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
        data = data[: round(seconds * rate)]
        out.append((str(p.relative_to(folder)), data[:, 0] if data.shape[1] == 1 else data, int(rate)))
    return out


def generated_references(count: int, seconds: float) -> list[tuple[str, np.ndarray, int]]:
    make = [("speech stand-in", speech_standin), ("music stand-in (stereo)", music_standin)]
    return [(f"{make[i % 2][0]} #{i}", make[i % 2][1](seconds, 100 + i), RATE) for i in range(count)]


# ---------------------------------------------------------------------------- measuring
def metric_specs(names: list[str] | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered name, options) of every metric to measure."""
    specs = []
    for name in available_metrics():
        if name == "dpam":
            specs += [(f"dpam:{p}", "dpam", {"protocol": p}) for p in ("dense", "official", "student")]
        else:
            specs.append((name, name, {}))
    if names:
        wanted = set(names)
        unknown = wanted - {label for label, _, _ in specs} - {name for _, name, _ in specs}
        if unknown:
            sys.exit(f"unknown metrics: {', '.join(sorted(unknown))}; installed: {', '.join(available_metrics())}")
        specs = [s for s in specs if s[0] in wanted or s[1] in wanted]
    return specs


def measure(label: str, name: str, options: dict[str, Any], refs: list[tuple[str, np.ndarray, int]],
            tests: list[list[np.ndarray]]) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"metric": label}
    try:
        metric = load_metric(name, **options)
    except MetricError as exc:
        return {**row, "unavailable": str(exc)}
    row.update({k: metric.describe()[k] for k in ("version", "variant", "orientation", "rate", "needs_alignment")})
    warm = speech_standin(WARMUP_SECONDS, 7)
    t0 = time.perf_counter()
    metric.score_each(warm, [degrade(warm, RATE, 7)[0]], RATE)
    row["setup_s"] = time.perf_counter() - t0
    seconds = compute = 0.0
    values: dict[str, list[float]] = {k: [] for k in TEST_KINDS}
    failures = []
    for (ref_name, ref, rate), ts in zip(refs, tests, strict=True):
        t0 = time.perf_counter()
        results = metric.score_each(ref, ts, rate)
        compute += time.perf_counter() - t0
        seconds += sum(len(t) / rate for t in ts)
        for kind, r in zip(TEST_KINDS, results, strict=True):
            if isinstance(r, MetricScore):
                values[kind].append(r.value)
            else:
                failures.append(f"{ref_name} / {kind}: {r.reason}")
    stimuli = sum(len(ts) for ts in tests)
    row.update({
        "stimuli": stimuli,
        "seconds_per_stimulus": compute / stimuli,
        "x_realtime": seconds / compute if compute else None,
        "failures": failures,
        "mean_value": {k: (float(np.mean(v)) if v else None) for k, v in values.items()},
    })  # fmt: skip
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'metric':14s} {'version':>16s} {'orient.':>8s} {'setup s':>8s} {'s/stimulus':>10s} {'x rt':>6s} "
        + " ".join(f"{k:>14s}" for k in TEST_KINDS)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "unavailable" in r:
            lines.append(f"{r['metric']:14s} unavailable: {r['unavailable']}")
            continue
        means = " ".join("{:>14s}".format("-" if v is None else f"{v:.4g}") for v in r["mean_value"].values())
        lines.append(
            f"{r['metric']:14s} {r['version'][:16]:>16s} {r['orientation']:>8s} {r['setup_s']:8.2f} "
            f"{r['seconds_per_stimulus']:10.3f} {r['x_realtime']:6.1f} {means}"
        )
        lines += [f"{'':14s} failed: {f}" for f in r["failures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="a folder of reference audio (e.g. the demo corpus)")
    ap.add_argument("--references", type=int, default=2, help="references to use (default 2)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of each reference (default 10)")
    ap.add_argument("--metrics", help="comma-separated labels or names (default: every installed metric)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    refs = (corpus_references(args.corpus, args.references, args.seconds) if args.corpus
            else generated_references(args.references, args.seconds))  # fmt: skip
    tests = [degrade(x, rate, 1000 + i) for i, (_, x, rate) in enumerate(refs)]
    rows = [measure(label, name, options, refs, tests) for label, name, options in
            metric_specs(args.metrics.split(",") if args.metrics else None)]  # fmt: skip
    report = {
        "references": [
            {"name": n, "rate": r, "channels": 1 if x.ndim == 1 else x.shape[1], "seconds": len(x) / r}
            for n, x, r in refs
        ],
        "tests_per_reference": list(TEST_KINDS),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "metrics": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["references"]:
            print(f"reference {r['name']}: {r['seconds']:.1f} s, {r['rate']} Hz, {r['channels']} ch")
        print(f"tests per reference: {', '.join(TEST_KINDS)}; {os.cpu_count()} CPUs\n")
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
