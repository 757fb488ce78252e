"""Listening-test ratings: reading, validation with quarantine, content hashing, stimulus means.

Formats, detected by content (:func:`read_ratings`):

- ``ratings-csv`` (:data:`RATINGS_CSV`), the canonical long CSV: a header naming at least
  ``ref``, ``test`` and ``score`` (any order, case-insensitive), optionally ``listener``, ``item``,
  ``condition``, ``scale`` and ``trial``; one row per listener and stimulus. Other columns are kept,
  as strings, in :attr:`Rating.extra` and are not part of the rating's identity. ``scale`` is one of
  :data:`SCALES`: ``mushra`` (0–100), ``mos`` (1–5, ACR), ``jnd`` (0 same, 1 different) or
  ``preference`` (1: ``test`` preferred to ``ref``, 0: not; an ``original`` column naming the
  recording both were made from turns the row into a comparison of distances to it, which
  retraining learns from: the ``original`` path is resolved and checked like ``ref`` and ``test``,
  and kept resolved in :attr:`Rating.extra` with its ``original_sha256``). A row with an empty or absent
  ``scale`` takes :func:`read_ratings`'s ``scale=``; a file with no ``scale`` column and no
  ``scale=`` raises :class:`RatingFileError`. ``trial`` tells repeated ratings of one stimulus by
  one listener apart (a page or session tag).
- ``jnd-list`` (:data:`JND_LIST`) and ``judgment-csv`` (:data:`JUDGMENT_CSV`): the DPAM
  release's JND lists and the judgment CSV (header ``ref,test,label``), read by
  :func:`jndqa.datasets.read_judgments` (same checks, same quarantine) and turned into ratings of
  scale ``jnd``: score = label, listener = worker, trial = timestamp, condition kept, no item.
- ``webmushra`` (:data:`WEBMUSHRA`): the ``mushra.csv`` that webMUSHRA's ``service/write.php``
  appends to ``results/<testId>/`` (header ``session_test_id``, the questionnaire's participant
  fields, ``session_uuid`` in current versions, ``trial_id``, ``rating_stimulus``,
  ``rating_score``, ``rating_time``, ``rating_comment``), read with the test's YAML config
  (``config=``), whose ``type: mushra`` pages map each page ``id`` to its ``reference`` and its
  ``stimuli`` (key → audio file). ``rating_stimulus`` is a stimuli key (anchors given in
  ``stimuli`` included), ``reference`` (the hidden reference) or ``anchor35``/``anchor70`` (the
  low-pass anchors webMUSHRA builds in the browser from ``createAnchor35``/``createAnchor70``;
  having no file, they are quarantined as ``missing-audio``). Config paths are relative to the
  webMUSHRA folder (the one holding ``configs/``): ``audio_root=``, else the config's folder's
  parent when that folder is named ``configs``, else the config's folder. A row becomes a
  ``mushra`` rating with item = ``trial_id``, condition = the stimulus key, listener =
  ``session_uuid``; without that column, the participant fields (``name=value`` joined by
  ``;``); without those either, ``session-<k>``, a new session starting where a
  (trial_id, stimulus) pair repeats (write.php appends whole sessions). ``session_test_id``,
  participant fields, ``rating_time`` and ``rating_comment`` go to :attr:`Rating.extra`.

Input contract as for judgments: UTF-8 text (a BOM is tolerated), blank lines skipped, lines
numbered from 1 as in an editor (header included); audio paths relative to the rating file's
folder (the webMUSHRA folder for ``webmushra``), absolute paths accepted when inside it.

Every other line ends up either in :attr:`RatingFile.rows` or in :attr:`RatingFile.quarantine`
(:class:`~jndqa.datasets.judgments.QuarantinedRow`: line, raw text, kind of
:data:`QUARANTINE_KINDS`, reason). Checks, first failure names the kind: ``malformed`` →
``not-in-config`` → ``bad-scale`` → ``bad-score`` → ``path-escape`` → ``missing-audio`` →
``unreadable-audio`` → ``self-pair`` → ``duplicate``, then ``post-screening`` over the kept rows:

- ``duplicate``: the same :attr:`Rating.rating_id` as an earlier row (same audio content, score,
  scale, listener, item, condition, trial); or, on the graded scales (``mushra``, ``mos``), a
  second score from the same named listener for the same stimulus (same ref and test files, item,
  condition and trial), which one-rating-per-listener-and-stimulus forbids. Without a
  ``listener`` column identical rows cannot be told apart and count as duplicates.
- ``self-pair`` (``jnd`` only): ref and test are the same file and the score says "different".
- ``post-screening`` of ``jnd`` catch trials: a named listener who calls more than
  :data:`CATCH_MAX_PERCENT` (25 %) of their identical pairs (ref and test the same file) "different"
  gets all their rows quarantined (the catch rows themselves are ``self-pair``).
- ``post-screening`` (ITU-R BS.1534-3, 4.1.2): a MUSHRA row whose ``test`` is its ``ref`` (the
  same file once resolved) is the hidden reference (:attr:`Rating.hidden_reference`): it is kept
  for screening, and is not a stimulus (:func:`stimulus_means` leaves it out). A named listener
  who rates the hidden reference below :data:`HIDDEN_REFERENCE_MIN` (90) in more than
  :data:`SCREENING_MAX_PERCENT` (15 %) of their trials (hidden-reference ratings) gets all their
  rows quarantined; exactly 15 % is kept. Rows without a listener are not screened.

Identity: :func:`rating_id` hashes the sha256 of the ref and test audio bytes, the score (as a
float), scale, listener, item, condition and trial; not the rating file's name or place, nor the
audio files' names, so ingesting the same ratings twice gives the same ids. :func:`data_hash`
hashes the sorted set of ids.

Only a file that cannot be read at all raises :class:`RatingFileError`, a ``ValueError`` naming
the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import judgments as _judgments
from .judgments import (
    AudioCheck,
    JudgmentFileError,
    QuarantinedRow,
    decode_text,
    read_judgments,
    resolve_audio_path,
)

__all__ = [
    "HIDDEN_REFERENCE_MIN",
    "HIGHER_IS_BETTER",
    "JND_LIST",
    "JUDGMENT_CSV",
    "QUARANTINE_KINDS",
    "RATINGS_CSV",
    "SCALES",
    "SCREENING_MAX_PERCENT",
    "WEBMUSHRA",
    "Rating",
    "RatingFile",
    "RatingFileError",
    "StimulusMean",
    "data_hash",
    "rating_id",
    "read_ratings",
    "stimulus_means",
]

RATINGS_CSV = "ratings-csv"
JND_LIST = _judgments.JND_LIST
JUDGMENT_CSV = "judgment-csv"
WEBMUSHRA = "webmushra"

# scale -> (lowest, highest) score; the binary scales take exactly those two values.
SCALES: dict[str, tuple[float, float]] = {
    "mushra": (0.0, 100.0),
    "mos": (1.0, 5.0),
    "jnd": (0.0, 1.0),
    "preference": (0.0, 1.0),
}
# Whether a higher score means better quality: a jnd score of 1 says "heard a difference" (worse).
HIGHER_IS_BETTER: dict[str, bool] = {"mushra": True, "mos": True, "jnd": False, "preference": True}
BINARY_SCALES = ("jnd", "preference")
GRADED_SCALES = ("mushra", "mos")
HIDDEN_REFERENCE_MIN = 90.0
SCREENING_MAX_PERCENT = 15
CATCH_MAX_PERCENT = 25  # jnd catch trials (identical pairs) a named listener may call "different"
REQUIRED_COLUMNS = ("ref", "test", "score")
OPTIONAL_COLUMNS = ("listener", "item", "condition", "scale", "trial")
WEBMUSHRA_REQUIRED = ("session_test_id", "trial_id", "rating_stimulus", "rating_score")
WEBMUSHRA_KNOWN = (*WEBMUSHRA_REQUIRED, "session_uuid", "date", "rating_time", "rating_comment")
WEBMUSHRA_GENERATED_ANCHORS = {"anchor35": "3.5 kHz", "anchor70": "7 kHz"}
ID_VERSION = "jndqa-rating-v1"  # changes only if the identity's definition changes

QUARANTINE_KINDS: dict[str, str] = {
    "malformed": "the line does not have the fields of its format (or a path is empty)",
    "not-in-config": "a webMUSHRA row names a page or stimulus its config does not have",
    "bad-scale": "the scale is not mushra, mos, jnd or preference (or is missing and no scale= was given)",
    "bad-score": "the score is not a number inside its scale (0 or 1 on the binary scales)",
    "path-escape": "an audio path leads outside the rating file's folder (.., absolute path, symlink)",
    "missing-audio": "an audio file does not exist (or, for webMUSHRA's generated anchors, has no file)",
    "unreadable-audio": "an audio file exists but is not readable audio (or is empty)",
    "self-pair": "jnd: ref and test are the same file and the score says 'different'",
    "duplicate": "the same rating appeared earlier, or the listener scored the same stimulus earlier",
    "post-screening": (
        "the listener failed post-screening: the hidden reference rated below 90 in more than 15 % of trials "
        "(BS.1534-3), or more than 25 % of jnd catch trials called 'different'"
    ),
}
_FROM_JUDGMENT_KIND = {"bad-label": "bad-score"}  # the other judgment kinds keep their names

_FORMATS_HINT = (
    "a ratings CSV with a ref,test,score header, a judgment CSV (ref,test,label), a JND list "
    "(ref<TAB>test<TAB>label) or webMUSHRA's results mushra.csv with its config="
)


class RatingFileError(ValueError):
    """A rating file (or its webMUSHRA config) that cannot be read at all; ``path`` names it.
    Bad rows never raise."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class Rating:
    """One valid rating. ``ref``/``test``: absolute, resolved paths; ``score``: on ``scale``;
    ``hidden_reference``: a MUSHRA rating of the reference itself (kept for post-screening, not a
    stimulus); ``source``: the rating file; ``line``: 1-based."""

    rating_id: str
    ref: Path
    test: Path
    ref_sha256: str
    test_sha256: str
    score: float
    scale: str
    listener: str | None
    item: str | None
    condition: str | None
    trial: str | None
    hidden_reference: bool
    source: Path
    line: int
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict) -> Rating:
        """A rating from its stored row (:meth:`row`'s dict, as the store returns it)."""
        extra = row.get("extra")
        return cls(row["rating_id"], Path(row["ref"]), Path(row["test"]), row["ref_sha256"], row["test_sha256"],
                   float(row["score"]), row["scale"], row.get("listener"), row.get("item"), row.get("condition"),
                   row.get("trial"), bool(row.get("hidden_reference")), Path(row["source"]), int(row["line"]),
                   json.loads(extra) if isinstance(extra, str) and extra else dict(extra or {}))  # fmt: skip

    def row(self) -> dict[str, str | int | float | bool | None]:
        """A plain dict for storage; ``extra`` as sorted-key JSON (or None)."""
        return {
            "rating_id": self.rating_id,
            "ref": str(self.ref),
            "test": str(self.test),
            "ref_sha256": self.ref_sha256,
            "test_sha256": self.test_sha256,
            "score": self.score,
            "scale": self.scale,
            "listener": self.listener,
            "item": self.item,
            "condition": self.condition,
            "trial": self.trial,
            "hidden_reference": self.hidden_reference,
            "source": str(self.source),
            "line": self.line,
            "extra": json.dumps(self.extra, sort_keys=True) if self.extra else None,
        }


