"""Rating files (jndqa.datasets.ratings): the canonical long CSV, the JND list and judgment CSV,
webMUSHRA's results export with its config, every quarantine kind including the ITU-R BS.1534-3
post-screening, content ids, stimulus means, and the simulated listener's MUSHRA ratings."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.datasets import (
    QUARANTINE_KINDS as JUDGMENT_KINDS,
)
from jndqa.datasets import (
    RatingFileError,
    rating_id,
    read_judgments,
    read_ratings,
    simulate_mushra,
    stimulus_means,
)
from jndqa.datasets.ratings import (
    HIGHER_IS_BETTER,
    JND_LIST,
    JUDGMENT_CSV,
    QUARANTINE_KINDS,
    RATINGS_CSV,
    SCALES,
    WEBMUSHRA,
    Rating,
    data_hash,
)

RATE = 8000
HEADER = "ref,test,score,listener,item,condition,scale,notes"

# (ref, test, score, listener, item, condition, scale) as written, and the expected kind (None: kept).
# "{outside}" is an absolute path outside the folder. Rows of another width are malformed.
CASES: list[tuple[list[str], str | None]] = [
    (["a.wav", "b.wav", "40", "L1", "i1", "codec", "mushra"], None),
    (["a.wav", "a.wav", "100", "L1", "i1", "reference", "mushra"], None),  # the hidden reference
    (["a.wav", "c.wav", "80.5", "L1", "i1", "other", "MUSHRA"], None),  # scale names ignore case
    (["a.wav", "b.wav", "3", "L1", "i1", "codec", "mos"], None),
    (["a.wav", "b.wav", "1", "L1", "", "", "jnd"], None),
    (["a.wav", "a.wav", "0", "L1", "", "", "jnd"], None),  # the same file judged "same": a sanity pair
    (["a.wav", "b.wav", "0", "L1", "", "", "preference"], None),
    (["a.wav", "b.wav", "40", "L2", "i1", "codec", "mushra"], None),  # another listener, the same score
    (["a.wav", "b.wav", "101", "L3", "i1", "codec", "mushra"], "bad-score"),
    (["a.wav", "b.wav", "-1", "L3", "i1", "codec", "mushra"], "bad-score"),
    (["a.wav", "b.wav", "good", "L3", "i1", "codec", "mushra"], "bad-score"),
    (["a.wav", "b.wav", "nan", "L3", "i1", "codec", "mushra"], "bad-score"),
    (["a.wav", "b.wav", "0", "L3", "i1", "codec", "mos"], "bad-score"),
    (["a.wav", "b.wav", "5.5", "L3", "i1", "codec", "mos"], "bad-score"),
    (["a.wav", "b.wav", "0.5", "L3", "", "", "jnd"], "bad-score"),
    (["a.wav", "b.wav", "2", "L3", "", "", "preference"], "bad-score"),
    (["a.wav", "b.wav", "3", "L3", "i1", "codec", "likert"], "bad-scale"),
    (["a.wav", "b.wav", "3", "L3", "i1", "codec", ""], "bad-scale"),  # no scale and no scale= given
    (["a.wav", "a.wav", "1", "L3", "", "", "jnd"], "self-pair"),
    (["a.wav", "b.wav", "40", "L1", "i1", "codec", "mushra"], "duplicate"),  # of the first row
    (["a.wav", "b.wav", "55", "L1", "i1", "codec", "mushra"], "duplicate"),  # L1 scored it already, 40
    (["a.wav", "b.wav", "1", "L1", "", "", "jnd"], "duplicate"),  # an exact repeat on a binary scale
    (["a.wav", "b.wav", "0", "L1", "", "", "jnd"], None),  # the other answer on a binary scale: a trial
    (["../outside/x.wav", "a.wav", "50", "L3", "i1", "codec", "mushra"], "path-escape"),
    (["{outside}", "a.wav", "50", "L3", "i1", "codec", "mushra"], "path-escape"),
    (["a.wav", "link.wav", "50", "L3", "i1", "codec", "mushra"], "path-escape"),
    (["a.wav", "missing.wav", "50", "L3", "i1", "codec", "mushra"], "missing-audio"),
    (["a.wav", "notaudio.wav", "50", "L3", "i1", "codec", "mushra"], "unreadable-audio"),
    (["a.wav", "b.wav", "50", "L3", "i1", "codec"], "malformed"),
    (["", "b.wav", "50", "L3", "i1", "codec", "mushra"], "malformed"),
    (["a.wav", "copy-of-a.wav", "70", "L1", "i1", "lossless", "mushra"], None),  # same content, not the ref file
]


def _tone(freq: float, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * freq * t)


def _wavs(root: Path, names: dict[str, float]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, freq in names.items():
        sf.write(root / name, _tone(freq), RATE, subtype="PCM_16")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A rating folder: three distinct WAVs, a byte copy of one, a text file named .wav and a symlink
    to a WAV outside the folder."""
    root = tmp_path / "set"
    _wavs(root, {"a.wav": 220.0, "b.wav": 330.0, "c.wav": 440.0})
    shutil.copyfile(root / "a.wav", root / "copy-of-a.wav")
    (root / "notaudio.wav").write_text("this is not audio\n")
    _wavs(tmp_path / "outside", {"x.wav": 550.0})
    (root / "link.wav").symlink_to(tmp_path / "outside" / "x.wav")
    return root


