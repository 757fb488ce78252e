"""Functional twin of :class:`jndqa.metric.DPAM` (torchmetrics style).

>>> d = dpam_distance(ref, test, scale="unit")  # [N] distances, differentiable  # doctest: +SKIP
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from .network import DPAM, Scale

__all__ = ["dpam_distance", "dpam_p_jnd"]


@lru_cache(maxsize=4)
def _network(model: str) -> DPAM:
    return DPAM.official(model)


def dpam_distance(ref: Tensor, test: Tensor, *, scale: Scale, model: str = "scratch") -> Tensor:
    """DPAM distance between equal-shaped ``ref`` and ``test`` (``[L]`` or ``[N, L]``).

    Mono, 22,050 Hz. ``scale="int16"``: samples on the int16 scale (what the
    model was trained on); ``scale="unit"``: samples in [-1, 1], multiplied by
    32768. Differentiable with respect to both inputs; the weights stay fixed.
    """
    net = _network(model)
    for p in net.parameters():
        p.requires_grad_(False)
    return net(ref, test, scale=scale)


def dpam_p_jnd(distance: Tensor, *, model: str = "scratch") -> Tensor | None:
    """p(a listener hears a difference) from the model's stored head; None for ``pretrained``."""
    with torch.no_grad():
        return _network(model).p_jnd(distance)
