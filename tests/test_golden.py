"""Golden outputs with real encodes, a real DuckDB store and real Prefect flow runs: an accepted night keeps
every variant's output; later nights compare each output with it. The same build is ``identical`` with
nothing rendered or scored (the scorer's calls are counted), a rebuilt encoder whose output is bit-identical
is ``identical`` without scoring, one whose output changed a little is ``inaudible``, and one that cuts
everything above 1 kHz is ``audible``, which makes the night ``changed``. The release's head is not
calibrated, so the distance rule decides (``golden.audible_distance``'s default), and each row says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from jndqa.flows.demo import write_encoder
from jndqa.store import Store

from .test_nightly import READY, SHOTS, make_corpus

CONFIG = """\
corpus: {{root: corpus/}}
variants:
  - {{label: mp3 128k, codec: libmp3lame, bitrate: 128k}}
  - {{label: our encoder, encode: ["{enc}", "{{bitrate}}", "{{input}}", "{{output}}"], container: ogg, bitrate: 96k}}
golden: {{keep: true, compare: true}}
regression: {{bootstrap: 200, fail_on_regression: false}}  # the golden comparison decides
output: out/
"""


@pytest.fixture
def counted(monkeypatch):
    """Count the scorer's calls (one per item and metric for the reference scores, one per compared output)."""
    import jndqa.flows.pipeline as pipeline

    calls = []
    real = pipeline.score_each

    def score_each(nm, ref, tests, rate):
        calls.append(len(tests))
        return real(nm, ref, tests, rate)

    monkeypatch.setattr(pipeline, "score_each", score_each)
    return calls


@pytest.mark.usefixtures("prefect_harness", "release")
def test_golden_outputs_identical_inaudible_and_audible_changes(tmp_path, sample, counted, browser):
    from jndqa.flows.nightly import run_nightly

    make_corpus(tmp_path / "corpus", sample, 1)
    enc = tmp_path / "enc"
    write_encoder(enc, "build 1", [])
    config = tmp_path / "night.yaml"
    config.write_text(CONFIG.format(enc=enc))
    db = tmp_path / "out" / "jndqa.duckdb"

    first = run_nightly(config)
    store = Store(db)
    kept = store.outputs(first["run_id"])
    assert len(kept) == 2 and all(p.endswith(".flac") for p in (o["path"] for o in kept))
    assert first["golden"]["run"] is None and first["golden"]["outputs"] == 2
    store.accept(first["run_id"])

    counted.clear()
    same = run_nightly(config)
    assert same["golden"]["run"] == first["run_id"] and same["status"] == "passed"
    assert (same["golden"]["identical"], same["golden"]["audible"], same["golden"]["inaudible"]) == (2, 0, 0)
    assert counted == []  # nothing rendered, nothing scored
    assert {r["rule"] for r in store.golden(same["run_id"])} == {"same build (spec and encoder version): not rendered"}

    write_encoder(enc, "build 2", [])  # rebuilt: a new version, the same output
    counted.clear()
    rebuilt = run_nightly(config)
    rows = {r["label"]: r for r in store.golden(rebuilt["run_id"]) if r["item"] == "item00.wav"}
    assert rows["our encoder"]["status"] == "identical" and rows["our encoder"]["rule"].startswith("bit-identical")
    assert counted == [1]  # the new build's reference score, no golden comparison

    write_encoder(enc, "build 3", ["-af", "volume=-0.05dB"])  # a change no one hears
    quiet = run_nightly(config)
    rows = [r for r in store.golden(quiet["run_id"]) if r["label"] == "our encoder"]
    assert {r["status"] for r in rows} == {"inaudible"} and quiet["status"] == "passed"
    assert all(r["rule"].startswith("distance <") and not r["p_jnd_calibrated"] for r in rows)

    write_encoder(enc, "build 4", ["-af", "lowpass=f=1000"])  # the bandwidth cut
    cut = run_nightly(config)
    rows = [r for r in store.golden(cut["run_id"]) if r["label"] == "our encoder"]
    assert {r["status"] for r in rows} == {"audible"} and cut["status"] == "changed"
    enc_summary = next(v for v in cut["per_variant"] if v["label"] == "our encoder")["golden"]
    assert (enc_summary["audible"], enc_summary["identical"]) == (1, 0)
    assert enc_summary["max_distance"] == pytest.approx(max(r["distance"] for r in rows))
    assert len(rows[0]["window_distances"]) >= 1

    # The run page says CHANGED and counts per variant; the item page plays golden and tonight's output with
    # A/B switching at the same position (driven in headless Chromium) and draws the distance per window.
    page = Path(cut["report"])
    load = browser.load(page, ready=READY)
    assert load.errors == [] and browser.evaluate("document.querySelector('.status-big').textContent") == "CHANGED"
    assert "Against the golden outputs" in browser.evaluate("document.body.innerText")
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "report-golden-run.png")
    item = page.parent / "items" / f"{rows[0]['item_sha256'][:16]}.html"
    load = browser.load(item, ready=READY + " && document.querySelectorAll('[data-ab] audio').length === 2")
    # (the identical mp3 output is one file: no A/B for it)
    assert load.errors == []
    switched = browser.evaluate(
        """(async () => {
             const box = document.querySelector('.golden-audible [data-ab]');
             const [a, b] = box.querySelectorAll('audio');
             await new Promise(r => a.readyState >= 1 ? r() : a.addEventListener('loadedmetadata', r));
             await new Promise(r => b.readyState >= 1 ? r() : b.addEventListener('loadedmetadata', r));
             a.currentTime = 1.25;
             await new Promise(r => a.addEventListener('seeked', r, {once: true}));
             box.querySelector('button').click();
             return [a.hidden, b.hidden, b.currentTime, box.querySelector('button').textContent];
           })()"""
    )
    assert switched[:2] == [True, False] and switched[2] == pytest.approx(1.25, abs=0.05)
    assert switched[3].startswith("Playing B: tonight")
    strips = "Array.from(document.querySelectorAll('.golden-audible [data-figure]'))"
    assert browser.evaluate(f"{strips}.map(e => !!e.querySelector('.main-svg'))") == [True]
    browser.screenshot(SHOTS / "report-golden-item.png")