def _write_cases(folder: Path, name: str = "ratings.csv") -> tuple[Path, dict[int, str | None]]:
    outside = str(folder.parent / "outside" / "x.wav")
    lines = [HEADER]
    expected: dict[int, str | None] = {}
    for i, (fields, kind) in enumerate(CASES):
        fields = [f.replace("{outside}", outside) for f in fields]
        lines.append(",".join([*fields, f"note {i}"]) if len(fields) == 7 else ",".join(fields))
        expected[len(lines)] = kind
        if i == 3:
            lines.append("")  # a blank line is not a row
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path, expected


def test_every_row_is_kept_or_quarantined_with_its_kind_and_line(folder: Path) -> None:
    path, expected = _write_cases(folder)
    rf = read_ratings(path)
    assert rf.format == RATINGS_CSV and rf.path == path
    assert {q.line: q.kind for q in rf.quarantine} == {ln: k for ln, k in expected.items() if k is not None}
    assert [r.line for r in rf.rows] == sorted(ln for ln, k in expected.items() if k is None)
    assert [q.line for q in rf.quarantine] == sorted(q.line for q in rf.quarantine)
    raw = path.read_text().split("\n")
    assert all(q.raw == raw[q.line - 1] and q.reason and q.kind in QUARANTINE_KINDS for q in rf.quarantine)
    by_line = {q.line: q for q in rf.quarantine}
    reasons = {k: by_line[ln].reason for ln, k in expected.items() if k}  # the last line of each kind
    assert "missing.wav" in reasons["missing-audio"]
    assert "no scale on this line and no scale= given; add a scale column" in reasons["bad-scale"]
    assert any("scale 'likert' is not one of mushra, mos, jnd, preference" in q.reason for q in rf.quarantine)
    conflict = next(ln for ln, (f, k) in zip(sorted(expected), CASES, strict=True) if k == "duplicate" and f[2] == "55")
    assert "already scored this stimulus at line 2 (40, now 55)" in by_line[conflict].reason
    assert set(QUARANTINE_KINDS) >= set(JUDGMENT_KINDS) - {"bad-label"}


def test_kept_rows_carry_paths_hashes_scales_and_the_hidden_reference_flag(folder: Path) -> None:
    rf = read_ratings(_write_cases(folder)[0])
    first, hidden, other = rf.rows[:3]
    assert first.ref == (folder / "a.wav").resolve() and first.test == (folder / "b.wav").resolve()
    assert (first.score, first.scale, first.listener, first.item, first.condition, first.trial) == (
        40.0, "mushra", "L1", "i1", "codec", None)  # fmt: skip
    assert first.extra == {"notes": "note 0"} and not first.hidden_reference
    assert first.rating_id == rating_id(first.ref_sha256, first.test_sha256, 40, "mushra", "L1", "i1", "codec")
    assert hidden.hidden_reference and hidden.ref == hidden.test and hidden.score == 100.0
    assert other.scale == "mushra" and other.score == 80.5
    assert {r.scale for r in rf.rows} == {"mushra", "mos", "jnd", "preference"}
    assert not any(r.hidden_reference for r in rf.rows if r.scale != "mushra")  # jnd a/a: a sanity pair
    lossless = next(r for r in rf.rows if r.condition == "lossless")
    assert not lossless.hidden_reference and lossless.ref_sha256 == lossless.test_sha256
    row = first.row()
    assert set(row) == {"rating_id", "ref", "test", "ref_sha256", "test_sha256", "score", "scale", "listener",
                        "item", "condition", "trial", "hidden_reference", "source", "line", "extra"}  # fmt: skip
    assert all(v is None or isinstance(v, str | int | float | bool) for v in row.values())
    assert rf.quarantine_counts()["duplicate"] == 3


