"""A SIMULATED listener: synthetic same/different judgments for demos and tests.

This is a simulation, not human data. No real crowd is reachable offline, so this module
stands in for one: it degrades corpus items with the perturbation families of the DPAM paper
(Manocha et al., Interspeech 2020) and draws "same"/"different" answers from a chosen
psychometric function. Numbers that come out of it say how well a metric recovers *these
chosen functions*, nothing about human hearing. Everything it writes says so: the worker is
``simulated-listener-<seed>``.

Families (:data:`FAMILIES`), each driven by one scalar ``severity`` in [0, 1], 0 inaudible by
design and 1 obvious, mapped to a physical parameter (:func:`physical_parameter`):

============  ==========================================================================
noise         white noise, SNR = 60 − 60·s dB (60 dB … 0 dB) relative to the item's power
pink-noise    pink (1/f power) noise, same SNR mapping
reverb        item convolved with an exponentially decaying noise impulse response
              (RT60 0.6 s), added at a wet/dry energy ratio of −40 + 40·s dB (−40 … 0 dB)
eq            zero-phase 4th-order Butterworth-shaped low-pass, cutoff 10 kHz·0.05^s
              (10 kHz … 500 Hz)
mp3           libmp3lame through ffmpeg (:mod:`jndqa.variants`; the codec's known priming
              delay removed, same length as the reference), average bitrate 160·0.05^s
              kbit/s rounded (160 … 8 kbit/s, ABR)
mulaw         μ-law companding (μ = 255) quantised to round(2^(12 − 10·s)) levels (4096 … 4)
============  ==========================================================================

Answers: P(different) = lapse/2 + (1 − lapse)·sigmoid(slope·(severity − threshold)), with the
per-family threshold and slope of :data:`PSYCHOMETRIC` and :data:`LAPSE`. An identical pair
(the reference against a byte-identical copy) is answered "different" with probability
lapse/2 (severity → −∞). Answers are drawn from a numpy Generator seeded from ``seed``, the
item's content hash and the family, so the output is deterministic given the seed; the audio
itself does not depend on the seed (every listener hears the same stimuli).

Trials per item and family (the paper's adaptive pairs): the ladder (each level once), then a
1-up/1-down staircase on the same ladder (:func:`staircase`; it converges on the 50 % point,
which is the threshold since the lapse is symmetric), plus ``identical`` identical pairs per
item.

MUSHRA (:func:`simulate_mushra`): the same listener, asked for a 0–100 quality score instead of
a same/different answer. Its expected score for a stimulus is the percentage of the time it would
*not* hear the degradation, lapse left out: :func:`mushra_expected` =
100·(1 − sigmoid(slope·(severity − threshold))), with the family's :data:`PSYCHOMETRIC`
function; 100 at severity → −∞ (the reference), 50 at the threshold, → 0 far above it. Each
simulated listener ``k`` adds a bias drawn once, N(0, :data:`MUSHRA_BIAS_SD`), and per rating
noise N(0, :data:`MUSHRA_NOISE_SD`); scores are rounded to integers (as webMUSHRA's slider) and
clipped to [0, 100]. The hidden reference (the reference file itself) is rated
100 − |N(0, :data:`MUSHRA_HIDDEN_SD`)|, rounded: near 100. The low anchor is the ``eq`` family at
severity 1 (500 Hz low-pass, expected score ≈ 0.15): BS.1534-3's 3.5 kHz anchor would sit at
this listener's eq threshold, i.e. score ≈ 50, not low. A listener made ``unreliable`` (for
post-screening tests) rates the hidden reference uniformly in [30, 80] in every trial, so ITU-R
BS.1534-3 post-screening rejects them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_RATE",
    "DEFAULT_TRIALS",
    "FAMILIES",
    "LAPSE",
    "MUSHRA_BIAS_SD",
    "MUSHRA_HIDDEN_SD",
    "MUSHRA_LEVELS",
    "MUSHRA_NOISE_SD",
    "PSYCHOMETRIC",
    "MushraSummary",
    "Psychometric",
    "SimulationSummary",
    "Staircase",
    "answer",
    "ladder",
    "mushra_expected",
    "p_different",
    "perturb",
    "physical_parameter",
    "simulate_judgments",
    "simulate_mushra",
    "staircase",
]

FAMILIES = ("noise", "pink-noise", "reverb", "eq", "mp3", "mulaw")
LAPSE = 0.04
DEFAULT_LEVELS = 10
DEFAULT_TRIALS = 24
DEFAULT_RATE = 22050
DEFAULT_MAX_SECONDS = 4.0
REVERB_RT60 = 0.6  # seconds
MU = 255.0
JUDGMENTS_CSV = "judgments.csv"
CSV_COLUMNS = ("ref", "test", "label", "worker", "timestamp", "condition")
START = "2025-01-01T00:00:00+00:00"  # the simulated session's first trial; one trial per second
RATINGS_CSV = "ratings.csv"
MUSHRA_COLUMNS = ("ref", "test", "score", "listener", "item", "condition", "scale", "trial")
MUSHRA_LEVELS = 5
MUSHRA_BIAS_SD = 5.0  # a listener's constant offset, score points
MUSHRA_NOISE_SD = 8.0  # per rating, score points
MUSHRA_HIDDEN_SD = 3.0  # the hidden reference: 100 − |N(0, this)|
ANCHOR = ("eq", 1.0)  # the low anchor: 500 Hz low-pass
UNRELIABLE_HIDDEN = (30.0, 80.0)  # an unreliable listener's hidden-reference scores, uniform


@dataclass(frozen=True)
class Psychometric:
    """P(different) = lapse/2 + (1 − lapse)·sigmoid(slope·(severity − threshold))."""

    threshold: float
    slope: float

    def p_different(self, severity: float | np.ndarray, lapse: float = LAPSE) -> float | np.ndarray:
        z = self.slope * (np.asarray(severity, dtype=np.float64) - self.threshold)
        p = lapse / 2 + (1 - lapse) / (1 + np.exp(-z))
        return float(p) if np.ndim(p) == 0 else p


# CHOSEN, NOT MEASURED: plausible orderings (mp3 artefacts are masked longer than white noise,
# a low-pass is heard early on music), in severity units; slope per unit of severity.
PSYCHOMETRIC: dict[str, Psychometric] = {
    "noise": Psychometric(threshold=0.40, slope=12.0),  # SNR 36 dB
    "pink-noise": Psychometric(threshold=0.45, slope=12.0),  # SNR 33 dB
    "reverb": Psychometric(threshold=0.50, slope=10.0),  # wet/dry −20 dB
    "eq": Psychometric(threshold=0.35, slope=10.0),  # cutoff ≈ 3.5 kHz
    "mp3": Psychometric(threshold=0.55, slope=12.0),  # ≈ 31 kbit/s
    "mulaw": Psychometric(threshold=0.40, slope=12.0),  # 256 levels (8 bits)
}


def _params(family: str, table: Mapping[str, Psychometric] | None) -> Psychometric:
    table = PSYCHOMETRIC if table is None else table
    if family not in table:
        raise ValueError(f"unknown perturbation family {family!r}; choose from {', '.join(table)}")
    return table[family]


def p_different(
    family: str,
    severity: float | np.ndarray,
    *,
    lapse: float = LAPSE,
    table: Mapping[str, Psychometric] | None = None,
) -> float | np.ndarray:
    """The simulated listener's probability of answering "different" at ``severity`` (see module)."""
    return _params(family, table).p_different(severity, lapse)


