"""Corpora: a folder scanned for audio, or a manifest CSV (``path[,tags]``).

Items are identified by the sha256 of their content; rate, channels, duration
and integrated loudness are recorded. A bad entry (a path outside the corpus
root, a symlink pointing out of it, an unreadable, empty, too short or non-audio
file, NaN or infinite samples) is a :class:`CorpusFailure` with its reason; the
rest of the corpus is kept.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["AUDIO_EXTENSIONS", "CorpusFailure", "CorpusItem", "load_item_audio", "scan_corpus"]

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".rf64", ".caf", ".mp3"}
MIN_DURATION = 0.5  # seconds: below this neither loudness (400 ms blocks) nor the metric's windows mean much


@dataclass
class CorpusItem:
    path: str  # relative to the corpus root (as given in a manifest)
    abspath: Path
    sha256: str
    rate: int
    channels: int
    frames: int
    loudness: float | None
    tags: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def row(self) -> dict:
        return {"sha256": self.sha256, "path": self.path, "rate": self.rate, "channels": self.channels,
                "duration": self.duration, "loudness": self.loudness, "tags": self.tags}  # fmt: skip


@dataclass
class CorpusFailure:
    path: str
    reason: str

    def row(self) -> dict:
        return {"item": self.path, "variant": None, "spec_id": None, "kind": "corpus", "reason": self.reason}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (corpus items, judgment audio, model files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_item_audio(path: Path) -> tuple[np.ndarray, int]:
    """Samples ``[frames, channels]`` float32 in [-1, 1] and the rate; raises ValueError with the reason."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"not readable as audio ({exc}); convert it to WAV or FLAC") from exc
    return data, int(rate)


def _loudness(data: np.ndarray, rate: int) -> float | None:
    import pyloudnorm

    if data.shape[0] < int(0.4 * rate):
        return None
    if data.shape[1] == 6:  # 5.1 (L R C LFE Ls Rs): BS.1770 leaves the LFE out
        data = data[:, [0, 1, 2, 4, 5]]
    elif data.shape[1] > 6:
        return None  # no BS.1770 channel weighting known for this layout
    value = pyloudnorm.Meter(rate).integrated_loudness(data.astype(np.float64))
    return float(value) if np.isfinite(value) else None


def _inspect(root: Path, rel: str, tags: list[str]) -> CorpusItem | CorpusFailure:
    path = root / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        try:
            path.resolve().relative_to(root.resolve())
        except ValueError:
            return CorpusFailure(rel, f"path escapes the corpus root {root}; move the file under the root")
    if not path.exists() and not path.is_symlink():
        return CorpusFailure(rel, "file not found")
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        return CorpusFailure(rel, "broken symlink")
    try:
        real.relative_to(root.resolve())
    except ValueError:
        return CorpusFailure(rel, f"resolves to {real}, outside the corpus root {root}; copy the file into the root")
    if not real.is_file():
        return CorpusFailure(rel, "not a regular file")
    if real.stat().st_size == 0:
        return CorpusFailure(rel, "empty file (0 bytes)")
    try:
        data, rate = load_item_audio(real)
    except ValueError as exc:
        return CorpusFailure(rel, str(exc))
    if data.shape[0] == 0:
        return CorpusFailure(rel, "contains no samples")
    if not np.isfinite(data).all():
        return CorpusFailure(rel, "contains NaN or infinite samples; re-export it")
    if data.shape[0] < MIN_DURATION * rate:
        return CorpusFailure(rel, f"too short ({data.shape[0]} samples, {data.shape[0] / rate:.3f} s; "
                                  f"need at least {MIN_DURATION} s)")  # fmt: skip
    return CorpusItem(
        rel, real, file_sha256(real), rate, int(data.shape[1]), int(data.shape[0]), _loudness(data, rate), tags
    )


def _manifest_entries(manifest: Path) -> Iterable[tuple[str, list[str]]]:
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{manifest}: a manifest needs a header with a 'path' column (and optional 'tags')")
        for row in reader:
            tags = [t.strip() for t in (row.get("tags") or "").split(";") if t.strip()]
            yield (row["path"] or "").strip(), tags


def scan_corpus(
    root: str | Path | None = None, manifest: str | Path | None = None
) -> tuple[list[CorpusItem], list[CorpusFailure]]:
    """Items and failures of a corpus given by a folder (``root``) or a manifest CSV.

    Manifest paths are relative to ``root`` when given, else to the manifest's folder.
    Items with identical content (same sha256) are kept once.
    """
    if manifest is not None:
        manifest = Path(manifest)
        base = Path(root) if root is not None else manifest.parent
        entries = list(_manifest_entries(manifest))
    elif root is not None:
        base = Path(root)
        if not base.is_dir():
            raise ValueError(f"{base}: corpus root is not a folder")
        entries = [
            (str(p.relative_to(base)), [])
            for p in sorted(base.rglob("*"))
            if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or p.is_symlink())
        ]
    else:
        raise ValueError("give a corpus root folder or a manifest")
    items, failures, seen = [], [], set()
    for rel, tags in entries:
        res = _inspect(base, rel, tags)
        if isinstance(res, CorpusFailure):
            failures.append(res)
        elif res.sha256 not in seen:
            seen.add(res.sha256)
            items.append(res)
    return items, failures
