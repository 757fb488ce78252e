"""A fast student of the dense protocol: DPAM's shape, anti-aliased decimation.

The dense protocol (:mod:`jndqa.metric.dense`) is stable and monotone but costs 133x the
official network's FLOPs. The student keeps the official architecture's shape (14 layers,
kernel 3, 32/64/128 channels, leaky ReLU 0.2, the per-layer channel-weighted L1 distance) and
decimates, but without aliasing and without statistics taken over a handful of time steps:

- every stride-2 layer becomes convolution at stride 1 → normalisation → leaky ReLU →
  a fixed binomial low-pass ``[1, 2, 1] / 4`` → keep every other sample ("BlurPool", Zhang 2019,
  "Making Convolutional Networks Shift-Invariant Again");
- the first ``per_signal_layers`` layers normalise each signal with its own statistics over
  time, as the official network and the dense protocol do (these layers have hundreds of steps
  or more); the deeper layers, which would have only tens of steps, use fixed per-channel
  statistics (learned, initialised from the references of the training data);
- layer ``i``'s distance term is ``mean_c |w_i[c]| · mean_t |A − B|`` over its activations
  before the low-pass, so every layer is compared at the resolution of its own input;
- long signals are scored in the dense protocol's windows (8 s, hop 4 s): each window is a clip
  of its own and the distance is the mean over windows, so the student and its teacher see the
  same material.

Input contract: mono, 22,050 Hz, int16 scale (as :func:`jndqa.metric.prepare_samples` gives),
``[L]`` or ``[N, L]``. Cost: each layer's convolution runs at its input's rate, twice the
official network's, about 2x its FLOPs per window (``benchmarks/bench_student.py`` measures it).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .network import DPAM, EPSILON, N_LAYERS, SLOPE, layer_stride

__all__ = [
    "PER_SIGNAL_LAYERS",
    "STUDENT_VERSION",
    "StudentDPAM",
    "load_student",
    "save_student",
    "student_weights",
    "student_windows",
]

STUDENT_VERSION = "dpam-dense-student-v1"

PER_SIGNAL_LAYERS = 10  # layers 0-9 have >= 344 steps in an 8 s window; 10-13 would have 172 down to 21
BLUR = (0.25, 0.5, 0.25)


def student_windows(length: int, window: int, hop: int) -> list[int]:
    """Window starts: the dense protocol's (:func:`jndqa.metric.dense.window_starts`)."""
    from .dense import window_starts

    return window_starts(length, window, hop)


class StudentDPAM(nn.Module):
    """The student network and distance (module docstring). Build it from a :class:`DPAM`
    (the official weights: its parent) with :meth:`from_teacher`, or load a trained one with
    :func:`jndqa.metric.student.load_student`."""

    def __init__(self, parent: DPAM, *, per_signal_layers: int = PER_SIGNAL_LAYERS, model_id: str = "dpam-student"):
        super().__init__()
        if parent.channel_weights is None:
            raise ValueError(f"{parent.model_id} has no per-channel weights; the student starts from scratch")
        p = copy.deepcopy(parent)
        self.kernels = p.kernels
        self.betas = p.betas
        self.channel_weights = p.channel_weights
        self.per_signal_layers = int(per_signal_layers)
        self.model_id = model_id
        fixed = range(self.per_signal_layers, N_LAYERS)
        # Fixed statistics of the deep layers: mean and log-variance per channel (set by calibrate_statistics).
        self.fixed_mean = nn.ParameterList(nn.Parameter(torch.zeros(self.kernels[i].shape[0])) for i in fixed)
        self.fixed_logvar = nn.ParameterList(nn.Parameter(torch.zeros(self.kernels[i].shape[0])) for i in fixed)
        self.register_buffer("blur", torch.tensor(BLUR, dtype=torch.float32).view(1, 1, 3), persistent=False)
        self.eval()

    # ---------------------------------------------------------------- layers
    def _norm(self, i: int, y: Tensor) -> Tensor:
        if i < self.per_signal_layers:
            mean = y.mean(-1, keepdim=True)
            var = (y - mean).square().mean(-1, keepdim=True)
            return (y - mean) * torch.rsqrt(var + EPSILON)
        k = i - self.per_signal_layers
        mean = self.fixed_mean[k][None, :, None]
        return (y - mean) * torch.exp(-0.5 * self.fixed_logvar[k])[None, :, None]

    def _blurpool(self, y: Tensor) -> Tensor:
        c = y.shape[1]
        return F.conv1d(F.pad(y, (1, 1)), self.blur.to(y.dtype).expand(c, 1, 3), stride=2, groups=c)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Each layer's activations ``[N, C, T_i]`` (before its low-pass) for ``x`` ``[N, L]``
        (int16 scale, 22,050 Hz)."""
        if x.dim() == 1:
            x = x[None]
        h = x[:, None, :].to(self.kernels[0].dtype)
        out = []
        for i in range(N_LAYERS):
            y = F.conv1d(F.pad(h, (1, 1)), self.kernels[i])
            y = F.leaky_relu(self._norm(i, y) + self.betas[i][None, :, None], SLOPE)
            out.append(y)
            h = self._blurpool(y) if layer_stride(i) == 2 else y
        return out

    def _raw_statistics(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per-signal channel means and variances of the fixed-statistics layers, for ``x``."""
        saved = self.per_signal_layers
        self.per_signal_layers = N_LAYERS
        try:
            h = x[:, None, :].to(self.kernels[0].dtype)
            stats = []
            for i in range(N_LAYERS):
                y = F.conv1d(F.pad(h, (1, 1)), self.kernels[i])
                if i >= saved:
                    stats.append((y.mean(-1), y.var(-1, unbiased=False)))
                y = F.leaky_relu(self._norm(i, y) + self.betas[i][None, :, None], SLOPE)
                h = self._blurpool(y) if layer_stride(i) == 2 else y
            return stats
        finally:
            self.per_signal_layers = saved

    @torch.no_grad()
    def calibrate_statistics(self, signals: Sequence[np.ndarray | Tensor]) -> None:
        """Set the fixed statistics to the mean, over ``signals`` (int16 scale), of each signal's
        own statistics: before training, the student then normalises as the official network
        would on average."""
        sums = None
        for s in signals:
            stats = self._raw_statistics(torch.as_tensor(np.asarray(s), dtype=torch.float32)[None])
            if sums is None:
                sums = [[m.clone(), v.clone()] for m, v in stats]
            else:
                for acc, (m, v) in zip(sums, stats, strict=True):
                    acc[0] += m
                    acc[1] += v
        n = len(signals)
        for k, (m, v) in enumerate(sums):
            self.fixed_mean[k].copy_(m[0] / n)
            self.fixed_logvar[k].copy_(torch.log(v[0] / n + EPSILON))

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

    def forward(self, ref: Tensor, tests: Tensor, *, window: int = 8 * 22050, hop: int = 4 * 22050) -> Tensor:
        """Distances ``[N]``: the mean over windows of the summed layer terms. Differentiable."""
        return self.window_terms(ref, tests, window, hop).sum(-1).mean(-1)


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
STUDENT_FORMAT = "jndqa-dpam-student/1"


