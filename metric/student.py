"""A fast student of the dense protocol: DPAM's shape, anti-aliased decimation.

The dense protocol (:mod:`jndqa.metric.dense`) is the official network evaluated at every
decimation phase (the "algorithme à trous"): stable when the signal moves by a sample, but far
more expensive than the official network, which is one phase. The student keeps the official
architecture's shape (14 layers, kernel 3, 32/64/128 channels, leaky ReLU 0.2, per-signal
normalisation without scale, the per-layer channel-weighted L1 distance), starts from the
official weights, and is trained to reproduce the dense distances (:mod:`jndqa.flows.student`
trains it; :func:`finetune` and :func:`fit_channel_weights` are its steps):

- layers ``0 … dense_from − 1`` decimate without aliasing: convolution at stride 1 →
  normalisation → leaky ReLU → a fixed low-pass ``blur`` (an odd number of taps summing to 1;
  :data:`BLUR`, the binomial ``[1, 4, 6, 4, 1] / 16``, by default) → keep every other sample
  ("BlurPool", Zhang 2019, "Making Convolutional Networks Shift-Invariant Again");
- layers ``dense_from … 13`` are not decimated: layer ``i`` is dilated by ``2**(i − dense_from)``
  on the ``2**dense_from``-sample grid the BlurPool layers leave, i.e. its taps are ``2**i``
  samples apart as in the dense protocol, and it is evaluated at every point of that grid, so
  its per-signal statistics are taken over every step of the window, as the dense protocol's
  are. With ``dense_from = 0`` the student is the dense protocol itself (a test checks it);
- every layer normalises each signal with its own statistics over time (mean, biased variance,
  epsilon 0.001, then beta), as the official network and the dense protocol do;
- layer ``i``'s distance term is ``mean_c |w_i[c]| · mean_t |A − B|`` over its activations
  before the low-pass, so every layer is compared at the resolution of its own input;
- long signals are scored in the dense protocol's windows (8 s, hop 4 s): each window is a clip
  of its own and the distance is the mean over windows, so the student and its teacher see the
  same material.

Files (:func:`save_student`, :func:`load_student`): the parameters as safetensors, format
:data:`STUDENT_FORMAT`, the layout (``dense_from``, ``blur`` as a JSON list) and ``model_id``
in the metadata, with whatever provenance the trainer adds. The committed student is
:data:`STUDENT_VERSION` (:func:`student_weights`); :data:`RETIRED_STUDENTS` names the earlier
ones and why they went.

Input contract: mono, 22,050 Hz, int16 scale (as :func:`jndqa.metric.prepare_samples` gives),
``[L]`` or ``[N, L]``. Cost: the BlurPool layers run at their input's rate (twice the official
network's), the à-trous layers at ``1 / 2**dense_from`` of the sample rate
(``benchmarks/bench_student.py`` measures the speed and stability, ``benchmarks/train_student.py``
the agreement with the teacher).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .network import DPAM, EPSILON, N_LAYERS, SLOPE, layer_stride

__all__ = [
    "DENSE_FROM",
    "STUDENT_VERSION",
    "StudentDPAM",
    "load_student",
    "save_student",
    "student_weights",
    "student_windows",
]

STUDENT_VERSION = "dpam-dense-student-v3"  # v1 and v2 are retired: see RETIRED_STUDENTS
RETIRED_STUDENTS = {
    "dpam-dense-student-v1": "2026-11-30, replaced by dpam-dense-student-v2",
    "dpam-dense-student-v2": "2026-11-30, replaced by dpam-dense-student-v3",
}

DENSE_FROM = 5  # layers 5-13 are à trous on a 32-sample grid: 5,513 steps per 8 s window
BLUR = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)  # binomial, 5 taps


def student_windows(length: int, window: int, hop: int) -> list[int]:
    """Window starts: the dense protocol's (:func:`jndqa.metric.dense.window_starts`)."""
    from .dense import window_starts

    return window_starts(length, window, hop)


