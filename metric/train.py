"""Fine-tuning DPAM on same/different judgments.

Input contract: pairs of mono float32 numpy signals at 22,050 Hz, each pair's two
signals of equal length (the shorter one zero-padded at its start, as the release
does; :func:`load_pair` does that), on the scale named by ``scale`` (``"unit"``,
[-1, 1], by default; ``"int16"`` for the model's native scale); labels 0 = same,
1 = different; one group key per pair (the reference recording's sha256, say).

Protocol: **official** (docs/metric.md §2–5): each signal goes through the
decimating network whole, normalised with its own statistics; the distance is
the sum over the 14 layers of ``mean_c |w_l[c]| · mean_t |phi_l(test) − phi_l(ref)|``.
This is the protocol the release's weights and head were trained with. (A model
fine-tuned here is also usable under ``dense``, but its head and any calibrator
are fitted to ``official`` distances.)

Modes (:data:`MODES`), all starting from a copy of the parent model:

- ``head``: only the classification head (scratch: 1→16→6→2 on the distance).
- ``channels``: the per-channel distance weights (992 values) and the head.
- ``all``: everything (kernels, betas, channel weights, head).

Loss: softmax cross-entropy of the head's two logits against the label, i.e. the
binary cross-entropy of p(different) (label 1 = different), computed from the
logits for numerical stability; mean over the batch.

Ratings (MUSHRA, MOS, preference: :class:`RankingData`) train the distance itself
through a pairwise ranking loss: every two stimuli of one reference whose listener
scores differ make a comparison (the better-rated one, the worse-rated one), and
its loss is the logistic ``softplus((d_better − d_worse) / tau)``: near zero when
the better-rated stimulus is clearly closer to the reference, ``log 2`` when the
two distances tie. ``tau`` is the median ``|d_worse − d_better|`` of the parent
over all comparisons (so the loss is scale-free; floor 1e-6), fixed for the run
and reported in ``TrainResult.extra``. JND pairs and comparisons can be combined
in one run: an epoch visits both kinds in one shuffled order, a batch's loss is
the mean over its units (a comparison's weighted by ``ranking_weight``), and the
validation loss and accuracy (a comparison is correct when the better-rated
stimulus has the smaller distance) are over the validation units of both kinds.
The ranking loss does not depend on the head, so ratings alone need ``channels``
(``all`` trains on JND pairs only). Adam. Early stopping on the
validation loss (``patience`` epochs without an improvement of ``min_delta``);
the returned model is the best epoch's. Epoch 0 is the parent itself, so a run
that never improves on it returns a copy of the parent (``best_epoch == 0``).
No dropout (the release's training graph had dropout 0.5 in the head; with a
frozen feature network and few judgments, early stopping is the regulariser).

Cost: in ``head`` and ``channels`` modes the feature network is frozen, so each
pair's per-layer, per-channel mean absolute feature differences (``[992]``: 14
layers of 32–128 channels, :func:`pair_terms`) are computed once, without
autograd, and training runs on those, far cheaper than the terms themselves.
Each reference's features are computed once and shared by its tests. ``all``
runs the network under autograd one pair at a time and accumulates the gradients
of a batch of ``batch_size`` pairs before each Adam step (the same update as a
batch, up to float summation order): single pairs, because padded batches (rows
zero-padded at their end, valid ``lengths`` passed to the network) cost more per
pair, for the padding, the masked normalisation and the larger autograd buffers.

Determinism: seeded (the validation split, the batch order: numpy
``default_rng([seed, epoch])``, one permutation per epoch, and ``torch.manual_seed``
inside a forked RNG), with ``torch.use_deterministic_algorithms(True)`` for the
duration of the run (restored afterwards; the setting is process-wide). Two runs
with the same seed, data, torch version and thread count give byte-identical
parameters; an interrupted run resumed from its checkpoint folder too.

Checkpoints: with ``checkpoint_dir`` the run writes, and only there, after every
epoch: ``epoch-NNNN.safetensors`` (the model, loadable with
:func:`jndqa.metric.load_model`), ``epoch-NNNN.adam.safetensors`` (optimizer
state) and then ``state.json`` (history, best epoch, a fingerprint of data and
settings), each written atomically; ``state.json`` is the commit point, and files
of older epochs are removed after it. Calling :func:`train` again with the same
folder, data and settings resumes after the last committed epoch (or returns the
finished result); a folder from different data or settings is refused.
Without ``checkpoint_dir`` nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .audio import equalize_lengths, load_audio
from .modelfile import atomic_write_bytes, parameter_digest, save_model, state_tensors
from .network import DPAM, INT16_SCALE, N_LAYERS, Scale, layer_channels

__all__ = [
    "MODES",
    "PROTOCOL",
    "CheckpointMismatchError",
    "EpochRecord",
    "Prediction",
    "RankingData",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "distances_from_terms",
    "head_logits",
    "load_pair",
    "pair_terms",
    "predict",
    "predict_from_terms",
    "ranking_pairs",
    "split_by_group",
    "train",
]

Mode = Literal["head", "channels", "all"]
MODES: tuple[str, ...] = ("head", "channels", "all")
PROTOCOL = "official"
#: Offsets of each layer's channels in a :func:`pair_terms` row (992 in all).
LAYER_OFFSETS: tuple[int, ...] = tuple(int(v) for v in np.cumsum([0] + [layer_channels(i) for i in range(N_LAYERS)]))
UNIT_SCALE_LIMIT = 2.0
_STATE = "state.json"


class TrainingError(ValueError):
    """Training data or settings are unusable; the message says which and what to do."""


class CheckpointMismatchError(TrainingError):
    """The checkpoint folder holds a run with other data or settings."""


# --------------------------------------------------------------------- inputs
def load_pair(ref_path: str | Path, test_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a judged pair for training: mono, 22,050 Hz, float32 on the **unit** scale.

    Decoding and resampling as :func:`jndqa.metric.load_audio` (rounded to the int16
    grid like the release, then divided by 32768, which is exact); the shorter signal
    is zero-padded at its start to the longer one's length, as the release does.
    Raises :class:`jndqa.metric.AudioLoadError` naming the file.
    """
    ref, test = equalize_lengths(load_audio(ref_path).samples, load_audio(test_path).samples)
    scale = np.float32(1.0 / INT16_SCALE)
    return ref * scale, test * scale


