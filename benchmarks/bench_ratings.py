"""Retraining from a listening test under the nightly's protocol, measured: split by item, cache, agreement.

    .venv/bin/python benchmarks/bench_ratings.py                  # demo corpus in /tmp/jndqa-bench-report
    .venv/bin/python benchmarks/bench_ratings.py --items 16 --families noise mp3 eq reverb --max-seconds 3

A SIMULATED listening test (jndqa.datasets.simulate_mushra: listeners rating each item's degradations
on a MUSHRA page, one unreliable listener) on the demo corpus, plus simulated same/different answers
(jndqa.datasets.simulate_judgments) on the same items, so that p_jnd can be calibrated. The items are
split in two halves: half A trains (retrain holds out 25 % of A's references for its own test and a
1-in-5 bucket as golden), half B is never seen. Printed, side by side in one run:

1. the first retraining (cold cache: every pair's dense terms computed) and a second one on the same
   ratings with another seed (warm cache), their wall times and ratio;
2. the promoted-or-not candidate against production on A's held-out references: within-item
   Spearman with bootstrap intervals, and on the same/different answers the expected calibration
   error under dense of the calibrated candidate against the uncalibrated head;
3. ``jndqa agree`` on half B with the release's weights and with the first retraining's candidate
   (registered whether the gate promoted it or not).
"""

from __future__ import annotations

import argparse
import csv
import glob
import sys
import tempfile
import time
from pathlib import Path