@dataclass
class RatingFile:
    """The result of :func:`read_ratings`. ``format``: one of :data:`RATINGS_CSV`,
    :data:`JND_LIST`, :data:`JUDGMENT_CSV`, :data:`WEBMUSHRA`; ``content_hash``: sha256 of the
    file's bytes (for webMUSHRA, of the results' and the config's sha256 together); ``config``:
    the webMUSHRA config read with it (None otherwise); ``judgments``: for a JND list or judgment CSV,
    the same file as :func:`jndqa.datasets.judgments.read_judgments` read it (None otherwise), so that
    a caller storing judgments need not read and hash the audio again."""

    path: Path
    format: str
    content_hash: str
    rows: list[Rating]
    quarantine: list[QuarantinedRow]
    config: Path | None = None
    judgments: Any = None

    @property
    def data_hash(self) -> str:
        """:func:`data_hash` of the good rows."""
        return data_hash(self.rows)

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined rows per kind (kinds with none left out)."""
        return dict(Counter(q.kind for q in self.quarantine))

    def file_row(self) -> dict[str, str | int | None]:
        """A plain dict describing the file, for storage."""
        return {"content_hash": self.content_hash, "path": str(self.path), "format": self.format,
                "config": str(self.config) if self.config else None, "rows": len(self.rows),
                "quarantined": len(self.quarantine)}  # fmt: skip


def _text(value: str | None) -> str:
    return value or ""


def rating_id(
    ref_sha256: str,
    test_sha256: str,
    score: float,
    scale: str,
    listener: str | None = None,
    item: str | None = None,
    condition: str | None = None,
    trial: str | None = None,
) -> str:
    """The content identity of a rating (64 hex digits); None and "" are the same, and so are
    scores written 80 and 80.0."""
    payload = json.dumps([ID_VERSION, ref_sha256, test_sha256, float(score), scale, _text(listener), _text(item),
                          _text(condition), _text(trial)], separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def data_hash(ratings: Iterable[Rating | str]) -> str:
    """sha256 over the sorted, de-duplicated rating ids (ratings or ids)."""
    return _judgments.data_hash(r if isinstance(r, str) else r.rating_id for r in ratings)


@dataclass
class _Candidate:
    """A row whose fields were found, before its values are checked."""

    line: int
    raw: str
    ref: str
    test: str
    score: str
    scale: str | None
    listener: str | None = None
    item: str | None = None
    condition: str | None = None
    trial: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _parse_score(text: str, scale: str) -> tuple[float | None, str | None]:
    """(score, None), or (None, why it is not a score on ``scale``)."""
    low, high = SCALES[scale]
    try:
        value = float(text)
    except ValueError:
        return None, f"score {text!r} is not a number"
    if not math.isfinite(value):
        return None, f"score {text!r} is not a finite number"
    if scale in BINARY_SCALES:
        if value not in (low, high):
            meaning = "0 same, 1 different" if scale == "jnd" else "1 test preferred to ref, 0 not"
            return None, f"score {text!r} is not 0 or 1 on the {scale} scale ({meaning})"
    elif not low <= value <= high:
        return None, f"score {text!r} is outside the {scale} scale [{low:g}, {high:g}]"
    return value, None


def _validate(
    src: Path,
    folder: Path,
    owner: str,
    candidates: Sequence[_Candidate],
    quarantine: list[QuarantinedRow],
) -> list[Rating]:
    """Check ``candidates`` in order (module docstring), append the bad ones to ``quarantine``,
    then apply the BS.1534-3 post-screening; returns the kept ratings."""
    audio = AudioCheck()
    rows: list[Rating] = []
    seen: dict[str, int] = {}
    rated: dict[tuple, tuple[int, float]] = {}  # graded scales: stimulus and listener -> (line, score)
    catch_failed: dict[str, int] = {}  # jnd catch trials (identical pairs) a listener called "different"

    def bad(c: _Candidate, kind: str, reason: str) -> None:
        quarantine.append(QuarantinedRow(src, c.line, c.raw, kind, reason))

    for c in candidates:
        if not c.ref or not c.test:
            bad(c, "malformed", "the " + ("ref" if not c.ref else "test") + " path is empty")
            continue
        scale = (c.scale or "").strip().lower()
        if not scale:
            bad(c, "bad-scale", "no scale on this line and no scale= given; add a scale column "
                                f"({', '.join(SCALES)}) or pass the scale")  # fmt: skip
            continue
        if scale not in SCALES:
            bad(c, "bad-scale", f"scale {c.scale!r} is not one of {', '.join(SCALES)}")
            continue
        score, why = _parse_score(c.score, scale)
        if score is None:
            bad(c, "bad-score", why or "")
            continue
        ref, kind, why = resolve_audio_path(folder, c.ref, owner)
        if ref is None:
            bad(c, kind or "path-escape", f"ref: {why}")
            continue
        test, kind, why = resolve_audio_path(folder, c.test, owner)
        if test is None:
            bad(c, kind or "path-escape", f"test: {why}")
            continue
        missing = [(name, p) for name, p in (("ref", ref), ("test", test)) if not p.exists()]
        if missing:
            bad(c, "missing-audio", "; ".join(f"{name} audio {p} does not exist" for name, p in missing))
            continue
        (ref_sha, ref_err), (test_sha, test_err) = audio.check(ref), audio.check(test)
        if ref_err or test_err:
            bad(c, "unreadable-audio", "; ".join(f"{n}: {e}" for n, e in (("ref", ref_err), ("test", test_err)) if e))
            continue
        assert ref_sha is not None and test_sha is not None
        extra = c.extra
        if scale == "preference" and extra.get("original"):
            original, kind, why = resolve_audio_path(folder, extra["original"], owner)
            if original is None:
                bad(c, kind or "path-escape", f"original: {why}")
                continue
            if not original.exists():
                bad(c, "missing-audio", f"original audio {original} does not exist")
                continue
            orig_sha, orig_err = audio.check(original)
            if orig_err:
                bad(c, "unreadable-audio", f"original: {orig_err}")
                continue
            extra = {**extra, "original": str(original), "original_sha256": str(orig_sha)}
        if scale == "jnd" and ref == test and score == 1.0:
            bad(c, "self-pair", f"ref and test are the same file {ref} but the score says 'different'")
            if c.listener:
                catch_failed[c.listener] = catch_failed.get(c.listener, 0) + 1
            continue
        rid = rating_id(ref_sha, test_sha, score, scale, c.listener, c.item, c.condition, c.trial)
        if rid in seen:
            bad(c, "duplicate", f"same rating as line {seen[rid]} (audio content, score, scale, listener, item, "
                                "condition and trial)")  # fmt: skip
            continue
        if scale in GRADED_SCALES and c.listener:
            key = (scale, c.listener, ref, test, c.item, c.condition, c.trial)
            if key in rated:
                first, first_score = rated[key]
                bad(c, "duplicate", f"listener {c.listener!r} already scored this stimulus at line {first} "
                                    f"({first_score:g}, now {score:g}); one rating per listener and stimulus: "
                                    "add a trial column to keep repeated trials")  # fmt: skip
                continue
            rated[key] = (c.line, score)
        seen[rid] = c.line
        hidden = scale == "mushra" and ref == test
        rows.append(Rating(rid, ref, test, ref_sha, test_sha, score, scale, c.listener, c.item, c.condition,
                           c.trial, hidden, src, c.line, extra))  # fmt: skip
    kept = _post_screen(rows, {c.line: c.raw for c in candidates}, src, quarantine, catch_failed)
    quarantine.sort(key=lambda q: q.line)
    return kept


def _post_screen(rows: list[Rating], raw: dict[int, str], src: Path, quarantine: list[QuarantinedRow],
                 catch_failed: dict[str, int] | None = None) -> list[Rating]:  # fmt: skip
    """Post-screening (module docstring): quarantine every row of a named listener whose hidden-reference
    ratings fall below 90 in more than 15 % of them (ITU-R BS.1534-3), or who called more than 25 % of
    their jnd catch trials (identical pairs) "different" (``catch_failed``: per listener, those already
    quarantined as ``self-pair``)."""
    hidden: dict[str, list[Rating]] = {}
    for r in rows:
        if r.hidden_reference and r.listener:
            hidden.setdefault(r.listener, []).append(r)
    failed: dict[str, str] = {}
    catch_failed = catch_failed or {}
    for listener, wrong in catch_failed.items():
        same = sum(1 for r in rows if r.listener == listener and r.scale == "jnd" and r.ref == r.test)
        if wrong * 100 > CATCH_MAX_PERCENT * (wrong + same):
            failed[listener] = (
                f"listener {listener!r} called {wrong} of {wrong + same} catch trials (identical pairs) 'different' "
                f"(more than {CATCH_MAX_PERCENT} %): all their ratings are set aside"
            )
    for listener, refs in hidden.items():
        low = [r for r in refs if r.score < HIDDEN_REFERENCE_MIN]
        if len(low) * 100 > SCREENING_MAX_PERCENT * len(refs):  # integers: exactly 15 % is kept
            lines = ", ".join(str(r.line) for r in low[:10]) + (", ..." if len(low) > 10 else "")
            failed[listener] = (
                f"listener {listener!r} rated the hidden reference below {HIDDEN_REFERENCE_MIN:g} in {len(low)} of "
                f"{len(refs)} trials ({100 * len(low) / len(refs):.1f} %, more than {SCREENING_MAX_PERCENT} %): "
                f"ITU-R BS.1534-3 post-screening sets all their ratings aside (hidden reference on line(s) {lines})"
            )
    if not failed:
        return rows
    kept = []
    for r in rows:
        if r.listener in failed:
            quarantine.append(QuarantinedRow(src, r.line, raw[r.line], "post-screening", failed[r.listener]))
        else:
            kept.append(r)
    return kept


def _csv_fields(line: str) -> list[str]:
    return [f.strip() for f in next(csv.reader([line]))]


def _csv_rows(src: Path, numbered: list[tuple[int, str]], header: list[str], quarantine: list[QuarantinedRow]):
    """``(line number, raw line, {column: value})`` of each row of ``numbered`` whose width is the
    header's; a row of another width is quarantined (``malformed``) instead."""
    for no, raw in numbered:
        fields = _csv_fields(raw)
        if len(fields) != len(header):
            quarantine.append(_wrong_width(src, no, raw, len(fields), len(header)))
            continue
        yield no, raw, dict(zip(header, fields, strict=True))


