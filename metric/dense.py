"""The ``dense`` protocol: DPAM's learned weights evaluated without decimation.

This is jndqa's protocol, not the paper's. The official network decimates by 2
in 13 of its 14 layers, so its result depends on where the sampling grid falls
(a one-sample shift of the input moves it) and its last layers are normalised
over a handful of time steps. ``dense`` evaluates the same weights at every
decimation phase at once (the "algorithme à trous"):

- every convolution has stride 1; layer ``i`` is dilated by ``2**i`` (the
  spacing its taps have in the original signal), with ``2**i`` zeros of
  'SAME' padding on each side;
- each signal's features are normalised per channel over all positions
  (biased variance, epsilon 0.001), then beta is added, then leaky ReLU 0.2;
- layer ``l``'s term is the mean over all positions and channels of
  ``|w_l[c] · (A − B)|``; the distance is the sum over the 14 layers.

Long signals are scored in overlapping windows (default 8 s, hop 4 s; the last window
ends at the signal's end; a signal no longer than a window is one window). Each window is
normalised with its own statistics, like a clip of its own; the item's distance is the
length-weighted mean over windows, and the per-window series is returned. Why per window:
exact per-item statistics need the whole item's features at once (4 KB per sample: 1.4 GB for
16 s), and every layer's statistics depend on the layers below, so "two passes" would really be
fourteen. A clip no longer than a window is scored with exactly its own statistics.
``benchmarks/bench_dense.py`` measures how far the per-window distance is from the whole-item
one, and the stability of each window setting, side by side with ``official``.

Speed: a layer is three GEMMs over a time-major ``[T, C]`` layout (one per
kernel tap, each reading a contiguous row range of the zero-padded input), the
normalisation is done in place and written straight into the next layer's
padded buffer, and a test signal is compared with the reference layer by layer
while the layer is still in cache. About 240,000 multiply-adds per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import DPAM, EPSILON, N_LAYERS, SLOPE

__all__ = [
    "DenseReference",
    "dense_channel_terms",
    "dense_dilation",
    "dense_features",
    "dense_pair_channel_terms",
    "dense_pair_terms",
    "dense_terms",
    "dense_terms_autograd",
    "window_starts",
]


def dense_dilation(i: int) -> int:
    """Dilation of layer ``i`` under ``dense``: the spacing, in input samples, of its taps."""
    return 2**i


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Window starts covering ``length`` samples; the last window ends at the end.

    A signal no longer than one window is a single window of its own length.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class _Weights:
    """The network's tensors in the layout the GEMMs want, cached per dtype."""

    def __init__(self, net: DPAM, dtype: torch.dtype):
        self.taps: list[list[Tensor]] = []  # [layer][k] -> [C_in, C_out]
        self.betas: list[Tensor] = []
        self.abs_w: list[Tensor | None] = []
        with torch.no_grad():
            for i in range(N_LAYERS):
                k = net.kernels[i].detach().to(dtype)  # [out, in, 3]
                self.taps.append([k[:, :, j].t().contiguous() for j in range(3)])
                self.betas.append(net.betas[i].detach().to(dtype))
                cw = net.channel_weights
                self.abs_w.append(None if cw is None else cw[i].detach().to(dtype).abs())


def _weights(net: DPAM, dtype: torch.dtype) -> _Weights:
    cache = net.__dict__.setdefault("_jndqa_dense_weights", {})
    version = tuple(p._version for p in net.parameters())
    key = (dtype, version)
    if key not in cache:
        cache.clear()
        cache[key] = _Weights(net, dtype)
    return cache[key]


def _sum_of_squares(y: Tensor, rows: int = 16384) -> Tensor:
    """Per-column sum of squares of ``[T, C]``, in cache-sized row blocks: no ``[T, C]`` temporary
    (``vector_norm`` over dim 0 is 10x slower; ``y.square()`` doubles the layer's memory)."""
    total = torch.zeros(y.shape[1], dtype=y.dtype)
    for start in range(0, y.shape[0], rows):
        block = y[start : start + rows]
        total.add_((block * block).sum(0))
    return total


