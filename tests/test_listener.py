"""The SIMULATED listener (jndqa.datasets.listener): its psychometric function, its staircase,
its perturbations, the judgment files and the MUSHRA ratings it writes. Synthetic signals only."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.datasets import read_judgments, read_ratings
from jndqa.datasets.listener import (
    FAMILIES,
    LAPSE,
    MUSHRA_HIDDEN_SD,
    PSYCHOMETRIC,
    answer,
    ladder,
    mushra_expected,
    p_different,
    perturb,
    physical_parameter,
    simulate_judgments,
    simulate_mushra,
    staircase,
)

RATE = 22050
LEVELS = 6
TRIALS = 12


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 2-second items at rates and layouts other than the model's: a stereo harmonic tone
    with a little noise at 44.1 kHz, and amplitude-modulated noise (speech-like bursts) at 16 kHz."""
    folder = tmp_path_factory.mktemp("items")
    rng = np.random.default_rng(123)
    t = np.arange(2 * 44100) / 44100
    tone = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6)) + 0.005 * rng.standard_normal(t.size)
    sf.write(folder / "tone.wav", np.stack([tone, 0.8 * tone], axis=1), 44100, subtype="PCM_16")
    t = np.arange(2 * 16000) / 16000
    bursts = 0.3 * rng.standard_normal(t.size) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    sf.write(folder / "bursts.flac", bursts, 16000)
    return [folder / "tone.wav", folder / "bursts.flac"]


@pytest.fixture(scope="module")
def run0(items: list[Path], tmp_path_factory: pytest.TempPathFactory):
    return simulate_judgments(items, tmp_path_factory.mktemp("seed0"), seed=0, levels=LEVELS, trials=TRIALS)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _audio(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.wav"))}


@pytest.mark.parametrize("family", FAMILIES)
def test_psychometric_function_matches_its_formula(family: str) -> None:
    thr, slope = PSYCHOMETRIC[family].threshold, PSYCHOMETRIC[family].slope
    assert p_different(family, thr) == pytest.approx(0.5, abs=1e-12)
    assert p_different(family, thr - 10) == pytest.approx(LAPSE / 2, abs=1e-9)
    assert p_different(family, thr + 10) == pytest.approx(1 - LAPSE / 2, abs=1e-9)
    s = thr + 0.1
    expected = LAPSE / 2 + (1 - LAPSE) / (1 + math.exp(-slope * 0.1))
    assert p_different(family, s) == pytest.approx(expected, rel=1e-12)
    assert p_different(family, np.array([thr, s])) == pytest.approx([0.5, expected])
    assert p_different(family, thr + 0.1, lapse=0.0) == pytest.approx(1 / (1 + math.exp(-slope * 0.1)))


@pytest.mark.parametrize("family", FAMILIES)
def test_rate_of_different_answers_rises_with_severity_as_the_function_says(family: str) -> None:
    n = 4000
    levels = np.asarray(ladder(10))
    rng = np.random.default_rng(7)
    rates = np.array([np.mean(answer(family, np.full(n, s), rng)) for s in levels])
    p = p_different(family, levels)
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(rates - p) < 4.5 * sigma)  # each level within binomial tolerance
    assert np.all(np.diff(rates) > -4.5 * np.sqrt(2) * sigma[1:])  # non-decreasing up to sampling noise
    assert rates[-1] - rates[0] > 0.6


@pytest.mark.parametrize("family", FAMILIES)
def test_staircase_converges_near_the_family_threshold(family: str) -> None:
    # One 24-trial run estimates the threshold (mean of its last 6 reversals) with a standard
    # deviation of about 0.06 (measured over 2000 seeds, all families: 0.057–0.068) and no visible
    # bias. Over 200 seeds the mean's standard error is ~0.005, so 0.02 is a 4σ tolerance; single
    # runs are checked at 1.5 ladder steps (0.15, ~2.3σ: about 98 % expected, 90 % required).
    thr = PSYCHOMETRIC[family].threshold
    estimates = np.array([staircase(family, np.random.default_rng(seed), trials=24).estimate for seed in range(200)])
    assert abs(estimates.mean() - thr) < 0.02
    assert np.mean(np.abs(estimates - thr) < 0.15) > 0.9
    run = staircase(family, np.random.default_rng(0), trials=24)
    assert run.severities[0] == 1.0 and len(run.answers) == 24 and len(run.reversals) >= 4


def test_ladder_and_physical_parameters_follow_the_documented_mapping() -> None:
    assert ladder(4) == (0.25, 0.5, 0.75, 1.0)
    assert physical_parameter("noise", 0.0) == ("snr_db", 60.0)
    assert physical_parameter("pink-noise", 1.0) == ("snr_db", 0.0)
    assert physical_parameter("reverb", 0.5) == ("wet_dry_db", -20.0)
    assert physical_parameter("eq", 0.0) == ("lowpass_hz", 10000.0)
    assert physical_parameter("eq", 1.0)[1] == pytest.approx(500.0)
    assert physical_parameter("mp3", 0.0) == ("bitrate_kbps", 160.0)
    assert physical_parameter("mp3", 1.0) == ("bitrate_kbps", 8.0)
    assert physical_parameter("mulaw", 0.4) == ("levels", 256.0)
    with pytest.raises(ValueError, match="unknown perturbation family"):
        physical_parameter("chorus", 0.5)
    with pytest.raises(ValueError, match="outside"):
        physical_parameter("noise", 1.5)