def _wrong_width(src: Path, no: int, raw: str, got: int, want: int) -> QuarantinedRow:
    return QuarantinedRow(src, no, raw, "malformed", f"{got} comma-separated field(s), the header has {want}")


def _read_ratings_csv(
    src: Path, numbered: list[tuple[int, str]], header: list[str], scale: str | None
) -> tuple[list[Rating], list[QuarantinedRow]]:
    if "scale" not in header and scale is None:
        raise RatingFileError(src, f"the file has no scale column and no scale was given; add a scale column "
                                   f"({', '.join(SCALES)}) or pass the scale (scale=, --scale)")  # fmt: skip
    quarantine: list[QuarantinedRow] = []
    candidates: list[_Candidate] = []
    for no, raw, values in _csv_rows(src, numbered, header, quarantine):
        listener, item, condition, row_scale, trial = (values.get(c) or None for c in OPTIONAL_COLUMNS)
        extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and k}
        candidates.append(_Candidate(no, raw, values["ref"], values["test"], values["score"], row_scale or scale,
                                     listener, item, condition, trial, extra))  # fmt: skip
    folder = src.parent.resolve()
    rows = _validate(src, folder, "rating file", candidates, quarantine)
    return rows, quarantine


def _from_judgments(src: Path, scale: str | None):
    """(format, ratings, quarantine, the :class:`jndqa.datasets.judgments.JudgmentFile` read) of a JND list or
    judgment CSV."""
    if scale not in (None, "jnd"):
        raise RatingFileError(src, f"a JND list or judgment CSV holds jnd labels (0 same, 1 different), not {scale} "
                                   "scores; drop scale= or give a ratings CSV with a score column")  # fmt: skip
    try:
        jf = read_judgments(src)
    except JudgmentFileError as exc:
        raise RatingFileError(src, str(exc).removeprefix(f"{src}: ")) from None
    rows = [
        Rating(rating_id(j.ref_sha256, j.test_sha256, j.label, "jnd", j.worker, None, j.condition, j.timestamp),
               j.ref, j.test, j.ref_sha256, j.test_sha256, float(j.label), "jnd", j.worker, None, j.condition,
               j.timestamp, False, j.source, j.line, dict(j.extra))
        for j in jf.rows
    ]  # fmt: skip
    quarantine = [QuarantinedRow(q.source, q.line, q.raw, _FROM_JUDGMENT_KIND.get(q.kind, q.kind), q.reason)
                  for q in jf.quarantine]  # fmt: skip
    return (JND_LIST if jf.format == _judgments.JND_LIST else JUDGMENT_CSV), rows, quarantine, jf