class StudentDPAM(nn.Module):
    """The student network and distance (module docstring). Build it from a :class:`DPAM`
    (the official weights: its parent) with :meth:`from_teacher`, or load a trained one with
    :func:`jndqa.metric.student.load_student`."""

    def __init__(
        self,
        parent: DPAM,
        *,
        dense_from: int = DENSE_FROM,
        blur: Sequence[float] = BLUR,
        model_id: str = "dpam-student",
    ):
        super().__init__()
        if parent.channel_weights is None:
            raise ValueError(f"{parent.model_id} has no per-channel weights; the student starts from scratch")
        if not 0 <= dense_from <= N_LAYERS:
            raise ValueError(f"dense_from must be 0-{N_LAYERS}, got {dense_from}")
        p = copy.deepcopy(parent)
        self.kernels = p.kernels
        self.betas = p.betas
        self.channel_weights = p.channel_weights
        self.dense_from = int(dense_from)
        self.model_id = model_id
        if len(blur) % 2 != 1 or abs(sum(blur) - 1) > 1e-6:
            raise ValueError(f"blur must be an odd number of taps summing to 1, got {tuple(blur)}")
        self.register_buffer("blur", torch.tensor(blur, dtype=torch.float32).view(1, 1, -1), persistent=False)
        self.eval()

    # ---------------------------------------------------------------- layers
    @staticmethod
    def _norm(y: Tensor) -> Tensor:
        mean = y.mean(-1, keepdim=True)
        var = (y - mean).square().mean(-1, keepdim=True)
        return (y - mean) * torch.rsqrt(var + EPSILON)

    def _blurpool(self, y: Tensor, fast: bool = False) -> Tensor:
        c, taps = y.shape[1], self.blur.shape[-1]
        kernel = self.blur.to(y.dtype).expand(c, 1, taps)
        if fast:  # the convolution pads: no padded copy
            return F.conv1d(y, kernel, stride=2, padding=taps // 2, groups=c)
        return F.conv1d(F.pad(y, (taps // 2, taps // 2)), kernel, stride=2, groups=c)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Each layer's activations ``[N, C, T_i]`` (before its low-pass) for ``x`` ``[N, L]``
        (int16 scale, 22,050 Hz). Under ``torch.inference_mode`` (the scorer's) the layers run
        as :meth:`_layer_inference`; otherwise (autograd, and ``torch.no_grad`` in training)
        as the student was trained, so training reproduces to the bit."""
        if x.dim() == 1:
            x = x[None]
        h = x[:, None, :].to(self.kernels[0].dtype)
        fast = torch.is_inference_mode_enabled()
        out = []
        for i in range(N_LAYERS):
            d = 1 if i < self.dense_from else 2 ** (i - self.dense_from)
            if fast:
                y = self._layer_inference(i, h, d)
            else:
                y = F.conv1d(F.pad(h, (d, d)), self.kernels[i], dilation=d)
                y = F.leaky_relu(self._norm(y) + self.betas[i][None, :, None], SLOPE)
            out.append(y)
            h = self._blurpool(y, fast) if i < self.dense_from and layer_stride(i) == 2 else y
        return out

    def _layer_inference(self, i: int, h: Tensor, d: int) -> Tensor:
        """Layer ``i`` without autograd: the trained layer's values up to the order of float
        summation (a test compares them in float64), in fewer passes over the activations, in
        place, in the student's dtype. Layer 0 (one input channel at the full rate: the most
        expensive layer to run, not to compute) is one convolution: each channel's mean and
        variance over time follow from the 3 x 3 covariance of the input's three shifted,
        centred copies (in float64), so the normalisation and beta fold into per-signal kernels
        and biases."""
        beta = self.betas[i]
        if i == 0:
            n, length = h.shape[0], h.shape[-1]
            w = self.kernels[0][:, 0, :]  # [C, 3]
            xp = F.pad(h[:, 0].double(), (1, 1))
            taps = torch.stack([xp[:, j : j + length] for j in range(3)], 1)  # [N, 3, L]
            m = taps.mean(-1)  # [N, 3]
            c = taps - m[..., None]
            cov = c @ c.transpose(1, 2) / length  # [N, 3, 3]
            wd = w.double()
            scale = torch.rsqrt(torch.einsum("ck,nkj,cj->nc", wd, cov, wd) + EPSILON)  # [N, C]
            bias = (beta.double()[None] - (m @ wd.T) * scale).to(w.dtype)
            kernels = (w[None] * scale.to(w.dtype)[..., None]).reshape(-1, 1, 3)  # [N·C, 1, 3]
            y = F.conv1d(h.reshape(1, n, length), kernels, bias.reshape(-1), padding=1, groups=n)
            return F.leaky_relu_(y.reshape(n, -1, length), SLOPE)
        y = F.conv1d(h, self.kernels[i], padding=d, dilation=d)
        y.sub_(y.mean(-1, keepdim=True))
        scale = (y * y).mean(-1, keepdim=True).add_(EPSILON).rsqrt_()
        return F.leaky_relu_(y.mul_(scale).add_(beta[None, :, None]), SLOPE)

    # --------------------------------------------------------------- distance
    def layer_terms(self, ref: list[Tensor], test: list[Tensor]) -> Tensor:
        """Per-layer terms ``[N, 14]``; ``ref`` may hold one row shared by all tests."""
        terms = []
        for i in range(N_LAYERS):
            per_channel = (test[i] - ref[i]).abs().mean(-1) * self.channel_weights[i].abs()
            terms.append(per_channel.mean(-1))
        return torch.stack(terms, -1)

    def window_terms(self, ref: Tensor, tests: Tensor, window: int, hop: int) -> Tensor:
        """Per-window, per-layer terms ``[N, windows, 14]`` of tests ``[N, L]`` against ``ref``
        ``[L]`` (reference activations computed once per window)."""
        length = ref.shape[-1]
        starts = student_windows(length, window, hop)
        span = min(window, length)
        out = []
        for s0 in starts:
            a = self.activations(ref[None, s0 : s0 + span])
            b = self.activations(tests[:, s0 : s0 + span])
            out.append(self.layer_terms(a, b))
        return torch.stack(out, 1)

    def layer_distances(self, ref: Tensor, tests: Tensor, *, window: int = 8 * 22050, hop: int = 4 * 22050) -> Tensor:
        """Per-layer terms ``[N, 14]``, each the mean over windows. Differentiable."""
        return self.window_terms(ref, tests, window, hop).mean(1)

    def forward(self, ref: Tensor, tests: Tensor, *, window: int = 8 * 22050, hop: int = 4 * 22050) -> Tensor:
        """Distances ``[N]``: the mean over windows of the summed layer terms. Differentiable."""
        return self.layer_distances(ref, tests, window=window, hop=hop).sum(-1)


# ------------------------------------------------------------------- training
@torch.no_grad()
def channel_terms(student: StudentDPAM, ref: Tensor, tests: Tensor, *, window: int = 8 * 22050,
                  hop: int = 4 * 22050) -> Tensor:  # fmt: skip
    """Unweighted per-channel terms ``[N, 992]``: for each layer and channel, the mean over the
    student's windows of ``mean_t |A − B|``. The distance is ``Σ_i mean_c |w_i[c]| · term``."""
    length = ref.shape[-1]
    starts = student_windows(length, window, hop)
    span = min(window, length)
    total = None
    for s0 in starts:
        a = student.activations(ref[None, s0 : s0 + span])
        b = student.activations(tests[:, s0 : s0 + span])
        t = torch.cat([(b[i] - a[i]).abs().mean(-1) for i in range(N_LAYERS)], -1)
        total = t if total is None else total + t
    return total / len(starts)


def _layer_slices(student: StudentDPAM) -> list[slice]:
    sizes = [w.shape[0] for w in student.channel_weights]
    edges = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def fit_channel_weights(
    student: StudentDPAM, terms: Tensor, teacher_layers: Tensor, *, steps: int = 2000, lr: float = 0.02,
    seed: int = 0,
) -> list[float]:  # fmt: skip
    """Fit the student's per-channel weights so that its per-layer terms match the teacher's on a
    log scale (loss: mean squared log ratio per layer, plus that of the summed distance, which
    ranks pairs). ``terms``: :func:`channel_terms` ``[N, 992]``; ``teacher_layers``: the teacher's
    per-layer terms ``[N, 14]``. Full-batch Adam, deterministic. Returns the loss history."""
    torch.manual_seed(seed)
    slices = _layer_slices(student)
    logw = [torch.log(w.detach().abs().clamp_min(1e-6)).clone().requires_grad_(True) for w in student.channel_weights]
    opt = torch.optim.Adam(logw, lr=lr)
    target = torch.log(teacher_layers.clamp_min(1e-9))
    target_total = torch.log(teacher_layers.sum(-1).clamp_min(1e-9))
    history = []
    for _ in range(steps):
        opt.zero_grad()
        layers = torch.stack([(terms[:, sl] * torch.exp(lw)).mean(-1) for sl, lw in zip(slices, logw, strict=True)], -1)
        loss = (torch.log(layers.clamp_min(1e-9)) - target).square().mean()
        loss = loss + (torch.log(layers.sum(-1).clamp_min(1e-9)) - target_total).square().mean()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        for w, lw in zip(student.channel_weights, logw, strict=True):
            w.copy_(torch.exp(lw))
    return history


def distances_from_terms(student: StudentDPAM, terms: Tensor) -> Tensor:
    """Distances ``[N]`` from :func:`channel_terms` and the student's channel weights."""
    slices = _layer_slices(student)
    weights = student.channel_weights
    return sum((terms[:, sl] * w.detach().abs()).mean(-1) for sl, w in zip(slices, weights, strict=True))


# ------------------------------------------------------------------- files
STUDENT_FORMAT = "jndqa-dpam-student/2"  # BlurPool layers, then à trous; layout in the metadata


def save_student(student: StudentDPAM, path, metadata: dict[str, str] | None = None):
    """Write the student's parameters as safetensors, atomically, with its layout in the metadata."""
    from pathlib import Path

    from safetensors.torch import save

    from .modelfile import atomic_write_bytes

    tensors = {k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}
    meta = {"format": STUDENT_FORMAT, "model_id": student.model_id, "dense_from": str(student.dense_from),
            "blur": json.dumps(student.blur.flatten().tolist()), **(metadata or {})}  # fmt: skip
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))
    return Path(path)


def load_student(path, release=None) -> StudentDPAM:
    """A student saved by :func:`save_student` (the official network gives its shape)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != STUDENT_FORMAT or not meta.get("blur"):
        raise ValueError(
            f"{path}: not a student model file this version reads (format {meta.get('format')!r}, expected "
            f"{STUDENT_FORMAT!r} with a 'blur' layout); retrain it with benchmarks/train_student.py or use "
            "the committed student"
        )
    layout = {"dense_from": int(meta["dense_from"]), "blur": tuple(json.loads(meta["blur"]))}
    student = StudentDPAM(DPAM.official("scratch", release), model_id=meta["model_id"], **layout)
    student.load_state_dict(load_file(str(path)))
    student.metadata = meta
    return student.eval()


def student_weights() -> Path:
    """The committed student's weights (package data of ``jndqa.metric``)."""
    from pathlib import Path

    path = Path(__file__).parent / "weights" / f"{STUDENT_VERSION}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the student's weights are missing; `benchmarks/train_student.py` writes them")
    return path


def reference_pairs(seconds: float = 3.0, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generated pairs whose student scores are recorded next to the committed weights (and
    checked by the tests): a harmonic tone with vibrato against itself plus white noise at 40,
    30, 20 and 10 dB SNR. Mono, 22,050 Hz, int16 scale, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 22050)) / 22050
    phase = 2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t)
    ref = sum(np.sin(h * phase) / h for h in range(1, 8)) * 6000.0
    pairs = []
    for snr in (40, 30, 20, 10):
        noise = rng.standard_normal(t.size)
        noise *= np.sqrt(np.mean(ref**2) / np.mean(noise**2) * 10 ** (-snr / 10))
        pairs.append((np.round(ref).astype(np.float32), np.round(ref + noise).astype(np.float32)))
    return pairs