def _signal() -> np.ndarray:
    t = np.arange(RATE) / RATE
    rng = np.random.default_rng(5)
    return 0.25 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t) + 0.01 * rng.standard_normal(t.size)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "mp3"])
def test_perturbations_keep_length_are_deterministic_and_grow_with_severity(family: str) -> None:
    x = _signal()
    err = []
    for s in (0.1, 0.5, 1.0):
        y = perturb(x, RATE, family, s, key="item")
        assert y.shape == x.shape and np.isfinite(y).all()
        assert np.array_equal(y, perturb(x, RATE, family, s, key="item"))
        err.append(float(np.mean((y - x) ** 2)))
    assert 0 < err[0] < err[1] < err[2]


def test_the_mp3_family_really_changes_the_audio() -> None:
    x = _signal()
    y = perturb(x, RATE, "mp3", 1.0, key="item")  # 8 kbit/s
    assert y.shape == x.shape
    diff = float(np.sqrt(np.mean((y - x) ** 2)))
    assert diff > 1e-3
    assert np.corrcoef(x, y)[0, 1] > 0.5  # still the same signal, aligned (priming delay removed)


def test_same_seed_gives_identical_csv_and_audio(items: list[Path], run0, tmp_path: Path) -> None:
    again = simulate_judgments(items, tmp_path, seed=0, levels=LEVELS, trials=TRIALS)
    assert again.csv.read_bytes() == run0.csv.read_bytes()
    assert _audio(tmp_path) == _audio(run0.csv.parent)
    assert again.staircases == run0.staircases


def test_another_seed_gives_other_answers_on_the_same_stimuli(items: list[Path], run0, tmp_path: Path) -> None:
    other = simulate_judgments(items, tmp_path, seed=1, levels=LEVELS, trials=TRIALS, families=("noise", "mulaw"))
    rows0 = [r for r in _rows(run0.csv) if r["condition"].split(":")[0] in ("noise", "mulaw")]
    rows1 = [r for r in _rows(other.csv) if r["condition"] != "identical:0"]
    assert len(rows1) == len(rows0)
    ladder0, ladder1 = ([(r["test"], r["condition"]) for r in rows][:LEVELS] for rows in (rows0, rows1))
    assert ladder1 == ladder0  # the same ladder, the same files
    assert [r["label"] for r in rows1] != [r["label"] for r in rows0]
    assert {r["worker"] for r in _rows(other.csv)} == {"simulated-listener-1"}
    shared = _audio(tmp_path)
    assert shared.items() <= _audio(run0.csv.parent).items()  # the audio does not depend on the seed


