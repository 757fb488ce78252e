"""Judgment files (jndqa.datasets.judgments): both formats, every quarantine kind, content ids,
the typed error for unreadable files, and the published JND list of the DPAM release."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.datasets import (
    QUARANTINE_KINDS,
    JudgmentFileError,
    data_hash,
    judgment_id,
    read_judgments,
)
from jndqa.datasets.judgments import CSV, JND_LIST

RATE = 8000

# (ref, test, label) fields as written, and the expected quarantine kind (None: a good row).
# Lists of another length than 3 are malformed. "{outside}" is an absolute path outside the folder.
CASES: list[tuple[list[str], str | None]] = [
    (["a.wav", "b.wav", "1"], None),
    (["a.wav", "c.wav", "0"], None),
    (["a.wav", "b.wav", "2"], "bad-label"),
    (["a.wav", "b.wav", "yes"], "bad-label"),
    (["a.wav", "b.wav", ""], "bad-label"),
    (["a.wav", "a.wav", "1"], "self-pair"),
    (["sub/../a.wav", "./a.wav", "1"], "self-pair"),  # the same file once normalised
    (["a.wav", "./a.wav", "0"], None),  # the same file judged "same": a sanity pair, kept
    (["a.wav", "b.wav", "1"], "duplicate"),  # of the first row
    (["a.wav", "b.wav", "0"], None),  # the same pair, another answer: a disagreement, kept
    (["a.wav", "copy-of-a.wav", "1"], None),  # identical content, distinct files: a lapse, kept
    (["../outside/x.wav", "a.wav", "1"], "path-escape"),
    (["{outside}", "a.wav", "1"], "path-escape"),
    (["a.wav", "link.wav", "1"], "path-escape"),  # a symlink to a file outside the folder
    (["missing.wav", "a.wav", "1"], "missing-audio"),
    (["a.wav", "notaudio.wav", "1"], "unreadable-audio"),
    (["a.wav", "b.wav"], "malformed"),
    (["a.wav", "b.wav", "1", "surplus"], "malformed"),
    (["", "b.wav", "1"], "malformed"),
    (["sub/../b.wav", "c.wav", "1"], None),
]


def _tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * freq * t)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A judgment folder: three distinct WAVs, a byte copy of one, a text file named .wav, a
    sub-folder, and a symlink to a WAV outside the folder."""
    root = tmp_path / "set"
    (root / "sub").mkdir(parents=True)
    for name, freq in (("a", 220.0), ("b", 330.0), ("c", 440.0)):
        sf.write(root / f"{name}.wav", _tone(freq), RATE, subtype="PCM_16")
    shutil.copyfile(root / "a.wav", root / "copy-of-a.wav")
    (root / "notaudio.wav").write_text("this is not audio\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    sf.write(outside / "x.wav", _tone(550.0), RATE, subtype="PCM_16")
    (root / "link.wav").symlink_to(outside / "x.wav")
    return root


def _write(folder: Path, fmt: str, name: str | None = None) -> tuple[Path, dict[int, str | None]]:
    """Write CASES as a judgment file; returns its path and {line: expected kind}."""
    outside = str(folder.parent / "outside" / "x.wav")
    lines: list[str] = []
    expected: dict[int, str | None] = {}
    if fmt == CSV:
        lines.append("ref,test,label,worker,timestamp,condition,notes")
    for i, (fields, kind) in enumerate(CASES):
        fields = [f.replace("{outside}", outside) for f in fields]
        if fmt == CSV:
            lines.append(",".join([*fields, "w1", "", "cond", f"note {i}"]))
        else:
            lines.append("\t".join(fields))
        expected[len(lines)] = kind
        if i == 4:
            lines.append("")  # a blank line is skipped, not a row
    if fmt == CSV:
        # Worker matters in CSV: the first pair and label from another worker is kept; its exact repeat is not.
        lines.append("a.wav,b.wav,1,w2,,cond,another worker agrees")
        expected[len(lines)] = None
        lines.append("a.wav,b.wav,1,w2,,cond,the same again")
        expected[len(lines)] = "duplicate"
    path = folder / (name or ("judgments.csv" if fmt == CSV else "judgments.txt"))
    path.write_text("\n".join(lines) + "\n")
    return path, expected


@pytest.mark.parametrize("fmt", [JND_LIST, CSV])
def test_every_row_is_kept_or_quarantined_with_its_kind_and_line(folder: Path, fmt: str) -> None:
    path, expected = _write(folder, fmt)
    jf = read_judgments(path)
    assert jf.format == fmt
    assert jf.path == path
    got_bad = {q.line: q.kind for q in jf.quarantine}
    assert got_bad == {line: kind for line, kind in expected.items() if kind is not None}
    good_lines = [j.line for j in jf.rows]
    assert good_lines == sorted(line for line, kind in expected.items() if kind is None)  # each once, in order
    assert set(good_lines).isdisjoint(got_bad)
    assert all(q.kind in QUARANTINE_KINDS and q.reason for q in jf.quarantine)
    raw = path.read_text().split("\n")
    assert all(q.raw == raw[q.line - 1] for q in jf.quarantine)
    by_line = {q.line: q for q in jf.quarantine}
    missing = next(line for line, kind in expected.items() if kind == "missing-audio")
    assert "missing.wav" in by_line[missing].reason
    assert all(q.source == path for q in jf.quarantine)


@pytest.mark.parametrize("fmt", [JND_LIST, CSV])
def test_good_rows_carry_resolved_paths_hashes_and_plain_rows(folder: Path, fmt: str) -> None:
    jf = read_judgments(_write(folder, fmt)[0])
    first = jf.rows[0]
    assert first.ref == (folder / "a.wav").resolve() and first.test == (folder / "b.wav").resolve()
    assert first.label == 1
    assert first.ref_sha256 != first.test_sha256
    assert first.judgment_id == judgment_id(first.ref_sha256, first.test_sha256, 1, first.worker,
                                            first.timestamp, first.condition)  # fmt: skip
    lapse = next(j for j in jf.rows if j.test.name == "copy-of-a.wav")
    assert lapse.ref_sha256 == lapse.test_sha256
    row = first.row()
    assert all(v is None or isinstance(v, str | int) for v in row.values())
    if fmt == CSV:
        assert (first.worker, first.timestamp, first.condition) == ("w1", None, "cond")
        assert first.extra == {"notes": "note 0"}
        assert '"notes"' in row["extra"]
    else:
        assert (first.worker, first.timestamp, first.condition, first.extra) == (None, None, None, {})
    assert all(isinstance(v, str | int) for v in jf.quarantine[0].row().values())


@pytest.mark.parametrize("fmt", [JND_LIST, CSV])
def test_ids_are_content_based_and_stable_across_reads_and_moves(folder: Path, fmt: str, tmp_path: Path) -> None:
    path, _ = _write(folder, fmt)
    first, again = read_judgments(path), read_judgments(path)
    ids = [j.judgment_id for j in first.rows]
    assert ids == [j.judgment_id for j in again.rows]
    assert len(set(ids)) == len(ids)
    assert first.content_hash == again.content_hash
    # The folder moved elsewhere and the judgment file renamed: same judgments, same ids.
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(folder, moved, symlinks=True)
    renamed = moved / ("renamed" + path.suffix)
    (moved / path.name).rename(renamed)
    other = read_judgments(renamed)
    assert [j.judgment_id for j in other.rows] == ids
    assert other.content_hash == first.content_hash
    assert other.data_hash == first.data_hash == data_hash(reversed(first.rows))
    assert data_hash(ids + ids[:2]) == first.data_hash  # a set: repeats do not change it
    assert data_hash(ids[1:]) != first.data_hash
    # Another label or worker is another judgment.
    j = first.rows[0]
    assert judgment_id(j.ref_sha256, j.test_sha256, 1 - j.label) != j.judgment_id
    assert judgment_id(j.ref_sha256, j.test_sha256, j.label, "someone else") != j.judgment_id


def test_absolute_path_inside_the_folder_is_accepted(folder: Path) -> None:
    path = folder / "abs.txt"
    path.write_text(f"{folder / 'a.wav'}\tb.wav\t1\n")
    jf = read_judgments(path)
    assert not jf.quarantine and jf.rows[0].ref == (folder / "a.wav").resolve()


def test_csv_columns_are_found_by_name_in_any_order(folder: Path) -> None:
    path = folder / "j.csv"
    path.write_text("Label, Test ,REF\n1,b.wav,a.wav\n")
    [j] = read_judgments(path).rows
    assert (j.ref.name, j.test.name, j.label) == ("a.wav", "b.wav", 1)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "missing": tmp_path / "nope.txt",
        "a folder": tmp_path,
        "empty": tmp_path / "empty.txt",
        "blank": tmp_path / "blank.txt",
        "binary": tmp_path / "audio.wav",
        "not utf-8": tmp_path / "latin1.txt",
        "csv without label": tmp_path / "nolabel.csv",
        "neither format": tmp_path / "prose.txt",
    }
    files["empty"].write_bytes(b"")
    files["blank"].write_text("\n  \n\n")
    sf.write(files["binary"], _tone(220.0), RATE, subtype="PCM_16")
    files["not utf-8"].write_bytes("caf\xe9\tb.wav\t1\n".encode("latin-1"))
    files["csv without label"].write_text("ref,test,score\na.wav,b.wav,1\n")
    files["neither format"].write_text("just some words\n")
    return files


