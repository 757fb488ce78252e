"""Train the fast student of the dense protocol (issue 8) and write its weights.

The committed ``dpam-dense-student-v3`` was written in two stages from the committed v2, moved
into v3's layout (à trous from layer 5, not 8) by ``--dense-from 5`` (a warm restart of the
cosine learning rate between the stages; stage 1 was written before the version bump, so its file
carries v2's model id: its sha256 starts 1623dfd09020ca94). The demo corpus is ``make demo``'s,
the extra recordings are :mod:`jndqa.datasets.student_corpus`'s:

    .venv/bin/python -m jndqa.datasets.student_corpus student-work/extra
    .venv/bin/python benchmarks/train_student.py --corpus demo-work/corpus student-work/extra \\
        --segments 10 5 --degradations 10 8 --db student-work/teacher.duckdb --steps 500 \\
        --held-out blupi_1 alsa_voices espeak_0 music009_002s music009_030s espeak_pl_m4 fb_effects \\
        --init metric/weights/dpam-dense-student-v2.safetensors --dense-from 5 --epochs 8 \\
        --out student-work/stage1.safetensors          # held-out 0.9724 / 12.6 %
    .venv/bin/python benchmarks/train_student.py ...the same corpus, pairs and split... \\
        --init student-work/stage1.safetensors --epochs 6 \\
        --out metric/weights/dpam-dense-student-v3.safetensors   # 0.9718 / 11.8 %

v2 (retired, v3's starting point; held-out 0.9653 / 16.7 %) was written the same way from v1:
``--init metric/weights/dpam-dense-student-v1.safetensors --blur-taps 5 --dense-from 8 --epochs
8`` (8 was then the default), then 6 epochs from that.

1. Teacher pairs: ``--segments`` random segments (2-6 s) of every item of each ``--corpus``, each
   degraded ``--degradations`` times (one value, or one per corpus; noise, reverberation,
   low-pass, band EQ, mu-law, MP3/AAC/Opus/Vorbis ladders; :mod:`jndqa.flows.student`). Each
   corpus draws its own pairs, so adding a corpus leaves the others' pairs as they were. Their
   dense-protocol distances are cached in ``--db`` (keyed by the audio): a rerun, or a run with
   another corpus added, computes only new pairs.
2. Split by source recording: ``--held-out`` names the held-out items (file stems or paths
   relative to their corpus); without it, items ranked by content sha256 at ranks 0, 4, 8, ... are
   held out. Ranks 2, 10, 18, ... of the rest are the validation set that stops the fine-tuning;
   the rest train.
3. The student (:mod:`jndqa.metric.student`: BlurPool layers with a ``--blur-taps`` binomial
   low-pass, then à-trous layers from ``--dense-from``) starts from the official weights, or from
   ``--init`` (a saved student; given another layout, or a format-1 file, its kernels, betas and
   channel weights move into the new layout); its per-channel weights are fitted so that each
   layer's term, and the sum, match the teacher's on a log scale (the log makes the fit
   scale-free and ranks pairs; full-batch Adam, seeded, deterministic; ``--steps``).
4. ``--epochs``: every parameter is fine-tuned on the log distance and the log per-layer terms
   (``--layer-weight``), one Adam step per segment, cosine learning rate, seeded, deterministic on
   the CPU, checkpointed after every epoch next to ``--out`` (a rerun resumes exactly), within
   ``--minutes``; the epoch with the lowest validation loss is kept.
5. Held-out agreement (Spearman, median relative error) is printed and stored in the weights'
   metadata with the teacher data hash, the split and the ``--init`` file's sha256.

``--tiny`` runs the whole script on 2 segments x 2 degradations of the first corpus's first 4
items (the test does).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        required=True,
        help="folders of audio items (searched recursively), e.g. the demo corpus and jndqa.datasets.student_corpus",
    )
    ap.add_argument("--db", type=Path, required=True, help="DuckDB file caching the teacher's scores")
    ap.add_argument("--out", type=Path, required=True, help="the student's safetensors file")
    ap.add_argument("--segments", type=int, nargs="+", default=[10], help="segments per item (one value per --corpus)")
    ap.add_argument("--degradations", type=int, nargs="+", default=[10], help="pairs per segment (per --corpus)")
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
        help="first layer evaluated à trous, not decimated (default: the --init student's, else 5: "
        "jndqa.metric.student.DENSE_FROM)",
    )
    ap.add_argument(
        "--blur-taps",
        type=int,
        default=None,
        help="binomial low-pass before each decimation, in taps (default: 5, [1, 4, 6, 4, 1] / 16, or the --init "
        "student's; 3: [1, 2, 1] / 4)",
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
    from jndqa.metric.student import (
        DENSE_FROM,
        STUDENT_VERSION,
        StudentDPAM,
        channel_terms,
        distances_from_terms,
        fit_channel_weights,
        save_student,
    )
    from jndqa.store import Store

    torch.manual_seed(args.seed)

    def per_corpus(values: list[int], name: str) -> list[int]:
        if len(values) not in (1, len(args.corpus)):
            sys.exit(f"{name}: give one value, or one per --corpus ({len(args.corpus)})")
        return values * len(args.corpus) if len(values) == 1 else values

    segments_of, degradations_of = (
        per_corpus(args.segments, "--segments"),
        per_corpus(args.degradations, "--degradations"),
    )
    corpora = [sorted(str(p) for p in c.rglob("*") if p.suffix.lower() in (".wav", ".flac")) for c in args.corpus]
    if args.tiny:
        corpora, segments_of, degradations_of = [corpora[0][:4]], [2], [2]
    items = [i for c in corpora for i in c]
    if len(items) < 2:
        sys.exit(f"{' '.join(map(str, args.corpus))}: need at least 2 audio items")
    t0 = time.perf_counter()
    # Each corpus draws its own pairs (a corpus added later leaves the earlier ones' pairs, and their
    # cached teacher scores, as they were).
    specs = [
        spec for seed in args.pair_seeds for c, n, m in zip(corpora, segments_of, degradations_of, strict=True)
        for spec in make_specs(c, seed=seed, segments=n, degradations=m)
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
        names = {
            s.path: {Path(s.path).stem} | {Path(s.path).relative_to(c).as_posix() for c in args.corpus
                                           if Path(s.path).is_relative_to(c)}
            for s in specs
        }  # fmt: skip
        unknown = sorted(set(args.held_out) - set().union(*names.values()))
        if unknown:
            sys.exit(f"--held-out: no item {unknown[0]!r} in {' '.join(map(str, args.corpus))}")
        held = np.array([bool(names[s.path] & set(args.held_out)) for s in specs])
        val &= ~held
    elif held.all() or not held.any():  # tiny corpora: hold out the last item
        held = np.array([s.path == items[-1] for s in specs])
    if (held | val).all():
        val[:] = False
    train = ~held & ~val
    layout = {} if args.dense_from is None else {"dense_from": args.dense_from}
    if args.blur_taps is not None:
        if args.blur_taps < 1 or args.blur_taps % 2 == 0:
            sys.exit(f"--blur-taps must be odd, got {args.blur_taps}")
        layout["blur"] = tuple(
            math.comb(args.blur_taps - 1, k) / 2 ** (args.blur_taps - 1) for k in range(args.blur_taps)
        )
    if args.init is not None:
        from jndqa.metric.student import load_student

        student = load_student(args.init)
        if layout or student.fixed_from is not None:  # a new layout: keep the kernels, betas and channel weights
            layout = {"dense_from": student.dense_from if student.fixed_from is None else DENSE_FROM,
                      "blur": tuple(student.blur.flatten().tolist()), **layout}  # fmt: skip
            state = {k: v for k, v in student.state_dict().items() if not k.startswith("fixed_")}
            student = StudentDPAM(DPAM.official("scratch"), model_id=STUDENT_VERSION, **layout)
            student.load_state_dict(state)
            print(f"from {args.init.name}, in a new layout: {layout}")
        student.model_id = STUDENT_VERSION  # what this script writes is the next committed student
    else:
        student = StudentDPAM(DPAM.official("scratch"), model_id=STUDENT_VERSION, **layout)
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
        for leftover in (ckpt, Path(str(ckpt) + ".best"), Path(str(ckpt) + ".adam")):
            leftover.unlink(missing_ok=True)
    from jndqa.datasets.corpus import file_sha256

    meta = {"parent": "dpam-scratch-official", "init": str(args.init or "dpam-scratch-official"),
            "init_sha256": "" if args.init is None else file_sha256(args.init),
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
