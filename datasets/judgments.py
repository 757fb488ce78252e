"""Judgment files: reading, validation with quarantine, content hashing for idempotent ingest.

Two formats are accepted (docs/cli.md "retrain"), detected by content:

- ``jnd-list``: the published JND lists of the DPAM release, one judgment per line,
  ``ref_path<TAB>test_path<TAB>label``, no header;
- ``csv``: comma-separated with a header naming at least ``ref``, ``test`` and ``label``
  (any order, case-insensitive), optionally ``worker``, ``timestamp`` and ``condition``.
  Other columns are kept, as strings, in :attr:`Judgment.extra`; they are not part of the
  judgment's identity.

Input contract: a UTF-8 text file (a BOM is tolerated); label ``0`` = same, ``1`` = different,
exactly those two strings (surrounding spaces ignored); audio paths relative to the judgment
file's folder (absolute paths are accepted when they lie inside it). Blank lines are skipped
and are not rows. Lines are numbered from 1 as in an editor, header included.

Every other line is a row, and every row ends up either in :attr:`JudgmentFile.rows` or in
:attr:`JudgmentFile.quarantine` with its line number, raw text, a ``kind`` code
(:data:`QUARANTINE_KINDS`) and a reason. The checks run in this order and the first that
fails names the kind: ``malformed`` → ``bad-label`` → ``path-escape`` → ``missing-audio`` →
``unreadable-audio`` → ``self-pair`` → ``duplicate``.

- ``self-pair``: ref and test are the same file (same path once normalised and symlinks
  resolved) and the label says "different". The same file labelled "same" is a legitimate
  sanity pair. Two *distinct* files with identical content labelled "different" are kept: that
  is a listener's lapse, which is data.
- ``duplicate``: a row whose :attr:`Judgment.judgment_id` equals an earlier row's in the same
  file, i.e. same ref and test audio content, label, worker, timestamp and condition. The same
  pair with a different label (another worker, or the same worker on another trial) is a
  legitimate disagreement and is kept; in a list without worker and timestamp columns, the
  same pair and label twice is a duplicate.

Identity: ``judgment_id`` is the sha256 over the sha256 of the ref audio bytes, that of the test
audio bytes, the label, worker, timestamp and condition; it does not depend on the judgment
file's name or place, nor on the audio files' names, so ingesting the same judgments twice,
even from a moved or renamed file, gives the same ids. :func:`data_hash` hashes the sorted set
of ids (the "training data hash").

Only a file that cannot be read at all (missing, not text, empty, a CSV without the required
columns, neither format) raises :class:`JudgmentFileError`, a ``ValueError`` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import file_sha256

__all__ = [
    "CSV",
    "JND_LIST",
    "QUARANTINE_KINDS",
    "AudioCheck",
    "Judgment",
    "JudgmentFile",
    "JudgmentFileError",
    "QuarantinedRow",
    "csv_header",
    "data_hash",
    "decode_text",
    "judgment_id",
    "read_judgments",
    "resolve_audio_path",
]

JND_LIST = "jnd-list"
CSV = "csv"
REQUIRED_COLUMNS = ("ref", "test", "label")
OPTIONAL_COLUMNS = ("worker", "timestamp", "condition")
ID_VERSION = "jndqa-judgment-v1"  # changes only if the identity's definition changes

QUARANTINE_KINDS: dict[str, str] = {
    "malformed": "the line does not have the fields of its format (or a path is empty)",
    "bad-label": "the label is not 0 (same) or 1 (different)",
    "path-escape": "an audio path leads outside the judgment file's folder (.., absolute path, symlink)",
    "missing-audio": "an audio file does not exist",
    "unreadable-audio": "an audio file exists but is not readable audio (or is empty)",
    "self-pair": "ref and test are the same file and the label says 'different'",
    "duplicate": "the same judgment (audio content, label, worker, timestamp, condition) appeared earlier",
}


class JudgmentFileError(ValueError):
    """A judgment file that cannot be read at all; ``path`` names it. Bad rows never raise."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class Judgment:
    """One valid same/different judgment. ``ref``/``test``: absolute, resolved paths;
    ``label``: 0 same, 1 different; ``source``: the judgment file; ``line``: 1-based."""

    judgment_id: str
    ref: Path
    test: Path
    ref_sha256: str
    test_sha256: str
    label: int
    worker: str | None
    timestamp: str | None
    condition: str | None
    source: Path
    line: int
    extra: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, str | int | None]:
        """A plain dict for storage: strings, ints and None; ``extra`` as sorted-key JSON (or None)."""
        return {
            "judgment_id": self.judgment_id,
            "ref": str(self.ref),
            "test": str(self.test),
            "ref_sha256": self.ref_sha256,
            "test_sha256": self.test_sha256,
            "label": self.label,
            "worker": self.worker,
            "timestamp": self.timestamp,
            "condition": self.condition,
            "source": str(self.source),
            "line": self.line,
            "extra": json.dumps(self.extra, sort_keys=True) if self.extra else None,
        }


