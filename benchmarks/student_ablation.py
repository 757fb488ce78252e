"""Why the student low-passes before it decimates: the official weights, untrained, as a
"partial dense" network.

    .venv/bin/python benchmarks/student_ablation.py --corpus demo-work/corpus --db student/teacher.duckdb

On the teacher pairs of :mod:`jndqa.flows.student` (same corpus, seed, segments and cache;
nothing is recomputed when the cache is warm; held out: the items whose path's sha256 is 0 mod
4), the official weights are evaluated without any training as a "partial dense" network:
layers ``0 … k − 1`` decimated at one phase, as the official network does, and layers ``k … 13``
à trous on the ``2**k``-sample grid (the dense protocol at ``1 / 2**k`` of its positions).
Printed per ``k``: held-out agreement with the dense teacher (Spearman, median relative error)
and the relative change of the distance when both signals lose their first sample (a one-sample
shift moves the decimation phase). The README's "The fast student" quotes the result.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np


def partial_dense_terms(net, ref, tests, k: int):
    """Per-layer terms ``[N, 14]`` of the official weights, decimated below layer ``k`` and à trous
    from it; ``ref`` ``[L]``, ``tests`` ``[N, L]``, int16 scale."""
    import torch
    import torch.nn.functional as F

    from jndqa.metric.network import EPSILON, N_LAYERS, SLOPE

    def features(x):
        h, out = x[:, None, :], []
        for j in range(N_LAYERS):
            if j < k:
                y = F.conv1d(F.pad(h, (1, 1)), net.kernels[j], stride=2)
            else:
                d = 2 ** (j - k)
                y = F.conv1d(F.pad(h, (d, d)), net.kernels[j], dilation=d)
            mean = y.mean(-1, keepdim=True)
            y = (y - mean) * torch.rsqrt((y - mean).square().mean(-1, keepdim=True) + EPSILON)
            h = F.leaky_relu(y + net.betas[j][None, :, None], SLOPE)
            out.append(h)
        return out

    with torch.no_grad():
        a = features(torch.as_tensor(ref, dtype=torch.float32)[None])
        b = features(torch.as_tensor(tests, dtype=torch.float32))
        w = [c.abs() for c in net.channel_weights]
        return torch.stack([((b[j] - a[j]).abs().mean(-1) * w[j]).mean(-1) for j in range(N_LAYERS)], -1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--db", type=Path, required=True, help="the teacher cache of benchmarks/train_student.py")
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--degradations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 6])
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from jndqa.flows.student import make_specs, teacher_scores
    from jndqa.metric import DPAM
    from jndqa.store import Store

    items = sorted(str(p) for p in args.corpus.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    specs = make_specs(items, seed=args.seed, segments=args.segments, degradations=args.degradations)
    data = teacher_scores(Store(args.db), specs)
    held = np.array([int(hashlib.sha256(s.path.encode()).hexdigest(), 16) % 4 == 0 for s in specs])
    teacher = data["distance"]
    net = DPAM.official("scratch")
    torch.manual_seed(args.seed)
    segments: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        if held[i]:
            segments.setdefault((s.item, s.start, s.length), []).append(i)
    print(f"teacher data: {len(specs)} pairs, hash {data['data_hash'][:16]}; held out: {int(held.sum())} pairs")
    for k in args.k:
        d, shifted = np.zeros(len(specs)), np.zeros(len(specs))
        for idx in segments.values():
            ref = data["ref"][idx[0]].astype(np.float32)
            tests = np.stack([data["test"][i] for i in idx]).astype(np.float32)
            d[idx] = partial_dense_terms(net, ref, tests, k).sum(-1).numpy()
            shifted[idx] = partial_dense_terms(net, ref[1:], tests[:, 1:], k).sum(-1).numpy()
        rel = np.abs(d[held] / teacher[held] - 1)
        change = np.abs(shifted[held] / d[held] - 1)
        print(f"decimated below layer {k:2d}, à trous from it: held-out Spearman "
              f"{spearmanr(d[held], teacher[held]).statistic:.4f}, median relative error {np.median(rel):.3f}; "
              f"one-sample shift: median change {np.median(change):.3f}, worst {change.max():.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