def save_student(student: StudentDPAM, path, metadata: dict[str, str] | None = None):
    """Write the student's parameters as safetensors, atomically, with its layout in the metadata."""
    from pathlib import Path

    from safetensors.torch import save

    from .modelfile import atomic_write_bytes

    tensors = {k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}
    meta = {"format": STUDENT_FORMAT, "model_id": student.model_id, "per_signal_layers": str(student.per_signal_layers),
            **(metadata or {})}  # fmt: skip
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))
    return Path(path)


def load_student(path, release=None) -> StudentDPAM:
    """A student saved by :func:`save_student` (the official network gives its shape)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != STUDENT_FORMAT:
        raise ValueError(f"{path}: not a jndqa student model file (format {meta.get('format')!r})")
    student = StudentDPAM(DPAM.official("scratch", release), per_signal_layers=int(meta["per_signal_layers"]),
                          model_id=meta["model_id"])  # fmt: skip
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


def finetune(
    student: StudentDPAM,
    segments: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    epochs: int = 10,
    lr: float = 3e-4,
    seed: int = 0,
    checkpoint: Path | None = None,
    seconds: float | None = None,
    log=None,
) -> list[dict]:
    """Fine-tune every parameter of ``student`` so that its distances match the teacher's on a log
    scale. ``segments``: (reference ``[L]``, tests ``[K, L]``, teacher distances ``[K]``), int16
    scale; one Adam step per segment (its tests share the reference's activations), segments in
    a seeded order per epoch. ``checkpoint``: a safetensors file rewritten after every epoch
    (with the optimizer's step count and the epoch in its metadata); a run given an existing
    checkpoint resumes after its epoch. ``seconds``: stop after the epoch that passes this
    wall-clock budget. Returns the per-epoch history (mean training loss, seconds)."""
    import time

    from safetensors.torch import load_file

    history: list[dict] = []
    start_epoch = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_file(str(checkpoint))
        student.load_state_dict({k: v for k, v in state.items() if not k.startswith("adam.")}, strict=False)
        start_epoch = int(load_student_meta(checkpoint).get("epoch", "0"))
        history = json.loads(load_student_meta(checkpoint).get("history", "[]"))
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    t0 = time.perf_counter()
    student.train()
    for epoch in range(start_epoch, epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(segments))
        total, t_epoch = 0.0, time.perf_counter()
        for j in order:
            ref, tests, target = segments[j]
            opt.zero_grad()
            d = student(torch.as_tensor(ref, dtype=torch.float32), torch.as_tensor(tests, dtype=torch.float32))
            loss = (torch.log(d.clamp_min(1e-6)) - torch.log(torch.as_tensor(target, dtype=torch.float32))).square()
            loss = loss.mean()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": total / len(segments), "seconds": time.perf_counter() - t_epoch})
        if log:
            log(f"epoch {epoch + 1}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)")
        if checkpoint is not None:
            save_student(student, checkpoint, {"epoch": str(epoch + 1), "history": json.dumps(history)})
        if seconds is not None and time.perf_counter() - t0 > seconds:
            break
    student.eval()
    return history


def load_student_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}
