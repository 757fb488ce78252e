"""Teacher data for the fast student (issue 8): degraded pairs and their dense-protocol scores.

Pairs come from corpus items: a segment of random offset and length (mono, 22,050 Hz, int16
scale, as the metric reads it) and degraded versions of it under the paper's perturbation
families and the codec matrix:

- white and pink noise (SNR), reverberation, low-pass and mu-law from the simulated listener's
  ladders (:func:`jndqa.datasets.listener.perturb`; its ``eq`` family is a low-pass), a peaking
  band equaliser (a gain of ±3 to ±12 dB around a random centre frequency, one octave wide);
- MP3, AAC, Opus and Vorbis through ffmpeg (:mod:`jndqa.variants`) at ladders of bitrates.

A pair's spec (item sha256, start, length, family, level, seed) regenerates its audio exactly.
The teacher's score of a pair is cached in the store (namespace ``teacher``), keyed by the sha256 of
the reference and test samples and the teacher's id: the dense protocol costs about a second per
4 s pair on two cores, so a second run of the script reuses every score it has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from jndqa.datasets.corpus import file_sha256

__all__ = ["TEACHER_ID", "PairSpec", "make_specs", "register_student", "render_pair", "teacher_scores"]

RATE = 22050
TEACHER_ID = "dense:w8h4:dpam-scratch-official:dpam-0.0.4"
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
    from jndqa.metric import DPAMScorer

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
        keys = [hashlib.sha256(f"{_sha(r)}:{_sha(t)}:{TEACHER_ID}".encode()).hexdigest() for r, t in pairs]
        known = store.cache_get("teacher", keys)
        todo = [k for k, key in enumerate(keys) if key not in known]
        if todo:
            if scorer is None:
                scorer = DPAMScorer("scratch", "dense")
            reference = scorer.reference(pairs[0][0])
            scored = scorer.score_reference(reference, [pairs[k][1] for k in todo])
            store.cache_put("teacher", {
                keys[k]: {"distance": float(sc.distance), "layer_terms": [float(v) for v in sc.layer_terms],
                          "spec": asdict(specs[idx[k]]), "teacher": TEACHER_ID}
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