@dataclass(frozen=True)
class _Page:
    reference: str
    stimuli: dict[str, str]


def _config_pages(path: Path) -> dict[str, _Page]:
    """The ``type: mushra`` pages of a webMUSHRA config, by page id (nested ``random`` groups included)."""
    import yaml

    if not path.is_file():
        raise RatingFileError(path, "no such webMUSHRA config; give the test's YAML config (configs/<test>.yaml)")
    try:
        text = decode_text(path, path.read_bytes(), expected="a webMUSHRA YAML config", error=RatingFileError)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RatingFileError(path, f"is not valid YAML ({exc}); give the webMUSHRA config the test ran") from None
    except OSError as exc:
        raise RatingFileError(path, f"cannot be read ({exc}); check its permissions") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pages"), list):
        raise RatingFileError(path, "has no 'pages' list; is this the webMUSHRA config (configs/<test>.yaml)?")
    pages: dict[str, _Page] = {}

    def walk(items: list) -> None:
        for page in items:
            if isinstance(page, list):  # a group: ["random", page, page, ...]
                walk(page)
            elif isinstance(page, dict) and page.get("type") == "mushra":
                pid, ref, stimuli = page.get("id"), page.get("reference"), page.get("stimuli")
                if pid is None or not isinstance(ref, str) or not isinstance(stimuli, dict):
                    raise RatingFileError(path, f"mushra page {pid!r} lacks an id, a reference file or a stimuli "
                                                "mapping (key: file); fix the config")  # fmt: skip
                new = _Page(ref.strip(), {str(k): str(v).strip() for k, v in stimuli.items()})
                if str(pid) in pages and pages[str(pid)] != new:
                    raise RatingFileError(path, f"two mushra pages share the id {pid!r} with other audio; "
                                                "give each page its own id")  # fmt: skip
                pages[str(pid)] = new

    walk(doc["pages"])
    if not pages:
        raise RatingFileError(path, "has no page of type mushra; the results cannot be mapped to audio")
    return pages