def test_the_scale_argument_fills_rows_without_one_and_its_absence_is_a_typed_error(folder: Path) -> None:
    path = folder / "mos.csv"
    path.write_text("ref,test,score,listener\na.wav,b.wav,4,L1\na.wav,c.wav,2,L1\n")
    with pytest.raises(RatingFileError, match=r"add a scale column .* or pass the scale") as info:
        read_ratings(path)
    assert info.value.path == path and isinstance(info.value, ValueError)
    rf = read_ratings(path, scale="mos")
    assert [(r.scale, r.score) for r in rf.rows] == [("mos", 4.0), ("mos", 2.0)]
    with pytest.raises(RatingFileError, match="scale 'stars' is not one of"):
        read_ratings(path, scale="stars")
    mixed = folder / "mixed.csv"
    mixed.write_text("ref,test,score,scale\na.wav,b.wav,4,\na.wav,b.wav,70,mushra\n")
    assert [r.scale for r in read_ratings(mixed, scale="mos").rows] == ["mos", "mushra"]  # the column wins


def _screening_file(folder: Path, lows: dict[str, int], trials: int = 20) -> Path:
    """Each listener rates ``trials`` trials (hidden reference a/a, condition b); listener L rates
    the hidden reference 85 in ``lows[L]`` of them, 95 in the others."""
    lines = ["ref,test,score,listener,item,condition,scale,trial"]
    for listener, low in lows.items():
        for t in range(trials):
            lines.append(f"a.wav,a.wav,{85 if t < low else 95},{listener},i{t % 4},reference,mushra,t{t}")
            lines.append(f"a.wav,b.wav,{30 + t},{listener},i{t % 4},codec,mushra,t{t}")
    path = folder / "screening.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bs1534_post_screening_keeps_15_percent_and_quarantines_more(folder: Path) -> None:
    path = _screening_file(folder, {"at15": 3, "above15": 4, "clean": 0})
    rf = read_ratings(path)
    assert {r.listener for r in rf.rows} == {"at15", "clean"}  # 3 of 20 = 15 %: kept
    assert len(rf.rows) == 80
    assert len(rf.quarantine) == 40 and {q.kind for q in rf.quarantine} == {"post-screening"}
    reason = rf.quarantine[0].reason
    assert "'above15'" in reason and "4 of 20 trials (20.0 %" in reason and "BS.1534-3" in reason
    lines = path.read_text().split("\n")
    assert all("above15" in lines[q.line - 1] for q in rf.quarantine)
    # One trial more at 85 for the 15 % listener (4 of 20) and they go too.
    assert {r.listener for r in read_ratings(_screening_file(folder, {"at15": 4, "clean": 0})).rows} == {"clean"}
    # Listeners without a name cannot be screened: their rows are kept.
    anonymous = folder / "anonymous.csv"
    anonymous.write_text("ref,test,score,scale,trial\na.wav,a.wav,10,mushra,t1\na.wav,b.wav,20,mushra,t1\n")
    assert len(read_ratings(anonymous).rows) == 2


@pytest.mark.parametrize("kind", ["jnd-list", "judgment-csv"])
def test_jnd_lists_and_judgment_csvs_become_jnd_ratings(folder: Path, kind: str) -> None:
    if kind == "jnd-list":
        path = folder / "list.txt"
        path.write_text("a.wav\tb.wav\t1\na.wav\tc.wav\t0\na.wav\tb.wav\t7\na.wav\tmissing.wav\t1\n")
    else:
        path = folder / "judgments.csv"
        path.write_text("ref,test,label,worker,timestamp,condition,notes\n"
                        "a.wav,b.wav,1,w1,2025-01-01T00:00:00,mp3:0.5,n1\n"
                        "a.wav,b.wav,1,w1,2025-01-01T00:00:01,mp3:0.5,n2\n"
                        "a.wav,c.wav,0,w2,,,\n"
                        "a.wav,b.wav,yes,w1,,,\n"
                        "a.wav,missing.wav,1,w1,,,\n")  # fmt: skip
    rf = read_ratings(path)
    jf = read_judgments(path)
    assert rf.format == (JND_LIST if kind == "jnd-list" else JUDGMENT_CSV)
    assert [(r.line, r.ref, r.test, r.score, r.scale) for r in rf.rows] == [
        (j.line, j.ref, j.test, float(j.label), "jnd") for j in jf.rows]  # fmt: skip
    assert [(r.listener, r.trial, r.condition, r.item) for r in rf.rows] == [
        (j.worker, j.timestamp, j.condition, None) for j in jf.rows]  # fmt: skip
    bad_lines = (3, 4) if kind == "jnd-list" else (5, 6)
    assert [(q.line, q.kind) for q in rf.quarantine] == [(bad_lines[0], "bad-score"), (bad_lines[1], "missing-audio")]
    assert rf.content_hash == jf.content_hash
    assert len({r.rating_id for r in rf.rows}) == len(rf.rows)
    assert read_ratings(path, scale="jnd").data_hash == rf.data_hash
    with pytest.raises(RatingFileError, match="holds jnd labels"):
        read_ratings(path, scale="mushra")


