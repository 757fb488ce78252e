"""Report size and rendering time on the demo (goals: < 25 MB with its audio, < 10 s to render).

    .venv/bin/python benchmarks/bench_report.py                   # runs `jndqa demo` in /tmp/jndqa-bench-report
    .venv/bin/python benchmarks/bench_report.py --workdir demo-work   # reuse a finished demo

Renders the demo's candidate night three times into a fresh folder (first: cold, audio linked and
spectrograms computed; then warm) and prints the size of each part of the report.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE_GOAL = 25e6
TIME_GOAL = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jndqa-bench-report")
    args = ap.parse_args()
    db = args.workdir / "out" / "jndqa.duckdb"
    if not db.exists():
        print(f"running `jndqa demo --workdir {args.workdir}` first (a few minutes)", flush=True)
        jndqa = str(Path(sys.executable).parent / "jndqa")
        subprocess.run([jndqa, "demo", "--workdir", str(args.workdir)], check=False, stdout=subprocess.DEVNULL)

    from jndqa.reports import render_report
    from jndqa.store import Store

    store = Store(db, read_only=True)
    run_id = store.runs()[0]["run_id"]
    out = Path(tempfile.mkdtemp(prefix="jndqa-report-"))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = render_report(store, out, run_id)
        times.append(time.perf_counter() - t0)
    parts = {"audio (FLAC)": 0, "plotly.min.js": 0, "HTML pages": 0, "other": 0}
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        key = ("audio (FLAC)" if p.suffix == ".flac" else "plotly.min.js" if p.name == "plotly.min.js"
               else "HTML pages" if p.suffix == ".html" else "other")  # fmt: skip
        parts[key] += p.stat().st_size
    total = sum(parts.values())
    print(f"run {run_id}: {result.pages} pages, {result.audio_files} audio files")
    for k, v in parts.items():
        print(f"  {k:14s} {v / 1e6:7.2f} MB")
    print(f"  {'total':14s} {total / 1e6:7.2f} MB   goal < {SIZE_GOAL / 1e6:.0f} MB: "
          f"{'PASS' if total < SIZE_GOAL else 'FAIL'} ({total / SIZE_GOAL:.0%} of the budget)")  # fmt: skip
    print(f"render: first {times[0]:.2f} s, then {times[1]:.2f} s / {times[2]:.2f} s   goal < {TIME_GOAL:.0f} s: "
          f"{'PASS' if max(times) < TIME_GOAL else 'FAIL'} ({max(times) / TIME_GOAL:.0%} of the budget)")  # fmt: skip
    shutil.rmtree(out)
    return 0 if total < SIZE_GOAL and max(times) < TIME_GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