def answer(
    family: str,
    severity: float | np.ndarray,
    rng: np.random.Generator,
    *,
    lapse: float = LAPSE,
    table: Mapping[str, Psychometric] | None = None,
) -> int | np.ndarray:
    """Draw answers (1 different, 0 same) at ``severity`` (scalar or array) from ``rng``."""
    p = p_different(family, severity, lapse=lapse, table=table)
    draws = (rng.random(np.shape(p)) < p).astype(np.int64)
    return int(draws) if np.ndim(draws) == 0 else draws


def mushra_expected(
    family: str,
    severity: float | np.ndarray,
    *,
    table: Mapping[str, Psychometric] | None = None,
) -> float | np.ndarray:
    """The simulated listener's expected MUSHRA score at ``severity``: 100·(1 − P(detect)), the
    family's psychometric function without lapse (module docstring)."""
    return 100.0 * (1.0 - _params(family, table).p_different(severity, 0.0))


def ladder(levels: int = DEFAULT_LEVELS) -> tuple[float, ...]:
    """Severities of a ladder of ``levels`` equal steps, from 1/levels to 1 (0 is the reference)."""
    if levels < 2:
        raise ValueError(f"a ladder needs at least 2 levels, not {levels}")
    return tuple(round((k + 1) / levels, 6) for k in range(levels))