def test_ids_are_content_based_and_stable_across_reads_and_moves(folder: Path, tmp_path: Path) -> None:
    path, _ = _write_cases(folder)
    first = read_ratings(path)
    ids = [r.rating_id for r in first.rows]
    assert len(set(ids)) == len(ids) and ids == [r.rating_id for r in read_ratings(path).rows]
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(folder, moved, symlinks=True)
    (moved / "a.wav").rename(moved / "renamed-a.wav")
    text = (moved / path.name).read_text().replace("a.wav", "renamed-a.wav").replace("copy-of-renamed", "copy-of")
    (moved / path.name).unlink()
    (moved / "moved.csv").write_text(text)
    other = read_ratings(moved / "moved.csv")
    assert [r.rating_id for r in other.rows] == ids
    assert other.data_hash == first.data_hash == data_hash(reversed(first.rows)) == data_hash(ids + ids[:1])
    assert other.content_hash != first.content_hash  # the file's text changed, its ratings did not
    r = first.rows[0]
    assert rating_id(r.ref_sha256, r.test_sha256, 40.0, "mushra", "L1", "i1", "codec") == r.rating_id  # 40 ≡ 40.0
    for changed in ((41, "mushra", "L1", "i1", "codec"), (40, "mos", "L1", "i1", "codec"),
                    (40, "mushra", "L2", "i1", "codec"), (40, "mushra", "L1", "i2", "codec"),
                    (40, "mushra", "L1", "i1", "other")):  # fmt: skip
        assert rating_id(r.ref_sha256, r.test_sha256, *changed) != r.rating_id
    assert rating_id(r.ref_sha256, r.test_sha256, 40, "mushra", "L1", "i1", "codec", "t2") != r.rating_id


def test_stimulus_means_average_listeners_with_a_student_t_interval(folder: Path) -> None:
    path = folder / "means.csv"
    path.write_text(
        "ref,test,score,listener,condition,scale,trial\n"
        "a.wav,a.wav,100,L1,reference,mushra,t1\n"
        "a.wav,b.wav,60,L1,codec,mushra,t1\n"
        "a.wav,b.wav,70,L2,codec,mushra,t1\n"
        "a.wav,b.wav,70,L3,codec,mushra,t1\n"
        "a.wav,b.wav,90,L3,codec,mushra,t2\n"  # L3 twice: their mean, 80, counts once
        "a.wav,c.wav,20,L1,,mushra,t1\n"
        "a.wav,b.wav,4,L1,codec,mos,t1\n"
    )
    means = stimulus_means(read_ratings(path).rows)
    # Sorted by scale, item, condition (none first), test.
    assert [(m.scale, m.test.name) for m in means] == [("mos", "b.wav"), ("mushra", "c.wav"), ("mushra", "b.wav")]
    mos, single, codec = means
    assert codec.item == "a.wav" and codec.condition == "codec"  # no item column: ref relative to the file
    assert (codec.n, codec.mean, codec.std) == (3, pytest.approx(70.0, abs=1e-12), pytest.approx(10.0, abs=1e-12))
    # Student t, 2 degrees of freedom: closed form t(p) = (2p − 1)·sqrt(2 / (4p(1 − p))), p = 0.975.
    t975 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
    half = t975 * 10.0 / math.sqrt(3)
    assert (codec.ci_low, codec.ci_high) == (pytest.approx(70 - half, rel=1e-9), pytest.approx(70 + half, rel=1e-9))
    assert (single.n, single.mean, single.std, single.ci_low, single.condition) == (1, 20.0, None, None, None)
    assert (mos.n, mos.mean) == (1, 4.0)
    assert all(not m.test.samefile(m.ref) for m in means)  # the hidden reference is no stimulus
    assert set(codec.row()) >= {"item", "condition", "mean", "n", "ci_low", "ci_high"}
    assert HIGHER_IS_BETTER == {"mushra": True, "mos": True, "jnd": False, "preference": True}
    assert set(HIGHER_IS_BETTER) == set(SCALES)


