"""DPAM (Manocha et al., Interspeech 2020) in PyTorch, faithful to the official release.

Input contract (``docs/metric.md`` §2): mono signals at 22,050 Hz, shape
``[N, L]`` (or ``[L]``), on the **int16 scale** (sample values in
[-32768, 32767] as floats). Passing ``scale="unit"`` multiplies [-1, 1] input by
32768 first (differentiably, without rounding). The scale is always explicit.

Network (§3–4): 14 layers of conv (kernel 3 along time, no bias, TF "SAME"
padding computed from each signal's current length) → per-signal, per-channel
normalisation over time (biased variance, epsilon 0.001, no gain) plus the
learned offset beta → leaky ReLU 0.2. Strides are 2 for layers 0–12 and 1 for 13.

Distance (§5): the sum over layers of ``mean |w_l[c] · (phi_l(ref) − phi_l(test))|``.
For ``pretrained`` there is no ``w_l``.

Signals of different lengths can share a batch: each row carries its own valid
length, the padding and statistics of every layer follow that length, and
positions past it are masked, so a row's result does not depend on its
neighbours (the official graph's batch-wide statistics are *not* reproduced:
they make one pair's score depend on the others, §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import TFCheckpoint
from .release import MODELS, checkpoint_prefix

__all__ = [
    "DPAM",
    "EPSILON",
    "N_LAYERS",
    "DPAMWeights",
    "Features",
    "layer_channels",
    "layer_lengths",
    "load_official_weights",
    "same_padding",
]

N_LAYERS = 14
EPSILON = 1e-3
SLOPE = 0.2
INT16_SCALE = 32768.0
Scale = Literal["int16", "unit"]


def layer_channels(i: int) -> int:
    """Output channels of layer ``i``: 32 · 2^(i div 5)."""
    return 32 * 2 ** (i // 5)


def layer_stride(i: int) -> int:
    return 1 if i == N_LAYERS - 1 else 2


def same_padding(n: int, stride: int, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (left, right) along time for input length ``n``."""
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def layer_lengths(n: int) -> list[int]:
    """Output length of every layer for an input of ``n`` samples."""
    out = []
    for i in range(N_LAYERS):
        n = -(-n // layer_stride(i))
        out.append(n)
    return out


@dataclass
class DPAMWeights:
    """The tensors of one official model, as numpy arrays in PyTorch layout."""

    model: str
    kernels: list[np.ndarray]  # [out, in, 3]
    betas: list[np.ndarray]  # [out]
    channel_weights: list[np.ndarray] | None  # [out], None for 'pretrained'
    head: list[tuple[np.ndarray, np.ndarray]] | None  # [(kernel [in, out], bias [out])] x 3
    source: str = ""

    @classmethod
    def from_checkpoint(cls, model: str, prefix: Path) -> DPAMWeights:
        ckpt = TFCheckpoint(prefix)
        kernels, betas, cw = [], [], []
        for i in range(N_LAYERS):
            k = ckpt[f"loss_conv_{i}/weights"]  # HWIO [1, 3, in, out]
            kernels.append(np.ascontiguousarray(k[0].transpose(2, 1, 0)))  # -> [out, in, 3]
            betas.append(ckpt[f"loss_conv_{i}/BatchNorm/beta"])
            if f"weights_{i}" in ckpt:
                cw.append(ckpt[f"weights_{i}"])
        if cw and len(cw) != N_LAYERS:
            raise ValueError(f"{prefix}: found {len(cw)} of {N_LAYERS} channel weight vectors")
        head = None
        if "dense/kernel" in ckpt:
            head = [(ckpt[f"{n}/kernel"], ckpt[f"{n}/bias"]) for n in ("dense", "dense_1", "dense_2")]
        return cls(model, kernels, betas, cw or None, head, source=str(prefix))


def load_official_weights(model: str = "scratch", release: Path | None = None) -> DPAMWeights:
    """Read one of the four official checkpoints (``scratch``, ``finetune``, ``linear_layer``, ``pretrained``)."""
    return DPAMWeights.from_checkpoint(model, checkpoint_prefix(model, release))


@dataclass
class Features:
    """Post-activation features of every layer for a batch, with each row's valid lengths.

    ``maps[l]`` is ``[N, C_l, T_l]``; ``lengths[l]`` is ``[N]`` (int64) or None
    when every row fills its buffer (the fast path).
    """

    maps: list[Tensor]
    lengths: list[Tensor | None]
    input_lengths: Tensor

    @property
    def batch_size(self) -> int:
        return self.maps[0].shape[0]


def _time_mask(lengths: Tensor, total: int, dtype: torch.dtype) -> Tensor:
    ar = torch.arange(total, device=lengths.device)
    return (ar[None, :] < lengths[:, None]).to(dtype)[:, None, :]  # [N, 1, T]


class DPAM(nn.Module):
    """The DPAM feature network and distance; usable as a metric and as a loss.

    >>> net = DPAM.official("scratch")  # doctest: +SKIP
    >>> d = net(ref, test, scale="int16")  # [N] distances  # doctest: +SKIP

    Gradients flow to both inputs. ``model_id`` names the weights (for example
    ``dpam-scratch-official``) and is stored with every result.
    """

    def __init__(self, weights: DPAMWeights, model_id: str | None = None):
        super().__init__()
        self.model = weights.model
        self.model_id = model_id or f"dpam-{weights.model}-official"
        self.kernels = nn.ParameterList(nn.Parameter(torch.from_numpy(k.copy())) for k in weights.kernels)
        self.betas = nn.ParameterList(nn.Parameter(torch.from_numpy(b.copy())) for b in weights.betas)
        self.has_channel_weights = weights.channel_weights is not None
        if weights.channel_weights is not None:
            self.channel_weights = nn.ParameterList(
                nn.Parameter(torch.from_numpy(w.copy())) for w in weights.channel_weights
            )
        else:
            self.channel_weights = None
        self.head: nn.Sequential | None = None
        if weights.head is not None:
            layers: list[nn.Module] = []
            for j, (k, b) in enumerate(weights.head):
                lin = nn.Linear(k.shape[0], k.shape[1])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(k.T.copy()))
                    lin.bias.copy_(torch.from_numpy(b.copy()))
                layers.append(lin)
                if j < len(weights.head) - 1:
                    layers.append(nn.ReLU())
            self.head = nn.Sequential(*layers)
        # The scratch head was trained on the raw distance; finetune / linear_layer on sigmoid(d) (§9).
        self.head_input: Literal["distance", "sigmoid"] = "distance" if weights.model == "scratch" else "sigmoid"
        self.eval()

    @classmethod
    def official(cls, model: str = "scratch", release: Path | None = None) -> DPAM:
        if model not in MODELS:
            raise ValueError(f"unknown DPAM model {model!r}; choose one of {', '.join(MODELS)}")
        return cls(load_official_weights(model, release))

    # ------------------------------------------------------------------ input
    @staticmethod
    def prepare(x: Tensor, scale: Scale) -> Tensor:
        """Bring ``x`` to the model's int16 scale and ``[N, L]`` shape."""
        if scale not in ("int16", "unit"):
            raise ValueError(f"scale must be 'int16' or 'unit', got {scale!r}")
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2:
            raise ValueError(f"expected a signal of shape [L] or [N, L], got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        return x * INT16_SCALE if scale == "unit" else x

    # --------------------------------------------------------------- features
    def features(self, x: Tensor, lengths: Tensor | None = None, *, scale: Scale = "int16") -> Features:
        """Features of every layer for signals ``x`` ``[N, L]``.

        ``lengths`` (``[N]``) gives each row's valid length when rows of
        different lengths share a batch; samples past it are ignored. Rows are
        left-aligned: their valid samples start at index 0.
        """
        x = self.prepare(x, scale)
        n, total = x.shape
        input_lengths = torch.full((n,), total, dtype=torch.long, device=x.device)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=x.device)
            if lengths.shape != (n,) or int(lengths.min()) < 1 or int(lengths.max()) > total:
                raise ValueError(f"lengths must be {n} values in [1, {total}], got {lengths.tolist()}")
            input_lengths = lengths
            if bool((lengths == total).all()):
                lengths = None
        h = x[:, None, :]
        maps: list[Tensor] = []
        lens: list[Tensor | None] = []
        if lengths is None and not torch.is_grad_enabled():
            hp = F.pad(h, same_padding(total, layer_stride(0)))
            for i in range(N_LAYERS):
                out, hp = self._layer_inference(i, hp, self.kernels[i].to(x.dtype), self.betas[i].to(x.dtype))
                maps.append(out)
                lens.append(None)
            return Features(maps, lens, input_lengths)
        for i in range(N_LAYERS):
            h, lengths = self._layer(i, h, lengths)
            maps.append(h)
            lens.append(lengths)
        return Features(maps, lens, input_lengths)

    def _layer_inference(self, i: int, hp: Tensor, kernel: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        """One layer without autograd on its zero-padded input ``hp``: in-place normalisation,
        written straight into the zero-padded buffer the next layer reads (saves a copy per
        layer; see benchmarks/). Returns (output ``[N, C, T]``, that padded buffer)."""
        y = F.conv1d(hp, kernel, stride=layer_stride(i))
        # Two-pass statistics (exact in float32; torch.var_mean is 15x slower here).
        y.sub_(y.mean(-1, keepdim=True))
        inv = torch.linalg.vector_norm(y, dim=-1, keepdim=True).square_().div_(y.shape[-1])
        inv.add_(EPSILON).rsqrt_()
        t = y.shape[-1]
        if i + 1 < N_LAYERS:
            nl, nr = same_padding(t, layer_stride(i + 1))
            buf = y.new_empty(y.shape[0], y.shape[1], nl + t + nr)
            if nl:
                buf[..., :nl].zero_()
            if nr:
                buf[..., nl + t :].zero_()
            out = buf[..., nl : nl + t]
            torch.mul(y, inv, out=out)
        else:
            buf = out = y.mul_(inv)
        out.add_(beta[None, :, None])
        F.leaky_relu_(out, SLOPE)
        return out, buf

    def _layer(self, i: int, h: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        stride = layer_stride(i)
        kernel = self.kernels[i].to(h.dtype)
        beta = self.betas[i].to(h.dtype)
        t_in = h.shape[-1]
        if lengths is None:  # out-of-place, for autograd (inference uses _layer_inference)
            y = F.conv1d(F.pad(h, same_padding(t_in, stride)), kernel, stride=stride)
            d = y - y.mean(-1, keepdim=True)
            inv = torch.rsqrt(d.square().mean(-1, keepdim=True) + EPSILON)
            return F.leaky_relu(d * inv + beta[None, :, None], SLOPE), None
        # Ragged batch: zero every row past its length, pick each row's own 'SAME' phase.
        h = h * _time_mask(lengths, t_in, h.dtype)
        if stride == 2:
            odd = F.pad(h, (1, 1))  # odd length: pad (1, 1)
            even = F.pad(h, (0, 2))  # even length: pad (0, 1), the extra zero is inert
            is_odd = (lengths % 2 == 1)[:, None, None]
            hp = torch.where(is_odd, odd, even)
            out_lengths = (lengths + 1) // 2
        else:
            hp = F.pad(h, (1, 1))
            out_lengths = lengths
        y = F.conv1d(hp, kernel, stride=stride)
        mask = _time_mask(out_lengths, y.shape[-1], y.dtype)
        count = out_lengths.to(y.dtype)[:, None, None]
        mean = (y * mask).sum(-1, keepdim=True) / count
        var = (((y - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        inv = torch.rsqrt(var + EPSILON)
        y = (y - mean) * inv + beta[None, :, None]
        return F.leaky_relu(y, SLOPE), out_lengths

    # --------------------------------------------------------------- distance
    def layer_terms(self, ref: Features, test: Features) -> Tensor:
        """Per-layer distance terms ``[N, 14]``; ``ref`` may hold one row shared by all tests."""
        terms = []
        for i in range(N_LAYERS):
            a, b = ref.maps[i], test.maps[i]
            diff = (b - a).abs()  # broadcast: a [1 or N, C, T]
            lens = test.lengths[i] if test.lengths[i] is not None else ref.lengths[i]
            if lens is None:
                per_channel = diff.mean(-1)  # [N, C]
            else:
                mask = _time_mask(lens, diff.shape[-1], diff.dtype)
                per_channel = (diff * mask).sum(-1) / lens.to(diff.dtype)[:, None]
            if self.channel_weights is not None:
                per_channel = per_channel * self.channel_weights[i].to(diff.dtype).abs()
            terms.append(per_channel.mean(-1))
        return torch.stack(terms, dim=-1)

    def terms_against(self, ref: Features, test: Tensor, *, scale: Scale = "int16") -> Tensor:
        """Per-layer terms ``[N, 14]`` of equal-length tests ``[N, L]`` against one reference's features.

        Inference only (no autograd). Each test layer is compared with the reference as soon as
        the next layer has read it, while it is still in cache, and then dropped: faster than
        :meth:`features` + :meth:`layer_terms` and it never holds a test's full feature set.
        """
        if torch.is_grad_enabled():
            raise RuntimeError("terms_against is for inference; use features() + layer_terms() under autograd")
        x = self.prepare(test, scale)
        if ref.lengths[0] is not None or x.shape[-1] != int(ref.input_lengths[0]):
            raise ValueError("terms_against needs tests of the reference's length (no ragged rows)")
        hp = F.pad(x[:, None, :], same_padding(x.shape[-1], layer_stride(0)))
        prev = h = None
        terms = torch.empty(x.shape[0], N_LAYERS, dtype=x.dtype)
        for i in range(N_LAYERS + 1):
            if i < N_LAYERS:
                h, hp = self._layer_inference(i, hp, self.kernels[i].to(x.dtype), self.betas[i].to(x.dtype))
            if prev is not None:  # layer i-1 has been read by layer i: compare it in place
                j = i - 1
                per_channel = prev.sub_(ref.maps[j]).abs_().mean(-1)
                if self.channel_weights is not None:
                    per_channel.mul_(self.channel_weights[j].to(x.dtype).abs())
                terms[:, j] = per_channel.mean(-1)
            prev = h
        return terms

    def distance_from_features(self, ref: Features, test: Features) -> Tensor:
        return self.layer_terms(ref, test).sum(-1)

    def forward(self, ref: Tensor, test: Tensor, *, scale: Scale, lengths: Tensor | None = None) -> Tensor:
        """Distances ``[N]`` between equal-shaped ``ref`` and ``test`` batches.

        Both are ``[N, L]`` (or ``[L]``) on the scale named by ``scale``;
        ``lengths`` marks each row's valid length for ragged batches.
        """
        if ref.shape != test.shape:
            raise ValueError(
                f"ref {tuple(ref.shape)} and test {tuple(test.shape)} differ; equalise lengths first "
                "(jndqa.metric.equalize_lengths pads the shorter signal at its start, as the release does)"
            )
        fr = self.features(ref, lengths, scale=scale)
        ft = self.features(test, lengths, scale=scale)
        return self.distance_from_features(fr, ft)

    # ------------------------------------------------------------------ head
    def p_jnd(self, distance: Tensor) -> Tensor | None:
        """Probability that a listener hears a difference, from the stored classification head.

        None for ``pretrained`` (no head). The scratch head is nearly flat
        (0.217 at d = 0, 0.218 for ref vs 2): it ranks, but barely separates.
        """
        if self.head is None:
            return None
        u = distance if self.head_input == "distance" else torch.sigmoid(distance)
        logits = self.head(u.to(self.head[0].weight.dtype)[..., None])
        return torch.softmax(logits, dim=-1)[..., 1]
