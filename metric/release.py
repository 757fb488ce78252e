"""Where the official DPAM release lives, and the set-up step that fetches it.

The official weights, sample audio and JND judgment lists ship in the
``dpam==0.0.4`` *source* package on the package index. That package cannot be
imported (it needs TensorFlow 1), so the set-up step (``jndqa setup``, run by
``make demo`` and ``make test``) downloads the sdist with pip, checks its
sha256, and unpacks the files jndqa needs into a cache folder. Nothing here
downloads at run time: :func:`find_release` only looks on disk and, when the
files are missing, raises :class:`ReleaseNotFoundError` saying how to fetch them.

Search order for the release folder:

1. ``$JNDQA_DPAM_DIR`` (a folder holding ``pre-model/``);
2. ``<cache>/dpam-0.0.4`` where ``<cache>`` is ``$JNDQA_CACHE``, else
   ``$XDG_CACHE_HOME/jndqa``, else ``~/.cache/jndqa``;
3. an installed ``dpam`` distribution's package folder (found without importing it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = [
    "DPAM_VERSION",
    "MODELS",
    "SDIST_SHA256",
    "ReleaseNotFoundError",
    "SetupError",
    "cache_dir",
    "checkpoint_prefix",
    "fetch_release",
    "file_sha256",
    "find_release",
    "sample_audio",
]

DPAM_VERSION = "0.0.4"
SDIST_NAME = f"dpam-{DPAM_VERSION}.tar.gz"
# sha256 of dpam-0.0.4.tar.gz as served by the package index (measured 2026-11-29).
SDIST_SHA256 = "af9eac198800d27f2c65b2a7f27fbe7bda146eef229bcc1a70bd2d20889e190e"

# Official model name -> checkpoint prefix inside the release folder.
MODELS: dict[str, str] = {
    "scratch": "pre-model/scratch_loss/my_test_model",
    "finetune": "pre-model/finetune_loss/my_test_model",
    "linear_layer": "pre-model/linear_layer_loss/my_test_model",
    "pretrained": "pre-model/pretrained_loss/loss_model.ckpt",
}

# What is unpacked from the sdist (path prefixes inside dpam-0.0.4/).
_KEEP = (
    "LICENSE",
    "README.md",
    "sample_audio/",
    "dataset/",
    *(f"{prefix}." for prefix in MODELS.values()),
)


class ReleaseNotFoundError(FileNotFoundError):
    """The official DPAM release files are not on disk."""


class SetupError(RuntimeError):
    """The set-up step could not fetch or unpack the official release.

    ``download_failed`` is true when pip could not download the package (no
    package index reachable); false for a corrupted or unexpected archive.
    """

    def __init__(self, message: str, *, download_failed: bool = False):
        super().__init__(message)
        self.download_failed = download_failed


def cache_dir() -> Path:
    """jndqa's cache folder (not created here)."""
    if os.environ.get("JNDQA_CACHE"):
        return Path(os.environ["JNDQA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jndqa"


def _has_models(folder: Path) -> bool:
    return all(Path(f"{folder / p}.index").is_file() for p in MODELS.values())


def _candidates() -> list[Path]:
    out = []
    if os.environ.get("JNDQA_DPAM_DIR"):
        out.append(Path(os.environ["JNDQA_DPAM_DIR"]).expanduser())
    out.append(cache_dir() / f"dpam-{DPAM_VERSION}")
    try:
        spec = importlib.util.find_spec("dpam")  # locates, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        out.extend(Path(p) for p in spec.submodule_search_locations)
    return out


def find_release() -> Path:
    """The folder of the official release; raises :class:`ReleaseNotFoundError` with the fix."""
    tried = _candidates()
    for folder in tried:
        if _has_models(folder):
            return folder
    raise ReleaseNotFoundError(
        "the official DPAM weights (dpam==0.0.4) were not found in: "
        + ", ".join(str(p) for p in tried)
        + ". Fetch them once with `jndqa setup` (or `make demo` / `make test`), "
        "or point $JNDQA_DPAM_DIR at an unpacked dpam-0.0.4 source tree."
    )


def checkpoint_prefix(model: str, release: Path | None = None) -> Path:
    if model not in MODELS:
        raise ValueError(f"unknown DPAM model {model!r}; choose one of {', '.join(MODELS)}")
    return (release or find_release()) / MODELS[model]


def sample_audio(name: str, release: Path | None = None) -> Path:
    """Path of a sample file shipped with the release: ``ref.wav``, ``2.wav`` or ``4.wav``."""
    path = (release or find_release()) / "sample_audio" / name
    if not path.is_file():
        raise ReleaseNotFoundError(f"{path}: sample audio missing; re-run `jndqa setup`")
    return path


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_release(dest: Path | None = None, *, sdist: Path | None = None, force: bool = False) -> Path:
    """Set-up step: download ``dpam==0.0.4`` (sdist) with pip, verify it, unpack what jndqa needs.

    ``dest`` defaults to ``<cache>/dpam-0.0.4``. A local ``sdist`` file can be
    given instead of downloading. Returns the release folder. Idempotent: an
    existing complete folder is kept unless ``force``.
    """
    dest = Path(dest) if dest else cache_dir() / f"dpam-{DPAM_VERSION}"
    if _has_models(dest) and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jndqa-setup-", dir=dest.parent) as tmp:
        tmpdir = Path(tmp)
        if sdist is None:
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "-q", f"dpam=={DPAM_VERSION}", "-d", str(tmpdir),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            sdist = tmpdir / SDIST_NAME
            if proc.returncode != 0 or not sdist.is_file():
                raise SetupError(
                    f"pip could not download dpam=={DPAM_VERSION} from the package index "
                    f"(exit {proc.returncode}): {proc.stderr.strip()[-800:]}\n"
                    "Check the package index is reachable, or download the file elsewhere and run "
                    "`jndqa setup --sdist dpam-0.0.4.tar.gz`.",
                    download_failed=True,
                )
        digest = file_sha256(Path(sdist))
        if digest != SDIST_SHA256:
            raise SetupError(
                f"{sdist}: sha256 {digest} does not match the known dpam {DPAM_VERSION} sdist "
                f"({SDIST_SHA256}); the file is corrupted or not the official release"
            )
        staging = tmpdir / "release"
        root = f"dpam-{DPAM_VERSION}/"
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(root):
                    continue
                rel = member.name[len(root) :]
                if not rel.startswith(_KEEP) or ".." in Path(rel).parts or rel.endswith(".meta"):
                    continue
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not _has_models(staging):
            raise SetupError(f"{sdist}: the archive lacks the expected checkpoints")
        (staging / "SOURCE").write_text(f"dpam=={DPAM_VERSION} sdist sha256 {SDIST_SHA256}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)  # atomic on one file system
    return dest