# ---------------------------------------------------------------- webMUSHRA

CONFIG = """\
testname: jndqa rating test
testId: jndqa_test
bufferSize: 2048
stopOnErrors: true
showButtonPreviousPage: true
remoteService: service/write.php

pages:
    - type: generic
      id: first_page
      name: Welcome
      content: Welcome.
    - type: mushra
      id: trial1
      name: Castanets
      content: Rate the basic audio quality.
      showWaveform: true
      enableLooping: true
      reference: configs/resources/audio/castanets/ref.wav
      createAnchor35: true
      createAnchor70: false
      stimuli:
          C1: configs/resources/audio/castanets/codec_a.wav
          C2: configs/resources/audio/castanets/codec_b.wav
          anchor: configs/resources/audio/castanets/lp35.wav
    -
          - random
          - type: mushra
            id: trial2
            name: Speech
            content: Rate the basic audio quality.
            enableLooping: true
            reference: configs/resources/audio/speech/ref.wav
            createAnchor35: false
            createAnchor70: false
            stimuli:
                C1: configs/resources/audio/speech/codec_a.wav
                C2: configs/resources/audio/speech/codec_b.wav
          - type: mushra
            id: trial3
            name: Escape
            content: A page whose audio leaves the webMUSHRA folder.
            reference: configs/resources/audio/speech/ref.wav
            stimuli:
                C1: ../elsewhere.wav
    - type: finish
      name: Thank you
      content: Thank you for attending!
      showResults: true
      writeResults: true
      questionnaire:
          - type: text
            label: eMail
            name: email
          - type: number
            label: Age
            name: age
            min: 0
            max: 100
            default: 30
"""


def _fputcsv(row: list[str]) -> str:
    """One line as PHP's fputcsv writes it (what service/write.php uses): a field is enclosed in
    double quotes when it holds the delimiter, a quote, a backslash, a space, a tab or a newline."""
    out = []
    for f in map(str, row):
        if any(ch in f for ch in ',"\\ \t\r\n'):
            f = '"' + f.replace('"', '""') + '"'
        out.append(f)
    return ",".join(out) + "\n"


def _session(uuid: str, email: str, scores: dict[str, dict[str, int]], *, uuid_column: bool = True) -> list[list]:
    """The rows write.php appends for one session: per mushra trial, per response."""
    rows = []
    for trial, responses in scores.items():
        for stimulus, score in responses.items():
            rows.append(["jndqa_test", email, "30", *([uuid] if uuid_column else []), trial, stimulus, score,
                         1234, "too bright" if stimulus == "C1" else ""])  # fmt: skip
    return rows


@pytest.fixture
def webmushra(tmp_path: Path) -> Path:
    """A webMUSHRA folder: configs/jndqa_test.yaml, its audio under configs/resources/audio, and
    results/jndqa_test/mushra.csv written as write.php does, for three sessions."""
    root = tmp_path / "webMUSHRA"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "jndqa_test.yaml").write_text(CONFIG)
    audio = root / "configs" / "resources" / "audio"
    _wavs(audio / "castanets", {"ref.wav": 300.0, "codec_a.wav": 310.0, "codec_b.wav": 320.0, "lp35.wav": 330.0})
    _wavs(audio / "speech", {"ref.wav": 200.0, "codec_a.wav": 210.0, "codec_b.wav": 220.0})
    _wavs(tmp_path, {"elsewhere.wav": 100.0})
    good = {"trial1": {"reference": 100, "C1": 60, "C2": 80, "anchor": 20, "anchor35": 25},
            "trial2": {"C2": 75, "reference": 95, "C1": 40}}  # fmt: skip
    careless = {"trial1": {"reference": 50, "C1": 90, "C2": 70, "anchor": 30, "anchor35": 10},
                "trial2": {"reference": 100, "C1": 50, "C2": 50}}  # fmt: skip
    odd = {"trial2": {"reference": 100, "C1": 45, "C2": 70, "C9": 10}, "trial3": {"C1": 50},
           "practice": {"C1": 50}}  # fmt: skip
    header = ["session_test_id", "email", "age", "session_uuid", "trial_id", "rating_stimulus", "rating_score",
              "rating_time", "rating_comment"]  # fmt: skip
    lines = [header, *_session("uuid-a", "a@x.org", good), *_session("uuid-b", "b@x.org", careless),
             *_session("uuid-c", "c@x.org", odd)]  # fmt: skip
    results = root / "results" / "jndqa_test"
    results.mkdir(parents=True)
    (results / "mushra.csv").write_text("".join(_fputcsv(r) for r in lines))
    return root


