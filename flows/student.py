"""Training the fast student of the dense protocol (:mod:`jndqa.metric.student`): the teacher's
pairs, their dense-protocol scores, the training command (:func:`main`) and the student's entry
in the model registry (:func:`register_student`).

    .venv/bin/python benchmarks/train_student.py --corpus CORPUS... --db TEACHER.duckdb --out STUDENT.safetensors
    .venv/bin/python -m jndqa.flows.student ...                      # the same command

Teacher pairs come from corpus items: a segment of random offset and length (mono, 22,050 Hz,
int16 scale, as the metric reads it) and degraded versions of it under the paper's perturbation
families and the codec matrix:

- white and pink noise (SNR), reverberation, low-pass and mu-law from the simulated listener's
  ladders (:func:`jndqa.datasets.listener.perturb`; its ``eq`` family is a low-pass), a peaking
  band equaliser (a gain of ±3 to ±12 dB around a random centre frequency, one octave wide);
- MP3, AAC, Opus and Vorbis through ffmpeg (:mod:`jndqa.variants`) at ladders of bitrates.

A pair's spec (item sha256, start, length, family, level, seed) regenerates its audio exactly.
The teacher's score of a pair is cached in the store (namespace ``teacher``), keyed by the sha256 of
the reference and test samples and the teacher's id (:data:`TEACHER`'s ``cache_id``): the dense protocol is
the expensive part, so a second run reuses every score it has.

The training command:

1. Teacher pairs: ``--segments`` random segments (2-6 s) of every item of each ``--corpus``, each
   degraded ``--degradations`` times (one value, or one per corpus). Each corpus draws its own
   pairs, so adding a corpus leaves the others' pairs as they were. Their dense-protocol
   distances are cached in ``--db``: a rerun, or a run with another corpus added, computes only
   new pairs.
2. Split by source recording: ``--held-out`` names the held-out items (file stems or paths
   relative to their corpus); without it, items ranked by content sha256 at ranks 0, 4, 8, ... are
   held out. Ranks 2, 10, 18, ... of the rest are the validation set that stops the fine-tuning;
   the rest train.
3. The student (BlurPool layers with a ``--blur-taps`` binomial low-pass, then à-trous layers from
   ``--dense-from``) starts from the official weights, or from ``--init`` (a saved student; given
   another layout, its kernels, betas and channel weights move into the new layout); its
   per-channel weights are fitted so that each layer's term, and the sum, match the teacher's on
   a log scale (the log makes the fit scale-free and ranks pairs; full-batch Adam, seeded,
   deterministic; ``--steps``).
4. ``--epochs``: every parameter is fine-tuned on the log distance and the log per-layer terms
   (``--layer-weight``), one Adam step per segment, cosine learning rate, seeded, deterministic on
   the CPU, checkpointed after every epoch next to ``--out`` (a rerun resumes exactly), within
   ``--minutes``; the epoch with the lowest validation loss is kept.
5. Held-out agreement (Spearman, median relative error) is printed and stored in the weights'
   metadata with the teacher data hash, the split and the ``--init`` file's sha256; the student's
   distances on :func:`jndqa.metric.student.reference_pairs` are recorded in a ``.json`` next to
   the weights (the tests reproduce them).

``--tiny`` runs the whole command on 2 segments x 2 degradations of the first corpus's first 4
items (the test does).

How the committed student was made. The demo corpus is ``make demo``'s, the extra recordings
:mod:`jndqa.datasets.student_corpus`'s. ``dpam-dense-student-v3`` was written in two stages from
the retired ``dpam-dense-student-v2`` (à trous from layer 8; its weights are in the git history),
moved into the current layout by ``--dense-from 5``, with a warm restart of the cosine learning
rate between the stages:

    .venv/bin/python -m jndqa.datasets.student_corpus student-work/extra
    git show b65babc:metric/weights/dpam-dense-student-v2.safetensors > student-work/v2.safetensors
    .venv/bin/python benchmarks/train_student.py --corpus demo-work/corpus student-work/extra \\
        --segments 10 5 --degradations 10 8 --db student-work/teacher.duckdb --steps 500 \\
        --held-out blupi_1 alsa_voices espeak_0 music009_002s music009_030s espeak_pl_m4 fb_effects \\
        --init student-work/v2.safetensors --dense-from 5 --epochs 8 --out student-work/stage1.safetensors
    .venv/bin/python benchmarks/train_student.py ...the same corpus, pairs and split... \\
        --init student-work/stage1.safetensors --epochs 6 --out metric/weights/dpam-dense-student-v3.safetensors

The next student starts from the committed one: ``--init metric/weights/dpam-dense-student-v3.safetensors``
(and ``STUDENT_VERSION`` moves on, with the replaced version added to ``RETIRED_STUDENTS``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jndqa.datasets.corpus import file_sha256
from jndqa.metric import ModelRef

__all__ = ["TEACHER", "PairSpec", "main", "make_specs", "register_student", "render_pair", "teacher_scores"]

RATE = 22050
TEACHER = ModelRef.official("scratch", "dense")  # the dense protocol of the release's weights, 8 s / 4 s windows
CODECS = {  # codec: bitrate ladder (kbit/s)
    "libmp3lame": (24, 32, 48, 64, 96, 128),
    "aac": (24, 32, 48, 64, 96),
    "libopus": (8, 12, 16, 24, 32, 48),
    "libvorbis": (32, 48, 64),  # libvorbis refuses more than about 80k for 22,050 Hz mono
}
LISTENER = ("noise", "pink-noise", "reverb", "eq", "mulaw")  # severities in [0, 1]
FAMILIES = (*LISTENER, "band-eq", *CODECS)


@dataclass(frozen=True)
class PairSpec:
    """One teacher pair: ``item`` (sha256 of the item file), ``path``, segment ``start`` and
    ``length`` (samples at 22,050 Hz), ``family`` and ``level`` (severity in [0, 1], a bitrate
    in kbit/s for codecs), ``seed`` (the band equaliser's frequency and sign)."""

    item: str
    path: str
    start: int
    length: int
    family: str
    level: float
    seed: int

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _item_audio(path: str) -> np.ndarray:
    """An item as the metric reads it: mono, 22,050 Hz, int16 scale (float64)."""
    import soundfile as sf

    from jndqa.metric import prepare_samples

    x, rate = sf.read(path, dtype="float64", always_2d=True)
    return prepare_samples(x, rate, scale="unit").samples.astype(np.float64)


def make_specs(
    items: list[str], *, seed: int = 0, segments: int = 8, degradations: int = 8, min_seconds: float = 2.0,
    max_seconds: float = 6.0,
) -> list[PairSpec]:  # fmt: skip
    """``segments`` random segments per item, each degraded ``degradations`` times (random family
    and level; every family appears before one repeats). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    specs = []
    for path in items:
        sha = file_sha256(path)
        n = len(_item_audio(path))
        for _ in range(segments):
            length = int(rng.integers(int(min_seconds * RATE), int(max_seconds * RATE) + 1))
            length = min(length, n)
            start = int(rng.integers(0, n - length + 1))
            families = list(rng.permutation(FAMILIES))
            while len(families) < degradations:
                families += list(rng.permutation(FAMILIES))
            for family in families[:degradations]:
                if family in CODECS:
                    level = float(rng.choice(CODECS[family]))
                else:
                    level = float(np.round(rng.uniform(0.05, 1.0), 3))
                specs.append(PairSpec(sha, str(path), start, length, str(family), level, int(rng.integers(1 << 30))))
    return specs


def _band_eq(x: np.ndarray, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = float(np.exp(rng.uniform(np.log(200.0), np.log(8000.0))))
    gain_db = (3.0 + 9.0 * level) * (1 if rng.random() < 0.5 else -1)
    f = np.fft.rfftfreq(x.size, 1.0 / RATE)
    octaves = np.log2(np.maximum(f, 1.0) / centre)
    gain = 10.0 ** (gain_db / 20.0 * np.exp(-0.5 * (octaves / 0.5) ** 2))
    return np.fft.irfft(np.fft.rfft(x) * gain, x.size)


def render_pair(
    spec: PairSpec, audio: np.ndarray | None = None, ffmpeg: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, test) int16-scale float32 ``[length]`` at 22,050 Hz for ``spec``; ``audio`` is
    the item as :func:`_item_audio` reads it (read when not given)."""
    if audio is None:
        audio = _item_audio(spec.path)
    ref = audio[spec.start : spec.start + spec.length]
    unit = ref / 32768.0
    if spec.family in LISTENER:
        from jndqa.datasets.listener import perturb

        test = perturb(unit, RATE, spec.family, spec.level, key=spec.item[:16]) * 32768.0
    elif spec.family == "band-eq":
        test = _band_eq(unit, spec.level, spec.seed) * 32768.0
    else:
        from jndqa.variants import Reference, parse_variants, render

        (variant,) = parse_variants([{"codec": spec.family, "bitrate": f"{int(spec.level)}k"}])
        r = render(Reference.from_array(unit.astype(np.float32), RATE, name=spec.path), variant, ffmpeg=ffmpeg,
                   max_lag=0, min_correlation=0.0)  # fmt: skip
        test = r.samples[:, 0].astype(np.float64) * 32768.0
    test = np.clip(np.round(test), -32768, 32767)
    return ref.astype(np.float32), test.astype(np.float32)


def _sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def teacher_scores(store, specs: list[PairSpec], *, progress=None, ffmpeg: str | None = None) -> dict:
    """Dense-protocol distances of every pair (cached in the store). Returns ``{"specs", "ref",
    "test", "distance", "terms", "data_hash"}``: the pairs' audio (lists of int16 arrays), the
    teacher's distances and 14 per-layer terms, and the hash of the teacher data (sorted pair keys
    and distances)."""
    scorer = None
    refs, tests, dist, terms = [], [], [], []
    by_segment: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        by_segment.setdefault((s.item, s.start, s.length), []).append(i)
    audio_cache: dict[str, np.ndarray] = {}
    results: dict[int, tuple] = {}
    done = 0
    for (_item, _, _), idx in by_segment.items():
        spec0 = specs[idx[0]]
        if spec0.path not in audio_cache:
            audio_cache.clear()
            audio_cache[spec0.path] = _item_audio(spec0.path)
        pairs = [render_pair(specs[i], audio_cache[spec0.path], ffmpeg) for i in idx]
        keys = [hashlib.sha256(f"{_sha(r)}:{_sha(t)}:{TEACHER.cache_id}".encode()).hexdigest() for r, t in pairs]
        known = store.cache_get("teacher", keys)
        todo = [k for k, key in enumerate(keys) if key not in known]
        if todo:
            if scorer is None:
                scorer = TEACHER.scorer()
            reference = scorer.reference(pairs[0][0])
            scored = scorer.score_reference(reference, [pairs[k][1] for k in todo])
            store.cache_put("teacher", {
                keys[k]: {"distance": float(sc.distance), "layer_terms": [float(v) for v in sc.layer_terms],
                          "spec": asdict(specs[idx[k]]), "teacher": TEACHER.cache_id}
                for k, sc in zip(todo, scored, strict=True)
            })  # fmt: skip
            known = store.cache_get("teacher", keys)
        for k, i in enumerate(idx):
            results[i] = (pairs[k][0], pairs[k][1], known[keys[k]]["distance"], known[keys[k]]["layer_terms"], keys[k])
        done += len(idx)
        if progress:
            progress(done, len(specs), len(todo))
    for i in range(len(specs)):
        r, t, d, lt, _ = results[i]
        refs.append(r.astype(np.int16))
        tests.append(t.astype(np.int16))
        dist.append(d)
        terms.append(lt)
    digest = hashlib.sha256()
    for i in sorted(range(len(specs)), key=lambda i: results[i][4]):
        digest.update(f"{results[i][4]}:{results[i][2]:.9g}\n".encode())
    return {"specs": specs, "ref": refs, "test": tests, "distance": np.array(dist), "terms": np.array(terms),
            "data_hash": digest.hexdigest()}  # fmt: skip


def register_student(store) -> None:
    """Record the committed student in the registry (once): version ``STUDENT_VERSION`` (v3),
    parent the official weights, status ``available`` (selected by ``metric.protocol: student``,
    never production), its teacher data hash and held-out agreement from the weights' metadata.
    Earlier students still ``available`` in the store are retired (``RETIRED_STUDENTS``)."""
    from safetensors import safe_open

    from jndqa.metric.student import RETIRED_STUDENTS, STUDENT_VERSION, student_weights

    for version, why in RETIRED_STUDENTS.items():
        old = store.model(version)
        if old is not None and old["status"] == "available":
            store.retire_model(version, why)
    if store.model(STUDENT_VERSION) is not None:
        return
    try:
        path = student_weights()
    except FileNotFoundError:
        return
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    store.add_model(
        {"version": STUDENT_VERSION, "model_id": STUDENT_VERSION, "kind": "student", "parent": meta.get("parent"),
         "data_hash": meta.get("teacher_data_hash"), "weights": None,
         "weights_sha256": file_sha256(path),
         "metrics": json.loads(meta.get("heldout", "null")),
         "params": {"teacher": meta.get("teacher"), "teacher_pairs": meta.get("teacher_pairs"),
                    "trained_by": meta.get("trained_by"), "file": "jndqa/metric/weights/" + path.name},
         "reason": "the dense protocol's fast student, committed with the code"},
        status="available",
    )  # fmt: skip


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

    from jndqa.metric import DPAM, DPAMScorer
    from jndqa.metric.student import (
        STUDENT_VERSION,
        StudentDPAM,
        channel_terms,
        distances_from_terms,
        finetune,
        fit_channel_weights,
        load_student,
        reference_pairs,
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
        student = load_student(args.init)
        if layout:  # a new layout: keep the kernels, betas and channel weights
            layout = {"dense_from": student.dense_from, "blur": tuple(student.blur.flatten().tolist()), **layout}
            state = student.state_dict()
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
    meta = {"parent": "dpam-scratch-official", "init": str(args.init or "dpam-scratch-official"),
            "init_sha256": "" if args.init is None else file_sha256(args.init),
            "teacher": TEACHER.cache_id, "teacher_data_hash": data["data_hash"],
            "teacher_pairs": str(len(specs)), "heldout": json.dumps(result), "seed": str(args.seed),
            "pair_seeds": json.dumps(args.pair_seeds),
            "heldout_items": json.dumps(sorted({Path(s.path).name for s, h in zip(specs, held, strict=True) if h})),
            "validation_items": json.dumps(sorted({Path(s.path).name for s, v in zip(specs, val, strict=True) if v})),
            "trained_by": "jndqa.flows.student"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_student(student, args.out, meta)
    # Recorded scores on generated pairs, for the test that loads the committed weights.
    scorer = DPAMScorer("scratch", "student", student=load_student(args.out))
    recorded = [scorer.score(r, t).distance for r, t in reference_pairs()]
    args.out.with_suffix(".json").write_text(json.dumps({
        "model_id": student.model_id, "teacher_data_hash": data["data_hash"], "heldout": result,
        "recorded": {"pairs": "jndqa.metric.student.reference_pairs(): a 3 s harmonic tone + white noise at "
                              "40/30/20/10 dB SNR", "distances": recorded,
                     "produced_by": "jndqa.flows.student, right after training"},
    }, indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name}; recorded distances {recorded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
