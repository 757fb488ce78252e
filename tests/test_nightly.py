"""The nightly flow end to end: real audio, real ffmpeg, a real DuckDB file, real Prefect runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.flows.demo import write_encoder
from jndqa.store import Store

JNDQA = str(Path(sys.executable).parent / "jndqa")
SHOTS = Path(__file__).parent / "output"
READY = "Array.from(document.querySelectorAll('[data-figure]')).every(e => e.querySelector('.main-svg'))"


CONFIG = """\
corpus:
  root: corpus/
variants:
  - label: mp3 96k
    codec: libmp3lame
    bitrate: 96k
  - label: our encoder 32k
    encode: ["{enc}", "{{bitrate}}", "{{input}}", "{{output}}"]
    container: ogg
    bitrate: 32k
regression:
  threshold: 0.05
  bootstrap: 2000
runner:
  kind: {runner}
  workers: 2
output: out/
"""


def make_corpus(root: Path, sample: dict, n: int) -> None:
    """n items of 3 s at 44.1 kHz from the release's speech clips, each with a different mix."""
    import soxr

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = ["ref", "2", "4"]
    for k in range(n):
        x = np.concatenate([sample[names[k % 3]], sample[names[(k + 1) % 3]]]) / 32768.0
        x = soxr.resample(x.astype(np.float64), 22050, 44100)[: 3 * 44100]
        x = x * (0.5 + 0.5 * rng.random()) + rng.normal(0, 1e-3, len(x))
        sf.write(root / f"item{k:02d}.wav", x.astype(np.float32), 44100, subtype="PCM_16")


@pytest.fixture
def bench(tmp_path, sample):
    make_corpus(tmp_path / "corpus", sample, 4)
    enc = tmp_path / "bin" / "enc"
    enc.parent.mkdir()
    write_encoder(enc, "test build", [])
    (tmp_path / "night.yaml").write_text(CONFIG.format(enc=enc, runner="threads"))
    return tmp_path


@pytest.mark.usefixtures("prefect_harness", "release")
def test_baseline_unchanged_and_degraded_nights(bench, capsys):
    from jndqa.flows.nightly import run_nightly

    config = bench / "night.yaml"
    first = run_nightly(config)
    assert first["status"] == "passed" and first["scores"] == 8 and first["reused"] == 0
    assert first["baseline"] is None and not first["failures"]
    labels = {v["label"]: v for v in first["per_variant"]}
    assert labels["mp3 96k"]["items"] == 4 and labels["mp3 96k"]["mean_distance"] > 0

    second = run_nightly(config)  # nothing changed
    assert second["baseline"] == first["run_id"]
    assert second["status"] == "passed" and second["regressions"] == []
    assert second["reused"] == 8 and second["scores"] == 8  # every score came from the store

    Store(bench / "out" / "jndqa.duckdb").accept(first["run_id"])
    write_encoder(bench / "bin" / "enc", "test build", ["-b:a", "8k"])  # "rebuilt": new version, ignores the bitrate
    third = run_nightly(config)
    assert third["status"] == "regressed"
    assert [r["variant"] for r in third["regressions"]] == ["our encoder 32k"]
    assert third["reused"] == 4  # mp3 reused; the rebuilt encoder re-rendered
    reg = third["regressions"][0]
    assert reg["ci"][0] > 0.05 and reg["mean_change"] > reg["ci"][0]

    # The deployment's entry point ends Failed on a regression (its baseline: the accepted first run).
    from jndqa.flows.nightly import scheduled_nightly

    state = scheduled_nightly(str(config), return_state=True)
    assert state.is_failed() and "our encoder 32k" in state.message

    # A config that does not fail on regressions: exit 0, and the regression is still reported.
    from jndqa.flows.cli import main

    lenient = bench / "lenient.yaml"
    lenient.write_text(
        config.read_text().replace("  bootstrap: 2000\n", "  bootstrap: 2000\n  fail_on_regression: false\n")
    )
    capsys.readouterr()
    assert main(["run", str(lenient), "--json"]) == 0
    fourth = json.loads(capsys.readouterr().out)
    assert fourth["status"] == "regressed_ok" and fourth["reused"] == 8
    assert [r["variant"] for r in fourth["regressions"]] == ["our encoder 32k"]

    store = Store(bench / "out" / "jndqa.duckdb", read_only=True)
    runs = store.runs()
    assert [r["status"] for r in runs] == ["regressed_ok", "regressed", "regressed", "passed", "passed"]
    with store.connect() as con:  # 4 items x (mp3 + encoder build 1 + encoder build 2)
        assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 12


