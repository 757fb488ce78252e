"""Pipeline overhead: the nightly flow's wall time against the sum of its parts, side by side.

On the demo corpus (built as `jndqa demo` builds it) and the demo's four variants, one run:

1. parts, measured alone and serially: every variant of every item rendered with
   ``jndqa.variants.render_all`` (ffmpeg encode + decode, alignment, loudness), then every item
   scored with ``DPAMScorer`` (reference features once, reused by its variants);
2. the same night through the Prefect flow (``run_nightly``, ephemeral API, a fresh DuckDB
   file), with one worker (serial, comparable with 1) and with the config's two;
3. a second, unchanged night on the same store (everything reused).

It prints the ratio flow / parts (goal: at most 1.3x with Prefect) and second / first night
(goal: at most 10 %). The Prefect API's start-up (7-14 s, once per process) is reported
apart: it is paid once per process, not per night.

Run: ``.venv/bin/python benchmarks/bench_pipeline.py [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None, help="where the corpus and stores go (default: a temp dir)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="jndqa-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from jndqa.datasets import scan_corpus
    from jndqa.datasets.demo import build_demo_corpus
    from jndqa.flows.demo import CONFIG, write_encoder
    from jndqa.flows.nightly import run_nightly
    from jndqa.metric import DPAMScorer, prepare_samples
    from jndqa.variants import VariantError, load_reference, parse_variants, render_all

    corpus = build_demo_corpus(work / "corpus", log=lambda s: None)
    enc = work / "bin" / "demo-enc"
    enc.parent.mkdir(exist_ok=True)
    write_encoder(enc, "build 1", [])
    config = work / "demo.yaml"
    config.write_text(CONFIG.format(enc=enc))
    import yaml

    cfg = yaml.safe_load(config.read_text())
    specs = parse_variants(cfg["variants"], base_dir=str(work))
    items, _ = scan_corpus(corpus.root, corpus.manifest)
    audio_s = sum(i.duration for i in items)
    print(
        f"demo corpus: {len(items)} items, {audio_s:.0f} s of audio, {len(specs)} variants; CPU count {os.cpu_count()}"
    )

    # 1. Parts, alone and serially.
    scorer = DPAMScorer("scratch", "dense")
    t_render = t_score = 0.0
    for item in items:
        t0 = time.perf_counter()
        ref = load_reference(item.abspath, name=item.path)
        rendered = [r for r in render_all(ref, specs) if not isinstance(r, VariantError)]
        t1 = time.perf_counter()
        mono = False
        r22 = prepare_samples(ref.samples, ref.rate, scale="unit", mono=mono).samples
        tests = [prepare_samples(r.samples, r.rate, scale="unit", mono=mono).samples for r in rendered]
        n = min(len(r22), *(len(t) for t in tests))
        scorer.score_reference(scorer.reference(r22[:n]), [t[:n] for t in tests])
        t2 = time.perf_counter()
        t_render += t1 - t0
        t_score += t2 - t1
    parts = t_render + t_score
    print(f"parts alone: render {t_render:.1f} s + score {t_score:.1f} s = {parts:.1f} s")

    # 2. The flow: Prefect's API start-up first, apart.
    from prefect import flow

    @flow
    def warm() -> None:
        return None

    t0 = time.perf_counter()
    warm()
    startup = time.perf_counter() - t0
    rows = []
    for workers in (1, 2):
        cfg_w = work / f"demo-w{workers}.yaml"
        cfg_w.write_text(
            config.read_text().replace("output: out/", f"output: out-w{workers}/\nrunner:\n  workers: {workers}")
        )
        t0 = time.perf_counter()
        first = run_nightly(cfg_w)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = run_nightly(cfg_w)
        t_second = time.perf_counter() - t0
        assert second["reused"] == second["scores"] == first["scores"], (first["scores"], second)
        rows.append((workers, t_first, t_second))
    print(f"Prefect API start-up (once per process, not counted below): {startup:.1f} s\n")
    print(f"{'flow workers':>12s} {'night 1 s':>10s} {'flow/parts':>11s} {'night 2 s':>10s} {'2nd/1st':>8s}")
    ok = True
    for workers, t_first, t_second in rows:
        ratio, again = t_first / parts, t_second / t_first
        print(f"{workers:12d} {t_first:10.1f} {ratio:10.2f}x {t_second:10.1f} {again:7.1%}")
        if workers == 1:
            ok = ratio <= 1.3 and again <= 0.10
            print(f"goal (1 worker): flow/parts <= 1.3x: {'PASS' if ratio <= 1.3 else 'MISS'}; "
                  f"second night <= 10 % of the first: {'PASS' if again <= 0.10 else 'MISS'}")  # fmt: skip
    print(f"workdir: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
