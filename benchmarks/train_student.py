"""Train the fast student of the dense protocol (issue 8) and write its weights.

    .venv/bin/python benchmarks/train_student.py --corpus demo-work/corpus --db student/teacher.duckdb \\
        --out metric/weights/dpam-dense-student-v1.safetensors

1. Teacher pairs: ``--segments`` random segments (2-6 s) of every corpus item, each degraded
   ``--degradations`` times (noise, reverberation, low-pass, band EQ, mu-law, MP3/AAC/Opus/Vorbis
   ladders; :mod:`jndqa.flows.student`). Their dense-protocol distances are cached in ``--db``:
   a rerun computes only new pairs.
2. Split by source recording: the items whose path hash falls in 1 of 4 buckets are held out.
3. The student (:mod:`jndqa.metric.student`) starts from the official weights; its deep layers'
   fixed statistics are calibrated on training references; its per-channel weights are fitted so
   that each layer's term, and the sum, match the teacher's on a log scale (the log makes the
   fit scale-free and ranks pairs; full-batch Adam, seeded, deterministic).
4. Held-out agreement (Spearman, median relative error) is printed and stored in the weights'
   metadata with the teacher data hash.

``--tiny`` runs the whole script on 2 segments x 2 degradations of 4 items (the test does).
"""

from __future__ import annotations

import argparse
import hashlib
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000, help="Adam steps of the channel-weight fit")
    ap.add_argument("--epochs", type=int, default=0, help="then fine-tune every parameter for this many epochs")
    ap.add_argument("--minutes", type=float, default=None, help="stop fine-tuning after this budget")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    ap.add_argument("--per-signal-layers", type=int, default=None, help="layers normalised per signal (default 10)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this saved student (e.g. the committed one) instead of the official weights")
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
    specs = make_specs(items, seed=args.seed, segments=args.segments, degradations=args.degradations)

    def progress(done: int, total: int, new: int) -> None:
        if new or done == total:
            print(f"teacher: {done}/{total} pairs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    data = teacher_scores(Store(args.db), specs, progress=progress)
    print(f"\nteacher data: {len(specs)} pairs, hash {data['data_hash'][:16]}, {time.perf_counter() - t0:.0f} s")

    held = np.array([int(hashlib.sha256(s.path.encode()).hexdigest(), 16) % 4 == 0 for s in specs])
    if held.all() or not held.any():  # tiny corpora: hold out the last item
        held = np.array([s.path == items[-1] for s in specs])
    if args.init is not None:
        from jndqa.metric.student import load_student

        student = load_student(args.init)
    else:
        layers = {} if args.per_signal_layers is None else {"per_signal_layers": args.per_signal_layers}
        student = StudentDPAM(DPAM.official("scratch"), model_id="dpam-dense-student-v1", **layers)
    segments: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        segments.setdefault((s.item, s.start, s.length), []).append(i)
    train_refs = [data["ref"][idx[0]] for idx in segments.values() if not held[idx[0]]]
    if args.init is None:
        student.calibrate_statistics([r.astype(np.float32) for r in train_refs[:: max(1, len(train_refs) // 40)]])
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
        for split, mask in (("train", ~held), ("held-out", held)):
            rel = np.abs(d[mask] / teacher[mask] - 1)
            o = out[split] = {
                "pairs": int(mask.sum()),
                "spearman": float(spearmanr(d[mask], teacher[mask]).statistic),
                "median_rel_error": float(np.median(rel)),
                "p90_rel_error": float(np.quantile(rel, 0.9)),
            }
            print(f"{name:26s} {split:9s} pairs {o['pairs']:5d}  Spearman {o['spearman']:.4f}  "
                  f"median rel. error {o['median_rel_error']:.3f}  p90 {o['p90_rel_error']:.3f}")  # fmt: skip
        return out

    result = report("official weights" if args.init is None else f"from {args.init.name}")
    if args.steps:
        history = fit_channel_weights(student, terms[~held], teacher_layers[~held], steps=args.steps, seed=args.seed)
        print(f"fit: loss {history[0]:.4f} -> {history[-1]:.4f}")
        result = report("fitted channel weights")
    if args.epochs:
        from jndqa.metric.student import finetune

        train_segments = [
            (data["ref"][idx[0]], np.stack([data["test"][i] for i in idx]), teacher[idx])
            for idx in segments.values() if not held[idx[0]]
        ]  # fmt: skip
        ckpt = args.out.with_suffix(".checkpoint.safetensors")
        torch.use_deterministic_algorithms(True)
        finetune(student, train_segments, epochs=args.epochs, lr=args.lr, seed=args.seed, checkpoint=ckpt,
                 seconds=None if args.minutes is None else 60 * args.minutes, log=print)  # fmt: skip
        with torch.no_grad():
            for idx in segments.values():
                ref = torch.from_numpy(data["ref"][idx[0]].astype(np.float32))
                tests = torch.from_numpy(np.stack([data["test"][i] for i in idx]).astype(np.float32))
                terms[idx] = channel_terms(student, ref, tests)
        result = report("fine-tuned")
        ckpt.unlink(missing_ok=True)
    meta = {"parent": "dpam-scratch-official", "init": str(args.init or "dpam-scratch-official"),
            "teacher": TEACHER_ID, "teacher_data_hash": data["data_hash"],
            "teacher_pairs": str(len(specs)), "heldout": json.dumps(result), "seed": str(args.seed),
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
