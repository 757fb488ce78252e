"""Train the fast student of the dense protocol (issue 8) and write its weights.

    .venv/bin/python benchmarks/train_student.py --corpus demo-work/corpus --db student/teacher.duckdb \\
        --out metric/weights/dpam-dense-student-v1.safetensors

1. Teacher pairs: ``--segments`` random segments (2-6 s) of every corpus item, each degraded
   ``--degradations`` times (noise, reverberation, low-pass, band EQ, mu-law, MP3/AAC/Opus/Vorbis
   ladders; :mod:`jndqa.flows.student`). Their dense-protocol distances are cached in ``--db``:
   a rerun computes only new pairs.
2. Split by source recording (items ranked by content sha256): ranks 0, 4, 8, ... are held out,
   ranks 2, 10, 18, ... are the validation set that stops the fine-tuning, the rest train.
3. The student (:mod:`jndqa.metric.student`: BlurPool layers, then à-trous layers from
   ``--dense-from``) starts from the official weights, or from ``--init`` (a saved student, e.g.
   the committed one, to continue its training); its per-channel weights are fitted so that each
   layer's term, and the sum, match the teacher's on a log scale (the log makes the fit
   scale-free and ranks pairs; full-batch Adam, seeded, deterministic; ``--steps``).
4. ``--epochs``: every parameter is fine-tuned on the log distance and the log per-layer terms
   (``--layer-weight``), one Adam step per segment, seeded, deterministic on the CPU, checkpointed
   after every epoch next to ``--out`` (a rerun resumes), within ``--minutes``.
5. Held-out agreement (Spearman, median relative error) is printed and stored in the weights'
   metadata with the teacher data hash.

Continue training the committed student on a corpus:

    .venv/bin/python benchmarks/train_student.py --corpus demo-work/corpus --db student/teacher.duckdb \
        --init metric/weights/dpam-dense-student-v1.safetensors --steps 0 --epochs 20 --minutes 75 \
        --out metric/weights/dpam-dense-student-v1.safetensors

``--tiny`` runs the whole script on 2 segments x 2 degradations of 4 items (the test does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="folder of audio items (searched recursively)")
    ap.add_argument("--db", type=Path, required=True, help="DuckDB file caching the teacher's scores")
    ap.add_argument("--out", type=Path, required=True, help="the student's safetensors file")
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--degradations", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the training (order, fit)")
    ap.add_argument(
        "--pair-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds of the teacher pairs: each adds --segments x --degradations pairs per item",
    )
    ap.add_argument("--steps", type=int, default=2000, help="Adam steps of the channel-weight fit")
    ap.add_argument("--epochs", type=int, default=0, help="then fine-tune every parameter for this many epochs")
    ap.add_argument("--minutes", type=float, default=None, help="stop fine-tuning after this budget")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    ap.add_argument(
        "--dense-from",
        type=int,
        default=None,
        help="first layer evaluated à trous, not decimated (default 8; see jndqa.metric.student)",
    )
    ap.add_argument(
        "--layer-weight",
        type=float,
        default=0.5,
        help="weight of the per-layer terms in the fine-tuning loss (0: the distance only)",
    )
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this saved student (e.g. the committed one) instead of the official weights",
    )
    ap.add_argument(
        "--held-out",
        nargs="+",
        default=None,
        metavar="ITEM",
        help="hold out these items (file stems or paths relative to --corpus) instead of the sha256 rule",
    )
    ap.add_argument("--tiny", action="store_true", help="2 segments x 2 degradations of the first 4 items")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from jndqa.flows.student import TEACHER_ID, make_specs, teacher_scores
    from jndqa.metric import DPAM
    from jndqa.metric.student import StudentDPAM, channel_terms, distances_from_terms, fit_channel_weights, save_student
    from jndqa.store import Store

    torch.manual_seed(args.seed)
    items = sorted(str(p) for p in args.corpus.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if args.tiny:
        items, args.segments, args.degradations = items[:4], 2, 2
    if len(items) < 2:
        sys.exit(f"{args.corpus}: need at least 2 audio items")
    t0 = time.perf_counter()
    specs = [
        spec for seed in args.pair_seeds
        for spec in make_specs(items, seed=seed, segments=args.segments, degradations=args.degradations)
    ]  # fmt: skip

    def progress(done: int, total: int, new: int) -> None:
        if new or done == total:
            print(f"teacher: {done}/{total} pairs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    data = teacher_scores(Store(args.db), specs, progress=progress)
    print(f"\nteacher data: {len(specs)} pairs, hash {data['data_hash'][:16]}, {time.perf_counter() - t0:.0f} s")

    # Split by source recording, by content (not by path: the same corpus anywhere splits alike):
    # items ranked by sha256; ranks 0, 4, 8, ... held out, ranks 2, 10, 18, ... validation.
    rank = {sha: r for r, sha in enumerate(sorted({s.item for s in specs}))}
    held = np.array([rank[s.item] % 4 == 0 for s in specs])
    val = np.array([rank[s.item] % 8 == 2 for s in specs])
    if args.held_out:
        names = {s.path: {Path(s.path).stem, Path(s.path).relative_to(args.corpus).as_posix()} for s in specs}
        unknown = sorted(set(args.held_out) - set().union(*names.values()))
        if unknown:
            sys.exit(f"--held-out: no item {unknown[0]!r} in {args.corpus}")
        held = np.array([bool(names[s.path] & set(args.held_out)) for s in specs])
        val &= ~held
    elif held.all() or not held.any():  # tiny corpora: hold out the last item
        held = np.array([s.path == items[-1] for s in specs])
    if (held | val).all():
        val[:] = False
    train = ~held & ~val
    if args.init is not None:
        from jndqa.metric.student import load_student

        student = load_student(args.init)
    else:
        layers = {} if args.dense_from is None else {"dense_from": args.dense_from}
        student = StudentDPAM(DPAM.official("scratch"), model_id="dpam-dense-student-v1", **layers)
    segments: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        segments.setdefault((s.item, s.start, s.length), []).append(i)
    t1 = time.perf_counter()
    terms = torch.zeros(len(specs), sum(w.shape[0] for w in student.channel_weights))
    for idx in segments.values():
        ref = torch.from_numpy(data["ref"][idx[0]].astype(np.float32))
        tests = torch.from_numpy(np.stack([data["test"][i] for i in idx]).astype(np.float32))
        terms[idx] = channel_terms(student, ref, tests)
    print(f"student terms: {time.perf_counter() - t1:.0f} s")
    teacher_layers = torch.as_tensor(data["terms"], dtype=torch.float32)
    teacher = data["distance"]

    def report(name: str) -> dict:
        d = distances_from_terms(student, terms).numpy()
        out = {}
        for split, mask in (("train", train), ("validation", val), ("held-out", held)):
            if not mask.any():
                continue
            rel = np.abs(d[mask] / teacher[mask] - 1)
            o = out[split] = {
                "pairs": int(mask.sum()),
                "spearman": float(spearmanr(d[mask], teacher[mask]).statistic),
                "median_rel_error": float(np.median(rel)),
                "p90_rel_error": float(np.quantile(rel, 0.9)),
            }
            print(f"{name:26s} {split:10s} pairs {o['pairs']:5d}  Spearman {o['spearman']:.4f}  "
                  f"median rel. error {o['median_rel_error']:.3f}  p90 {o['p90_rel_error']:.3f}")  # fmt: skip
        return out

    result = report("official weights" if args.init is None else f"from {args.init.name}")
    if args.steps:
        history = fit_channel_weights(student, terms[train], teacher_layers[train], steps=args.steps, seed=args.seed)
        print(f"fit: loss {history[0]:.4f} -> {history[-1]:.4f}")
        result = report("fitted channel weights")
    if args.epochs:
        from jndqa.metric.student import finetune

        def pick(mask):
            return [
                (data["ref"][idx[0]], np.stack([data["test"][i] for i in idx]), teacher[idx], data["terms"][idx])
                for idx in segments.values() if mask[idx[0]]
            ]  # fmt: skip

        ckpt = args.out.with_suffix(".checkpoint.safetensors")
        torch.use_deterministic_algorithms(True)
        finetune(student, pick(train), validation=pick(val), epochs=args.epochs, lr=args.lr, seed=args.seed,
                 checkpoint=ckpt, layer_weight=args.layer_weight,
                 seconds=None if args.minutes is None else 60 * args.minutes, log=print)  # fmt: skip
        with torch.no_grad():
            for idx in segments.values():
                ref = torch.from_numpy(data["ref"][idx[0]].astype(np.float32))
                tests = torch.from_numpy(np.stack([data["test"][i] for i in idx]).astype(np.float32))
                terms[idx] = channel_terms(student, ref, tests)
        result = report("fine-tuned")
        ckpt.unlink(missing_ok=True)
        Path(str(ckpt) + ".best").unlink(missing_ok=True)
    meta = {"parent": "dpam-scratch-official", "init": str(args.init or "dpam-scratch-official"),
            "teacher": TEACHER_ID, "teacher_data_hash": data["data_hash"],
            "teacher_pairs": str(len(specs)), "heldout": json.dumps(result), "seed": str(args.seed),
            "pair_seeds": json.dumps(args.pair_seeds),
            "heldout_items": json.dumps(sorted({Path(s.path).name for s, h in zip(specs, held, strict=True) if h})),
            "validation_items": json.dumps(sorted({Path(s.path).name for s, v in zip(specs, val, strict=True) if v})),
            "trained_by": "benchmarks/train_student.py"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_student(student, args.out, meta)
    # Recorded scores on generated pairs, for the test that loads the committed weights.
    from jndqa.metric import DPAMScorer
    from jndqa.metric.student import load_student, reference_pairs

    scorer = DPAMScorer("scratch", "student", student=load_student(args.out))
    recorded = [scorer.score(r, t).distance for r, t in reference_pairs()]
    args.out.with_suffix(".json").write_text(json.dumps({
        "model_id": student.model_id, "teacher_data_hash": data["data_hash"], "heldout": result,
        "recorded": {"pairs": "jndqa.metric.student.reference_pairs(): a 3 s harmonic tone + white noise at "
                              "40/30/20/10 dB SNR", "distances": recorded,
                     "produced_by": "benchmarks/train_student.py, right after training"},
    }, indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name}; recorded distances {recorded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