@pytest.mark.parametrize(
    "case", ["missing", "a folder", "empty", "blank", "binary", "not utf-8", "csv without label", "neither format"]
)
def test_a_file_that_cannot_be_read_raises_the_typed_error_naming_it(tmp_path: Path, case: str) -> None:
    path = _bad_files(tmp_path)[case]
    with pytest.raises(JudgmentFileError) as info:
        read_judgments(path)
    assert isinstance(info.value, ValueError)
    assert info.value.path == path.absolute()
    assert str(path) in str(info.value)


def test_the_published_jnd_list_parses_with_its_audio_quarantined_as_missing() -> None:
    from jndqa.metric.release import ReleaseNotFoundError, find_release

    try:
        release = find_release()
    except ReleaseNotFoundError as exc:
        pytest.skip(f"the official DPAM release is not on disk (run `jndqa setup`): {exc}")
    path = release / "dataset" / "dataset_combined.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not in the release folder")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    jf = read_judgments(path)
    assert jf.format == JND_LIST
    assert jf.rows == []  # the release ships the lists, not the audio they name
    assert len(jf.quarantine) == len(lines) > 1000
    assert {q.kind for q in jf.quarantine} == {"missing-audio"}
    assert jf.quarantine[0].line == 1 and jf.quarantine[0].raw == lines[0]