@dataclass(frozen=True)
class Staircase:
    """A run of the 1-up/1-down staircase: ``severities[i]`` presented at trial ``i`` and the
    ``answers``; ``reversals``: severities where the direction changed; ``estimate``: mean of the
    last ``last`` reversals (of all of them when fewer; None when there was none)."""

    severities: tuple[float, ...]
    answers: tuple[int, ...]
    reversals: tuple[float, ...]
    estimate: float | None


def staircase(
    family: str,
    rng: np.random.Generator,
    *,
    levels: Sequence[float] | None = None,
    trials: int = DEFAULT_TRIALS,
    last: int = 6,
    lapse: float = LAPSE,
    table: Mapping[str, Psychometric] | None = None,
) -> Staircase:
    """1-up/1-down staircase on ``levels`` (ascending severities; default :func:`ladder`), starting
    at the most severe: one step down after "different", one up after "same". It tracks the
    severity heard as different half of the time: the threshold of :data:`PSYCHOMETRIC`."""
    lv = tuple(ladder() if levels is None else levels)
    if trials < 1:
        raise ValueError(f"a staircase needs at least one trial, not {trials}")
    k = len(lv) - 1
    shown: list[float] = []
    answers: list[int] = []
    reversals: list[float] = []
    direction = 0
    for _ in range(trials):
        s = lv[k]
        a = answer(family, s, rng, lapse=lapse, table=table)
        shown.append(s)
        answers.append(int(a))
        step = -1 if a else 1
        if direction and step != direction:
            reversals.append(s)
        direction = step
        k = min(max(k + step, 0), len(lv) - 1)
    tail = reversals[-last:]
    estimate = float(np.mean(tail)) if tail else None
    return Staircase(tuple(shown), tuple(answers), tuple(reversals), estimate)


def physical_parameter(family: str, severity: float) -> tuple[str, float]:
    """The physical parameter behind ``severity`` for ``family``: (name with unit, value)."""
    s = float(severity)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"severity {severity!r} is outside [0, 1]")
    if family in ("noise", "pink-noise"):
        return "snr_db", 60.0 * (1.0 - s)
    if family == "reverb":
        return "wet_dry_db", -40.0 + 40.0 * s
    if family == "eq":
        return "lowpass_hz", 10000.0 * 0.05**s
    if family == "mp3":
        return "bitrate_kbps", float(round(160.0 * 0.05**s))
    if family == "mulaw":
        return "levels", float(round(2.0 ** (12.0 - 10.0 * s)))
    raise ValueError(f"unknown perturbation family {family!r}; choose from {', '.join(FAMILIES)}")


def _rng(*parts: str | int) -> np.random.Generator:
    """A Generator seeded by a stable hash of ``parts`` (not Python's salted ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return np.random.default_rng([int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)])


def _power(x: np.ndarray) -> float:
    return max(float(np.mean(np.square(x, dtype=np.float64))), 1e-10)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = x.size + h.size - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: x.size]


def _mp3(x: np.ndarray, rate: int, kbps: int, name: str) -> np.ndarray:
    from jndqa.variants import Reference, VariantError, parse_variants, render

    [spec] = parse_variants([{"codec": "libmp3lame", "bitrate": f"{kbps}k", "options": {"abr": "1"}}])
    try:
        # The known priming delay only (max_lag 0): at low bitrates on noise-like items the decoded
        # signal correlates too little with the reference for the lag search to be trusted.
        out = render(Reference.from_array(x.astype(np.float32), rate, name), spec, max_lag=0, min_correlation=0.0)
    except VariantError as exc:
        raise RuntimeError(f"{name}: the mp3 family could not be rendered through ffmpeg: {exc}") from exc
    return out.samples[:, 0].astype(np.float64)


def perturb(samples: np.ndarray, rate: int, family: str, severity: float, *, key: str = "") -> np.ndarray:
    """Degrade mono ``samples`` (float ``[L]`` on the ±1.0 scale, at ``rate`` Hz) by ``family`` at
    ``severity`` (see the module table). Returns float64 ``[L]``, same length, not clipped. Random
    parts (noise, impulse response) are seeded by ``key``, ``family`` and ``severity`` only."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"perturb takes non-empty mono samples [L], not shape {x.shape}")
    name, value = physical_parameter(family, severity)
    rng = _rng("perturb", key, family, f"{float(severity):.6f}")
    if family in ("noise", "pink-noise"):
        noise = rng.standard_normal(x.size) if family == "noise" else _pink(x.size, rng)
        noise *= np.sqrt(_power(x) / _power(noise) * 10.0 ** (-value / 10.0))
        return x + noise
    if family == "reverb":
        t = np.arange(int(REVERB_RT60 * rate)) / rate
        ir = rng.standard_normal(t.size) * 10.0 ** (-3.0 * t / REVERB_RT60)  # −60 dB at RT60
        wet = _fft_convolve(x, ir)
        wet *= np.sqrt(_power(x) / _power(wet) * 10.0 ** (value / 10.0))
        return x + wet
    if family == "eq":
        f = np.fft.rfftfreq(x.size, 1.0 / rate)
        gain = 1.0 / np.sqrt(1.0 + (f / value) ** 8)  # |H| of a 4th-order Butterworth, zero phase
        return np.fft.irfft(np.fft.rfft(x) * gain, x.size)
    if family == "mp3":
        return _mp3(x, rate, int(value), key or "item")
    if family == "mulaw":
        levels = int(value)
        y = np.sign(x) * np.log1p(MU * np.minimum(np.abs(x), 1.0)) / np.log1p(MU)
        q = np.round((y + 1.0) / 2.0 * (levels - 1)) / (levels - 1) * 2.0 - 1.0
        return np.sign(q) * np.expm1(np.abs(q) * np.log1p(MU)) / MU
    raise AssertionError(name)  # physical_parameter already refused unknown families


