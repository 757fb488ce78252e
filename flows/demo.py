"""`jndqa demo`: the nightly job on the embedded default, end to end.

Builds the demo corpus, writes a config whose codec under test is an external encoder
("our encoder", a small script around ffmpeg's libopus, the way a team's nightly build would
be wired), runs a baseline night and accepts it, then "rebuilds" the encoder with one setting
made worse (its audio bandwidth cut to 6 kHz) and runs a candidate night. The verdict must name
that variant and no other.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]

ENCODER = '''#!{python}
"""jndqa demo: "our encoder" ({build}). Usage: demo-enc BITRATE IN.wav OUT.ogg"""
import shutil, subprocess, sys

def ffmpeg():
    exe = shutil.which("ffmpeg")
    if exe is None:
        import imageio_ffmpeg
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    return exe

bitrate, src, dst = sys.argv[1:4]
cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", src, "-c:a", "libopus", "-b:a", bitrate]
cmd += {extra!r}
sys.exit(subprocess.call(cmd + [dst]))
'''

CONFIG = """\
# jndqa demo config: written by `jndqa demo`.
corpus:
  manifest: corpus/corpus.csv
variants:
  - label: mp3 96k
    codec: libmp3lame
    bitrate: 96k
  - label: aac 64k
    codec: aac
    bitrate: 64k
  - label: opus 24k
    codec: libopus
    bitrate: 24k
  - label: our encoder 32k
    encode: ["{enc}", "{{bitrate}}", "{{input}}", "{{output}}"]
    container: ogg
    bitrate: 32k
metric:
  model: production
  protocol: dense
baseline: auto
regression:
  threshold: 0.05
  fail_on_regression: true
golden:
  keep: true
  compare: true
output: out/
"""


def write_encoder(path: Path, build: str, extra: list[str]) -> None:
    """Write the demo's external encoder, an executable Python script ``ENC BITRATE IN.wav OUT.ogg``
    that encodes Opus with ffmpeg, adding ``extra`` ffmpeg options (a "rebuild" that changes the
    sound); ``build`` names the build in its docstring, so every build has its own sha256."""
    path.write_text(ENCODER.format(python=sys.executable, build=build, extra=extra))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _retrain(work: Path, items: list[Path], db: Path, log: Callable[[str], None]) -> None:
    """The metric's owner receives judgments: a SIMULATED listener (no crowd offline) judges
    degraded versions of 9 demo items, and 3 others make the golden set; retrain and gate."""
    from jndqa.datasets import simulate_judgments

    from .retrain import RetrainSettings, retrain

    paths = [str(p) for p in items]
    log("\nretraining: a simulated listener judged degraded versions of 9 demo items (3 more: the golden set)")
    small = {"levels": 6, "trials": 8, "max_seconds": 3.0}
    train = simulate_judgments(paths[:9], work / "judgments", seed=0, **small)
    golden = simulate_judgments(paths[9:], work / "judgments" / "golden", seed=1, **small)
    # Under the official protocol: its terms are quick to compute (dense terms take about a minute here).
    s = retrain([train.csv], db, RetrainSettings(golden=str(golden.csv), protocol="official"), log=lambda _: None)
    log(f"training {s['training_id']}: {s['status'].upper()}: {s.get('reason', '')}")
    if s.get("report"):
        log(f"training report: {s['report']}  (`jndqa models --db {os.path.relpath(db)}` lists the registry)")


def run_demo(workdir: str | Path, *, log: Callable[[str], None] = print, print_summary=None,
             retrain: bool = True) -> int:  # fmt: skip
    """Run the demo in ``workdir``; returns the exit status (0 when the verdict is the expected one).
    ``retrain``: end with a retraining of the metric on simulated judgments."""
    from jndqa.datasets.demo import build_demo_corpus
    from jndqa.store import Store

    from .nightly import run_nightly

    work = Path(workdir).resolve()
    (work / "bin").mkdir(parents=True, exist_ok=True)
    corpus = build_demo_corpus(work / "corpus", log=log)
    for note in corpus.notes:
        log(f"note: {note}")
    enc = work / "bin" / "demo-enc"
    config = work / "demo.yaml"
    config.write_text(CONFIG.format(enc=enc))
    db = work / "out" / "jndqa.duckdb"
    for suffix in ("", ".wal", ".lock"):  # each demo starts from an empty store
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    write_encoder(enc, "build 1: fullband", [])
    log("\nnight 1 (baseline): rendering and scoring every item and variant")
    first = run_nightly(config, db=str(db), progress=sys.stderr.isatty())
    if print_summary:
        print_summary(first)
    Store(db).accept(first["run_id"])
    log(f"accepted {first['run_id']} as the baseline")

    write_encoder(enc, "build 2: bandwidth cut to 6 kHz", ["-cutoff", "6000"])
    log("\nnight 2 (candidate): 'our encoder' was rebuilt with its bandwidth cut to 6 kHz")
    second = run_nightly(config, db=str(db), progress=sys.stderr.isatty())
    if print_summary:
        print_summary(second)
    flagged = [r["variant"] for r in second["regressions"]]
    expected = ["our encoder 32k"]
    log(f"\nverdict: {second['status'].upper()}; regressed: {', '.join(flagged) or 'none'}")
    log(f"store: {db}  (try `jndqa runs --db {os.path.relpath(db)}`)")
    reused = second["reused"] / max(second["scores"], 1)
    log(f"night 2 reused {second['reused']} of {second['scores']} scores ({reused:.0%}) from night 1")
    g = second.get("golden") or {}
    ours = next((v.get("golden") for v in second["per_variant"] if v["label"] == expected[0]), None) or {}
    items = sorted(a["item"] for a in g.get("audible_changes", []))
    mb = (first.get("golden") or {}).get("output_bytes", 0) / 1e6
    log(f"golden outputs (night 1's, {mb:.1f} MB of FLAC): {g.get('identical', 0)} identical (the unchanged "
        f"codecs: not rendered); {expected[0]} changed audibly on {ours.get('audible', 0)} items "
        f"({', '.join(items) or 'none'}), inaudibly on {ours.get('inaudible', 0)}")  # fmt: skip
    if retrain:
        _retrain(work, [corpus.root / i["path"] for i in corpus.items], db, log)
    if second.get("report"):
        log(f"report: {second['report']}")
        index = Path(second["report"]).parents[2] / "index.html"
        log(f"  (open it in a browser; every night is listed in {index})")
    else:
        log(f"no report: {second.get('report_error')}")
    if flagged != expected:
        log(f"unexpected verdict: expected exactly {expected}, got {flagged}")
        return 1
    return 0