@pytest.mark.usefixtures("prefect_harness", "release")
def test_two_metrics_are_stored_reused_compared_and_reported(bench, browser):
    """`metrics: [dpam, zimtohrli]`: both metrics score every pair, an unchanged night reuses both, a metric
    that cannot run is a recorded failure that does not decide the night, each metric gets its verdict,
    and the report shows both (checked in Chromium)."""
    from jndqa.flows.nightly import run_nightly

    config = bench / "night.yaml"
    config.write_text(config.read_text() + "metrics: [dpam, zimtohrli]\n")
    first = run_nightly(config)
    assert first["status"] == "passed" and first["scores"] == 16 and first["primary_metric"] == "dpam"
    by_metric = {m["metric"]: m for m in first["metrics"]}
    assert by_metric["dpam"]["scores"] == by_metric["zimtohrli"]["scores"] == 8
    assert by_metric["zimtohrli"]["orientation"] == "quality" and not by_metric["zimtohrli"]["primary"]
    means = {v["label"]: v["metrics"] for v in first["per_variant"]}
    assert 1.0 <= means["mp3 96k"]["zimtohrli"]["mean"] <= 5.0 and means["mp3 96k"]["dpam"]["items"] == 4

    # Unchanged, with a metric nobody registered: both metrics' scores reused, the unknown one a failure
    # that is not the primary metric's, so the night still passes.
    config.write_text(config.read_text().replace("metrics: [dpam, zimtohrli]", "metrics: [dpam, zimtohrli, nosuch]"))
    second = run_nightly(config)
    assert second["reused"] == 16 and second["scores"] == 16 and second["status"] == "passed"
    (fail,) = second["failures"]
    assert fail["metric"] == "nosuch" and "no metric named 'nosuch'" in fail["reason"]

    write_encoder(bench / "bin" / "enc", "test build", ["-b:a", "8k"])  # rebuilt: 8 kbit/s whatever it is asked
    config.write_text(config.read_text().replace("metrics: [dpam, zimtohrli, nosuch]", "metrics: [dpam, zimtohrli]"))
    third = run_nightly(config)
    assert third["reused"] == 8  # mp3 under both metrics; the rebuilt encoder scored again by both
    verdicts = {m["metric"]: m for m in third["metrics"]}
    assert verdicts["dpam"]["regressions"] == ["our encoder 32k"] == [r["variant"] for r in third["regressions"]]
    z = {c["label"]: c for c in verdicts["zimtohrli"]["comparisons"]}
    assert z["our encoder 32k"]["orientation"] == "quality" and z["our encoder 32k"]["mean_change"] < 0
    # Disagreements are what the two verdicts say, variant by variant.
    d = {c["label"]: c["regressed"] for c in verdicts["dpam"]["comparisons"]}
    expected = sorted(label for label in d if d[label] != z[label]["regressed"])
    assert [x["variant"] for x in third["disagreements"]] == expected

    store = Store(bench / "out" / "jndqa.duckdb", read_only=True)
    rows = store.run_scores(third["run_id"], metric="zimtohrli")
    assert len(rows) == 8 and all(r["orientation"] == "quality" and r["alignment"] == "samples" for r in rows)
    assert all(r["model_version"] == verdicts["zimtohrli"]["version"] for r in rows)

    report = Path(third["report"])
    load = browser.load(report, ready=READY)
    assert load.errors == [] and load.dialogs == []
    text = browser.evaluate("document.body.innerText")
    assert "Every metric's verdict" in text and "mean zimtohrli" in text and "primary" in text
    cells = browser.evaluate("Array.from(document.querySelectorAll('table.metrics tbody tr')).map(r => r.innerText)")
    assert len(cells) == 2 and "our encoder 32k" in cells[0]
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "report-two-metrics.png")
    item = next((report.parent / "items").glob("*.html"))
    browser.load(item, ready=READY)
    others = browser.evaluate("Array.from(document.querySelectorAll('dt.other-metric')).map(e => e.textContent)")
    assert others == ["zimtohrli", "zimtohrli"]  # one per variant, beside DPAM's distance

    # Zimtohrli as the primary metric: every score is reused; baselines are runs with the same primary.
    config.write_text(config.read_text().replace("metrics: [dpam, zimtohrli]", "metrics: [zimtohrli, dpam]"))
    fourth = run_nightly(config)
    assert fourth["reused"] == 16 and fourth["primary_metric"] == "zimtohrli" and fourth["baseline"] is None
    fifth = run_nightly(config)
    assert fifth["baseline"] == fourth["run_id"] and fifth["status"] == "passed"
    assert [c["orientation"] for c in fifth["comparisons"]] == ["quality", "quality"]
    assert all(c["mean_change"] == 0.0 for c in fifth["comparisons"])  # the same stored scores
    load = browser.load(Path(fifth["report"]), ready=READY)
    assert load.errors == [] and load.dialogs == []
    assert "zimtohrli (higher is better)" in browser.evaluate("document.body.innerText")


def _scores_in(db: Path) -> int:
    for _ in range(200):
        try:
            with Store(db, read_only=True, open_timeout=0.5).connect() as con:
                return con.execute("SELECT count(*) FROM scores").fetchone()[0]
        except Exception:
            time.sleep(0.1)
    raise AssertionError("store never readable")


