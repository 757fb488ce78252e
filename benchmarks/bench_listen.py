"""A listening test from the bench, answered by SCRIPTED listeners in a real headless Chromium, then
retrained on, side by side with the simulated listener's judgments of the same items.

1. A night of one variant over ``--items`` 4-second excerpts of the demo corpus (a real store).
2. ``jndqa listen make --kind jnd``: per item, a ladder of 8 degradations of one of the simulated
   listener's families, a 1-up/1-down staircase of ``--trials`` trials and 3 catch trials.
3. ``--listeners`` scripted listeners open the page (file://) and answer every trial: "different"
   with the probability the simulated listener's psychometric function gives at the level shown
   (``jndqa.datasets.listener.p_different``, its thresholds, slopes and 4 % lapses; seeded), and
   download their results CSV.
4. ``jndqa retrain`` on those CSVs (protocol ``official``: its terms are quick) against the release,
   and the same on ``simulate_judgments`` of the same excerpts (the simulated listener's own
   staircases), printed side by side.

    .venv/bin/python benchmarks/bench_listen.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def chromium():
    spec = importlib.util.spec_from_file_location("jndqa_test_chromium", ROOT / "tests" / "chromium.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    exe = mod.find_chromium()
    if exe is None:
        raise SystemExit("no chromium on PATH (make test installs Debian's chromium as root)")
    return mod.Chromium(exe)


def answer_page(browser, page: Path, listener: str, trials: int, seed: int, downloads: Path) -> Path:
    """One scripted listener answers the whole test (the module docstring's rule); its CSV."""
    from jndqa.datasets.listener import p_different

    rng = np.random.default_rng(seed)
    browser.load(page)
    browser.evaluate(f"document.getElementById('listener').value = {json.dumps(listener)}")
    browser.evaluate("document.getElementById('begin').click()")
    for _ in range(trials):
        data = browser.evaluate("Object.assign({}, document.getElementById('trial').dataset)")
        p = float(p_different(data["family"], float(data["severity"])))
        choice = "different" if rng.random() < p else "same"
        browser.evaluate(f"document.querySelector('button[data-answer={choice}]').click()")
    path = browser.download("#download", downloads)
    saved = page.parent / path.name  # the CSV's paths are relative to the test folder
    shutil.copyfile(path, saved)
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "jndqa-bench-listen")
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--listeners", type=int, default=3)
    args = ap.parse_args()
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_golden import _excerpts

    from jndqa.datasets import simulate_judgments
    from jndqa.datasets.demo import build_demo_corpus
    from jndqa.flows.listen import make_test
    from jndqa.flows.nightly import run_nightly
    from jndqa.flows.retrain import RetrainSettings, retrain

    corpus = build_demo_corpus(Path(tempfile.gettempdir()) / "jndqa-bench-golden" / "corpus", log=lambda m: None)
    items = _excerpts(Path(corpus.root), work / "corpus", args.items, 4.0)
    (work / "night.yaml").write_text("corpus: {root: corpus/}\nvariants:\n  - {label: mp3 128k, codec: libmp3lame, "
                                     "bitrate: 128k}\nmetric: {protocol: official}\noutput: out/\n")  # fmt: skip
    run_nightly(work / "night.yaml")
    db = work / "out" / "jndqa.duckdb"
    made = make_test(db, kind="jnd", items=args.items, trials=args.trials, out=work / "jnd-test", log=lambda m: None)
    print(f"jnd test: {made['trials']} trials per listener over {args.items} items ({made['stimuli']} stimuli)")
    browser = chromium()
    t0 = time.perf_counter()
    try:
        csvs = [answer_page(browser, Path(made["page"]), f"scripted-{k}", made["trials"], seed=k,
                            downloads=work / "downloads") for k in range(args.listeners)]  # fmt: skip
    finally:
        browser.close()
    print(f"{args.listeners} scripted listeners answered in Chromium in {time.perf_counter() - t0:.1f} s")

    settings = RetrainSettings(protocol="official", mode="channels")
    results = {}
    results["scripted listeners (page)"] = retrain(csvs, work / "scripted" / "jndqa.duckdb", settings,
                                                   log=lambda m: None)  # fmt: skip
    sim = simulate_judgments([str(p) for p in items], work / "simulated", seed=0, levels=8, trials=args.trials,
                             max_seconds=4.0)  # fmt: skip
    results["simulated listener (python)"] = retrain([sim.csv], work / "simulated" / "jndqa.duckdb", settings,
                                                     log=lambda m: None)  # fmt: skip
    print(f"\n{'':30s} {'judgments':>9s} {'status':>9s} {'held-out acc (cand / prod)':>27s} "
          f"{'log loss (cand / prod)':>23s} {'golden acc (cand / prod)':>25s}")  # fmt: skip
    out = {}
    for name, s in results.items():
        m = s.get("metrics") or {}

        def pair(split: str, key: str, m=m) -> str:
            d = m.get(split) or {}
            c, p = (d.get(w, {}).get(key, {}).get("value") for w in ("candidate", "production"))
            return "n/a" if c is None else f"{c:.3f} / {p:.3f}"

        print(f"{name:30s} {s.get('judgments', 0):9d} {s['status']:>9s} {pair('test', 'accuracy'):>27s} "
              f"{pair('test', 'log_loss'):>23s} {pair('golden', 'accuracy'):>25s}")  # fmt: skip
        out[name] = {"judgments": s.get("judgments"), "status": s["status"], "reason": s.get("reason"),
                     "test": pair("test", "accuracy"), "log_loss": pair("test", "log_loss"),
                     "golden": pair("golden", "accuracy")}  # fmt: skip
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