def _check_pairs(pairs: Sequence[tuple[Any, Any]], scale: Scale) -> list[tuple[np.ndarray, np.ndarray]]:
    if scale not in ("unit", "int16"):
        raise TrainingError(f"scale must be 'unit' or 'int16', got {scale!r}")
    out = []
    for k, (ref, test) in enumerate(pairs):
        a = np.ascontiguousarray(ref, dtype=np.float32)
        b = np.ascontiguousarray(test, dtype=np.float32)
        if a.ndim != 1 or b.ndim != 1 or a.size == 0:
            raise TrainingError(f"pair {k}: expected two non-empty mono signals [L], got {a.shape} and {b.shape}")
        if a.shape != b.shape:
            raise TrainingError(
                f"pair {k}: lengths {a.size} and {b.size} differ; equalise them first "
                "(jndqa.metric.load_pair or equalize_lengths pad the shorter one at its start, as the release does)"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise TrainingError(f"pair {k}: contains NaN or infinite samples")
        if scale == "unit" and max(np.abs(a).max(), np.abs(b).max()) > UNIT_SCALE_LIMIT:
            raise TrainingError(
                f"pair {k}: samples exceed {UNIT_SCALE_LIMIT} in magnitude, so they are not on the unit scale; "
                "pass scale='int16' if they are int16-scaled"
            )
        out.append((a, b))
    return out


def _check_labels(labels: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.size != n:
        raise TrainingError(f"{n} pairs but {y.size} labels; pass one label per pair")
    if not np.isin(y, (0, 1)).all():
        raise TrainingError("labels must be 0 (same) or 1 (different)")
    return y.astype(np.int64)


def split_by_group(
    groups: Sequence[Any] | np.ndarray, fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split pairs into (rest, held-out) index arrays so that no group is on both sides.

    ``groups``: one key per pair (the reference's sha256, say). Groups are taken in
    the order of ``sha256(f"{seed}:{key}")`` and added to the held-out side while that
    brings its pair count closer to ``fraction`` of all pairs (at least one group on
    each side). The assignment depends only on the keys, their pair counts and the
    seed, not on the order of the pairs. Use it both for the held-out test split and,
    inside :func:`train`, for the validation split.
    """
    keys = [str(g) for g in np.asarray(groups, dtype=object).reshape(-1)]
    if not 0 < fraction < 1:
        raise TrainingError(f"fraction must be in (0, 1), got {fraction}")
    counts = Counter(keys)
    if len(counts) < 2:
        raise TrainingError(f"need at least 2 distinct groups to split, got {len(counts)}; add judgments")
    order = sorted(counts, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).digest())
    target = fraction * len(keys)
    held: set[str] = set()
    size = 0
    for k in order[:-1]:
        if held and abs(size + counts[k] - target) >= abs(size - target):
            break
        held.add(k)
        size += counts[k]
    mask = np.array([k in held for k in keys])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ------------------------------------------------------------ terms, distance
def pair_terms(
    net: DPAM, pairs: Sequence[tuple[Any, Any]], *, scale: Scale = "unit", tests_per_chunk: int = 8
) -> Tensor:
    """Per-layer, per-channel mean absolute feature differences ``[N, 992]`` (float32), no autograd.

    Row ``n``, columns ``LAYER_OFFSETS[l]:LAYER_OFFSETS[l+1]`` hold
    ``mean_t |phi_l(test_n) − phi_l(ref_n)|`` per channel of layer ``l`` under the
    official protocol. They depend on the kernels and betas only, so they serve any
    channel weights and head (:func:`distances_from_terms`). Pairs as in the module
    docstring; pairs sharing a reference (same samples) share its features.
    """
    checked = _check_pairs(pairs, scale)
    out = torch.empty(len(checked), LAYER_OFFSETS[-1], dtype=torch.float32)
    by_ref: dict[bytes, list[int]] = {}
    for k, (ref, _) in enumerate(checked):
        by_ref.setdefault(hashlib.sha1(ref.tobytes()).digest() + ref.size.to_bytes(8, "little"), []).append(k)
    with torch.no_grad():
        for idx in by_ref.values():
            fr = net.features(torch.from_numpy(checked[idx[0]][0])[None], scale=scale)
            for s in range(0, len(idx), tests_per_chunk):
                chunk = idx[s : s + tests_per_chunk]
                ft = net.features(torch.from_numpy(np.stack([checked[k][1] for k in chunk])), scale=scale)
                for i in range(N_LAYERS):
                    diff = (ft.maps[i] - fr.maps[i]).abs_().mean(-1)
                    out[chunk, LAYER_OFFSETS[i] : LAYER_OFFSETS[i + 1]] = diff.float()
    return out


def distances_from_terms(net: DPAM, terms: Tensor) -> Tensor:
    """Distances ``[N]`` from :func:`pair_terms` rows with ``net``'s channel weights (differentiable)."""
    parts = []
    for i in range(N_LAYERS):
        t = terms[:, LAYER_OFFSETS[i] : LAYER_OFFSETS[i + 1]]
        if net.channel_weights is not None:
            t = t * net.channel_weights[i].abs()
        parts.append(t.mean(-1))
    return torch.stack(parts, -1).sum(-1)


def head_logits(net: DPAM, distance: Tensor) -> Tensor:
    """The classification head's two logits ``[N, 2]`` (index 1 = different) for distances ``[N]``.

    Same computation as :meth:`DPAM.p_jnd` (``softmax(logits)[:, 1]``), before the softmax.
    """
    if net.head is None:
        raise TrainingError(f"model {net.model_id} ({net.model}) has no classification head; use scratch")
    u = distance if net.head_input == "distance" else torch.sigmoid(distance)
    return net.head(u.to(net.head[0].weight.dtype)[..., None])


@dataclass
class Prediction:
    """Official-protocol distances ``[N]`` and p(different) from the model's head ``[N]``
    (None for a model without a head), as float64 numpy arrays."""

    distance: np.ndarray
    p_jnd: np.ndarray | None


def predict_from_terms(net: DPAM, terms: Tensor) -> Prediction:
    """:class:`Prediction` from :func:`pair_terms` rows (computed with ``net``'s kernels and betas)."""
    with torch.no_grad():
        d = distances_from_terms(net, terms)
        p = net.p_jnd(d)
    return Prediction(d.double().numpy(), None if p is None else p.double().numpy())


def predict(net: DPAM, pairs: Sequence[tuple[Any, Any]], *, scale: Scale = "unit") -> Prediction:
    """Score pairs under the official protocol (as training sees them); pairs as in :func:`pair_terms`."""
    return predict_from_terms(net, pair_terms(net, pairs, scale=scale))


# ------------------------------------------------------------------- ratings
@dataclass(frozen=True)
class RankingData:
    """Rated stimuli for the ranking loss (module docstring). ``terms``: ``[M, 992]`` per-channel terms
    of each (reference, stimulus) pair under the protocol being trained (:func:`pair_terms` for
    ``official``, :func:`jndqa.metric.dense.dense_channel_terms` for ``dense``); ``scores``: ``[M]`` the
    listeners' mean score of each stimulus, higher is better (MUSHRA, MOS; a preference's share of
    "preferred"); ``groups``: ``[M]`` the reference's key: only stimuli of one reference are compared.
    ``min_gap``: scores closer than this make no comparison. ``split_keys``: per stimulus, the key the
    validation split keeps together (default: ``groups``); give the reference's key that the JND pairs of
    the same run use, so that one reference's pairs and comparisons fall on the same side."""

    terms: Tensor
    scores: np.ndarray
    groups: tuple[str, ...]
    min_gap: float = 0.0
    split_keys: tuple[str, ...] | None = None

    def comparisons(self) -> np.ndarray:
        """``[K, 2]`` stimulus indices (better-rated, worse-rated): :func:`ranking_pairs`."""
        return ranking_pairs(self.scores, self.groups, self.min_gap)


def ranking_pairs(scores: Sequence[float] | np.ndarray, groups: Sequence[Any], min_gap: float = 0.0) -> np.ndarray:
    """Every (better, worse) pair of stimulus indices within a group whose scores differ by more than
    ``min_gap``, ``[K, 2]`` int64, in a deterministic order (groups in first-seen order, then index)."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise TrainingError("ratings: every stimulus needs a finite score")
    keys = [str(g) for g in groups]
    if len(keys) != len(s):
        raise TrainingError(f"ratings: {len(s)} scores but {len(keys)} group keys")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(keys):
        members.setdefault(g, []).append(i)
    out = []
    for idx in members.values():
        for a_pos, a in enumerate(idx):
            for b in idx[a_pos + 1 :]:
                if s[a] - s[b] > min_gap:
                    out.append((a, b))
                elif s[b] - s[a] > min_gap:
                    out.append((b, a))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run.

    ``lr``: Adam learning rate of the head and channel weights; ``lr_network``: of the
    kernels and betas (``all`` only). ``batch_size``: pairs per Adam step. ``epochs``:
    the most epochs; ``patience`` / ``min_delta``: early stopping on the validation
    loss. ``val_fraction``: share of the pairs, by group, held out for validation.
    """

    mode: Mode = "head"
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-2
    lr_network: float = 1e-5
    patience: int = 20
    min_delta: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TrainingError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_network > 0 and self.min_delta >= 0):
            raise TrainingError("lr and lr_network must be positive, min_delta non-negative")
        if not 0 < self.val_fraction < 1:
            raise TrainingError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochRecord:
    """One epoch: mean training loss over its batches (epoch 0: the parent's loss on the
    training split), validation loss and accuracy (threshold 0.5) after it, wall seconds."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """The outcome of :func:`train`. ``model`` is a new :class:`DPAM` (the best epoch's
    parameters); the parent is never modified."""

    model: DPAM
    model_id: str
    mode: str
    seed: int
    config: TrainConfig
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    train_index: np.ndarray
    val_index: np.ndarray
    fingerprint: str
    resumed_from: int | None = None
    scale: str = "unit"
    protocol: str = PROTOCOL
    parent_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        """Whether any epoch beat the parent on the validation loss."""
        return self.best_epoch > 0

    def hyperparameters(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "scale": self.scale, "protocol": self.protocol}

    def summary(self) -> dict[str, Any]:
        """A JSON-safe description of the run (everything but the model)."""
        return {
            "model_id": self.model_id,
            "parent": self.parent_id,
            "mode": self.mode,
            "seed": self.seed,
            "hyperparameters": self.hyperparameters(),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
            "history": [asdict(r) for r in self.history],
            "train_pairs": len(self.train_index),
            "val_pairs": len(self.val_index),
            "fingerprint": self.fingerprint,
        }


# ------------------------------------------------------------------- internals
@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _trainable(net: DPAM, mode: str) -> tuple[list[Tensor], list[Tensor]]:
    """(head + channel-weight parameters, kernel + beta parameters) trained in ``mode``."""
    assert net.head is not None
    fast = list(net.head.parameters())
    if mode in ("channels", "all") and net.channel_weights is not None:
        fast += list(net.channel_weights.parameters())
    slow = [*net.kernels.parameters(), *net.betas.parameters()] if mode == "all" else []
    return fast, slow


class _Data:
    """The training units: ``n`` JND pairs (labels with terms or signals), then ``K`` comparisons of rated
    stimuli (``rank_terms`` rows, ``comp`` ``[K, 2]`` better/worse indices, temperature ``tau``)."""

    def __init__(self, labels: np.ndarray, terms: Tensor | None, pairs: list | None, scale: Scale,
                 rank_terms: Tensor | None = None, comp: np.ndarray | None = None, tau: float = 1.0,
                 rank_weight: float = 1.0):  # fmt: skip
        self.labels = torch.from_numpy(labels)
        self.terms = terms
        self.pairs = pairs
        self.scale = scale
        self.n = len(labels)
        self.rank_terms = rank_terms
        self.comp = torch.from_numpy(comp) if comp is not None else torch.zeros(0, 2, dtype=torch.int64)
        self.tau = tau
        self.rank_weight = rank_weight

    def _rank_losses(self, net: DPAM, k: np.ndarray) -> Tensor:
        """Per-comparison losses ``softplus((d_better - d_worse) / tau)`` of comparisons ``k``."""
        assert self.rank_terms is not None
        c = self.comp[torch.from_numpy(k)]
        d = distances_from_terms(net, self.rank_terms[torch.cat([c[:, 0], c[:, 1]])])
        better, worse = d[: len(k)], d[len(k) :]
        return F.softplus((better - worse) / self.tau)

    def backward(self, net: DPAM, idx: np.ndarray) -> float:
        """Accumulate the gradient of the mean loss over the units ``idx``; return that loss."""
        jnd, ranks = idx[idx < self.n], idx[idx >= self.n] - self.n
        total = 0.0
        if len(ranks):
            loss = self.rank_weight * self._rank_losses(net, ranks).sum() / len(idx)
            loss.backward()
            total += float(loss.detach())
        if len(jnd):
            total += self._jnd_backward(net, jnd, len(idx))
        return total

    def _jnd_backward(self, net: DPAM, jnd: np.ndarray, denominator: int) -> float:
        """The JND pairs' part: cross-entropy summed over ``jnd`` / ``denominator`` (a plain mean when the
        batch holds JND pairs only)."""
        y = self.labels[torch.from_numpy(jnd)]
        share = len(jnd) / denominator
        if self.terms is not None:
            loss = F.cross_entropy(head_logits(net, distances_from_terms(net, self.terms[torch.from_numpy(jnd)])), y)
            if share != 1.0:
                loss = loss * share
            loss.backward()
            return float(loss.detach())
        assert self.pairs is not None
        total = 0.0
        for k, i in enumerate(jnd):  # one pair at a time: no padding, the network's unmasked path
            a, b = self.pairs[i]
            d = net(torch.from_numpy(a)[None], torch.from_numpy(b)[None], scale=self.scale)
            loss = F.cross_entropy(head_logits(net, d), y[k : k + 1]) / denominator
            loss.backward()
            total += float(loss.detach())
        return total

    def evaluate(self, net: DPAM, idx: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) on the units ``idx``, without autograd: a JND pair is right when p >= 0.5
        says "different" exactly when it is, a comparison when the better-rated stimulus is closer."""
        jnd, ranks = idx[idx < self.n], idx[idx >= self.n] - self.n
        loss, acc = 0.0, 0.0
        with torch.no_grad():
            if len(jnd):
                if self.terms is not None:
                    logits = head_logits(net, distances_from_terms(net, self.terms[torch.from_numpy(jnd)]))
                else:
                    assert self.pairs is not None
                    terms = pair_terms(net, [self.pairs[i] for i in jnd], scale=self.scale)
                    logits = head_logits(net, distances_from_terms(net, terms))
                y = self.labels[torch.from_numpy(jnd)]
                p = torch.softmax(logits, -1)[:, 1]
                loss = float(F.cross_entropy(logits, y))
                acc = float(((p >= 0.5).long() == y).double().mean())
            if len(ranks):
                losses = self._rank_losses(net, ranks).double()
                w = len(ranks) / len(idx)  # the units' mean over both kinds
                loss = (1 - w) * loss + w * self.rank_weight * float(losses.mean())
                acc = (1 - w) * acc + w * float((losses < math.log(2.0)).double().mean())  # d_better < d_worse
        return loss, acc


def _fingerprint(parent: DPAM, config: TrainConfig, scale: str, data: _Data, groups: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": config.to_dict(), "scale": scale, "protocol": PROTOCOL}, sort_keys=True).encode())
    if data.rank_terms is not None:
        h.update(json.dumps({"tau": data.tau, "rank_weight": data.rank_weight}).encode())
        h.update(data.rank_terms.numpy().tobytes())
        h.update(data.comp.numpy().tobytes())
    h.update(parameter_digest(parent).encode())
    h.update(data.labels.numpy().tobytes())
    h.update("\n".join(groups).encode())
    if data.terms is not None:
        h.update(data.terms.numpy().tobytes())
    else:
        assert data.pairs is not None
        for a, b in data.pairs:
            h.update(a.tobytes())
            h.update(b.tobytes())
    return h.hexdigest()


class _Checkpoints:
    """The run's folder: epoch files and the ``state.json`` commit point."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        self.fingerprint = fingerprint
        folder.mkdir(parents=True, exist_ok=True)

    def model_file(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.safetensors"

    def adam_file(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.adam.safetensors"

    def load_state(self) -> dict[str, Any] | None:
        path = self.folder / _STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointMismatchError(f"{path}: unreadable ({exc}); delete the folder or give another") from exc
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatchError(
                f"{self.folder} holds a run with other data or settings; give an empty folder to start a new run"
            )
        return state

    def commit(self, net: DPAM, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from safetensors.torch import save

        epoch = state["epoch"]
        save_model(net, self.model_file(epoch), metadata={"epoch": str(epoch), "fingerprint": self.fingerprint})
        tensors = {
            f"{pid}.{key}": value.detach().clone().contiguous()
            for pid, slot in opt.state_dict()["state"].items()
            for key, value in slot.items()
        }
        atomic_write_bytes(self.adam_file(epoch), save(tensors, metadata={"fingerprint": self.fingerprint}))
        atomic_write_bytes(self.folder / _STATE, json.dumps(state, indent=1).encode())
        keep = {epoch, state["best_epoch"]}
        for p in self.folder.glob("epoch-*.safetensors"):
            if int(p.name.split(".", 1)[0].removeprefix("epoch-")) not in keep:
                p.unlink(missing_ok=True)

    def restore(self, net: DPAM, opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Tensor]:
        """Load the last epoch into ``net`` and ``opt``; return the best epoch's parameters."""
        from safetensors.torch import load_file

        net.load_state_dict(load_file(self.model_file(state["epoch"])))
        slots: dict[int, dict[str, Tensor]] = {}
        for key, value in load_file(self.adam_file(state["epoch"])).items():
            pid, name = key.split(".", 1)
            slots.setdefault(int(pid), {})[name] = value
        opt.load_state_dict({"state": slots, "param_groups": opt.state_dict()["param_groups"]})
        return load_file(self.model_file(state["best_epoch"]))


# ------------------------------------------------------------------- training
def train(
    parent: DPAM,
    pairs: Sequence[tuple[Any, Any]] | None,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    config: TrainConfig | None = None,
    *,
    scale: Scale = "unit",
    terms: Tensor | None = None,
    model_id: str | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
    ranking: RankingData | None = None,
    ranking_weight: float = 1.0,
) -> TrainResult:
    """Fine-tune a copy of ``parent`` on judged pairs and/or rated stimuli; see the module docstring.

    ``pairs``: ``N`` (ref, test) equal-length mono float32 signals at 22,050 Hz on
    ``scale``; may be None in ``head``/``channels`` modes when ``terms``
    (:func:`pair_terms` of ``parent``, ``[N, 992]``) are given. ``labels``: ``N`` values,
    0 = same, 1 = different. ``groups``: ``N`` keys (the reference's sha256); the
    validation split (``config.val_fraction``) never splits a group. ``model_id``:
    the new model's id (default ``dpam-<kind>-ft-<first 12 hex of its parameter
    digest>``). ``progress`` is called with each :class:`EpochRecord` as it is made
    (epoch 0 first); an exception from it stops the run (resumable from
    ``checkpoint_dir``).

    ``ranking``: rated stimuli (:class:`RankingData`), trained with the pairwise ranking loss, weighted
    by ``ranking_weight``; ``pairs``/``terms`` and ``labels`` may then be empty. The training units are
    the ``N`` JND pairs followed by the ``K`` comparisons of the ratings; ``train_index`` and
    ``val_index`` index those units (below ``N``: a JND pair), and the validation split never splits a
    reference across the two sides. ``extra`` records ``units`` and ``ranking_temperature``.
    """
    config = config or TrainConfig()
    config.validate()
    mode = config.mode
    if parent.head is None:
        raise TrainingError(f"model {parent.model_id} has no classification head to train; start from scratch")
    if mode == "channels" and parent.channel_weights is None:
        raise TrainingError(f"model {parent.model_id} has no channel weights; use mode 'head' or 'all'")
    checked = None if pairs is None else _check_pairs(pairs, scale)
    n = len(checked) if checked is not None else (0 if terms is None else int(terms.shape[0]))
    comp = ranking.comparisons() if ranking is not None else np.zeros((0, 2), dtype=np.int64)
    if ranking is not None:
        if mode == "all":
            raise TrainingError("ratings train the distance through its channel weights: use mode 'channels' "
                                "(mode 'all' trains on JND pairs only)")  # fmt: skip
        if mode == "head" and n == 0:
            raise TrainingError("ratings rank distances, which the head does not change: use mode 'channels'")
        if tuple(ranking.terms.shape) != (len(ranking.scores), LAYER_OFFSETS[-1]):
            raise TrainingError(f"ratings: terms must be [{len(ranking.scores)}, {LAYER_OFFSETS[-1]}], "
                                f"got {tuple(ranking.terms.shape)}")  # fmt: skip
        if len(comp) == 0:
            raise TrainingError("ratings: no two stimuli of one reference have different scores: nothing to rank")
        if not ranking_weight > 0:
            raise TrainingError(f"ranking_weight must be positive, got {ranking_weight}")
    if n == 0 and len(comp) == 0:
        raise TrainingError("no pairs to train on; pass pairs (or, for head/channels, their terms) or ratings")
    y = _check_labels(labels, n) if n else np.zeros(0, dtype=np.int64)
    keys = [str(g) for g in np.asarray(groups, dtype=object).reshape(-1)] if n else []
    if len(keys) != n:
        raise TrainingError(f"{n} pairs but {len(keys)} group keys; pass one group key per pair")
    if mode == "all" and checked is None:
        raise TrainingError("mode 'all' trains the feature network, so it needs the pairs' signals, not terms")
    if ranking is not None and ranking.split_keys is not None and len(ranking.split_keys) != len(ranking.scores):
        raise TrainingError(f"ratings: {len(ranking.scores)} stimuli but {len(ranking.split_keys)} split keys")
    rank_keys = (ranking.split_keys or ranking.groups) if ranking is not None else ()
    unit_keys = keys + [str(rank_keys[a]) for a in comp[:, 0]]
    train_idx, val_idx = split_by_group(unit_keys, config.val_fraction, seed=config.seed)

    net = copy.deepcopy(parent)
    flags = {name: p.requires_grad for name, p in parent.named_parameters()}
    tau = 1.0
    rank_terms = None
    if ranking is not None:
        rank_terms = ranking.terms.detach().float()
        with torch.no_grad():
            d = distances_from_terms(parent, rank_terms).double().numpy()
        tau = max(float(np.median(np.abs(d[comp[:, 1]] - d[comp[:, 0]]))), 1e-6)
    with _deterministic(config.seed):
        if mode != "all":
            if terms is None and n:
                assert checked is not None
                terms = pair_terms(parent, checked, scale=scale)
            if terms is None:
                terms = torch.zeros(0, LAYER_OFFSETS[-1])
            if tuple(terms.shape) != (n, LAYER_OFFSETS[-1]):
                raise TrainingError(f"terms must be [{n}, {LAYER_OFFSETS[-1]}], got {tuple(terms.shape)}")
            data = _Data(y, terms.detach().float(), None, scale, rank_terms, comp, tau, ranking_weight)
        else:
            data = _Data(y, None, checked, scale)
        fingerprint = _fingerprint(parent, config, scale, data, unit_keys)

        for p in net.parameters():
            p.requires_grad_(False)
        fast, slow = _trainable(net, mode)
        for p in fast + slow:
            p.requires_grad_(True)
        param_groups = [{"params": fast, "lr": config.lr}]
        if slow:
            param_groups.append({"params": slow, "lr": config.lr_network})
        opt = torch.optim.Adam(param_groups)

        ckpt = _Checkpoints(Path(checkpoint_dir), fingerprint) if checkpoint_dir is not None else None
        state = ckpt.load_state() if ckpt else None
        history: list[EpochRecord] = []
        resumed_from = None
        if state is not None:
            assert ckpt is not None
            best_params = ckpt.restore(net, opt, state)
            history = [EpochRecord(**r) for r in state["history"]]
            resumed_from = int(state["epoch"])
        else:
            t0 = time.perf_counter()
            train_loss, _ = data.evaluate(net, train_idx)
            val_loss, val_acc = data.evaluate(net, val_idx)
            record = EpochRecord(0, train_loss, val_loss, val_acc, time.perf_counter() - t0)
            history.append(record)
            best_params = state_tensors(net)
            state = {"fingerprint": fingerprint, "epoch": 0, "best_epoch": 0, "best_val": val_loss,
                     "bad_epochs": 0, "finished": False, "history": [asdict(record)]}  # fmt: skip
            if ckpt:
                ckpt.commit(net, opt, state)
            if progress:
                progress(record)

        while not state["finished"]:
            epoch = state["epoch"] + 1
            t0 = time.perf_counter()
            order = np.random.default_rng([config.seed, epoch]).permutation(train_idx)
            total = 0.0
            for s in range(0, len(order), config.batch_size):
                idx = order[s : s + config.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = data.backward(net, idx)
                opt.step()
                total += loss * len(idx)
            val_loss, val_acc = data.evaluate(net, val_idx)
            record = EpochRecord(epoch, total / len(order), val_loss, val_acc, time.perf_counter() - t0)
            history.append(record)
            state["epoch"] = epoch
            state["history"].append(asdict(record))
            if val_loss < state["best_val"] - config.min_delta:
                state.update(best_epoch=epoch, best_val=val_loss, bad_epochs=0)
                best_params = state_tensors(net)
            else:
                state["bad_epochs"] += 1
            state["finished"] = epoch >= config.epochs or state["bad_epochs"] >= config.patience
            if ckpt:
                ckpt.commit(net, opt, state)
            if progress:
                progress(record)

        net.load_state_dict(best_params)
    for name, p in net.named_parameters():
        p.requires_grad_(flags[name])
        p.grad = None
    net.eval()
    net.model_id = model_id or f"dpam-{net.model}-ft-{parameter_digest(net)[:12]}"
    return TrainResult(
        model=net,
        model_id=net.model_id,
        mode=mode,
        seed=config.seed,
        config=config,
        history=history,
        best_epoch=int(state["best_epoch"]),
        stopped_early=int(state["epoch"]) < config.epochs,
        train_index=train_idx,
        val_index=val_idx,
        fingerprint=fingerprint,
        resumed_from=resumed_from,
        scale=scale,
        parent_id=parent.model_id,
        extra={"units": {"jnd": n, "comparisons": len(comp)}}
        | ({"ranking_temperature": tau, "ranking_weight": ranking_weight} if ranking is not None else {}),
    )