@dataclass(frozen=True)
class QuarantinedRow:
    """A row set aside: ``kind`` is a key of :data:`QUARANTINE_KINDS`, ``reason`` says what
    exactly was wrong (and with which file), ``raw`` is the line as written."""

    source: Path
    line: int
    raw: str
    kind: str
    reason: str

    def row(self) -> dict[str, str | int]:
        return {"source": str(self.source), "line": self.line, "raw": self.raw, "kind": self.kind,
                "reason": self.reason}  # fmt: skip


@dataclass
class JudgmentFile:
    """The result of :func:`read_judgments`. ``format``: :data:`JND_LIST` or :data:`CSV`;
    ``content_hash``: sha256 of the file's bytes."""

    path: Path
    format: str
    content_hash: str
    rows: list[Judgment]
    quarantine: list[QuarantinedRow]

    @property
    def data_hash(self) -> str:
        """:func:`data_hash` of the good rows."""
        return data_hash(self.rows)

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined rows per kind (kinds with none left out)."""
        out: dict[str, int] = {}
        for q in self.quarantine:
            out[q.kind] = out.get(q.kind, 0) + 1
        return out


def judgment_id(
    ref_sha256: str,
    test_sha256: str,
    label: int,
    worker: str | None = None,
    timestamp: str | None = None,
    condition: str | None = None,
) -> str:
    """The content identity of a judgment (64 hex digits); None and "" are the same."""
    payload = json.dumps([ID_VERSION, ref_sha256, test_sha256, int(label), worker or "", timestamp or "",
                          condition or ""], separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def data_hash(judgments: Iterable[Judgment | str]) -> str:
    """sha256 over the sorted, de-duplicated judgment ids (judgments or ids): the same set of
    judgments gives the same hash whatever the files, their order and repeats."""
    ids = sorted({j if isinstance(j, str) else j.judgment_id for j in judgments})
    return hashlib.sha256("\n".join(ids).encode("ascii")).hexdigest()


class AudioCheck:
    """Per-read cache of audio checks: ``check(path)`` gives (sha256, None) for a readable audio file
    (``sf.info`` opens it, it holds frames) or (None, the reason it is unreadable); each distinct
    resolved path is opened and hashed once."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[str | None, str | None]] = {}

    def check(self, path: Path) -> tuple[str | None, str | None]:
        if path not in self._seen:
            self._seen[path] = self._check(path)
        return self._seen[path]

    @staticmethod
    def _check(path: Path) -> tuple[str | None, str | None]:
        import soundfile as sf

        if not path.is_file():
            return None, f"{path} is not a regular file"
        try:
            info = sf.info(str(path))
        except Exception as exc:  # libsndfile raises several types; any of them means "not audio"
            return None, f"{path} is not readable audio ({type(exc).__name__}: {exc})"
        if info.frames <= 0:
            return None, f"{path} holds no audio frames"
        try:
            return file_sha256(path), None
        except OSError as exc:
            return None, f"{path} could not be read ({exc})"


def resolve_audio_path(
    folder: Path, text: str, owner: str = "judgment file"
) -> tuple[Path | None, str | None, str | None]:
    """(resolved path, None, None) for ``text`` relative to ``folder`` (a resolved folder) when it
    stays inside it, else (None, quarantine kind, why): ``path-escape`` for ``..``, an absolute path
    or a symlink leading out, ``unreadable-audio`` when it cannot be resolved. ``owner`` names the
    file the folder belongs to in the reason."""
    given = Path(text)
    candidate = given if given.is_absolute() else folder / given
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        return None, "unreadable-audio", f"path {text!r} cannot be resolved ({exc})"
    if not resolved.is_relative_to(folder):
        if given.is_absolute():
            why = f"absolute path {text!r} is outside the {owner}'s folder {folder}"
        elif not Path(os.path.normpath(candidate)).is_relative_to(folder):
            why = f"path {text!r} climbs out of the {owner}'s folder {folder}"
        else:
            why = f"path {text!r} is a symlink (or passes through one) resolving to {resolved}, outside {folder}"
        return None, "path-escape", why
    return resolved, None, None


def decode_text(
    path: Path,
    data: bytes,
    *,
    expected: str = "ref<TAB>test<TAB>label lines or a CSV with a ref,test,label header",
    error: Callable[[Path, str], Exception] = JudgmentFileError,
) -> str:
    """``data`` (the bytes of the file at ``path``) as UTF-8 text, a BOM dropped. An empty file, a
    file holding NUL bytes and one that is not UTF-8 raise ``error(path, message)``; ``expected``
    says in the message what the file should have held."""
    if not data.strip():
        raise error(path, f"the file is empty; expected {expected}")
    if b"\x00" in data:
        raise error(path, "the file is not text (it holds NUL bytes); is it an audio or archive file given by "
                          "mistake?")  # fmt: skip
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(path, f"the file is not UTF-8 text ({exc}); re-save it as UTF-8") from None


def csv_header(line: str) -> list[str] | None:
    """The lower-cased column names when ``line`` is a CSV header naming ref, test and label."""
    cols = [c.strip().lower() for c in next(csv.reader([line]))]
    return cols if all(c in cols for c in REQUIRED_COLUMNS) else None