def _audio_root(config: Path, audio_root: str | os.PathLike | None) -> Path:
    if audio_root is not None:
        root = Path(audio_root).absolute()
        if not root.is_dir():
            raise RatingFileError(root, "audio_root is not a folder; give the webMUSHRA folder holding configs/")
        return root.resolve()
    folder = config.parent.resolve()
    return folder.parent if folder.name == "configs" else folder


def _read_webmushra(
    src: Path,
    numbered: list[tuple[int, str]],
    header: list[str],
    config: Path,
    audio_root: str | os.PathLike | None,
) -> tuple[list[Rating], list[QuarantinedRow]]:
    pages = _config_pages(config)
    root = _audio_root(config, audio_root)
    participant = [c for c in header if c not in WEBMUSHRA_KNOWN and c]
    quarantine: list[QuarantinedRow] = []
    candidates: list[_Candidate] = []
    session, session_seen = 0, set()
    for no, raw, values in _csv_rows(src, numbered, header, quarantine):
        trial_id, stimulus = values["trial_id"], values["rating_stimulus"]
        if (trial_id, stimulus) in session_seen:
            session, session_seen = session + 1, set()
        session_seen.add((trial_id, stimulus))
        if values.get("session_uuid"):
            listener = values["session_uuid"]
        elif any(values[c] for c in participant):
            listener = ";".join(f"{c}={values[c]}" for c in participant)
        else:
            listener = f"session-{session}"
        page = pages.get(trial_id)
        if page is None:
            quarantine.append(QuarantinedRow(src, no, raw, "not-in-config",
                                             f"trial_id {trial_id!r} is no mushra page of {config.name} "
                                             f"(pages: {', '.join(sorted(pages))})"))  # fmt: skip
            continue
        if stimulus == "reference":
            test = page.reference
        elif stimulus in page.stimuli:
            test = page.stimuli[stimulus]
        elif stimulus in WEBMUSHRA_GENERATED_ANCHORS:
            quarantine.append(QuarantinedRow(src, no, raw, "missing-audio",
                                             f"{stimulus!r} is the {WEBMUSHRA_GENERATED_ANCHORS[stimulus]} low-pass "
                                             "anchor webMUSHRA generates in the browser; it has no audio file "
                                             "(list anchors under stimuli to have them rated)"))  # fmt: skip
            continue
        else:
            quarantine.append(QuarantinedRow(src, no, raw, "not-in-config",
                                             f"stimulus {stimulus!r} is not in page {trial_id!r} of {config.name} "
                                             f"(stimuli: {', '.join(page.stimuli)}, reference)"))  # fmt: skip
            continue
        extra = {k: values[k] for k in ("session_test_id", *participant, "date", "rating_time", "rating_comment")
                 if values.get(k)}  # fmt: skip
        candidates.append(_Candidate(no, raw, page.reference, test, values["rating_score"], "mushra", listener,
                                     trial_id, stimulus, None, extra))  # fmt: skip
    rows = _validate(src, root, "webMUSHRA folder", candidates, quarantine)
    return rows, quarantine