def _split_by_item(ratings: Path, items: set[str]) -> tuple[Path, Path]:
    """Two ratings CSVs beside ``ratings`` (so relative paths hold): rows of ``items``, and the rest."""
    with open(ratings, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    col = header.index("item")
    out = []
    for name, keep in (("ratings-A.csv", True), ("ratings-B.csv", False)):
        path = ratings.with_name(name)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(r for r in body if (r[col] in items) == keep)
        out.append(path)
    return out[0], out[1]


def _excerpts(sources: list[str], folder: Path, per_item: int, seconds: float) -> list[Path]:
    """``per_item`` consecutive excerpts of ``seconds`` from each source (mono as read), each a WAV of its own,
    in source order; a source too short for all of them gives what it has. 24-bit PCM: a float WAV carries a
    PEAK chunk with the time of writing, so its sha256 (the audio's identity, which splits the references)
    would change from run to run."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        x, rate = sf.read(src, dtype="float32", always_2d=True)
        n = round(seconds * rate)
        for k in range(per_item):
            part = x[k * n : (k + 1) * n]
            if len(part) < n:
                break
            path = folder / f"{Path(src).stem}-{k}.wav"
            sf.write(path, part, rate, subtype="PCM_24")
            out.append(path)
    return out


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:+.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "jndqa-bench-report" / "corpus")
    ap.add_argument("--items", type=int, default=12, help="corpus items used (half train, half evaluate)")
    ap.add_argument("--families", nargs="+", default=["noise", "mp3", "eq"])
    ap.add_argument("--levels", type=int, default=4, help="MUSHRA conditions per item and family")
    ap.add_argument("--listeners", type=int, default=6)
    ap.add_argument("--max-seconds", type=float, default=2.0, help="length of each excerpt")
    ap.add_argument(
        "--excerpts",
        type=int,
        default=4,
        help="excerpts per corpus item, each its own reference (halves still split by corpus item)",
    )
    ap.add_argument("--peers", nargs="*", default=["zimtohrli"], help="peer metrics also measured on half B")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    args = ap.parse_args()
    if not args.corpus.exists():
        print(f"building the demo corpus in {args.corpus}", flush=True)
        from jndqa.datasets.demo import build_demo_corpus

        build_demo_corpus(args.corpus, log=lambda _: None)
    sources = sorted(glob.glob(str(args.corpus / "*" / "*.wav")))[: args.items]
    if len(sources) < 4:
        sys.exit(f"{args.corpus}: need at least 4 audio items, found {len(sources)}")

    from jndqa.datasets import simulate_judgments, simulate_mushra
    from jndqa.flows.agree import agree
    from jndqa.flows.models import resolve_model
    from jndqa.flows.retrain import RetrainSettings, retrain
    from jndqa.store import Store

    work = args.work or Path(tempfile.mkdtemp(prefix="jndqa-bench-ratings-"))
    t0 = time.perf_counter()
    # Half A: every other corpus item (music and speech in both halves); excerpts stay with their item.
    a_sources, b_sources = sources[0::2], sources[1::2]
    items = _excerpts(a_sources + b_sources, work / "excerpts", args.excerpts, args.max_seconds)
    half = len(_excerpts(a_sources, work / "excerpts", args.excerpts, args.max_seconds))
    mushra = simulate_mushra(items, work / "mushra", listeners=args.listeners, families=args.families,
                             levels=args.levels, seed=0, unreliable=args.listeners - 1,
                             max_seconds=args.max_seconds)  # fmt: skip
    a_items = set(mushra.items[:half])
    ratings_a, ratings_b = _split_by_item(mushra.csv, a_items)
    jnd = simulate_judgments(items[:half], work / "jnd", families=args.families, levels=5, trials=6, seed=0,
                             max_seconds=args.max_seconds)  # fmt: skip
    print(f"SIMULATED listening test: {mushra.rows} MUSHRA ratings of {len(items)} references ({args.excerpts} "
          f"excerpts of {args.max_seconds:g} s from each of {len(sources)} corpus items) x {len(args.families)} "
          f"families x {args.levels} levels by {args.listeners} listeners (1 unreliable); half A ({half} "
          f"references) trains, half B ({len(items) - half}, other corpus items) is never seen; {jnd.rows} "
          f"simulated same/different answers on A; {time.perf_counter() - t0:.1f} s")  # fmt: skip

    db = work / "store" / "jndqa.duckdb"

    def agreement(model: str, peers: list[str] = ()) -> list[dict]:
        ref = resolve_model(model, Store(db), protocol="dense")
        s = agree([ratings_b], metrics=["dpam", *peers], metric_options={"dpam": {"model": ref}}, n_boot=1000,
                  log=lambda _: None)  # fmt: skip
        return s["metrics"]

    before, *peers = agreement("scratch", args.peers)
    runs = []
    for seed in (0, 1):
        t = time.perf_counter()
        s = retrain([ratings_a, jnd.csv], db, RetrainSettings(seed=seed), log=lambda _: None)
        runs.append((time.perf_counter() - t, s))
    after = agreement(runs[0][1]["candidate"])[0]  # the first retraining's candidate, promoted or not

    print("\n== retraining under dense, twice on the same data (seed 0, then seed 1)")
    for (seconds, s), name in zip(runs, ("first (cold cache)", "second (warm cache)"), strict=True):
        terms = s.get("terms") or {}
        print(f"  {name:20s} {seconds:7.1f} s  terms {terms.get('seconds', 0):6.1f} s "
              f"({terms.get('computed', 0)} computed, {terms.get('cached', 0)} from the store)  "
              f"{s['status'].upper()}")  # fmt: skip
    print(f"  ratio first / second: {runs[0][0] / runs[1][0]:.1f}x")
    s = runs[0][1]
    print(f"\n== first retraining: {s['status'].upper()}: {s.get('reason')}")
    for split, name in (("ratings_test", "held-out references of A"), ("ratings_golden", "golden references of A")):
        m = (s.get("metrics") or {}).get(split)
        if m:
            c, p, d = m["candidate"]["within_item_spearman"], m["production"]["within_item_spearman"], m["difference"]
            print(f"  within-item Spearman, {name} ({m['references']} references, {m['n']} stimuli): candidate "
                  f"{_fmt(c['value'])} [{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}], production {_fmt(p['value'])} "
                  f"[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}], difference {_fmt(d['value'])} "
                  f"[{_fmt(d['ci'][0])}, {_fmt(d['ci'][1])}]")  # fmt: skip
    for split in ("test", "golden"):
        m = (s.get("metrics") or {}).get(split)
        if m:
            c, p = m["candidate"]["ece"], m["production"]["ece"]
            print(f"  ECE under dense, same/different answers ({split}, {m['n']} pairs): calibrated candidate "
                  f"{c['value']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}], uncalibrated head {p['value']:.3f} "
                  f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]")  # fmt: skip
    print("\n== jndqa agree on half B (never trained on); DPAM under dense")
    named = [
        ("DPAM, release weights (before)", before),
        (f"DPAM, candidate after ({runs[0][1]['status']})", after),
        *((f"{m['metric']} {m['version']}", m) for m in peers),
    ]
    for name, m in named:
        ci = m.get("within_item_spearman_ci") or [None, None]
        print(f"  {name:50s} stimulus Spearman {_fmt(m.get('stimulus_spearman'))}  within-item "
              f"{_fmt(m.get('within_item_spearman'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]  system "
              f"{_fmt(m.get('system_spearman'))}")  # fmt: skip
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