def test_webmushra_results_map_to_audio_through_the_config(webmushra: Path) -> None:
    results, config = webmushra / "results" / "jndqa_test" / "mushra.csv", webmushra / "configs" / "jndqa_test.yaml"
    assert '"too bright"' in results.read_text()  # written as fputcsv encloses a field with a space
    rf = read_ratings(results, config=config)
    assert rf.format == WEBMUSHRA and rf.config == config
    audio = (webmushra / "configs" / "resources" / "audio").resolve()
    a = [r for r in rf.rows if r.listener == "uuid-a"]
    assert [(r.item, r.condition, r.score, r.test.relative_to(audio).as_posix()) for r in a] == [
        ("trial1", "reference", 100.0, "castanets/ref.wav"),
        ("trial1", "C1", 60.0, "castanets/codec_a.wav"),
        ("trial1", "C2", 80.0, "castanets/codec_b.wav"),
        ("trial1", "anchor", 20.0, "castanets/lp35.wav"),  # an anchor listed in stimuli is a stimulus
        ("trial2", "C2", 75.0, "speech/codec_b.wav"),
        ("trial2", "reference", 95.0, "speech/ref.wav"),
        ("trial2", "C1", 40.0, "speech/codec_a.wav"),
    ]
    assert all(r.scale == "mushra" and r.ref.parent == r.test.parent for r in a)
    assert [r.hidden_reference for r in a] == [True, False, False, False, False, True, False]
    assert a[1].extra == {"session_test_id": "jndqa_test", "email": "a@x.org", "age": "30", "rating_time": "1234",
                          "rating_comment": "too bright"}  # fmt: skip
    kinds = {(q.line, q.kind) for q in rf.quarantine}
    # Lines: header 1; uuid-a 2-9 (anchor35 on 6); uuid-b 10-17; uuid-c 18-23.
    assert kinds == {
        (6, "missing-audio"),  # anchor35 is generated in the browser: no file
        (14, "missing-audio"),
        *((ln, "post-screening") for ln in (10, 11, 12, 13, 15, 16, 17)),  # uuid-b: hidden ref 50 in 1 of 2 trials
        (21, "not-in-config"),  # C9 is not a stimulus of trial2
        (22, "path-escape"),  # ../elsewhere.wav leaves the webMUSHRA folder
        (23, "not-in-config"),  # no page "practice"
    }
    by_line = {q.line: q.reason for q in rf.quarantine}
    assert "anchor35" in by_line[6] and "no audio file" in by_line[6]
    assert "'uuid-b'" in by_line[10] and "1 of 2 trials (50.0 %" in by_line[10]
    assert "webMUSHRA folder" in by_line[22]
    assert {r.listener for r in rf.rows} == {"uuid-a", "uuid-c"}
    assert read_ratings(results.parent, config=config).data_hash == rf.data_hash  # the results folder works too
    with pytest.raises(RatingFileError, match="pass the test's YAML config"):
        read_ratings(results)
    with pytest.raises(RatingFileError, match="looks like a webMUSHRA YAML config"):
        read_ratings(config)
    with pytest.raises(RatingFileError, match="holds MUSHRA scores, not mos"):
        read_ratings(results, config=config, scale="mos")


def test_webmushra_listeners_without_session_uuid(webmushra: Path) -> None:
    config = webmushra / "configs" / "jndqa_test.yaml"
    trials = {"trial2": {"reference": 100, "C1": 40, "C2": 70}}
    header = ["session_test_id", "email", "age", "trial_id", "rating_stimulus", "rating_score", "rating_time",
              "rating_comment"]  # fmt: skip
    # Older write.php (no session_uuid column): the participant fields name the listener.
    old = webmushra / "old.csv"
    rows = [header, *_session("", "a@x.org", trials, uuid_column=False),
            *_session("", "b@x.org", trials, uuid_column=False)]  # fmt: skip
    old.write_text("".join(_fputcsv(r) for r in rows))
    rf = read_ratings(old, config=config)
    assert [r.listener for r in rf.rows] == ["email=a@x.org;age=30"] * 3 + ["email=b@x.org;age=30"] * 3
    # No questionnaire either: sessions split where a (trial, stimulus) pair repeats.
    bare = webmushra / "bare.csv"
    rows = [["session_test_id", "trial_id", "rating_stimulus", "rating_score", "rating_time", "rating_comment"]]
    rows += [[r[0], *r[3:]] for r in _session("", "", trials, uuid_column=False) * 2]
    bare.write_text("".join(_fputcsv(r) for r in rows))
    assert [r.listener for r in read_ratings(bare, config=config).rows] == ["session-0"] * 3 + ["session-1"] * 3