def read_ratings(
    path: str | os.PathLike,
    *,
    scale: str | None = None,
    config: str | os.PathLike | None = None,
    audio_root: str | os.PathLike | None = None,
) -> RatingFile:
    """Read, validate and hash one rating file (module docstring: formats, checks, identity).

    ``scale``: the scale of rows that name none (ratings CSV); must be ``jnd`` or None for JND
    lists and judgment CSVs, ``mushra`` or None for webMUSHRA. ``config``: the webMUSHRA test's
    YAML config (required for, and only for, webMUSHRA results; ``path`` may then be the results
    folder holding ``mushra.csv``). ``audio_root``: the folder webMUSHRA config paths are relative
    to (default: see the module docstring). Audio is opened with soundfile and hashed once per
    distinct file. Raises :class:`RatingFileError` only when the file as a whole cannot be read.
    """
    if scale is not None and scale not in SCALES:
        raise RatingFileError(path, f"scale {scale!r} is not one of {', '.join(SCALES)}")
    src = Path(path).absolute()
    if src.is_dir() and (src / "mushra.csv").is_file() and config is not None:
        src = src / "mushra.csv"
    if not src.exists():
        raise RatingFileError(src, "no such rating file; check the path")
    if not src.is_file():
        raise RatingFileError(src, "is not a file; give the ratings CSV, judgment list or webMUSHRA mushra.csv")
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise RatingFileError(src, f"cannot be read ({exc}); check its permissions") from None
    text = decode_text(src, data, expected=_FORMATS_HINT, error=RatingFileError)
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    numbered = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip()]
    if not numbered:
        raise RatingFileError(src, "the file holds only blank lines")
    first_no, first = numbered[0]
    header = [c.lower() for c in _csv_fields(first)]
    dupes = sorted({c for c in header if c and header.count(c) > 1})
    content_hash = hashlib.sha256(data).hexdigest()

    if all(c in header for c in WEBMUSHRA_REQUIRED):
        if config is None:
            raise RatingFileError(src, "is a webMUSHRA results file; pass the test's YAML config (config=, --config) "
                                       "so its stimuli can be mapped to audio files")  # fmt: skip
        if scale not in (None, "mushra"):
            raise RatingFileError(src, f"webMUSHRA mushra.csv holds MUSHRA scores, not {scale}; drop scale=")
        if dupes:
            raise RatingFileError(src, f"the CSV header repeats column(s) {', '.join(dupes)}")
        cfg = Path(config).absolute()
        rows, quarantine = _read_webmushra(src, numbered[1:], header, cfg, audio_root)
        cfg_hash = hashlib.sha256(cfg.read_bytes()).hexdigest()
        both = hashlib.sha256(f"{WEBMUSHRA}:{content_hash}:{cfg_hash}".encode("ascii")).hexdigest()
        return RatingFile(src, WEBMUSHRA, both, rows, quarantine, cfg)
    if config is not None:
        raise RatingFileError(src, "config= is for webMUSHRA results (mushra.csv with session_test_id, trial_id, "
                                   "rating_stimulus and rating_score columns); this file is not one")  # fmt: skip
    if all(c in header for c in REQUIRED_COLUMNS):
        if dupes:
            raise RatingFileError(src, f"the CSV header repeats column(s) {', '.join(dupes)}; name each once")
        rows, quarantine = _read_ratings_csv(src, numbered[1:], header, scale)
        return RatingFile(src, RATINGS_CSV, content_hash, rows, quarantine)
    if _judgments.csv_header(first) is not None or "\t" in first:
        fmt, rows, quarantine, jf = _from_judgments(src, scale)
        return RatingFile(src, fmt, content_hash, rows, quarantine, judgments=jf)
    if first.lstrip().startswith(("testname:", "testId:", "pages:", "---")):
        raise RatingFileError(src, "looks like a webMUSHRA YAML config; give the results (results/<testId>/"
                                   "mushra.csv) as the rating file and this file as config=")  # fmt: skip
    raise RatingFileError(
        src,
        f"line {first_no} is not a header with columns {','.join(REQUIRED_COLUMNS)} (optional: "
        f"{','.join(OPTIONAL_COLUMNS)}), nor a judgment or webMUSHRA file; expected {_FORMATS_HINT}",
    )