def _segment_loss(student: StudentDPAM, segment, layer_weight: float) -> Tensor:
    """The fine-tuning loss of one segment's tests (see :func:`finetune`)."""
    ref, tests, target, target_layers = segment
    layers = student.layer_distances(
        torch.as_tensor(ref, dtype=torch.float32), torch.as_tensor(tests, dtype=torch.float32)
    )
    log_d = torch.log(layers.sum(-1).clamp_min(1e-9))
    loss = (log_d - torch.log(torch.as_tensor(target, dtype=torch.float32))).square().mean()
    if layer_weight:
        log_t = torch.log(torch.as_tensor(target_layers, dtype=torch.float32).clamp_min(1e-9))
        loss = loss + layer_weight * (torch.log(layers.clamp_min(1e-9)) - log_t).square().mean()
    return loss


def finetune(
    student: StudentDPAM,
    segments: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    epochs: int = 10,
    layer_weight: float = 0.5,
    lr: float = 3e-4,
    seed: int = 0,
    validation: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = (),
    checkpoint: Path | None = None,
    seconds: float | None = None,
    log=None,
) -> list[dict]:
    """Fine-tune every parameter of ``student`` so that its distances match the teacher's on a log
    scale. ``segments``: (reference ``[L]``, tests ``[K, L]``, teacher distances ``[K]``, teacher
    per-layer terms ``[K, 14]``), int16 scale. Loss per test: ``(log d − log D)²`` plus
    ``layer_weight`` times the mean over the 14 layers of ``(log d_i − log D_i)²`` (the per-layer
    terms are 14 targets per pair instead of one; the log makes the loss scale-free, so pairs of
    every severity count alike and ranks follow). One Adam step per segment (its tests share the
    reference's activations), segments in a seeded order per epoch; the learning rate decays from
    ``lr`` along a cosine over ``epochs``.

    ``validation``: segments of other recordings; their loss is measured after every epoch and the
    student ends with the parameters of the epoch where it was lowest (early stopping: the
    training loss keeps falling after the held-out agreement has stopped improving).
    ``checkpoint``: a safetensors file rewritten after every epoch (the epoch and history in its
    metadata; the best epoch's parameters in ``<checkpoint>.best``, Adam's moments in
    ``<checkpoint>.adam``); a run given an existing checkpoint resumes after its epoch exactly as
    if it had not stopped (a test checks it). ``seconds``: stop after the epoch
    that passes this wall-clock budget. Returns the per-epoch history (training and validation
    loss, learning rate, seconds)."""
    import time

    from safetensors.torch import load_file, save

    from .modelfile import atomic_write_bytes

    history: list[dict] = []
    start_epoch = 0
    best_path = None if checkpoint is None else Path(str(checkpoint) + ".best")
    best: dict | None = None
    adam_path = None if checkpoint is None else Path(str(checkpoint) + ".adam")
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    if checkpoint is not None and Path(checkpoint).exists():
        student.load_state_dict(load_file(str(checkpoint)))
        meta = load_student_meta(checkpoint)
        start_epoch, history = int(meta.get("epoch", "0")), json.loads(meta.get("history", "[]"))
        if best_path.exists():
            best = {"loss": float(load_student_meta(best_path)["validation_loss"]), "state": load_file(str(best_path))}
        if adam_path.exists() and load_student_meta(adam_path).get("epoch") == str(start_epoch):
            moments = load_file(str(adam_path))
            state = {j: {k: moments[f"{j}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")} for j in range(len(params))}
            opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    t0 = time.perf_counter()
    student.train()
    for epoch in range(start_epoch, epochs):
        for group in opt.param_groups:  # cosine decay over the epochs (a function of the epoch: resumable)
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        order = np.random.default_rng([seed, epoch]).permutation(len(segments))
        total, t_epoch = 0.0, time.perf_counter()
        for j in order:
            opt.zero_grad()
            loss = _segment_loss(student, segments[j], layer_weight)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        entry = {"epoch": epoch + 1, "loss": total / len(segments), "lr": opt.param_groups[0]["lr"]}
        if validation:
            with torch.no_grad():
                entry["validation_loss"] = sum(
                    float(_segment_loss(student, v, layer_weight)) for v in validation
                ) / len(validation)
            if best is None or entry["validation_loss"] < best["loss"]:
                state = {k: v.detach().clone() for k, v in student.state_dict().items()}
                best = {"loss": entry["validation_loss"], "state": state}
                if best_path is not None:
                    save_student(student, best_path, {"epoch": str(epoch + 1), "validation_loss": repr(best["loss"])})
        entry["seconds"] = time.perf_counter() - t_epoch
        history.append(entry)
        if log:
            v = f", validation {entry['validation_loss']:.4f}" if validation else ""
            log(f"epoch {epoch + 1}: loss {entry['loss']:.4f}{v} ({entry['seconds']:.0f} s)")
        if checkpoint is not None:
            moments = {
                f"{j}.{k}": v.detach().clone() for j, st in opt.state_dict()["state"].items() for k, v in st.items()
            }
            atomic_write_bytes(adam_path, save(moments, metadata={"epoch": str(epoch + 1)}))
            save_student(student, checkpoint, {"epoch": str(epoch + 1), "history": json.dumps(history)})
        if seconds is not None and time.perf_counter() - t0 > seconds:
            break
    if best is not None:
        student.load_state_dict(best["state"])
        if log:
            log(f"kept the parameters of the epoch with the lowest validation loss ({best['loss']:.4f})")
    student.eval()
    return history


def load_student_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}