def test_the_csv_reads_back_clean(run0) -> None:
    out = run0.csv.parent
    jf = read_judgments(run0.csv)
    assert jf.format == "csv"
    assert jf.quarantine == []
    assert len(jf.rows) == run0.rows
    assert {j.worker for j in jf.rows} == {"simulated-listener-0"}
    assert all(j.ref.is_relative_to(out.resolve()) and j.test.is_relative_to(out.resolve()) for j in jf.rows)
    families = {j.condition.split(":")[0] for j in jf.rows if j.condition}
    assert families == {*FAMILIES, "identical"}
    assert len(run0.items) == 2
    for fam in FAMILIES:
        assert run0.per_family[fam]["pairs"] == 2 * (LEVELS + TRIALS)
    assert run0.per_family["identical"]["pairs"] == 4
    assert 0.2 < run0.fraction_different < 0.8
    # Every item was brought to the model's rate, mono, and its degradations to the same length.
    for j in jf.rows[:: max(len(jf.rows) // 20, 1)]:
        ref, test = sf.info(str(j.ref)), sf.info(str(j.test))
        assert ref.samplerate == test.samplerate == RATE and ref.channels == test.channels == 1
        assert ref.frames == test.frames == 2 * RATE


def test_flip_labels_flips_every_label(items: list[Path], run0, tmp_path: Path) -> None:
    flipped = simulate_judgments(items, tmp_path, seed=0, levels=LEVELS, trials=TRIALS, flip_labels=True)
    a, b = _rows(run0.csv), _rows(flipped.csv)
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra["ref"], ra["test"], ra["timestamp"], ra["condition"]) == (
            rb["ref"], rb["test"], rb["timestamp"], rb["condition"])  # fmt: skip
        assert int(rb["label"]) == 1 - int(ra["label"])
    assert flipped.flipped and flipped.worker == "simulated-listener-0-flipped"
    assert flipped.fraction_different == pytest.approx(1 - run0.fraction_different)
    assert read_judgments(flipped.csv).quarantine == []


MUSHRA_FAMILIES = ("noise", "mulaw")
MUSHRA_LEVELS = 3


@pytest.fixture(scope="module")
def mushra0(items: list[Path], tmp_path_factory: pytest.TempPathFactory):
    return simulate_mushra(items, tmp_path_factory.mktemp("mushra0"), listeners=5, families=MUSHRA_FAMILIES,
                           levels=MUSHRA_LEVELS, seed=0, unreliable=4)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_the_mushra_mapping_is_100_times_one_minus_detection(family: str) -> None:
    thr, slope = PSYCHOMETRIC[family].threshold, PSYCHOMETRIC[family].slope
    assert mushra_expected(family, thr) == pytest.approx(50.0, abs=1e-12)
    assert mushra_expected(family, thr - 10) == pytest.approx(100.0, abs=1e-9)
    assert mushra_expected(family, thr + 10) == pytest.approx(0.0, abs=1e-9)
    assert mushra_expected(family, thr + 0.1) == pytest.approx(100 * (1 - 1 / (1 + math.exp(-slope * 0.1))), rel=1e-12)
    assert mushra_expected("eq", 1.0) < 1.0  # the low anchor (500 Hz low-pass) is heard by design


def test_simulated_mushra_writes_the_canonical_csv(mushra0) -> None:
    rows = _rows(mushra0.csv)
    assert list(rows[0]) == ["ref", "test", "score", "listener", "item", "condition", "scale", "trial"]
    per_trial = MUSHRA_LEVELS + 2  # the conditions, the hidden reference and the low anchor
    assert len(rows) == mushra0.rows == 5 * 2 * len(MUSHRA_FAMILIES) * per_trial
    assert len(mushra0.trials) == 2 * len(MUSHRA_FAMILIES)
    assert mushra0.listeners == [f"simulated-listener-0-{k}" for k in range(4)] + ["simulated-listener-0-4-unreliable"]
    assert mushra0.unreliable == "simulated-listener-0-4-unreliable"
    assert {r["scale"] for r in rows} == {"mushra"}
    assert all(r["score"].isdigit() and 0 <= int(r["score"]) <= 100 for r in rows)
    hidden = [r for r in rows if r["condition"] == "reference"]
    assert all(r["ref"] == r["test"] for r in hidden) and len(hidden) == 5 * len(mushra0.trials)
    reliable = [int(r["score"]) for r in hidden if not r["listener"].endswith("unreliable")]
    assert min(reliable) >= 100 - 4 * MUSHRA_HIDDEN_SD  # 100 − |N(0, 3)|: below 88 once in ~16,000 draws
    unreliable = [int(r["score"]) for r in hidden if r["listener"].endswith("unreliable")]
    assert all(30 <= s <= 80 for s in unreliable)


def test_simulated_mushra_scores_follow_severity_and_the_anchor_is_low(mushra0) -> None:
    rows = [r for r in _rows(mushra0.csv) if not r["listener"].endswith("unreliable")]

    def mean(condition: str) -> float:
        return float(np.mean([int(r["score"]) for r in rows if r["condition"] == condition]))

    # Means over 4 listeners × 2 items (× 2 trials for the anchor): the noise (sd 8, 8 draws) and the
    # listeners' biases (sd 5, 4 draws) give a standard error of sqrt(64/8 + 25/4) ≈ 3.8 points;
    # clipping at 0 lifts means near the bottom by at most E|N(0, 9.4)|/2 ≈ 3.8. 20 points is > 4σ + that.
    for fam in MUSHRA_FAMILIES:
        for s in ladder(MUSHRA_LEVELS):
            assert abs(mean(f"{fam}:{s:.3f}") - float(mushra_expected(fam, s))) < 20
    assert mean("anchor") < 20 and mean("reference") > 95


def test_simulated_mushra_is_deterministic_and_its_audio_ignores_the_seed(items, mushra0, tmp_path: Path) -> None:
    again = simulate_mushra(items, tmp_path / "again", listeners=5, families=MUSHRA_FAMILIES, levels=MUSHRA_LEVELS,
                            seed=0, unreliable=4)  # fmt: skip
    assert again.csv.read_bytes() == mushra0.csv.read_bytes()
    assert _audio(again.csv.parent) == _audio(mushra0.csv.parent)
    other = simulate_mushra(items, tmp_path / "other", listeners=2, families=MUSHRA_FAMILIES, levels=MUSHRA_LEVELS,
                            seed=1)  # fmt: skip
    assert _audio(other.csv.parent) == _audio(mushra0.csv.parent)
    assert [r["score"] for r in _rows(other.csv)] != [r["score"] for r in _rows(mushra0.csv)][: other.rows]
    assert other.unreliable is None
    with pytest.raises(ValueError, match="not a listener number"):
        simulate_mushra(items, tmp_path / "bad", listeners=2, unreliable=2)
    with pytest.raises(ValueError, match="unknown perturbation family"):
        simulate_mushra(items, tmp_path / "bad", families=("chorus",))


def test_simulated_mushra_reads_back_with_the_unreliable_listener_screened_out(mushra0) -> None:
    rf = read_ratings(mushra0.csv)
    assert {q.kind for q in rf.quarantine} == {"post-screening"}
    assert {r.listener for r in rf.rows} == set(mushra0.listeners) - {mushra0.unreliable}
    assert len(rf.quarantine) == mushra0.rows // 5