@dataclass(frozen=True)
class StimulusMean:
    """The mean listener score of one stimulus (``ref``, ``test``) on ``scale``. ``n``: listeners
    (each listener's ratings of the stimulus averaged first; rows without a listener count one
    each); ``ci_low``/``ci_high``: Student-t 95 % interval of the mean over listeners (None when
    n < 2); ``std``: standard deviation over listeners (ddof 1; None when n < 2); ``item``: the
    rows' item label (the most frequent; without one, ``ref``'s path relative to its rating file's
    folder); ``condition``: likewise (None without one)."""

    scale: str
    ref: Path
    test: Path
    ref_sha256: str
    test_sha256: str
    item: str
    condition: str | None
    mean: float
    n: int
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def row(self) -> dict[str, str | int | float | None]:
        return {"scale": self.scale, "ref": str(self.ref), "test": str(self.test), "ref_sha256": self.ref_sha256,
                "test_sha256": self.test_sha256, "item": self.item, "condition": self.condition, "mean": self.mean,
                "n": self.n, "std": self.std, "ci_low": self.ci_low, "ci_high": self.ci_high}  # fmt: skip


def _label(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    if not counts:
        return None
    top = max(counts.values())
    return min(v for v, n in counts.items() if n == top)


def stimulus_means(rows: Iterable[Rating]) -> list[StimulusMean]:
    """Mean listener score per stimulus, i.e. per (scale, ref file, test file), hidden references
    left out (see :class:`StimulusMean`). Sorted by scale, item, condition and test path."""
    from scipy import stats

    groups: dict[tuple[str, Path, Path], list[Rating]] = {}
    for r in rows:
        if not r.hidden_reference:
            groups.setdefault((r.scale, r.ref, r.test), []).append(r)
    out: list[StimulusMean] = []
    for (scale, ref, test), group in groups.items():
        per_listener: dict[str | int, list[float]] = {}
        for i, r in enumerate(group):
            per_listener.setdefault(r.listener if r.listener else i, []).append(r.score)
        scores = [math.fsum(v) / len(v) for v in per_listener.values()]
        n = len(scores)
        mean = math.fsum(scores) / n
        std = low = high = None
        if n >= 2:
            std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1))
            half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            low, high = mean - half, mean + half
        item = _label(r.item for r in group)
        if item is None:
            first = group[0]
            folder = first.source.parent.resolve()
            item = ref.relative_to(folder).as_posix() if ref.is_relative_to(folder) else str(ref)
        out.append(StimulusMean(scale, ref, test, group[0].ref_sha256, group[0].test_sha256, item,
                                _label(r.condition for r in group), mean, n, std, low, high))  # fmt: skip
    out.sort(key=lambda s: (s.scale, s.item, s.condition or "", str(s.test)))
    return out
