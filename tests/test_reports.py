"""HTML reports: figure helpers on known values, a real night with failures and no baseline
(hostile file names and labels), and the demo's report loaded in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.flows.pipeline import choose_kept_audio
from jndqa.reports import figures
from jndqa.reports.pages import script_json
from jndqa.reports.spectrum import spectrogram_difference

JNDQA = str(Path(sys.executable).parent / "jndqa")
HOSTILE = "<script>alert(1)</script>\"'"
# Every figure div holds a drawn Plotly plot with at least one trace.
READY = "Array.from(document.querySelectorAll('[data-figure]')).every(e => e.querySelector('.main-svg'))"
PLOTS = "Array.from(document.querySelectorAll('[data-figure]')).map(e => (e.data || []).length)"
AUDIO = "Array.from(document.querySelectorAll('audio')).map(a => [a.getAttribute('src'), a.readyState, a.duration])"
# Where screenshots go for people to look at (gitignored).
SHOTS = Path(__file__).parent / "output"


# ------------------------------------------------------------- helpers, known values
def test_script_json_cannot_close_its_script_element():
    text = script_json({"label": "</script><script>alert(1)</script><!-- & \u2028", "x": [1.5, float("nan")]})
    assert "<" not in text and ">" not in text and "&" not in text
    back = json.loads(text)
    assert back["label"] == "</script><script>alert(1)</script><!-- & \u2028" and back["x"] == [1.5, None]


def test_plotly_text_is_shown_literally():
    assert figures.plotly_text('<b>a & "b"</b>') == '&lt;b&gt;a &amp; "b"&lt;/b&gt;'


@pytest.mark.parametrize(
    ("bitrate", "kbps"), [("96k", 96.0), ("1.5M", 1500.0), (64000, 64.0), ("24 k", 24.0), (None, None), ("x", None)]
)
def test_bitrate_kbps(bitrate, kbps):
    assert figures.bitrate_kbps({"bitrate": bitrate}) == kbps


def test_codec_family():
    assert figures.codec_family({"codec": "libopus", "bitrate": "32k"}) == "libopus"
    assert figures.codec_family({"codec": "libopus", "effects": "highpass=f=120"}) == "libopus + highpass=f=120"
    assert figures.codec_family({"encode": ["/opt/bin/my-enc", "{input}"]}) == "external: my-enc"


def test_mean_ci_is_seeded_and_brackets_the_mean():
    mean, lo, hi = figures.mean_ci([1.0, 2.0, 3.0, 4.0], seed=0)
    assert mean == 2.5 and lo < mean < hi and (lo, hi) == figures.mean_ci([1.0, 2.0, 3.0, 4.0], seed=0)[1:]
    assert figures.mean_ci([0.7]) == (0.7, 0.7, 0.7)


def test_choose_kept_audio():
    def row(item, spec, d, p=0.2):
        return {"item_sha256": item, "spec_id": spec, "value": d, "p_jnd": p, "path": f"{item}.wav"}

    base = [row(i, s, 0.1) for i in "abcd" for s in ("mp3", "enc")]
    cand = [row("a", "mp3", 0.5), row("b", "mp3", 0.4), row("c", "mp3", 0.1), row("d", "mp3", 0.3)]
    cand += [row("a", "enc", 0.12), row("b", "enc", 0.9), row("c", "enc", 0.13, p=0.6), row("d", "enc", 0.3)]
    got = choose_kept_audio(cand, base, {"enc"}, worst=2, flagged=1, threshold=0.05)
    assert got == {
        ("a", "mp3"): "worst", ("b", "mp3"): "worst",  # mp3 did not regress: its 2 worst only
        ("b", "enc"): "flagged: distance +0.800 since the baseline",  # the 1 most worsened beyond 0.05
        ("c", "enc"): "flagged: p_jnd crossed 0.5",  # every crossing, whatever the cap
        ("d", "enc"): "worst",
    }  # fmt: skip
    assert choose_kept_audio(cand, [], set(), worst=0, flagged=5, threshold=0.05) == {}
    # A quality metric (higher is better): the worst items are the lowest, "worsened" means fell.
    mos = [{**r, "value": 5 - r["value"], "p_jnd": None} for r in cand]
    mos_base = [{**r, "value": 5 - r["value"], "p_jnd": None} for r in base]
    got = choose_kept_audio(mos, mos_base, {"enc"}, worst=1, flagged=1, threshold=0.05, orientation="quality")
    assert got == {("a", "mp3"): "worst", ("b", "enc"): "flagged: value -0.800 since the baseline"}


def test_spectrogram_difference_finds_the_removed_tone(tmp_path):
    rate = 44100
    t = np.arange(2 * rate) / rate
    low, high = 0.3 * np.sin(2 * np.pi * 1000 * t), 0.3 * np.sin(2 * np.pi * 5000 * t)
    sf.write(tmp_path / "ref.flac", low + high, rate, subtype="PCM_16")
    sf.write(tmp_path / "cut.flac", low, rate, subtype="PCM_16")
    times, khz, d = spectrogram_difference(tmp_path / "ref.flac", tmp_path / "cut.flac", frames=50, bands=64)
    assert d.shape == (len(khz), len(times)) and len(times) <= 50 and len(khz) == 64
    at = lambda f: int(np.argmin(np.abs(khz - f)))  # noqa: E731
    assert np.median(d[at(5.0)]) < -40  # the 5 kHz tone is gone: floored 80 dB under the peak
    assert np.abs(np.median(d[at(1.0)])) < 0.5  # the 1 kHz tone is untouched
    _, _, same = spectrogram_difference(tmp_path / "ref.flac", tmp_path / "ref.flac")
    assert not same.any()


# ------------------------------------------------- a night with failures, no baseline
CONFIG = """\
corpus:
  root: corpus/