def test_bad_webmushra_configs_are_typed_errors(webmushra: Path, tmp_path: Path) -> None:
    results = webmushra / "results" / "jndqa_test" / "mushra.csv"
    cases = {
        "missing.yaml": (None, "no such webMUSHRA config"),
        "invalid.yaml": ("pages: [unclosed\n", "is not valid YAML"),
        "nopages.yaml": ("testname: x\n", "has no 'pages' list"),
        "nomushra.yaml": ("pages:\n  - type: finish\n    name: bye\n", "has no page of type mushra"),
        "noref.yaml": ("pages:\n  - type: mushra\n    id: t\n    stimuli: {C1: a.wav}\n", "lacks an id, a reference"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(RatingFileError, match=message) as info:
            read_ratings(results, config=path)
        assert info.value.path == path
    ratings = tmp_path / "r.csv"
    ratings.write_text("ref,test,score,scale\n")
    with pytest.raises(RatingFileError, match="config= is for webMUSHRA results"):
        read_ratings(ratings, config=webmushra / "configs" / "jndqa_test.yaml")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "missing": tmp_path / "nope.csv",
        "a folder": tmp_path,
        "empty": tmp_path / "empty.csv",
        "blank": tmp_path / "blank.csv",
        "binary": tmp_path / "audio.wav",
        "not utf-8": tmp_path / "latin1.csv",
        "no score column": tmp_path / "noscore.csv",
        "neither format": tmp_path / "prose.txt",
        "repeated column": tmp_path / "twice.csv",
    }
    files["empty"].write_bytes(b"")
    files["blank"].write_text("\n  \n\n")
    sf.write(files["binary"], _tone(220.0), RATE, subtype="PCM_16")
    files["not utf-8"].write_bytes("ref,test,score\ncaf\xe9.wav,b.wav,1\n".encode("latin-1"))
    files["no score column"].write_text("ref,test,rating\na.wav,b.wav,1\n")
    files["neither format"].write_text("just some words\n")
    files["repeated column"].write_text("ref,test,score,score,scale\na.wav,b.wav,1,2,mos\n")
    return files


@pytest.mark.parametrize("case", ["missing", "a folder", "empty", "blank", "binary", "not utf-8", "no score column",
                                  "neither format", "repeated column"])  # fmt: skip
def test_a_file_that_cannot_be_read_raises_the_typed_error_naming_it(tmp_path: Path, case: str) -> None:
    path = _bad_files(tmp_path)[case]
    with pytest.raises(RatingFileError) as info:
        read_ratings(path, scale="mos")
    assert isinstance(info.value, ValueError) and info.value.path == path.absolute()
    assert str(path) in str(info.value)


def test_the_simulated_mushra_ratings_read_back_and_screen_out_the_unreliable_listener(tmp_path: Path) -> None:
    t = np.arange(RATE) / RATE
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t), RATE)
    sim = simulate_mushra([tmp_path / "tone.wav"], tmp_path / "sim", listeners=4, families=("noise", "eq"),
                          levels=3, unreliable=2, rate=RATE)  # fmt: skip
    rf = read_ratings(sim.csv)
    assert rf.format == RATINGS_CSV
    assert {q.kind for q in rf.quarantine} == {"post-screening"}
    assert {r.listener for r in rf.rows} == set(sim.listeners) - {sim.unreliable}
    assert len(rf.rows) + len(rf.quarantine) == sim.rows == 4 * 2 * (3 + 2)
    assert all(r.score >= 90 for r in rf.rows if r.hidden_reference)
    means = stimulus_means(rf.rows)
    assert len(means) == 2 * 3 + 1  # the anchor is one stimulus shared by the two trials
    assert all(m.n == 3 and m.item == sim.items[0] for m in means)


# ---------------------------------------------------------------- the store


def _ingest(store, rf) -> dict:
    return store.ingest_ratings(rf.file_row(), [r.row() for r in rf.rows], [q.row() for q in rf.quarantine])