@pytest.mark.slow
@pytest.mark.usefixtures("release")
def test_killed_run_keeps_finished_results_and_rerun_completes(tmp_path, sample, prefect_env):
    make_corpus(tmp_path / "corpus", sample, 8)
    enc = tmp_path / "bin" / "enc"
    enc.parent.mkdir()
    write_encoder(enc, "test build", [])
    (tmp_path / "night.yaml").write_text(CONFIG.format(enc=enc, runner="threads").replace("workers: 2", "workers: 1"))
    db = tmp_path / "out" / "jndqa.duckdb"
    proc = subprocess.Popen([JNDQA, "run", str(tmp_path / "night.yaml"), "--json"], env=prefect_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if db.exists() and _scores_in(db) >= 4:  # at least two items finished
            break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _scores_in(db)
    assert 4 <= before < 16, before
    r = subprocess.run([JNDQA, "run", str(tmp_path / "night.yaml"), "--json"], env=prefect_env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["scores"] == 16 and summary["reused"] == before
    assert _scores_in(db) == 16  # nothing lost, nothing duplicated
    statuses = [x["status"] for x in Store(db, read_only=True).runs()]
    assert statuses == ["passed", "killed"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "release")
def test_dask_runner_gives_the_thread_runner_scores(bench):
    pytest.importorskip("prefect_dask")
    from jndqa.flows.nightly import run_nightly

    threads = run_nightly(bench / "night.yaml", db=str(bench / "threads.duckdb"))
    (bench / "dask.yaml").write_text((bench / "night.yaml").read_text().replace("kind: threads", "kind: dask"))
    dask = run_nightly(bench / "dask.yaml", db=str(bench / "dask.duckdb"))
    assert dask["status"] == threads["status"] == "passed"

    def scores(db):
        rows = Store(db, read_only=True).run_scores(Store(db, read_only=True).runs()[0]["run_id"])
        return {(r["item_sha256"], r["spec_id"]): r["distance"] for r in rows}

    a, b = scores(bench / "threads.duckdb"), scores(bench / "dask.duckdb")
    assert a.keys() == b.keys() and len(a) == 8
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-6)


@pytest.mark.usefixtures("release")
def test_bad_corpus_completes_records_failures_and_exits_3(tmp_path, sample, prefect_env):
    root = tmp_path / "corpus"
    make_corpus(root, sample, 2)
    good = (root / "item00.wav").read_bytes()
    (root / "corrupt.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEjunk" + good[44:400])
    (root / "zero.wav").write_bytes(b"")
    sf.write(root / "one.wav", np.zeros((1, 1)), 44100, subtype="PCM_16")
    nan = np.zeros((44100, 1), np.float32)
    nan[10] = np.nan
    sf.write(root / "nan.wav", nan, 44100, subtype="FLOAT")
    t = np.arange(8000 * 2) / 8000
    sf.write(root / "low8k.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 8000, subtype="PCM_16")
    import soxr

    speech = soxr.resample(sample["ref"].astype(np.float64) / 32768, 22050, 96000)
    six = np.stack([speech * (0.3 + 0.1 * c) for c in range(6)], 1)
    sf.write(root / "surround.wav", six, 96000, subtype="PCM_24")
    outside = tmp_path / "elsewhere.wav"
    shutil.copy(root / "item01.wav", outside)
    manifest = tmp_path / "corpus.csv"
    names = ["item00.wav", "item01.wav", "corrupt.wav", "zero.wav", "one.wav", "nan.wav", "low8k.wav",
             "surround.wav", "../elsewhere.wav"]  # fmt: skip
    manifest.write_text("path\n" + "".join(f"{n}\n" for n in names))  # relative to corpus.root
    config = tmp_path / "bad.yaml"
    config.write_text(
        "corpus:\n  root: corpus/\n  manifest: corpus.csv\n"
        "variants:\n  - codec: libopus\n    bitrate: 32k\n  - codec: libmp3lame\n    bitrate: 96k\noutput: out/\n"
    )
    r = subprocess.run([JNDQA, "run", str(config), "--json"], env=prefect_env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 3, r.stderr
    summary = json.loads(r.stdout)
    assert summary["status"] == "failed_items"
    reasons = {}
    for f in summary["failures"]:
        reasons.setdefault(Path(f["item"]).name, []).append(f["reason"])
    assert "empty file" in reasons["zero.wav"][0]
    assert "not readable as audio" in reasons["corrupt.wav"][0]
    assert "too short" in reasons["one.wav"][0]
    assert "NaN" in reasons["nan.wav"][0]
    assert "escapes the corpus root" in reasons["elsewhere.wav"][0]
    # 8 kHz mono is a normal item; 6-channel 96 kHz is too (opus codes it; mp3 cannot: a variant failure).
    scored = {(Path(v["label"]).name, v["items"]) for v in summary["per_variant"]}
    assert ("opus 32k", 4) in scored
    assert any("surround.wav" in f["item"] for f in summary["failures"] if f["variant"] == "mp3 96k")
    assert "low8k.wav" not in reasons
