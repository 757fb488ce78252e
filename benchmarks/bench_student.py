"""The fast student against its dense teacher and the official network, side by side.

    .venv/bin/python benchmarks/bench_student.py            # stability, ladders, speed
    .venv/bin/python benchmarks/bench_student.py --quick    # fewer shifts and trims
    .venv/bin/python benchmarks/bench_student.py --weights student/run/student.safetensors  # a candidate

Uses the dense benchmark's material (benchmarks/bench_dense.py: a 7.5 s espeak-ng speech and a
fluidsynth music excerpt, the same five degradations, shifts and trims, the same ladders):

1. stability: relative change of the distance when both signals lose their first k samples
   (shift) or last k (trim), against max(d, 0.05); goals for the student: median <= 0.5 %,
   worst <= 5 %;
2. monotonicity: inversions along the white-noise, low-pass and MP3 ladders (goal: none);
3. speed: seconds per test of 10 s with one reference reused for 5 tests, on this machine's
   cores, for official, dense and student; real-time factor (goal: student >= 100x).
Held-out agreement with the teacher (Spearman, median relative error) is printed from the
weights' metadata, measured by benchmarks/train_student.py (:mod:`jndqa.flows.student`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def _bench_dense():
    spec = importlib.util.spec_from_file_location("bench_dense", HERE / "bench_dense.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_dense"] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--weights", type=Path, default=None, help="a student file (default: the committed student)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "jndqa" / "bench-dense"))
    args = ap.parse_args(argv)
    bd = _bench_dense()
    from jndqa.metric import DPAMScorer
    from jndqa.metric.student import load_student, student_weights

    student = load_student(args.weights or student_weights())
    meta = student.metadata
    held = json.loads(meta.get("heldout", "{}")).get("held-out", {})
    rho, err = held.get("spearman", float("nan")), held.get("median_rel_error", float("nan"))
    print(f"student {meta['model_id']}: teacher data {meta.get('teacher_pairs')} pairs, hash "
          f"{meta.get('teacher_data_hash', '')[:16]}; held-out Spearman {rho:.4f} (goal >= 0.98), "
          f"median relative error {err:.3f} (goal <= 0.05)")  # fmt: skip

    bd.check_encoders()
    mats = bd.materials(Path(args.cache), False)
    scorers = {p: DPAMScorer("scratch", p) for p in ("official", "dense")}
    scorers["student"] = DPAMScorer("scratch", "student", student=student)
    shifts = (1, 22, 1001) if args.quick else bd.SHIFTS
    trims = (1, 4) if args.quick else bd.TRIMS

    # 1. stability
    changes = {p: [] for p in scorers}
    for m in bd.MATERIALS:
        ref = mats["excerpts"][m]
        tests = bd.degrade_all(ref, list(bd.DEGRADATIONS))
        for p in ("official", "student"):
            sc = scorers[p]
            base = [s.distance for s in sc.score_reference(sc.reference(ref), tests)]
            for kind, k in bd.variants(shifts, trims):
                cut_ref, cut_tests = bd.cut(ref, kind, k), [bd.cut(t, kind, k) for t in tests]
                got = [s.distance for s in sc.score_reference(sc.reference(cut_ref), cut_tests)]
                changes[p] += [bd.rel_change(a, b) for a, b in zip(got, base, strict=True)]
    print("\n1. stability (shift/trim both signals; relative change)")
    for p in ("official", "student"):
        s = bd.summary(changes[p])
        print(f"   {p:9s} {s['n']:4d} cases  median {bd.pct(s['median'], 3):>9s}  worst {bd.pct(s['worst']):>9s}")
    st = bd.summary(changes["student"])
    print(f"   student goals (median <= 0.5 %, worst <= 5 %): "
          f"{bd.verdict(st['median'] <= 0.005 and st['worst'] <= 0.05)}")  # fmt: skip

    # 2. monotonicity
    print("\n2. monotonicity (inversions along each ladder)")
    total = {p: 0 for p in scorers}
    for m in bd.MATERIALS:
        ref = mats["excerpts"][m]
        for ladder, steps in bd.LADDERS.items():
            tests = [bd.apply(ref, spec) for _, spec in steps]
            row = []
            for p, sc in scorers.items():
                ds = [s.distance for s in sc.score_reference(sc.reference(ref), tests)]
                inv = sum(ds[a] > ds[b] for a in range(len(ds)) for b in range(a + 1, len(ds)))
                total[p] += inv
                row.append(f"{p} {inv}")
            print(f"   {m:6s} {ladder:16s} " + ", ".join(row))
    print(f"   total: {total}; student goal (none): {bd.verdict(total['student'] == 0)}")

    # 3. speed
    print("\n3. speed: one 10 s reference, 5 tests of 10 s (reference reused), s per test")
    ref = mats["excerpts"]["speech"]
    rng = np.random.default_rng(0)
    n = int(10 * bd.RATE)
    ref10 = np.resize(ref, n).astype(np.float32)
    tests = [(ref10 + rng.normal(0, 300, n)).astype(np.float32) for _ in range(5)]
    per = {}
    for p, sc in scorers.items():
        sc.score_reference(sc.reference(ref10), tests[:1])  # warm-up
        t0 = time.perf_counter()
        sc.score_reference(sc.reference(ref10), tests)
        per[p] = (time.perf_counter() - t0) / len(tests)
    for p, s in per.items():
        print(f"   {p:9s} {s:.4f} s per test  {10 / s:8.1f}x real time  ({per['dense'] / s:.1f}x dense's speed)")
    print(f"   student goal (>= 100x real time): {bd.verdict(10 / per['student'] >= 100)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