def _layer(i: int, hp: Tensor, w: _Weights, length: int) -> tuple[Tensor, Tensor]:
    """Layer ``i`` on a padded time-major input ``hp`` ``[length + 2d, C_in]``.

    Returns (output ``[length, C_out]``, the zero-padded buffer it lives in, which is
    layer ``i + 1``'s input)."""
    d = dense_dilation(i)
    taps = w.taps[i]
    if i == 0:  # one input channel: a [T, 3] patch matrix is cheap
        patches = torch.stack([hp[0:length, 0], hp[d : d + length, 0], hp[2 * d : 2 * d + length, 0]], 1)
        y = patches @ torch.cat(taps, 0)
    else:
        y = torch.mm(hp[0:length], taps[0])
        y.addmm_(hp[d : d + length], taps[1])
        y.addmm_(hp[2 * d : 2 * d + length], taps[2])
    # Two-pass statistics per channel over all positions, in place.
    y.sub_(y.mean(0))
    inv = _sum_of_squares(y).div_(length).add_(EPSILON).rsqrt_()
    if i + 1 < N_LAYERS:
        nd = dense_dilation(i + 1)
        buf = y.new_empty(length + 2 * nd, y.shape[1])
        buf[:nd].zero_()
        buf[nd + length :].zero_()
        out = buf[nd : nd + length]
        torch.addcmul(w.betas[i], y, inv, out=out)  # beta + y * inv, one pass
    else:
        buf = out = y.mul_(inv).add_(w.betas[i])
    F.leaky_relu_(out, SLOPE)
    return out, buf


def _padded_input(x: Tensor) -> Tensor:
    return F.pad(x, (1, 1))[:, None]  # [L + 2, 1], layer 0 dilation 1