def test_store_ingest_is_idempotent_and_returns_the_ratings(folder: Path, tmp_path: Path) -> None:
    from jndqa.store import Store

    path, _ = _write_cases(folder)
    rf = read_ratings(path)
    db = tmp_path / "db" / "jndqa.duckdb"
    store = Store(db)
    first = _ingest(store, rf)
    assert first == {"new": len(rf.rows), "known": 0, "quarantined": len(rf.quarantine), "file_seen_before": False}
    assert _ingest(store, read_ratings(path)) == {**first, "new": 0, "known": len(rf.rows), "file_seen_before": True}
    # The same ratings under another name and place: known by content, the file is another file.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved, symlinks=True)
    (moved / path.name).rename(moved / "renamed.csv")
    (moved / "renamed.csv").write_text((moved / "renamed.csv").read_text() + "\n")  # other bytes, same rows
    again = _ingest(store, read_ratings(moved / "renamed.csv"))
    assert (again["new"], again["known"], again["file_seen_before"]) == (0, len(rf.rows), False)

    reopened = Store(db, read_only=True)
    stored = reopened.ratings()
    assert [s["rating_id"] for s in stored] == sorted(r.rating_id for r in rf.rows)
    by_id = {s["rating_id"]: s for s in stored}
    for r in rf.rows:
        s = by_id[r.rating_id]
        assert {c: s[c] for c in r.row()} == r.row()  # every field back as written, the score as a float
        assert s["file_hash"] == rf.content_hash  # the first file that brought it
        assert Rating.from_row(s) == r  # the stored row is the rating
    assert len(reopened.ratings(scale="mushra")) == sum(r.scale == "mushra" for r in rf.rows)
    wanted = [rf.rows[0].rating_id, "0" * 64]
    assert [s["rating_id"] for s in reopened.ratings(ids=wanted)] == [rf.rows[0].rating_id]
    assert reopened.ratings(ids=[]) == []
    files = reopened.rating_files()
    assert [(f["path"], f["format"], f["rows"], f["quarantined"]) for f in files] == [
        (str(path), RATINGS_CSV, len(rf.rows), len(rf.quarantine)),
        (str(moved / "renamed.csv"), RATINGS_CSV, len(rf.rows), len(rf.quarantine))]  # fmt: skip
    quarantined = reopened.rating_quarantine()
    assert len(quarantined) == 2 * len(rf.quarantine)  # per file content: each file's lines once
    q0 = next(q for q in quarantined if q["source"] == str(path))
    assert {c: q0[c] for c in ("line", "raw", "kind", "reason")} == {
        c: rf.quarantine[0].row()[c] for c in ("line", "raw", "kind", "reason")}  # fmt: skip


def test_store_keeps_webmushra_files_with_their_config(webmushra: Path, tmp_path: Path) -> None:
    from jndqa.store import Store

    config = webmushra / "configs" / "jndqa_test.yaml"
    rf = read_ratings(webmushra / "results" / "jndqa_test" / "mushra.csv", config=config)
    store = Store(tmp_path / "jndqa.duckdb")
    assert _ingest(store, rf)["new"] == len(rf.rows)
    [f] = store.rating_files()
    assert (f["format"], f["config"], f["content_hash"]) == (WEBMUSHRA, str(config), rf.content_hash)
    hidden = [s for s in store.ratings() if s["hidden_reference"]]
    assert len(hidden) == sum(r.hidden_reference for r in rf.rows) > 0
    assert {q["kind"] for q in store.rating_quarantine()} == {"missing-audio", "post-screening", "not-in-config",
                                                               "path-escape"}  # fmt: skip


def test_a_preference_names_its_original_resolved_and_checked_like_ref_and_test(folder: Path) -> None:
    path = folder / "pref.csv"
    path.write_text(
        "ref,test,score,listener,scale,original\n"
        "b.wav,c.wav,1,L1,preference,a.wav\n"  # kept: the original resolved, with its sha256
        "b.wav,c.wav,0,L2,preference,\n"  # kept: no original (not a comparison of distances)
        "b.wav,c.wav,1,L3,preference,gone.wav\n"  # missing-audio
        "b.wav,c.wav,1,L4,preference,../outside/x.wav\n"  # path-escape
        "b.wav,c.wav,1,L5,preference,notaudio.wav\n"  # unreadable-audio
    )
    rf = read_ratings(path)
    assert [r.listener for r in rf.rows] == ["L1", "L2"]
    with_original = rf.rows[0].extra
    assert with_original["original"] == str((folder / "a.wav").resolve())
    assert with_original["original_sha256"] == hashlib.sha256((folder / "a.wav").read_bytes()).hexdigest()
    assert rf.rows[1].extra.get("original", "") == ""
    kinds = {q.line: q.kind for q in rf.quarantine}
    assert kinds == {4: "missing-audio", 5: "path-escape", 6: "unreadable-audio"}
    assert all("original" in q.reason for q in rf.quarantine)
