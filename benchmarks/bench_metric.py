"""Speed of the DPAM metric on 10-second clips, measured side by side in one run.

Run it with ``make bench`` (which runs ``.venv/bin/python benchmarks/bench_metric.py``) or directly::

    .venv/bin/python benchmarks/bench_metric.py [--repeats 10] [--seconds 10] [--json]

It needs the official DPAM release on disk (``jndqa setup``, or ``$JNDQA_DPAM_DIR``).

What is measured, for clips of ``--seconds`` at 22,050 Hz (ref.wav and 2.wav of
the release's sample audio tiled to that length; the 10 test signals are 2.wav
tiled plus seeded noise of 10 different levels, so they all differ):

* three workloads: (a) one pair through ``DPAMScorer.score``; (b) 10 pairs in one
  ``score_pairs`` call, reported per pair; (c) one reference reused against 10
  tests with ``reference`` + ``score_reference``, reported per test (with the
  reference's cost spread over the tests, and without it);
* for three implementations: the optimized scorer in this process (glibc
  allocator tuned by ``tune_allocator``); the same scorer in a subprocess with
  ``JNDQA_MALLOC_TUNING=0``; and a naive PyTorch version of the same network
  (``F.pad`` + ``F.conv1d`` + ``torch.var_mean`` + leaky ReLU per layer, no
  in-place tricks) in a subprocess with ``JNDQA_MALLOC_TUNING=0``. The tuning is
  process-global, hence the subprocesses (the script re-invokes itself with a
  hidden flag and reads its JSON). The naive distances must match the
  scorer's within 1e-3 relative, or the script exits with status 1;
* the machine's float32 matrix-multiply throughput (``torch.mm`` of 2048x2048,
  best of 5) and the network's exact FLOP count from its layer shapes, giving
  a "floor" time (FLOPs / throughput) and the fraction of it each run reaches;
* ratios against the official TensorFlow DPAM, 0.063 s per 10 s pair on 2 CPU
  cores, a constant from ``docs/metric.md`` §10, not measured here.

Every timing is ``time.perf_counter`` around the call, two warm-up calls first,
the median of ``--repeats``, under ``torch.inference_mode()``, with torch's
default thread count. Seconds per pair include the scorer's own overhead
(array conversion, the p_jnd head, Python objects), as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jndqa.metric import DPAM, MODEL_RATE, DPAMScorer, ReleaseNotFoundError, find_release, layer_lengths, load_audio
from jndqa.metric.network import N_LAYERS, layer_channels, same_padding
from jndqa.metric.score import tune_allocator

N_TESTS = 10
WARMUP = 2
OFFICIAL_TF_S_PER_PAIR = 0.063  # docs/metric.md §10, 10 s pair, 2 CPU cores; not measured here
NOMINAL_GFLOPS = 90.0  # the issue's nominal float32 throughput of the benchmark machine
GOAL_SINGLE_X = 2.0  # single pair at least 2x the official speed
GOAL_REUSE_X = 4.0  # reuse at least 4x the official speed per test signal
TOLERANCE = 1e-3  # naive vs scorer distances, relative
MATMUL_N = 2048


# ---------------------------------------------------------------------------- inputs
def make_signals(seconds: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """The reference (ref.wav tiled) and N_TESTS tests (2.wav tiled + seeded noise of rising level)."""
    samples = round(seconds * MODEL_RATE)
    folder = find_release() / "sample_audio"
    ref = np.resize(load_audio(folder / "ref.wav").samples, samples).astype(np.float32)
    base = np.resize(load_audio(folder / "2.wav").samples, samples).astype(np.float32)
    tests = []
    for k in range(N_TESTS):
        rng = np.random.default_rng(1000 + k)
        noise = rng.standard_normal(samples).astype(np.float32) * np.float32(8.0 * (k + 1))  # int16 units
        tests.append(base + noise)
    return ref, tests


def network_macs(samples: int) -> int:
    """Multiply-adds of the 14 convolutions for one signal of ``samples`` samples."""
    total, c_in = 0, 1
    for i, t_out in enumerate(layer_lengths(samples)):
        c_out = layer_channels(i)
        total += t_out * c_in * 3 * c_out
        c_in = c_out
    return total


def matmul_gflops(n: int = MATMUL_N, tries: int = 5) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    for _ in range(WARMUP):
        fn()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


# --------------------------------------------------------------- naive baseline
class NaiveDPAM:
    """The same network written plainly: no in-place ops, no padded buffers, torch.var_mean."""

    def __init__(self, net: DPAM):
        self.kernels = [k.detach().clone() for k in net.kernels]
        self.betas = [b.detach().clone() for b in net.betas]
        assert net.channel_weights is not None, "the scratch model has channel weights"
        self.weights = [w.detach().abs().clone() for w in net.channel_weights]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x[:, None, :]
        maps = []
        for i in range(N_LAYERS):
            stride = 1 if i == N_LAYERS - 1 else 2
            h = F.pad(h, same_padding(h.shape[-1], stride))
            y = F.conv1d(h, self.kernels[i], stride=stride)
            var, mean = torch.var_mean(y, dim=-1, keepdim=True, correction=0)
            h = F.leaky_relu((y - mean) / torch.sqrt(var + 1e-3) + self.betas[i][None, :, None], 0.2)
            maps.append(h)
        return maps

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(fb[0].shape[0])
        for a, b, w in zip(fa, fb, self.weights, strict=True):
            total = total + (w[None, :, None] * (a - b).abs()).mean(dim=(1, 2))
        return total


# ------------------------------------------------------------------- measuring
def measure(impl: str, repeats: int, seconds: float) -> dict[str, Any]:
    """Time the three workloads with ``impl`` ('scorer' or 'naive') in this process."""
    ref, tests = make_signals(seconds)
    reuse_split: list[tuple[float, float]] = []
    if impl == "scorer":
        scorer = DPAMScorer("scratch")

        def single() -> list[float]:
            return [scorer.score(ref, tests[0]).distance]

        def pairs() -> list[float]:
            return [s.distance for s in scorer.score_pairs([(ref, t) for t in tests])]

        def reuse() -> list[float]:
            t0 = time.perf_counter()
            r = scorer.reference(ref)
            t1 = time.perf_counter()
            out = [s.distance for s in scorer.score_reference(r, tests)]
            reuse_split.append((t1 - t0, time.perf_counter() - t1))
            return out

    else:
        naive = NaiveDPAM(DPAM.official("scratch"))
        ref_t = torch.from_numpy(ref)[None]
        tests_t = torch.from_numpy(np.stack(tests))

        def single() -> list[float]:
            return naive.distance(naive.features(ref_t), naive.features(tests_t[:1])).tolist()

        def pairs() -> list[float]:
            refs = ref_t.expand(N_TESTS, -1).contiguous()  # ten independent pairs: the reference is recomputed
            return naive.distance(naive.features(refs), naive.features(tests_t)).tolist()

        def reuse() -> list[float]:
            t0 = time.perf_counter()
            fr = naive.features(ref_t)
            t1 = time.perf_counter()
            out = naive.distance(fr, naive.features(tests_t)).tolist()
            reuse_split.append((t1 - t0, time.perf_counter() - t1))
            return out

    result: dict[str, Any] = {
        "impl": impl,
        "threads": torch.get_num_threads(),
        "allocator_tuned": impl == "scorer" and tune_allocator(),  # idempotent: reports the state
        "malloc_tuning_env": os.environ.get("JNDQA_MALLOC_TUNING"),
    }
    with torch.inference_mode():
        t_single, d_single = timed(single, repeats)
        t_pairs, d_pairs = timed(pairs, repeats)
        t_reuse, d_reuse = timed(reuse, repeats)
    tests_only = [t for _, t in reuse_split[WARMUP:]]
    result["seconds"] = {
        "single_per_pair": statistics.median(t_single),
        "pairs_per_pair": statistics.median(t_pairs) / N_TESTS,
        "reuse_per_test": statistics.median(t_reuse) / N_TESTS,
        "reuse_tests_only_per_test": statistics.median(tests_only) / N_TESTS,
    }
    result["raw"] = {"single": t_single, "pairs": t_pairs, "reuse": t_reuse, "reuse_tests_only": tests_only}
    result["distances"] = {"single": d_single, "pairs": d_pairs, "reuse": d_reuse}
    return result


def measure_in_subprocess(impl: str, repeats: int, seconds: float) -> dict[str, Any]:
    env = dict(os.environ, JNDQA_MALLOC_TUNING="0")
    args = [f"--_child={impl}", f"--repeats={repeats}", f"--seconds={seconds}"]
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess for {impl!r} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------- report
CASES = [
    # (key, label, signals computed per reported unit, raw timings key)
    ("single_per_pair", "(a) single pair: score, per pair", 2.0, "single"),
    ("pairs_per_pair", "(b) 10 pairs: score_pairs, per pair", 2.0, "pairs"),
    ("reuse_per_test", f"(c) reuse: ref + {N_TESTS} tests, per test", 1.0 + 1.0 / N_TESTS, "reuse"),
    ("reuse_tests_only_per_test", "(c') reuse: tests only, per test", 1.0, "reuse_tests_only"),
]


def max_rel_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    worst = 0.0
    for key in ("single", "pairs", "reuse"):
        x, y = np.asarray(a["distances"][key], float), np.asarray(b["distances"][key], float)
        worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12))))
    return worst


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    samples = round(args.seconds * MODEL_RATE)
    # Subprocesses first, so this process's tuned heap does not sit in memory while they run.
    untuned = measure_in_subprocess("scorer", args.repeats, args.seconds)
    naive = measure_in_subprocess("naive", args.repeats, args.seconds)
    tuned = measure("scorer", args.repeats, args.seconds)
    gflops = matmul_gflops()
    macs = network_macs(samples)
    flops_signal = 2 * macs
    runs = {"optimized, allocator tuned": tuned, "optimized, JNDQA_MALLOC_TUNING=0": untuned, "naive PyTorch": naive}
    rows = []
    for key, label, signals, raw in CASES:
        for name, run in runs.items():
            s = run["seconds"][key]
            times = run["raw"][raw]
            rows.append(
                {
                    "case": key,
                    "label": label,
                    "impl": name,
                    "seconds": s,
                    "max_over_min": max(times) / min(times),
                    "x_real_time": args.seconds / s,
                    "x_official_tf": OFFICIAL_TF_S_PER_PAIR * (args.seconds / 10.0) / s,
                    "floor_fraction_nominal": signals * flops_signal / (NOMINAL_GFLOPS * 1e9) / s,
                    "floor_fraction_measured": signals * flops_signal / (gflops * 1e9) / s,
                }
            )
    official = OFFICIAL_TF_S_PER_PAIR * args.seconds / 10.0
    single, reuse = tuned["seconds"]["single_per_pair"], tuned["seconds"]["reuse_per_test"]
    single_limit, reuse_limit = official / GOAL_SINGLE_X, official / GOAL_REUSE_X
    rel = max_rel_diff(naive, tuned)
    return {
        "seconds_per_clip": args.seconds,
        "samples_per_clip": samples,
        "sample_rate": MODEL_RATE,
        "tests": N_TESTS,
        "repeats": args.repeats,
        "warmup": WARMUP,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "allocator_tuned_in_process": tuned["allocator_tuned"],
        "matmul_gflops": gflops,
        "macs_per_signal": macs,
        "macs_per_sample": macs / samples,
        "flops_per_signal": flops_signal,
        "floor_s_per_signal_nominal": flops_signal / (NOMINAL_GFLOPS * 1e9),
        "floor_s_per_signal_measured": flops_signal / (gflops * 1e9),
        "official_tf_s_per_pair": official,
        "rows": rows,
        "max_rel_diff_naive_vs_scorer": rel,
        "max_rel_diff_untuned_vs_scorer": max_rel_diff(untuned, tuned),
        "distances_match": rel <= TOLERANCE,
        "goals": {
            "single": {"limit_s": single_limit, "seconds": single, "pass": single <= single_limit},
            "reuse": {"limit_s": reuse_limit, "seconds": reuse, "pass": reuse <= reuse_limit},
        },
        "runs": runs,
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"DPAM 'scratch' speed: {r['seconds_per_clip']:g} s clips at {r['sample_rate']} Hz ({r['samples_per_clip']:,} "
        f"samples), {r['tests']} tests; median of {r['repeats']} after {r['warmup']} warm-ups, inference_mode"
    )
    print(
        f"torch {r['torch']}, torch.get_num_threads() = {r['torch_threads']} (default), os.cpu_count() = "
        f"{r['cpu_count']}, allocator tuned in this process: {r['allocator_tuned_in_process']}"
    )
    print(f"float32 matmul (torch.mm {MATMUL_N}x{MATMUL_N}, best of 5): {r['matmul_gflops']:.1f} GFLOP/s")
    print(
        f"network cost: {r['macs_per_signal']:,} MACs per signal = {r['macs_per_sample']:,.1f} MACs per input sample; "
        f"{r['flops_per_signal'] / 1e9:.3f} GFLOP per signal"
    )
    fn, fm = r["floor_s_per_signal_nominal"], r["floor_s_per_signal_measured"]
    print(
        f"floor (FLOPs / throughput): nominal {NOMINAL_GFLOPS:g} GFLOP/s: {fn * 1e3:.2f} ms per signal, "
        f"{2 * fn * 1e3:.2f} ms per pair; measured {r['matmul_gflops']:.1f} GFLOP/s: {fm * 1e3:.2f} ms per signal, "
        f"{2 * fm * 1e3:.2f} ms per pair"
    )
    print()
    head = (
        f"{'case':<39} {'implementation':<33} {'s/pair|test':>11} {'x realtime':>10} {'x TF':>6} "
        f"{'floor@' + format(NOMINAL_GFLOPS, 'g'):>9} {'floor@meas':>10} {'max/min':>7}"
    )
    print(head)
    print("-" * len(head))
    last = None
    for row in r["rows"]:
        label = row["label"] if row["case"] != last else ""
        last = row["case"]
        print(
            f"{label:<39} {row['impl']:<33} {row['seconds']:>11.4f} {row['x_real_time']:>9.0f}x "
            f"{row['x_official_tf']:>5.2f}x {row['floor_fraction_nominal']:>9.1%} "
            f"{row['floor_fraction_measured']:>10.1%} {row['max_over_min']:>6.2f}x"
        )
    off = r["official_tf_s_per_pair"]
    print(
        f"{'official TF (spec §10, not measured here)':<73} {off:>11.4f} {r['seconds_per_clip'] / off:>9.0f}x "
        f"{1.0:>5.2f}x"
    )
    print()
    print(
        "floor@X = (FLOPs of the signals computed) / X / measured time; signals per row: 2 per pair, "
        f"{1 + 1 / r['tests']:g} per test with the reference, 1 per test without. x TF = official s per pair / s "
        "per pair or per test. max/min = slowest / fastest repeat"
    )
    ok = "OK" if r["distances_match"] else "FAIL"
    print(
        f"naive vs scorer distances: max relative difference {r['max_rel_diff_naive_vs_scorer']:.2e} "
        f"(tolerance {TOLERANCE:g}) {ok}; untuned vs tuned scorer: {r['max_rel_diff_untuned_vs_scorer']:.2e}"
    )
    g = r["goals"]
    for key, text in (
        ("single", f"single pair >= {GOAL_SINGLE_X:g}x official TF speed"),
        ("reuse", f"reuse >= {GOAL_REUSE_X:g}x official TF speed per test signal (reference included)"),
    ):
        verdict = "PASS" if g[key]["pass"] else "MISS"
        print(f"goal: {text}: {g[key]['seconds']:.4f} s <= {g[key]['limit_s']:.5f} s  {verdict}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per figure (median taken); default 10")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds; default 10")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--_child", choices=("scorer", "naive"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        p.error("--repeats must be >= 1 and --seconds > 0")
    try:
        find_release()
    except ReleaseNotFoundError as e:
        print(f"bench_metric: {e}", file=sys.stderr)
        return 2
    if args._child:
        json.dump(measure(args._child, args.repeats, args.seconds), sys.stdout)
        return 0
    report = build_report(args)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_table(report)
    return 0 if report["distances_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
