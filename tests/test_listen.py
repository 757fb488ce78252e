"""Listening tests from the bench, end to end with real parts: nights with golden outputs (real encodes,
a real DuckDB store, real Prefect flow runs), `jndqa listen make` for each kind, and the page driven in a
real headless Chromium by scripted listeners whose answers follow known rules; the CSV the page downloads
is ingested into a store with the expected rows. Screenshots of each page kind go to tests/output/."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from jndqa.flows.demo import write_encoder
from jndqa.store import Store

from .test_golden import CONFIG  # two variants, golden outputs kept and compared
from .test_nightly import SHOTS, make_corpus

TEST = "JSON.parse(document.getElementById('test').textContent)"


@pytest.fixture(scope="module")
def nights(tmp_path_factory, sample, prefect_harness):
    """Two items; night 1 accepted; night 2 with the encoder rebuilt to cut above 1 kHz."""
    from jndqa.flows.nightly import run_nightly

    root = tmp_path_factory.mktemp("listen")
    make_corpus(root / "corpus", sample, 2)
    enc = root / "enc"
    write_encoder(enc, "build 1", [])
    (root / "night.yaml").write_text(CONFIG.format(enc=enc))
    first = run_nightly(root / "night.yaml")
    Store(root / "out" / "jndqa.duckdb").accept(first["run_id"])
    write_encoder(enc, "build 2", ["-af", "lowpass=f=1000"])
    second = run_nightly(root / "night.yaml")
    assert second["golden"]["audible"] == 2
    return root / "out" / "jndqa.duckdb", second


def make(db: Path, kind: str, out: Path, capsys, *extra: str) -> dict:
    from jndqa.flows.cli import main

    assert main(["listen", "make", "--db", str(db), "--kind", kind, "--out", str(out), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def ingest_into(db: Path, folder: Path, csv_path: Path) -> tuple[dict, list]:
    """The downloaded CSV saved into the test folder (its paths are relative to it), read and stored."""
    from jndqa.datasets.ratings import read_ratings
    from jndqa.flows.retrain import ingest

    saved = folder / csv_path.name
    saved.write_bytes(csv_path.read_bytes())
    files, failures = ingest(Store(db), [saved])
    assert failures == []
    return files[0], read_ratings(saved)


def begin(browser, page: Path, listener: str) -> None:
    load = browser.load(page)
    assert load.errors == []
    browser.evaluate(f"document.getElementById('listener').value = {json.dumps(listener)}")
    browser.evaluate("document.getElementById('begin').click()")


@pytest.mark.usefixtures("release")
def test_an_abx_test_of_the_changed_build_answered_in_chromium_ingests(nights, tmp_path, browser, capsys):
    db, second = nights
    made = make(db, "abx", tmp_path / "abx", capsys)
    assert (made["kind"], made["trials"], made["stimuli"]) == ("abx", 2, 4) and made["run_id"] == second["run_id"]
    page = Path(made["page"])
    begin(browser, page, "scripted abx")
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "listen-abx.png")
    # The scripted listener names X right on the first trial and wrong on the second.
    xs = browser.evaluate(f"{TEST}.trials.map(t => t.x)")
    for i, x in enumerate(xs):
        answer = x if i != 1 else ("b" if x == "a" else "a")
        browser.evaluate(f"document.querySelector('button[data-answer={answer}]').click()")
    assert browser.evaluate("document.getElementById('summary').textContent").endswith("X identified in 1 of 2 trials.")
    saved = browser.download("#download", tmp_path / "downloads")
    counts, rf = ingest_into(tmp_path / "listeners.duckdb", page.parent, saved)
    assert counts["rows"] == 2 and counts["quarantined"] == 0
    assert [(r.scale, r.score, r.listener) for r in rf.rows] == [("jnd", s, "scripted abx") for s in (1.0, 0.0)]
    assert all(Path(r.ref).parent == page.parent / "audio" for r in rf.rows)
    # The run page links it beside the regressed variant.
    run_page = Path(second["report"])
    browser.load(run_page)
    links = browser.evaluate("Array.from(document.querySelectorAll('a.listen')).map(a => [a.textContent, a.href])")
    assert links == [["listen to this regression", page.resolve().as_uri()]]


@pytest.mark.usefixtures("release")
def test_a_served_test_takes_two_listeners_at_once_and_stores_both(nights, tmp_path, browser, capsys):
    """Two Chromium processes (separate profiles: two listeners' browsers) answer the same served ABX test."""
    import sys

    from jndqa.flows.listen_server import create_app

    from .test_listen_server import running

    db, _ = nights
    made = make(db, "abx", tmp_path / "served", capsys)
    store_db = tmp_path / "team.duckdb"
    Store(store_db)
    mod = sys.modules[type(browser).__module__]
    other = mod.Chromium(mod.find_chromium())
    try:
        with running(create_app(Path(made["page"]).parent, db=store_db)) as port:
            url = f"http://127.0.0.1:{port}/"
            for b, who in ((browser, "first listener"), (other, "second listener")):
                b.events.clear()
                b.send("Page.navigate", {"url": url})
                b.wait("document.readyState === 'complete' && !!document.getElementById('begin')")
                b.evaluate(f"document.getElementById('listener').value = {json.dumps(who)}")
                b.evaluate("document.getElementById('begin').click()")
            for b in (browser, other):  # answers interleaved: both pages are mid-test at once
                for x in browser.evaluate(f"{TEST}.trials.map(t => t.x)"):
                    b.evaluate(f"document.querySelector('button[data-answer={x}]').click()")
            statuses = [b.wait("document.getElementById('posted').dataset.status || ''") for b in (browser, other)]
            assert statuses == ["201", "201"], [b.evaluate("document.getElementById('posted').textContent")
                                                 for b in (browser, other)]  # fmt: skip
    finally:
        other.close()
    ratings = Store(store_db, read_only=True)
    inbox = sorted((Path(made["page"]).parent / "inbox").glob("*.csv"))
    assert len(inbox) == 2
    from jndqa.datasets.ratings import read_ratings

    listeners = sorted({r.listener for f in inbox for r in read_ratings(f).rows})
    assert listeners == ["first listener", "second listener"]
    stored = ratings.ratings()
    assert len(stored) == 4 and sorted({r["listener"] for r in stored}) == listeners


@pytest.mark.usefixtures("release")
def test_a_mushra_test_answered_in_chromium_ingests_with_its_hidden_reference(nights, tmp_path, browser, capsys):
    db, _ = nights
    made = make(db, "mushra", tmp_path / "mushra", capsys, "--items", "2")
    page = Path(made["page"])
    test = json.loads((page.parent / "test.json").read_text())
    # Per trial: hidden reference, anchor, mp3, our encoder and its baseline build (the golden output).
    keys = [sorted(s["key"] for s in t["stimuli"]) for t in test["trials"]]
    assert keys == [sorted(["reference", "anchor35", "mp3 128k", "our encoder", "our encoder (baseline build)"])] * 2
    begin(browser, page, "scripted mushra")
    # The scripted listener: the hidden reference 100, the anchor 20, the cut build 30, the rest 80.
    rule = {"reference": 100, "anchor35": 20, "our encoder": 30}
    for t in test["trials"]:
        for s in t["stimuli"]:
            value = rule.get(s["key"], 80)
            browser.evaluate(f"""(() => {{ const s = document.querySelector('.stimulus[data-key="{s["key"]}"] input');
                                  s.value = {value}; s.dispatchEvent(new Event('input')); }})()""")
        if t is test["trials"][0]:
            SHOTS.mkdir(exist_ok=True)
            browser.screenshot(SHOTS / "listen-mushra.png")
        browser.evaluate("document.querySelector('button[data-answer=next]').click()")
    saved = browser.download("#download", tmp_path / "downloads")
    counts, rf = ingest_into(tmp_path / "listeners.duckdb", page.parent, saved)
    assert counts["rows"] == 10 and counts["quarantined"] == 0
    hidden = [r for r in rf.rows if r.hidden_reference]
    assert len(hidden) == 2 and {r.score for r in hidden} == {100.0}
    by_condition = {r.condition: r.score for r in rf.rows}
    assert by_condition["our encoder"] == 30 and by_condition["anchor 3.5 kHz"] == 20


@pytest.mark.usefixtures("release")
def test_jnd_staircases_with_catch_trials_and_a_listener_flagged(nights, tmp_path, browser, capsys):
    db, _ = nights
    made = make(db, "jnd", tmp_path / "jnd", capsys, "--items", "2")
    page = Path(made["page"])
    test = json.loads((page.parent / "test.json").read_text())
    assert made["trials"] == 2 * (12 + 3) and all(len(t["levels"]) == 8 for t in test["trials"])

    def listen(listener: str, rule: str) -> list[tuple]:
        begin(browser, page, listener)
        if listener == "steady":
            SHOTS.mkdir(exist_ok=True)
            browser.screenshot(SHOTS / "listen-jnd.png")
        shown = []
        for _ in range(made["trials"]):
            data = browser.evaluate("Object.assign({}, document.getElementById('trial').dataset)")
            severity, catch = float(data["severity"]), data["catch"] == "1"
            different = severity >= 0.5 if rule == "threshold 0.5" else True
            shown.append((severity, catch, different))
            answer = "different" if different else "same"
            browser.evaluate(f"document.querySelector('button[data-answer={answer}]').click()")
        return shown

    # A listener who hears a difference from severity 0.5 up: the staircase starts at the top (1.0),
    # steps down after "different" and settles around 0.5; every catch trial is "same".
    shown = listen("steady", "threshold 0.5")
    staircase = [s for s, c, _ in shown[:15] if not c]
    assert staircase[:5] == [1.0, 0.875, 0.75, 0.625, 0.5] and set(staircase[5:]) <= {0.375, 0.5}
    summary = browser.evaluate("document.getElementById('summary').textContent")
    assert summary.endswith("Catch trials called different: 0 of 6")
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "listen-jnd-done.png")
    steady = browser.download("#download", tmp_path / "downloads")
    # A listener who answers "different" to everything fails the catch trials: flagged in the page, and
    # every one of their rows is set aside when the file is ingested.
    listen("always different", "always")
    assert "flagged" in browser.evaluate("document.getElementById('summary').textContent")
    careless = browser.download("#download", tmp_path / "downloads")
    counts, rf = ingest_into(tmp_path / "listeners.duckdb", page.parent, steady)
    assert counts["rows"] == 30 and counts["quarantined"] == 0
    assert [r.score for r in rf.rows if r.ref == r.test] == [0.0] * 6
    counts, rf = ingest_into(tmp_path / "listeners.duckdb", page.parent, careless)
    assert counts["rows"] == 0 and {q.kind for q in rf.quarantine} == {"self-pair", "post-screening"}
    with open(careless, newline="") as f:
        assert next(csv.reader(f))[:8] == ["ref", "test", "score", "listener", "item", "condition", "scale", "trial"]
