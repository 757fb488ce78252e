"""Golden outputs: "did tonight's build change how it sounds?" (docs/architecture.md, "Golden outputs").

With ``golden: {keep: true}`` a night keeps every variant's decoded output as 24-bit FLAC under
``<db folder>/outputs/``, named by the sha256 of its samples (so identical outputs share one file
between runs and variants), and records them in the store's ``outputs`` table. The outputs of the
latest *accepted* run that kept any are the golden set.

With ``golden: {compare: true}`` every output of tonight is compared with the golden output of the
same item and variant (by label: a variant whose plugin control or encoder build changed is still
the same variant):

- the same build (spec id and encoder version equal to the golden's): ``identical``, decided when the
  night is planned, nothing rendered or scored (rule ``same build``);
- otherwise tonight's output is rendered; samples equal to the golden's (the sha256 of the 24-bit
  samples): ``identical`` (rule ``bit-identical``), not scored;
- otherwise DPAM(golden output, tonight's output) under the night's protocol gives the distance,
  p_jnd and the per-window series, and the change is ``audible`` or ``inaudible``: by calibrated
  p_jnd >= ``audible`` when the model carries a calibration for the protocol, else by distance >=
  ``audible_distance`` (the rule that decided is recorded with each row).

A variant or item with no golden output (new since the accepted run) is ``new``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_AUDIBLE_DISTANCE",
    "GoldenSettings",
    "decide",
    "golden_counts",
    "quantize",
    "samples_sha256",
    "write_flac",
    "write_output",
]

# The default distance at or above which an uncalibrated comparison counts as audible: the median dense
# distance (release weights) of the simulated listener's just-noticeable degradations, every family of its
# psychometric table at its 50 % threshold on six demo excerpts (0.216; quartiles 0.130 .. 0.789), rounded
# down: `benchmarks/bench_golden.py --thresholds` measures it.
DEFAULT_AUDIBLE_DISTANCE = 0.2

FULL_SCALE = 2**23  # 24-bit


@dataclass(frozen=True)
class GoldenSettings:
    """Where outputs go (``outputs_dir``) and the audibility rule (which outputs are kept and compared is
    decided per variant when the night is planned)."""

    outputs_dir: str
    audible: float = 0.5
    audible_distance: float = DEFAULT_AUDIBLE_DISTANCE


def quantize(samples: np.ndarray) -> np.ndarray:
    """``samples`` as 24-bit integers (clipped to full scale, rounded): what the kept FLAC holds, int32."""
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, (FULL_SCALE - 1) / FULL_SCALE)
    return np.round(x * FULL_SCALE).astype(np.int32)


def samples_sha256(q: np.ndarray, rate: int) -> str:
    """The identity of an output: sha256 of its rate, shape and 24-bit samples (:func:`quantize`)."""
    h = hashlib.sha256(f"{rate}:{q.shape}".encode())
    h.update(np.ascontiguousarray(q, dtype="<i4").tobytes())
    return h.hexdigest()


def write_flac(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """``samples`` clipped to full scale as FLAC (``subtype``) at ``path``, written next to it and renamed, so a
    killed run leaves no half file."""
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        sf.write(tmp, np.clip(samples, -1.0, 1.0), rate, format="FLAC", subtype=subtype)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_output(outputs_dir: str | Path, samples: np.ndarray, rate: int, *, flat: bool = False) -> dict:
    """Keep ``samples`` as 24-bit FLAC named by :func:`samples_sha256`: ``<outputs_dir>/<sha[:2]>/<sha>.flac``
    (``flat``: ``<outputs_dir>/<sha[:24]>.flac``); an existing file is reused. Returns ``sha256``, ``path``,
    ``bytes`` and the quantized samples as float (``samples``: what the file decodes to)."""
    q = quantize(samples)
    sha = samples_sha256(q, rate)
    path = Path(outputs_dir) / (f"{sha[:24]}.flac" if flat else f"{sha[:2]}/{sha}.flac")
    decoded = q.astype(np.float64) / FULL_SCALE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_flac(path, decoded, rate, "PCM_24")
    return {"sha256": sha, "path": str(path), "bytes": path.stat().st_size, "samples": decoded.astype(np.float32)}


def read_output(path: str | Path) -> tuple[np.ndarray, int]:
    """A kept output's samples (float32 ``[n, channels]``, as rendered variants are) and rate."""
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return x, rate


def decide(distance: float, p_jnd: float | None, calibrated: bool, settings: GoldenSettings) -> tuple[str, str]:
    """``(status, rule)`` of a changed output: ``audible`` or ``inaudible`` by calibrated p_jnd when
    ``calibrated``, else by distance (the release's head is nearly flat: its p_jnd says nothing)."""
    if calibrated and p_jnd is not None:
        audible = p_jnd >= settings.audible
        rule = f"calibrated p_jnd {'>=' if audible else '<'} {settings.audible:g}"
        return ("audible" if audible else "inaudible"), rule
    audible = distance >= settings.audible_distance
    return ("audible" if audible else "inaudible"), (
        f"distance {'>=' if audible else '<'} {settings.audible_distance:g} (no calibration for the protocol)"
    )


def golden_counts(rows: list[dict], labels: list[str] = ()) -> dict[str, dict]:
    """Per variant label (every one of ``labels``, and any other in ``rows``): ``{"identical", "inaudible",
    "audible", "new", "max_p_jnd", "max_distance"}`` from golden rows (``label``, ``status``, ``p_jnd``,
    ``distance``)."""

    def empty() -> dict:
        return {"identical": 0, "inaudible": 0, "audible": 0, "new": 0, "max_p_jnd": None, "max_distance": None}

    out: dict[str, dict] = {label: empty() for label in labels}
    for r in rows:
        c = out.setdefault(r["label"], empty())
        c[r["status"]] = c.get(r["status"], 0) + 1
        for key, col in (("max_p_jnd", "p_jnd"), ("max_distance", "distance")):
            if r.get(col) is not None:
                c[key] = r[col] if c[key] is None else max(c[key], r[col])
    return out


def collect_garbage(store, *, dry_run: bool = False) -> dict:
    """Remove the kept outputs (``<db folder>/outputs/**.flac``) that no accepted run refers to, keeping the
    latest run's too (it may be accepted next). Holds the store's writer lock, so no night keeps outputs
    meanwhile. Returns ``{"removed", "removed_bytes", "kept", "kept_bytes", "dry_run"}``; the ``outputs``
    rows stay (they record what a run kept), and a night never reuses a row whose file is gone."""
    root = store.path.parent / "outputs"
    runs = store.runs()
    store.acquire_writer("gc")
    try:
        keep = store.referenced_outputs(keep_runs=[runs[0]["run_id"]] if runs else [])
        removed = removed_bytes = kept = kept_bytes = 0
        for f in sorted(root.rglob("*.flac")) if root.is_dir() else []:
            rel = str(f.relative_to(store.path.parent))
            size = f.stat().st_size
            if rel in keep:
                kept, kept_bytes = kept + 1, kept_bytes + size
                continue
            removed, removed_bytes = removed + 1, removed_bytes + size
            if not dry_run:
                f.unlink()
    finally:
        store.release_writer()
    return {"removed": removed, "removed_bytes": removed_bytes, "kept": kept, "kept_bytes": kept_bytes,
            "dry_run": dry_run}  # fmt: skip
