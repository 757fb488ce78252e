"""Retraining on simulated judgments: candidate vs the official model, side by side.

    .venv/bin/python benchmarks/bench_retrain.py                      # demo corpus in /tmp/jndqa-bench-report
    .venv/bin/python benchmarks/bench_retrain.py --corpus demo-work/corpus --modes head channels all

The simulated listener (jndqa.datasets.listener) judges 9 corpus items (seed 0) for training and
testing, and 3 others (seed 1) for the golden set. For each mode, a fresh store starts from the
official weights and retrains once; the table prints held-out and golden accuracy, ROC AUC, log
loss and expected calibration error (bootstrap 95% intervals by reference) for the candidate and
the official model, the gate's decision and the time. A last run retrains on the same judgments
with every label flipped (poisoned) and must be rejected.
"""

from __future__ import annotations

import argparse
import glob
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "jndqa-bench-report" / "corpus")
    ap.add_argument("--modes", nargs="+", default=["head", "channels"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument(
        "--protocol",
        default="official",
        choices=["official", "dense"],
        help="official (default here: quick terms; benchmarks/bench_ratings.py measures dense)",
    )
    args = ap.parse_args()
    if not args.corpus.exists():
        print(f"building the demo corpus in {args.corpus}", flush=True)
        from jndqa.datasets.demo import build_demo_corpus

        build_demo_corpus(args.corpus, log=lambda _: None)
    items = sorted(glob.glob(str(args.corpus / "*" / "*.wav")))
    if len(items) < 8:
        sys.exit(f"{args.corpus}: need at least 8 audio items, found {len(items)}")

    from jndqa.datasets import simulate_judgments
    from jndqa.flows.retrain import RetrainSettings, retrain

    work = Path(tempfile.mkdtemp(prefix="jndqa-bench-retrain-"))
    t0 = time.perf_counter()
    train = simulate_judgments(items[:-3], work / "train", seed=0)
    golden = simulate_judgments(items[-3:], work / "golden", seed=1)
    poisoned = simulate_judgments(items[:-3], work / "poisoned", seed=0, flip_labels=True)
    print(f"simulated listener: {train.rows} training/test judgments on {len(items) - 3} items "
          f"({train.fraction_different:.0%} 'different'), {golden.rows} golden on 3 items, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    runs = [(mode, train.csv) for mode in args.modes] + [("channels (poisoned)", poisoned.csv)]
    for name, csv in runs:
        mode = name.split()[0]
        db = work / name.replace(" ", "-").replace("(", "").replace(")", "") / "jndqa.duckdb"
        t0 = time.perf_counter()
        s = retrain([csv], db, RetrainSettings(mode=mode, golden=str(golden.csv), epochs=args.epochs,
                                                 protocol=args.protocol),
                    log=lambda _: None)  # fmt: skip
        seconds = time.perf_counter() - t0
        print(
            f"\n== mode {name}: {s['status'].upper()} in {seconds:.1f} s (best epoch {s.get('best_epoch')}, "
            f"{s.get('train_pairs')} training pairs, {s.get('test_pairs')} held out, {s.get('golden_pairs')} golden)"
        )
        print(f"   {s['reason']}")
        for split in ("test", "golden"):
            m = s.get("metrics", {}).get(split)
            if not m:
                continue
            print(f"   {'held-out' if split == 'test' else 'golden'} ({m['n']} pairs)   candidate            official")
            for metric in ("accuracy", "auc", "log_loss", "ece"):
                c, p = m["candidate"][metric], m["production"][metric]
                print(f"     {metric:9s} {c['value']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]   "
                      f"{p['value']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]")  # fmt: skip
        if s.get("report"):
            print(f"   report: {s['report']}")
    print(f"\nstores, models and reports are in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