variants:
  - label: mp3 96k
    codec: libmp3lame
    bitrate: 96k
  - label: 'mp3 32k {hostile}'
    codec: libmp3lame
    bitrate: 32k
  - label: broken
    codec: nosuchcodec
    bitrate: 32k
metric:
  protocol: official
regression:
  bootstrap: 200
keep_audio: 1
output: out/
"""


@pytest.fixture(scope="module")
def failed_night(tmp_path_factory, sample, prefect_harness):
    """One real night: two items (one named like a script, with quotes), one unreadable file,
    one variant whose codec does not exist; no earlier run, so no baseline."""
    from jndqa.flows.nightly import run_nightly

    root = tmp_path_factory.mktemp("night")
    corpus = root / "corpus"
    hostile = corpus / f"{HOSTILE}.wav"  # a '/' cannot be in a name: the script tag spans a folder
    hostile.parent.mkdir(parents=True)
    x = np.concatenate([sample["ref"], sample["2"]]) / 32768.0
    sf.write(hostile, x, 22050, subtype="PCM_16")
    sf.write(corpus / "plain.wav", np.concatenate([sample["4"], sample["ref"]]) / 32768.0, 22050, subtype="PCM_16")
    (corpus / "broken.wav").write_bytes(b"not audio at all")
    (root / "night.yaml").write_text(CONFIG.format(hostile=HOSTILE.replace("'", "''")))
    summary = run_nightly(root / "night.yaml")
    return root, summary


def test_night_writes_its_report_and_says_there_is_no_baseline(failed_night):
    root, summary = failed_night
    assert summary["status"] == "failed_items" and summary["baseline"] is None
    report = Path(summary["report"])
    assert report == root / "out" / "report" / "runs" / summary["run_id"] / "index.html" and report.is_file()
    html = report.read_text()
    assert "FAILED ITEMS" in html and "No baseline" in html and "nothing to compare" in html
    assert "not readable as audio" in html and "no audio encoder" in html  # failures, with reasons
    # Escaped everywhere: no hostile markup reaches the page as markup.
    assert HOSTILE not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;" in html  # in HTML text (Jinja2 autoescape)
    assert "\\u0026lt;script\\u0026gt;alert(1)\\u0026lt;/script\\u0026gt;" in html  # figure JSON, Plotly-escaped
    assert "built-in method" not in html
    # Audio kept: keep_audio 1 -> the worst item of each scored variant, and its reference.
    kept = sorted(p.name for p in (root / "out" / "audio").iterdir())
    assert len([k for k in kept if k.endswith("-reference.flac")]) >= 1
    assert summary["kept_audio"] == 2 and len(kept) == summary["kept_audio"] + len({k[:16] for k in kept})


def test_report_pages_load_in_chromium_without_running_any_script(failed_night, browser):
    _root, summary = failed_night
    report = Path(summary["report"])
    pages = [report.parents[2] / "index.html", report, *sorted((report.parent / "items").glob("*.html"))]
    assert len(pages) == 4  # index, run, two items
    seen_hostile = 0
    for page in pages:
        load = browser.load(page, ready=READY)
        assert load.dialogs == [], f"{page}: a script ran: {load.dialogs}"
        assert load.errors == [], f"{page}: {load.errors}"
        assert all(n > 0 for n in browser.evaluate(PLOTS)), page
        text = browser.evaluate("document.body.innerText")
        seen_hostile += HOSTILE in text
        # No element came from the file name: the only scripts are the report's own.
        scripts = browser.evaluate("Array.from(document.scripts).map(s => s.src || s.type)")
        assert all(s.endswith(("plotly.min.js", "report.js")) or s == "application/json" for s in scripts), scripts
        svg_text = browser.evaluate("Array.from(document.querySelectorAll('svg text')).map(t => t.textContent)")
        assert not any("<b>" in t or "&lt;" in t for t in svg_text)  # Plotly shows labels literally
        for src, ready, _ in browser.evaluate(AUDIO):
            assert (page.parent / src).resolve().is_file() and ready >= 1, (page, src)
    assert seen_hostile == len(pages)  # the hostile variant label is on every page, shown literally
    run_text = browser.load(report, ready=READY) and browser.evaluate("document.body.innerText")
    assert "No baseline" in run_text and "FAILED ITEMS" in run_text
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS / "report-failed-night.png")


def test_report_command(failed_night, prefect_env, tmp_path):
    root, summary = failed_night
    out = tmp_path / "elsewhere"
    r = subprocess.run([JNDQA, "report", "--db", str(root / "out" / "jndqa.duckdb"), "--out", str(out), "--json"],
                       capture_output=True, text=True, env=prefect_env, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["run_id"] == summary["run_id"] and Path(info["report"]).is_file()
    assert (out / "plotly.min.js").is_file() and info["audio_files"] == len(list((out / "audio").iterdir()))
    assert "cdn.plot.ly" not in Path(info["report"]).read_text()
    r = subprocess.run([JNDQA, "report", "--db", str(root / "out" / "jndqa.duckdb"), "--run", "nosuch"],
                       capture_output=True, text=True, env=prefect_env, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no run 'nosuch'" in r.stderr and "jndqa runs" in r.stderr
    r = subprocess.run([JNDQA, "report", "--db", str(tmp_path / "none.duckdb")], capture_output=True, text=True,
                       env=prefect_env, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "no such database" in r.stderr


# --------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def demo(tmp_path_factory, prefect_env, release):
    """`jndqa demo` as a user runs it: build the corpus, two nights, the report (3-4 min)."""
    work = tmp_path_factory.mktemp("demo")
    r = subprocess.run([JNDQA, "demo", "--workdir", str(work)], capture_output=True, text=True, env=prefect_env,
                       timeout=1200)  # fmt: skip
    return work, r


@pytest.mark.slow
def test_demo_flags_the_broken_encoder_and_prints_its_report(demo):
    work, r = demo
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "verdict: REGRESSED; regressed: our encoder 32k" in r.stdout
    # Golden outputs: the three unchanged codecs are the same build on all 12 items (not rendered); the
    # rebuilt encoder is compared on every item, and its 6 kHz cut is audible on some of them.
    golden = re.search(r"^golden outputs \(night 1's, ([\d.]+) MB of FLAC\): (\d+) identical .* changed audibly on "
                       r"(\d+) items \(.*\), inaudibly on (\d+)$", r.stdout, re.M)  # fmt: skip
    assert golden, r.stdout[-3000:]
    mb, identical, audible, inaudible = float(golden[1]), int(golden[2]), int(golden[3]), int(golden[4])
    assert identical == 36 and audible + inaudible == 12 and audible >= 1 and 0 < mb < 100
    m = re.findall(r"^report: (\S+)$", r.stdout, re.M)  # the last: the candidate night's
    assert len(m) == 3 and m[1] == m[2] and Path(m[-1]).is_file() and Path(m[-1]).is_relative_to(work)
    # The demo ends with a retraining on simulated judgments, and its report.
    t = re.search(r"^training \S+: (PROMOTED|REJECTED): .*$", r.stdout, re.M)
    assert t, r.stdout[-2000:]
    training = re.search(r"^training report: (\S+)", r.stdout, re.M)
    assert training and Path(training.group(1)).is_file()
    report_root = Path(m[-1]).parents[2]
    size = sum(p.stat().st_size for p in report_root.rglob("*") if p.is_file())
    assert size < 25e6, f"the demo's report is {size / 1e6:.1f} MB (goal < 25 MB)"


@pytest.mark.slow
def test_demo_report_draws_and_plays_in_chromium(demo, browser):
    _work, r = demo
    report = Path(re.findall(r"^report: (\S+)$", r.stdout, re.M)[-1])
    index = report.parents[2] / "index.html"
    SHOTS.mkdir(exist_ok=True)
    shots = {}
    load = browser.load(index, ready=READY)
    assert load.errors == [] and load.dialogs == []
    plots = browser.evaluate(PLOTS)
    assert plots == [4]  # the trend chart: one line per variant
    assert browser.evaluate("document.querySelectorAll('table.runs tbody tr').length") == 2
    browser.screenshot(shots.setdefault("index", report.parent / "screenshot-index.png"))

    load = browser.load(report, ready=READY)
    assert load.errors == [] and load.dialogs == []
    # rate-quality: 4 families (libmp3lame, aac, libopus, external: demo-enc) x (this night, baseline);
    # the heatmap; the distributions: 4 variants x (this night, baseline)
    assert browser.evaluate(PLOTS) == [8, 1, 8]
    text = browser.evaluate("document.body.innerText")
    assert "REGRESSED" in text and "our encoder 32k" in text and "built-in method" not in text
    browser.screenshot(shots.setdefault("run", report.parent / "screenshot-run.png"))

    # The worst item of the regressed variant: audio that plays, per-window strip, spectrogram difference.
    heat = browser.evaluate("document.querySelectorAll('.js-plotly-plot')[1].data[0].customdata.map(r => r[0])")
    pages = [report.parent / link for link in heat]
    assert all(p.is_file() for p in pages) and len(pages) == 12
    checked_audio = 0
    for page in pages:
        load = browser.load(page, ready=READY)
        assert load.errors == [] and load.dialogs == [], page
        assert all(n > 0 for n in browser.evaluate(PLOTS)), page
        for src, ready, duration in browser.evaluate(AUDIO):
            assert (page.parent / src).resolve().is_file(), (page, src)
            assert ready >= 1 and 7 < duration < 8.5, (page, src, ready, duration)  # decoded by the browser
            checked_audio += 1
    assert checked_audio >= 12 + 4  # each variant's worst items and their references
    worst = max(pages, key=lambda p: p.read_text().count("<audio"))
    browser.load(worst, ready=READY)
    browser.screenshot(shots.setdefault("item", report.parent / "screenshot-item.png"))
    for name, path in shots.items():
        assert path.stat().st_size > 10_000
        shutil.copyfile(path, SHOTS / f"demo-{name}.png")
    print("screenshots:", ", ".join(str(p) for p in shots.values()), file=sys.stderr)
