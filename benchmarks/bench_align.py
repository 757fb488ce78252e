"""Alignment of coded signals to their references: samples against envelopes, side by side.

For every (reference, test) pair it prints the best sample cross-correlation within ±1 s and its
offset (:func:`jndqa.variants.align.find_offset` with no threshold), the best log-energy envelope
correlation and its offset (:func:`find_envelope_offset`), and the method the renderer's rule picks
(samples when their correlation reaches 0.5, else the envelope when its correlation reaches
0.8). Two controls per reference show what an unrelated signal scores: the reference played
backwards, and white noise.

Pairs: ``--ratings FILE`` (a canonical ratings CSV: every distinct ``ref,test`` pair), else
generated material: speech-like syllable-modulated noise under a copy delayed by 25 ms, Opus at
24 kbit/s (a waveform codec) and every STFT bin's phase randomised through ffmpeg's ``afftfilt``
(a crude resynthesis).

Run: ``.venv/bin/python benchmarks/bench_align.py [--ratings FILE] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from jndqa.variants import AlignmentFailed, Reference, parse_variants, render_all
from jndqa.variants.align import MIN_ENVELOPE_CORRELATION, find_envelope_offset, find_offset

MIN_SAMPLE_CORRELATION = 0.5


def _measure(ref: np.ndarray, test: np.ndarray, rate: int) -> dict:
    a = find_offset(ref, test, rate, max_lag=rate, min_correlation=0.0)
    try:
        e = find_envelope_offset(ref, test, rate, max_lag_seconds=1.0, min_correlation=-1.0)
        env, env_offset = e.correlation, e.offset
    except AlignmentFailed:
        env, env_offset = float("nan"), None
    method = ("samples" if abs(a.correlation or 0) >= MIN_SAMPLE_CORRELATION
              else "envelope" if env >= MIN_ENVELOPE_CORRELATION else "fails")  # fmt: skip
    return {"samples": a.correlation, "samples_offset": a.offset, "envelope": env, "envelope_offset": env_offset,
            "method": method}  # fmt: skip


def _pairs_from_ratings(path: Path) -> list[tuple[str, Path, Path]]:
    """Every rated stimulus (hidden references left out) of a ratings file, read as ``jndqa agree``
    reads it."""
    from jndqa.datasets import read_ratings, stimulus_means

    return [(s.test.stem, s.ref, s.test) for s in stimulus_means(read_ratings(path).rows)]


def _generated() -> list[tuple[str, np.ndarray, np.ndarray, int, str]]:
    from scipy import signal

    rate = 48000
    rng = np.random.default_rng(0)
    t = np.arange(4 * rate) / rate
    syllables = np.zeros(t.size)  # 120 ms bumps at random onsets, 100-400 ms apart (not periodic)
    onset = 0.05
    while onset < t[-1] - 0.15:
        i = int(onset * rate)
        syllables[i : i + int(0.12 * rate)] += np.hanning(int(0.12 * rate)) * rng.uniform(0.3, 1.0)
        onset += rng.uniform(0.1, 0.4)
    ref = (syllables * signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(t.size)) * 0.05)[:, None]
    ref = ref.astype(np.float32)
    scramble = "afftfilt=real='hypot(re,im)*cos(random(0)*2*PI)':imag='hypot(re,im)*sin(random(0)*2*PI)':win_size=1024"
    specs = parse_variants([{"label": "opus 24k", "codec": "libopus", "bitrate": "24k"},
                            {"label": "phase-randomised", "effects": scramble}])  # fmt: skip
    out = [("delayed copy 25 ms", ref, np.concatenate([np.zeros((1200, 1), np.float32), ref]), rate, "generated")]
    # Rendered without alignment (max_lag 0, no threshold, no fallback): the decoder's raw output.
    for spec, r in zip(specs, render_all(Reference.from_array(ref, rate, "syllables"), specs, max_lag=0,
                                         min_correlation=0.0, envelope_fallback=False), strict=True):  # fmt: skip
        if isinstance(r, AlignmentFailed | Exception):
            raise SystemExit(f"rendering {spec.label} failed: {r}")
        out.append((spec.label, ref, r.samples, rate, "generated"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=Path, help="a canonical ratings CSV whose ref,test pairs to measure")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    cases = []
    if args.ratings:
        for name, ref_path, test_path in _pairs_from_ratings(args.ratings):
            ref, rate = sf.read(ref_path, dtype="float32", always_2d=True)
            test, test_rate = sf.read(test_path, dtype="float32", always_2d=True)
            if test_rate != rate:
                import soxr

                test = soxr.resample(test, test_rate, rate).astype(np.float32)
            test = test.mean(axis=1, keepdims=True) if test.shape[1] != ref.shape[1] else test
            cases.append((name, ref, test, rate, str(ref_path)))
    else:
        cases = _generated()
    rows = []
    controls = {}
    for name, ref, test, rate, key in cases:
        rows.append({"pair": name, "rate": rate, **_measure(ref, test, rate)})
        if key not in controls:
            noise = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32) * float(ref.std())
            unrelated = (("reversed", np.ascontiguousarray(ref[::-1])), ("white noise", noise))
            controls[key] = [{"pair": f"control: {n}", "rate": rate, **_measure(ref, x, rate)} for n, x in unrelated]
    rows += [c for cs in controls.values() for c in cs]
    if args.json:
        print(
            json.dumps({"rows": rows, "min_samples": MIN_SAMPLE_CORRELATION, "min_envelope": MIN_ENVELOPE_CORRELATION})
        )
        return 0
    print(f"{'pair':28s} {'samples r':>10s} {'offset':>8s} {'envelope r':>11s} {'offset':>8s}  method")
    for r in rows:
        off = "-" if r["envelope_offset"] is None else str(r["envelope_offset"])
        print(f"{r['pair'][:28]:28s} {r['samples']:10.3f} {r['samples_offset']:8d} {r['envelope']:11.3f} {off:>8s}  "
              f"{r['method']}")  # fmt: skip
    print(f"thresholds: samples |r| >= {MIN_SAMPLE_CORRELATION}, envelope r >= {MIN_ENVELOPE_CORRELATION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