def dense_features(net: DPAM, x: Tensor, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Dense features of one signal ``x`` ``[L]`` (int16 scale): 14 tensors ``[L, C_l]``.

    Inference only. Memory: about 4 KB per input sample (992 channels, float32).
    """
    if torch.is_grad_enabled():
        raise RuntimeError("dense_features is inference-only; use dense_terms_autograd for gradients")
    w = _weights(net, dtype)
    h = _padded_input(x.to(dtype))
    length = x.shape[-1]
    feats = []
    for i in range(N_LAYERS):
        out, h = _layer(i, h, w, length)
        feats.append(out)
    return feats


@dataclass
class DenseReference:
    """A reference window's dense features, kept to score many tests against it."""

    features: list[Tensor]
    length: int


def dense_terms(net: DPAM, ref: DenseReference, test: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-layer terms ``[14]`` of one test ``[L]`` against a reference's dense features.

    The test's layer ``l`` is compared with the reference as soon as layer ``l + 1``
    has read it, and then freed: a test never holds more than two layers.
    """
    if test.shape[-1] != ref.length:
        raise ValueError(f"test length {test.shape[-1]} != reference length {ref.length}")
    w = _weights(net, dtype)
    length = ref.length
    h = _padded_input(test.to(dtype))
    terms = torch.empty(N_LAYERS, dtype=dtype)
    prev: Tensor | None = None
    for i in range(N_LAYERS + 1):
        if i < N_LAYERS:
            out, h = _layer(i, h, w, length)
        if prev is not None:
            j = i - 1
            per_channel = prev.sub_(ref.features[j]).abs_().mean(0)
            if w.abs_w[j] is not None:
                per_channel.mul_(w.abs_w[j])
            terms[j] = per_channel.mean()
        if i < N_LAYERS:
            prev = out
    return terms


def dense_pair_terms(net: DPAM, ref: Tensor, test: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-layer terms ``[14]`` of one equal-length pair, both signals run layer by layer in
    lockstep: memory is a few layers of both, not the reference's full feature set (~4 KB per
    sample), which only pays when one reference serves several tests (:func:`dense_terms`)."""
    return _lockstep(net, ref, test, dtype, per_channel=False)


def dense_pair_channel_terms(net: DPAM, ref: Tensor, test: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-channel terms ``[992]`` of one equal-length pair (one window): layer ``l``'s channel ``c`` holds
    ``mean_t |A − B|``, before the channel weight. ``sum_l mean_c |w_l[c]| · row`` is
    :func:`dense_pair_terms` summed: the terms depend on the kernels and betas only, so they serve any
    channel weights (:func:`jndqa.metric.train.distances_from_terms`)."""
    return _lockstep(net, ref, test, dtype, per_channel=True)


def _lockstep(net: DPAM, ref: Tensor, test: Tensor, dtype: torch.dtype, *, per_channel: bool) -> Tensor:
    if test.shape[-1] != ref.shape[-1]:
        raise ValueError(f"test length {test.shape[-1]} != reference length {ref.shape[-1]}")
    w = _weights(net, dtype)
    length = ref.shape[-1]
    ha, hb = _padded_input(ref.to(dtype)), _padded_input(test.to(dtype))
    terms = torch.empty(N_LAYERS, dtype=dtype)
    channels: list[Tensor] = []
    prev: tuple[Tensor, Tensor] | None = None
    for i in range(N_LAYERS + 1):
        if i < N_LAYERS:
            oa, ha = _layer(i, ha, w, length)
            ob, hb = _layer(i, hb, w, length)
        if prev is not None:
            j = i - 1
            diff = prev[1].sub_(prev[0]).abs_().mean(0)
            if per_channel:
                channels.append(diff)
            else:
                if w.abs_w[j] is not None:
                    diff.mul_(w.abs_w[j])
                terms[j] = diff.mean()
        if i < N_LAYERS:
            prev = (oa, ob)
    return torch.cat(channels) if per_channel else terms


def dense_channel_terms(net: DPAM, ref: Tensor, test: Tensor, window: int, hop: int,
                        dtype: torch.dtype = torch.float32) -> Tensor:  # fmt: skip
    """Per-channel terms ``[992]`` (float64) of one mono pair ``[L]`` (int16 scale, 22,050 Hz, equal lengths)
    under ``dense`` with ``window`` / ``hop`` samples: each window's :func:`dense_pair_channel_terms`,
    averaged over the windows (equal-length windows: the length-weighted mean the scorer uses). With the
    network's channel weights they give exactly the scorer's distance of the pair
    (``distances_from_terms``), and they serve any other channel weights: what training under ``dense``
    needs, computed once per pair."""
    if test.shape[-1] != ref.shape[-1]:
        raise ValueError(f"test length {test.shape[-1]} != reference length {ref.shape[-1]}")
    length = int(ref.shape[-1])
    starts = window_starts(length, window, hop)
    span = min(window, length)
    total = None
    with torch.inference_mode():
        for s0 in starts:
            t = dense_pair_channel_terms(net, ref[s0 : s0 + span], test[s0 : s0 + span], dtype).double()
            total = t if total is None else total + t
    assert total is not None
    return total / len(starts)


def dense_terms_autograd(net: DPAM, ref: Tensor, test: Tensor) -> Tensor:
    """Differentiable dense terms ``[N, 14]`` for ``[N, L]`` int16-scale batches (no windows).

    Plain dilated ``conv1d``; slower and heavier than the inference path, for use as a loss
    on short excerpts. Gradients flow to both inputs and to the weights.
    """

    def feats(x: Tensor) -> list[Tensor]:
        h = x[:, None, :]
        out = []
        for i in range(N_LAYERS):
            d = dense_dilation(i)
            y = F.conv1d(h, net.kernels[i].to(x.dtype), padding=d, dilation=d)
            y = y - y.mean(-1, keepdim=True)
            y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + EPSILON) + net.betas[i].to(x.dtype)[None, :, None]
            h = F.leaky_relu(y, SLOPE)
            out.append(h)
        return out

    fa, fb = feats(ref), feats(test)
    terms = []
    for i in range(N_LAYERS):
        per_channel = (fb[i] - fa[i]).abs().mean(-1)
        if net.channel_weights is not None:
            per_channel = per_channel * net.channel_weights[i].to(ref.dtype).abs()
        terms.append(per_channel.mean(-1))
    return torch.stack(terms, -1)
