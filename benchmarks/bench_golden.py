"""Golden outputs, measured (docs/architecture.md "Golden outputs").

``--thresholds``: the distance at which the SIMULATED listener (jndqa.datasets.listener) hears a change
half of the time, under the ``dense`` protocol with the release's weights: every family of its
psychometric table, degraded at the family's 50 % threshold, on excerpts of the demo corpus; the median
is the default ``golden.audible_distance`` (jndqa.flows.golden.DEFAULT_AUDIBLE_DISTANCE).

``--nights``: the cost of golden comparison, side by side in one run on the demo corpus's excerpts with
two codecs, an external encoder and an LV2 compressor: a first night (every output rendered, scored and
kept), the same night again (every output the same build: identical, nothing rendered), and a night in
which one variant changed (only its outputs rendered and compared). Prints wall times and their ratios
to the first night, and the bytes the golden set takes.

    .venv/bin/python benchmarks/bench_golden.py --thresholds --nights
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _excerpts(corpus: Path, folder: Path, n: int, seconds: float) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    sources = sorted(corpus.rglob("*.wav"))
    for src in sources[:: max(1, len(sources) // n)][:n]:  # spread over speech and music
        x, rate = sf.read(src, dtype="float32", always_2d=True)
        path = folder / f"{src.stem}.wav"
        sf.write(path, x[: round(seconds * rate)], rate, subtype="PCM_24")
        out.append(path)
    return out


def thresholds(items: list[Path]) -> float:
    import numpy as np
    import soundfile as sf

    from jndqa.datasets.listener import PSYCHOMETRIC, perturb, physical_parameter
    from jndqa.metric import load_metric

    metric = load_metric("dpam", protocol="dense")
    rows = []
    for path in items:
        x, rate = sf.read(path, dtype="float32")
        x = x.mean(axis=1) if x.ndim == 2 else x
        for family, psy in PSYCHOMETRIC.items():
            y = perturb(x, rate, family, psy.threshold, key=path.stem).astype(np.float32)
            d = metric.score(x, [y], rate)[0].value
            name, value = physical_parameter(family, psy.threshold)
            rows.append((path.stem, family, name, value, d))
            print(f"  {path.stem:28s} {family:11s} {name} {value:8.2f}  distance {d:.4f}", flush=True)
    ds = [r[4] for r in rows]
    med = statistics.median(ds)
    print(f"distance at the simulated listener's 50 % thresholds: median {med:.4f} (quartiles "
          f"{np.percentile(ds, 25):.4f} .. {np.percentile(ds, 75):.4f}, {len(ds)} pairs)")  # fmt: skip
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "jndqa-bench-golden" / "corpus")
    ap.add_argument("--items", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--thresholds", action="store_true")
    ap.add_argument("--nights", action="store_true")
    args = ap.parse_args()
    from jndqa.datasets.demo import build_demo_corpus

    corpus = build_demo_corpus(args.corpus, log=lambda m: print(m, file=sys.stderr))
    items = _excerpts(Path(corpus.root), args.corpus.parent / "excerpts", args.items, args.seconds)
    result = {}
    if args.thresholds:
        result["audible_distance"] = thresholds(items)
    if args.nights:
        result["nights"] = nights(items, args.corpus.parent / "nights")
    print(json.dumps(result, indent=1))
    return 0


def nights(items: list[Path], work: Path) -> dict:
    import shutil

    from jndqa.flows.demo import write_encoder
    from jndqa.flows.nightly import run_nightly
    from jndqa.store import Store

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))  # a private, temporary Prefect API
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    corpus = work / "corpus"
    corpus.mkdir()
    for p in items:
        shutil.copy(p, corpus / p.name)
    enc = work / "enc"
    write_encoder(enc, "build 1", [])
    config = work / "night.yaml"
    config.write_text(
        "corpus: {root: corpus/}\nvariants:\n"
        "  - {label: opus 64k, codec: libopus, bitrate: 64k}\n"
        "  - {label: mp3 128k, codec: libmp3lame, bitrate: 128k}\n"
        "  - {label: sc4 compressor, plugins: [{lv2: 'http://plugin.org.uk/swh-plugins/sc4', "
        "controls: {threshold: -25, ratio: 3}}]}\n"
        f"  - {{label: our encoder, encode: ['{enc}', '{{bitrate}}', '{{input}}', '{{output}}'], container: ogg, "
        "bitrate: 96k}\n"
        "golden: {keep: true, compare: true}\nregression: {fail_on_regression: false}\noutput: out/\n"
    )
    run_nightly(config, out=str(work / "warm-up"), db=str(work / "warm-up" / "jndqa.duckdb"))  # Prefect's API up

    def night(name: str) -> dict:
        t0 = time.perf_counter()
        s = run_nightly(config)
        wall = time.perf_counter() - t0
        g = s["golden"]
        print(f"{name:34s} {wall:7.1f} s wall  {s['seconds']:7.1f} s in the night  status {s['status']:8s} "
              f"golden identical {g['identical']:2d} inaudible {g['inaudible']:2d} audible {g['audible']:2d} "
              f"new {g['new']:2d}", flush=True)  # fmt: skip
        return {"wall": wall, "seconds": s["seconds"], "summary": s}

    first = night("first night (all rendered, kept)")
    store = Store(work / "out" / "jndqa.duckdb")
    store.accept(first["summary"]["run_id"])
    golden_bytes = sum({o["path"]: o["bytes"] for o in store.outputs(first["summary"]["run_id"])}.values())
    same = night("unchanged night")
    write_encoder(enc, "build 2", ["-af", "lowpass=f=4000"])
    changed = night("one variant changed")
    rows = store.golden(changed["summary"]["run_id"])
    scored = sorted({r["label"] for r in rows if r["distance"] is not None})
    ratio_same = same["seconds"] / first["seconds"]
    ratio_changed = changed["seconds"] / first["seconds"]
    print(f"unchanged / first night: {ratio_same:.3f} (target <= 0.10); one changed variant / first: "
          f"{ratio_changed:.3f}; outputs scored against golden in that night: {scored}")  # fmt: skip
    print(f"golden set: {len(items)} items x 4 variants, {golden_bytes} bytes of 24-bit FLAC "
          f"({golden_bytes / 1e6:.2f} MB)")  # fmt: skip
    return {"first_s": first["seconds"], "unchanged_s": same["seconds"], "changed_s": changed["seconds"],
            "unchanged_ratio": ratio_same, "changed_ratio": ratio_changed, "scored_variants": scored,
            "golden_bytes": golden_bytes}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