PLUGIN = """\
corpus: {{root: corpus/}}
variants:
  - label: bus compressor
    plugins: [{{lv2: "http://plugin.org.uk/swh-plugins/sc4", controls: {{threshold: -25, ratio: {ratio}, attack: 10}}}}]
golden: {{keep: true, compare: true}}
regression: {{bootstrap: 200, fail_on_regression: false}}
output: out/
"""


@pytest.mark.usefixtures("prefect_harness", "release")
def test_a_plugin_control_changed_a_little_is_inaudible_and_a_lot_audible(tmp_path, sample, counted, capsys):
    """The SC4 compressor of Debian's swh-lv2 (installed by make) as a variant; its ratio changes between
    nights. The variant is matched by its label: a changed control is a new spec id, the same variant."""
    from jndqa.flows.nightly import run_nightly

    make_corpus(tmp_path / "corpus", sample, 1)
    config = tmp_path / "night.yaml"
    config.write_text(PLUGIN.format(ratio=3))
    first = run_nightly(config)
    assert first["failures"] == [] and first["scores"] == 1
    store = Store(tmp_path / "out" / "jndqa.duckdb")
    store.accept(first["run_id"])

    counted.clear()
    again = run_nightly(config)
    assert (again["golden"]["identical"], counted) == (1, [])  # the same build: no scorer call

    config.write_text(PLUGIN.format(ratio=3.05))
    small = run_nightly(config)
    rows = store.golden(small["run_id"])
    assert [r["status"] for r in rows] == ["inaudible"] and small["status"] == "passed"

    config.write_text(PLUGIN.format(ratio=20))
    large = run_nightly(config)
    rows = store.golden(large["run_id"])
    assert [r["status"] for r in rows] == ["audible"] and large["status"] == "changed"
    assert large["golden"]["audible_changes"][0]["label"] == "bus compressor"

    # gc: the accepted run's outputs and the latest run's stay; the ratio-3.05 night's one goes.
    import json

    from jndqa.flows.cli import main

    files = {o["path"] for o in store.outputs(small["run_id"])}
    assert main(["gc", "--db", str(store.path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["removed"], result["kept"]) == (1, 2) and not any(Path(f).exists() for f in files)
    assert all(Path(o["path"]).exists() for r in (first, large) for o in store.outputs(r["run_id"]))
