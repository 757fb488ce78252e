"""DPAM models as safetensors files: atomic save, load that rebuilds the :class:`DPAM`.

A model file holds the network's tensors under their ``state_dict`` names
(``kernels.{i}`` ``[out, in, 3]``, ``betas.{i}``, ``channel_weights.{i}``,
``head.{j}.weight`` / ``head.{j}.bias`` in PyTorch ``nn.Linear`` layout) and string
metadata: ``format`` (:data:`FORMAT`), ``model`` (the kind: ``scratch``, ``finetune``,
``linear_layer`` or ``pretrained``; it fixes the head's input, docs/metric.md §9),
``model_id``, ``head_layout`` (e.g. ``1,16,6,2``; empty without a head), and
optionally ``calibration`` (JSON of :mod:`jndqa.metric.calibration`) plus any
caller-given keys (parent, training summary, ...).

Saving is atomic: the bytes go to a temporary file in the destination folder,
which is fsynced and then renamed over the destination (``os.replace``), so a
reader sees the old file or the new one, never a partial one, and an interrupted
save leaves at most a stray ``.*.tmp`` file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .calibration import CalibrationError, Calibrator, calibrator_from_dict
from .network import DPAM, N_LAYERS, DPAMWeights, layer_channels
from .release import MODELS

__all__ = [
    "FORMAT",
    "ModelFileError",
    "atomic_write_bytes",
    "load_calibration",
    "load_calibrations",
    "load_model",
    "parameter_digest",
    "read_metadata",
    "save_model",
    "state_tensors",
]

FORMAT = "jndqa-dpam/1"
_RESERVED = ("format", "model", "model_id", "head_layout", "calibration", "calibrations")


class ModelFileError(ValueError):
    """A model file is missing, not a jndqa DPAM safetensors file, or inconsistent."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def state_tensors(net: DPAM) -> dict[str, torch.Tensor]:
    """The network's parameters by ``state_dict`` name, as detached contiguous CPU copies."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}


def parameter_digest(net: DPAM) -> str:
    """sha256 (hex) of the network's parameters (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(state_tensors(net).items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def head_layout(net: DPAM) -> str:
    if net.head is None:
        return ""
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    return ",".join(str(v) for v in [linears[0].in_features, *(m.out_features for m in linears)])


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def save_model(
    net: DPAM,
    path: str | Path,
    *,
    model_id: str | None = None,
    calibration: Calibrator | None = None,
    metadata: Mapping[str, str] | None = None,
    calibrations: Mapping[str, Calibrator] | None = None,
) -> Path:
    """Save ``net`` to ``path`` (safetensors) atomically; returns the path.

    ``model_id`` (default ``net.model_id``) is stored and restored by :func:`load_model`;
    ``calibration`` (the ``official`` protocol's) and ``calibrations`` (per protocol key: ``dense``,
    ``official``, ``student``, ``dense:w4h2``...; :func:`load_calibrations`) are stored as JSON;
    ``metadata`` adds string keys (not the reserved ``format``, ``model``, ``model_id``, ``head_layout``,
    ``calibration``, ``calibrations``).
    """
    from safetensors.torch import save

    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved; rename them")
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in extra.items()):
        raise ValueError("safetensors metadata must map str to str; serialise values first (e.g. json.dumps)")
    meta = {
        **extra,
        "format": FORMAT,
        "model": net.model,
        "model_id": model_id or net.model_id,
        "head_layout": head_layout(net),
    }
    if calibration is not None:
        meta["calibration"] = json.dumps(calibration.to_dict())
    if calibrations:
        meta["calibrations"] = json.dumps({k: c.to_dict() for k, c in sorted(calibrations.items())})
    return atomic_write_bytes(path, save(state_tensors(net), metadata=meta))


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(p, "model file not found; check the path or the model registry")
    data = p.read_bytes()
    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError) as exc:
        raise ModelFileError(p, f"not a safetensors file ({exc}); it may be truncated: save the model again") from exc
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        raise ModelFileError(p, f"format {found!r} is not {FORMAT!r}; save it with jndqa.metric.save_model")
    return tensors, meta


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a model file (``model``, ``model_id``, ``head_layout``, ...)."""
    return _read(path)[1]


def load_calibration(path: str | Path) -> Calibrator | None:
    """The ``official`` protocol's calibrator stored with a model file, or None."""
    return load_calibrations(path).get("official")


def load_calibrations(path: str | Path) -> dict[str, Calibrator]:
    """Every calibrator stored with a model file, by protocol key (:attr:`jndqa.metric.ModelRef.protocol_key`):
    ``calibrations``, and a file's single ``calibration`` (older files) as ``official``. A scorer applies
    only the calibration of the protocol it runs (a calibration is fitted to that protocol's distances)."""
    meta = read_metadata(path)
    try:
        out = {k: calibrator_from_dict(v) for k, v in json.loads(meta.get("calibrations", "{}")).items()}
        if "calibration" in meta:
            out.setdefault("official", calibrator_from_dict(json.loads(meta["calibration"])))
    except (json.JSONDecodeError, CalibrationError, AttributeError) as exc:
        raise ModelFileError(path, f"stored calibration is unreadable: {exc}") from exc
    return out


def load_model(path: str | Path) -> DPAM:
    """Rebuild the :class:`DPAM` saved by :func:`save_model` (its ``model_id`` included)."""
    tensors, meta = _read(path)
    kind = meta.get("model")
    if kind not in MODELS:
        raise ModelFileError(path, f"unknown model kind {kind!r}; expected one of {', '.join(MODELS)}")

    def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in tensors:
            raise ModelFileError(path, f"tensor {name!r} is missing")
        t = tensors[name]
        if shape is not None and tuple(t.shape) != shape:
            raise ModelFileError(path, f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
        return t.to(torch.float32).numpy()

    kernels, betas, cws = [], [], []
    for i in range(N_LAYERS):
        c_in = 1 if i == 0 else layer_channels(i - 1)
        c = layer_channels(i)
        kernels.append(get(f"kernels.{i}", (c, c_in, 3)))
        betas.append(get(f"betas.{i}", (c,)))
        if f"channel_weights.{i}" in tensors:
            cws.append(get(f"channel_weights.{i}", (c,)))
    if cws and len(cws) != N_LAYERS:
        raise ModelFileError(path, f"{len(cws)} of {N_LAYERS} channel weight vectors present")
    head = None
    layout = [int(v) for v in meta.get("head_layout", "").split(",") if v]
    if layout:
        head = []
        for j in range(len(layout) - 1):
            w = get(f"head.{2 * j}.weight", (layout[j + 1], layout[j]))
            b = get(f"head.{2 * j}.bias", (layout[j + 1],))
            head.append((np.ascontiguousarray(w.T), b))
    weights = DPAMWeights(kind, kernels, betas, cws or None, head, source=str(path))
    return DPAM(weights, model_id=meta.get("model_id"))