def read_judgments(path: str | os.PathLike) -> JudgmentFile:
    """Read, validate and hash one judgment file (see the module docstring for the formats,
    the quarantine kinds and the identity). Audio is opened with soundfile (``sf.info``) and
    hashed once per distinct file. Raises :class:`JudgmentFileError` only when the file as a
    whole cannot be read."""
    src = Path(path).absolute()
    if not src.exists():
        raise JudgmentFileError(src, "no such judgment file; check the path")
    if not src.is_file():
        raise JudgmentFileError(src, "is not a file; give the judgment list or CSV itself, not its folder")
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise JudgmentFileError(src, f"cannot be read ({exc}); check its permissions") from None
    text = decode_text(src, data)
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    numbered = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip()]
    if not numbered:
        raise JudgmentFileError(src, "the file holds only blank lines")
    first_no, first = numbered[0]
    header = csv_header(first)
    if header is not None:
        fmt = CSV
        dupes = sorted({c for c in header if c and header.count(c) > 1})
        if dupes:
            raise JudgmentFileError(src, f"the CSV header repeats column(s) {', '.join(dupes)}; name each once")
        numbered = numbered[1:]
    elif "\t" in first:
        fmt = JND_LIST
    elif src.suffix.lower() == ".csv" or "," in first:
        raise JudgmentFileError(
            src,
            f"line {first_no} is not a CSV header with columns {','.join(REQUIRED_COLUMNS)} "
            f"(optional: {','.join(OPTIONAL_COLUMNS)}); add that header line",
        )
    else:
        raise JudgmentFileError(
            src,
            f"line {first_no} is neither a CSV header ref,test,label nor a tab-separated ref<TAB>test<TAB>label "
            "line; this does not look like a judgment file",
        )

    folder = src.parent.resolve()
    audio = AudioCheck()
    rows: list[Judgment] = []
    quarantine: list[QuarantinedRow] = []
    seen: dict[str, int] = {}

    def bad(no: int, raw: str, kind: str, reason: str) -> None:
        quarantine.append(QuarantinedRow(src, no, raw, kind, reason))

    for no, raw in numbered:
        if fmt == JND_LIST:
            fields = [f.strip() for f in raw.split("\t")]
            if len(fields) != 3:
                bad(no, raw, "malformed", f"{len(fields)} tab-separated field(s), expected 3: ref, test, label")
                continue
            values = dict(zip(REQUIRED_COLUMNS, fields, strict=True))
        else:
            assert header is not None
            fields = [f.strip() for f in next(csv.reader([raw]))]
            if len(fields) != len(header):
                bad(no, raw, "malformed", f"{len(fields)} comma-separated field(s), the header has {len(header)}")
                continue
            values = dict(zip(header, fields, strict=True))
        ref_text, test_text, label_text = (values[c] for c in REQUIRED_COLUMNS)
        if not ref_text or not test_text:
            bad(no, raw, "malformed", "the " + ("ref" if not ref_text else "test") + " path is empty")
            continue
        if label_text not in ("0", "1"):
            bad(no, raw, "bad-label", f"label {label_text!r} is not 0 (same) or 1 (different)")
            continue
        label = int(label_text)
        ref, kind, why = resolve_audio_path(folder, ref_text)
        if ref is None:
            bad(no, raw, kind or "path-escape", f"ref: {why}")
            continue
        test, kind, why = resolve_audio_path(folder, test_text)
        if test is None:
            bad(no, raw, kind or "path-escape", f"test: {why}")
            continue
        missing = [(name, p) for name, p in (("ref", ref), ("test", test)) if not p.exists()]
        if missing:
            bad(no, raw, "missing-audio", "; ".join(f"{name} audio {p} does not exist" for name, p in missing))
            continue
        (ref_sha, ref_err), (test_sha, test_err) = audio.check(ref), audio.check(test)
        if ref_err or test_err:
            bad(no, raw, "unreadable-audio", "; ".join(f"{n}: {e}" for n, e in (("ref", ref_err), ("test", test_err))
                                                      if e))  # fmt: skip
            continue
        assert ref_sha is not None and test_sha is not None
        if ref == test and label == 1:
            bad(no, raw, "self-pair", f"ref and test are the same file {ref} but the label says 'different'")
            continue
        worker, timestamp, condition = (values.get(c) or None for c in OPTIONAL_COLUMNS)
        jid = judgment_id(ref_sha, test_sha, label, worker, timestamp, condition)
        if jid in seen:
            bad(no, raw, "duplicate", f"same judgment as line {seen[jid]} (audio content, label, worker, "
                                      "timestamp and condition)")  # fmt: skip
            continue
        seen[jid] = no
        extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and k}
        rows.append(Judgment(jid, ref, test, ref_sha, test_sha, label, worker, timestamp, condition, src, no, extra))
    return JudgmentFile(src, fmt, hashlib.sha256(data).hexdigest(), rows, quarantine)