@dataclass
class SimulationSummary:
    """What :func:`simulate_judgments` wrote. ``per_family``: {family: {"pairs", "different"}}
    (identical pairs under ``"identical"``); ``staircases``: {"<item>/<family>": estimate}."""

    csv: Path
    worker: str
    rows: int
    per_family: dict[str, dict[str, int]]
    fraction_different: float
    items: list[str]
    staircases: dict[str, float | None] = field(default_factory=dict)
    flipped: bool = False


def _load_item(path: Path, rate: int, max_seconds: float | None) -> np.ndarray:
    import soundfile as sf
    import soxr

    try:
        data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:
        raise ValueError(f"{path}: not readable as audio ({exc}); give WAV or FLAC corpus files") from exc
    x = data.mean(axis=1)
    if sr != rate:
        x = soxr.resample(x, sr, rate, quality="VHQ")
    if max_seconds is not None:
        x = x[: round(max_seconds * rate)]
    if x.size < rate // 4:
        raise ValueError(f"{path}: {x.size / rate:.3f} s of audio; the simulated listener needs at least 0.25 s")
    return x


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(x, -1.0, 32767 / 32768), rate, subtype="PCM_16", format="WAV")


def _prepare_item(
    src: Path, out: Path, rate: int, max_seconds: float | None, names: list[str]
) -> tuple[str, str, np.ndarray, str] | None:
    """Write ``src`` as ``out/audio/<stem>-<sha8>/ref.wav`` (mono, ``rate``, cut, 16-bit) and
    return (name, sha256 of ``src``, the written reference read back, its path relative to
    ``out``); None when an item of that name was already prepared (``names`` gets the name)."""
    import soundfile as sf

    with open(src, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    name = f"{src.stem}-{sha[:8]}"
    if name in names:
        return None
    names.append(name)
    folder = out / "audio" / name
    _write_wav(folder / "ref.wav", _load_item(src, rate, max_seconds), rate)
    x, _ = sf.read(str(folder / "ref.wav"), dtype="float64")  # the quantised reference is the base
    return name, sha, x, f"audio/{name}/ref.wav"


def _degrade(
    x: np.ndarray, rate: int, family: str, severities: Sequence[float], out: Path, name: str, sha: str
) -> dict[float, str]:
    """Write ``x`` degraded by ``family`` at each severity as ``audio/<name>/<family>-<s>.wav``;
    returns {severity: path relative to ``out``}."""
    files: dict[float, str] = {}
    for s in severities:
        rel = f"audio/{name}/{family}-{s:.3f}.wav"
        _write_wav(out / rel, perturb(x, rate, family, s, key=sha), rate)
        files[s] = rel
    return files


def simulate_judgments(
    items: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    families: Sequence[str] = FAMILIES,
    seed: int = 0,
    trials: int = DEFAULT_TRIALS,
    levels: int = DEFAULT_LEVELS,
    identical: int = 2,
    rate: int = DEFAULT_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    lapse: float = LAPSE,
    table: Mapping[str, Psychometric] | None = None,
    flip_labels: bool = False,
) -> SimulationSummary:
    """Simulate a listener judging degraded versions of ``items`` and write the judgments.

    ``items``: audio files (corpus items; any channels and rate soundfile reads). Each is mixed to
    mono, resampled to ``rate`` (soxr VHQ), cut to its first ``max_seconds`` (None: whole) and
    written as 16-bit WAV ``out_dir/audio/<stem>-<sha8>/ref.wav``; its degradations go next to
    it as ``<family>-<severity>.wav`` and ``ref-copy.wav`` is the byte-identical copy used for
    identical pairs (a distinct file, so a lapse answer "different" is not a self-pair).

    Per item and family: ``levels`` ladder pairs, then ``trials`` staircase trials; per item
    ``identical`` identical pairs. Writes ``out_dir/judgments.csv`` with the header
    ref,test,label,worker,timestamp,condition; paths relative to ``out_dir``; worker
    ``simulated-listener-<seed>``; condition ``<family>:<severity>`` (``identical:0``);
    timestamps one second apart from :data:`START`. ``flip_labels``: every label inverted
    (poisoned judgments, for tests), and the worker gets a ``-flipped`` suffix.
    Deterministic: the same arguments give byte-identical audio and CSV.
    """
    for fam in families:
        _params(fam, table)
        physical_parameter(fam, 0.0)
    if not items:
        raise ValueError("simulate_judgments needs at least one audio item")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lv = ladder(levels)
    worker = f"simulated-listener-{seed}" + ("-flipped" if flip_labels else "")
    t0 = datetime.fromisoformat(START)
    rows: list[tuple[str, str, int, str]] = []  # ref, test, label, condition
    per_family: dict[str, dict[str, int]] = {}
    stairs: dict[str, float | None] = {}
    names: list[str] = []

    def record(family: str, ref: str, test: str, label: int, condition: str) -> None:
        label = 1 - label if flip_labels else label
        rows.append((ref, test, label, condition))
        counts = per_family.setdefault(family, {"pairs": 0, "different": 0})
        counts["pairs"] += 1
        counts["different"] += label

    for item in items:
        prepared = _prepare_item(Path(item), out, rate, max_seconds, names)
        if prepared is None:
            continue  # the same content given twice
        name, sha, x, ref_rel = prepared
        folder = out / "audio" / name
        shutil.copyfile(folder / "ref.wav", folder / "ref-copy.wav")
        for fam in families:
            files = _degrade(x, rate, fam, lv, out, name, sha)
            rng = _rng("listener", seed, sha, fam)
            for s, a in zip(lv, answer(fam, np.asarray(lv), rng, lapse=lapse, table=table), strict=True):
                record(fam, ref_rel, files[s], int(a), f"{fam}:{s:.3f}")
            st = staircase(fam, rng, levels=lv, trials=trials, lapse=lapse, table=table)
            stairs[f"{name}/{fam}"] = st.estimate
            for s, a in zip(st.severities, st.answers, strict=True):
                record(fam, ref_rel, files[s], a, f"{fam}:{s:.3f}")
        rng = _rng("listener", seed, sha, "identical")
        for _ in range(identical):
            a = int(rng.random() < lapse / 2)
            record("identical", ref_rel, f"audio/{name}/ref-copy.wav", a, "identical:0")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, (ref, test, label, condition) in enumerate(rows):
        stamp = (t0 + timedelta(seconds=i)).isoformat()
        writer.writerow([ref, test, label, worker, stamp, condition])
    path = out / JUDGMENTS_CSV
    path.write_text(buf.getvalue(), encoding="utf-8")
    different = sum(r[2] for r in rows)
    return SimulationSummary(
        csv=path,
        worker=worker,
        rows=len(rows),
        per_family=per_family,
        fraction_different=different / len(rows) if rows else 0.0,
        items=names,
        staircases=stairs,
        flipped=flip_labels,
    )


@dataclass
class MushraSummary:
    """What :func:`simulate_mushra` wrote. ``listeners``: their names (the unreliable one, if
    any, is ``unreliable``); ``trials``: the MUSHRA pages, one per item and family, as
    ``<item>/<family>``; ``rows``: ratings written (hidden references included)."""

    csv: Path
    listeners: list[str]
    rows: int
    items: list[str]
    trials: list[str]
    unreliable: str | None = None


def simulate_mushra(
    items: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    listeners: int = 8,
    families: Sequence[str] = FAMILIES,
    levels: int = MUSHRA_LEVELS,
    seed: int = 0,
    unreliable: int | None = None,
    rate: int = DEFAULT_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    table: Mapping[str, Psychometric] | None = None,
) -> MushraSummary:
    """Simulate ``listeners`` listeners rating degraded versions of ``items`` in a MUSHRA test
    (the mapping from the psychometric functions to scores is in the module docstring) and write
    the ratings as a canonical long ratings CSV (:mod:`jndqa.datasets.ratings`).

    Audio as :func:`simulate_judgments`: ``out_dir/audio/<stem>-<sha8>/ref.wav`` and
    ``<family>-<severity>.wav`` for each severity of :func:`ladder` (``levels``), plus
    ``anchor.wav`` (the low anchor). One trial (page) per item and family, holding that family's
    ``levels`` conditions, the hidden reference and the low anchor; every listener rates every
    stimulus of every trial once. Writes ``out_dir/ratings.csv`` with the header
    ref,test,score,listener,item,condition,scale,trial: paths relative to ``out_dir``; scale
    ``mushra``; listener ``simulated-listener-<seed>-<k>`` (``-unreliable`` appended for listener
    number ``unreliable``); item ``<stem>-<sha8>``; condition ``<family>:<severity>``,
    ``reference`` (the hidden reference: test = ref) or ``anchor``; trial ``<item>/<family>``.
    Deterministic: the same arguments give byte-identical audio and CSV; the audio does not
    depend on ``seed`` or ``listeners``.
    """
    for fam in (*families, ANCHOR[0]):
        _params(fam, table)
        physical_parameter(fam, 0.0)
    if not items:
        raise ValueError("simulate_mushra needs at least one audio item")
    if listeners < 1:
        raise ValueError(f"simulate_mushra needs at least one listener, not {listeners}")
    if unreliable is not None and not 0 <= unreliable < listeners:
        raise ValueError(f"unreliable={unreliable} is not a listener number (0 … {listeners - 1})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lv = ladder(levels)
    names_l = [f"simulated-listener-{seed}-{k}" + ("-unreliable" if k == unreliable else "") for k in range(listeners)]
    # Each trial: (item, trial id, ref path, [(condition, test path, expected score or None for the hidden ref)]).
    trials: list[tuple[str, str, str, list[tuple[str, str, float | None]]]] = []
    names: list[str] = []
    for item in items:
        prepared = _prepare_item(Path(item), out, rate, max_seconds, names)
        if prepared is None:
            continue
        name, sha, x, ref_rel = prepared
        anchor_rel = f"audio/{name}/anchor.wav"
        _write_wav(out / anchor_rel, perturb(x, rate, ANCHOR[0], ANCHOR[1], key=sha), rate)
        anchor_score = float(mushra_expected(ANCHOR[0], ANCHOR[1], table=table))
        for fam in families:
            files = _degrade(x, rate, fam, lv, out, name, sha)
            stimuli: list[tuple[str, str, float | None]] = [("reference", ref_rel, None)]
            stimuli += [(f"{fam}:{s:.3f}", files[s], float(mushra_expected(fam, s, table=table))) for s in lv]
            stimuli.append(("anchor", anchor_rel, anchor_score))
            trials.append((name, f"{name}/{fam}", ref_rel, stimuli))

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MUSHRA_COLUMNS)
    rows = 0
    for k, listener in enumerate(names_l):
        bias = float(_rng("mushra-bias", seed, k).normal(0.0, MUSHRA_BIAS_SD))
        for name, trial, ref_rel, stimuli in trials:
            rng = _rng("mushra", seed, k, trial)
            for condition, test_rel, expected in stimuli:
                if expected is None and k == unreliable:
                    score = rng.uniform(*UNRELIABLE_HIDDEN)
                elif expected is None:
                    score = 100.0 - abs(rng.normal(0.0, MUSHRA_HIDDEN_SD))
                else:
                    score = expected + bias + rng.normal(0.0, MUSHRA_NOISE_SD)
                score = int(np.clip(np.round(score), 0, 100))
                writer.writerow([ref_rel, test_rel, score, listener, name, condition, "mushra", trial])
                rows += 1
    path = out / RATINGS_CSV
    path.write_text(buf.getvalue(), encoding="utf-8")
    return MushraSummary(path, names_l, rows, names, [t[1] for t in trials],
                         names_l[unreliable] if unreliable is not None else None)  # fmt: skip
