"""Training DPAM's distance from ratings (metric/train.py, RankingData) and the dense per-channel terms
that let training run under the nightly's protocol (metric/dense.py, dense_channel_terms).

The ratings are synthetic and built in memory: 12 harmonic references of 2 s (tests/test_train.py's),
each under three low-pass filters and three noise levels; the "listener" penalises bandwidth loss
more than the release's distance does (score 100 minus 80, 60, 40 for cut-offs of 1, 2 and 4 kHz and
50, 30, 10 for noise at 20, 30 and 40 dB SNR, plus N(0, 3) rating noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal
from scipy.stats import spearmanr

from jndqa.metric import DPAM, ModelRef, TrainConfig, TrainingError, pair_terms, train
from jndqa.metric.dense import dense_channel_terms
from jndqa.metric.train import RankingData, distances_from_terms, ranking_pairs

from .test_train import RATE, harmonic, with_noise

PENALTY = {("lowpass", 1000): 80, ("lowpass", 2000): 60, ("lowpass", 4000): 40,
           ("noise", 20): 50, ("noise", 30): 30, ("noise", 40): 10}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parent(release):
    return DPAM.official("scratch", release)


@pytest.fixture(scope="module")
def ratings(parent):
    rng = np.random.default_rng(0)
    pairs, scores, groups = [], [], []
    for k in range(12):
        ref = harmonic(k)
        for (family, level), penalty in PENALTY.items():
            if family == "lowpass":
                test = signal.sosfiltfilt(signal.butter(8, level, fs=RATE, output="sos"), ref).astype(np.float32)
            else:
                test = with_noise(ref, level, rng)
            pairs.append((ref, test))
            scores.append(100 - penalty + rng.normal(0, 3))
            groups.append(f"ref-{k}")
    return pair_terms(parent, pairs), np.array(scores), np.array(groups)


def within_item(net: DPAM, terms, scores, groups) -> float:
    """Mean over references of the Spearman correlation of -distance with the score."""
    d = distances_from_terms(net, terms).detach().double().numpy()
    return float(np.mean([spearmanr(-d[groups == g], scores[groups == g]).statistic for g in sorted(set(groups))]))


def test_ranking_pairs_known_values():
    # Group a: scores 50, 70, 70 -> (1 over 0), (2 over 0), the tie makes none; group b: 10 < 90.
    got = ranking_pairs([50, 70, 10, 70, 90], ["a", "a", "b", "a", "b"])
    assert got.tolist() == [[1, 0], [3, 0], [4, 2]]
    assert ranking_pairs([50, 55, 70], ["a"] * 3, min_gap=10).tolist() == [[2, 0], [2, 1]]
    with pytest.raises(TrainingError, match="finite score"):
        ranking_pairs([1.0, float("nan")], ["a", "a"])


def test_dense_channel_terms_give_the_dense_scorers_distance(release):
    """Under ``dense`` (here 1 s windows, hop 0.5 s, over 2.3 s: 4 windows), the per-channel terms with the
    release's channel weights are the scorer's distance: both in float64, agreeing to rounding (1e-10
    relative: float64 sums of 22,050-sample means)."""
    ref_model = ModelRef.for_protocol("scratch", "dense", window_seconds=1.0, hop_seconds=0.5)
    scorer = ref_model.scorer(release, dtype=torch.float64)
    rng = np.random.default_rng(1)
    x = np.concatenate([harmonic(3), harmonic(4)[: round(0.3 * RATE)]]) * 32768
    y = with_noise(x.astype(np.float32), 35, rng)
    a, b = x.astype(np.float64), y.astype(np.float64)
    expected = scorer.score(a, b).distance
    terms = dense_channel_terms(scorer.net, torch.from_numpy(a), torch.from_numpy(b), scorer.window, scorer.hop,
                                torch.float64)  # fmt: skip
    assert terms.shape == (992,) and terms.dtype == torch.float64
    with torch.no_grad():
        got = float(distances_from_terms(scorer.net.double(), terms[None])[0])
    assert got == pytest.approx(expected, rel=1e-10)


def test_ratings_train_channel_weights_to_rank_held_out_references(parent, ratings):
    terms, scores, groups = ratings
    fit = np.array([int(g.split("-")[1]) < 8 for g in groups])  # 8 references to train on, 4 never seen
    data = RankingData(terms[fit], scores[fit], tuple(groups[fit]))
    result = train(parent, None, [], [], TrainConfig(mode="channels", epochs=200, patience=20), ranking=data)
    comparisons = data.comparisons()
    assert result.extra["units"] == {"jnd": 0, "comparisons": len(comparisons)} == {"jnd": 0, "comparisons": 120}
    # Epoch 0 is the parent: its validation accuracy is the share of validation comparisons it orders right.
    d = distances_from_terms(parent, terms[fit]).detach().double().numpy()
    val = comparisons[result.val_index]
    assert result.history[0].val_accuracy == pytest.approx(float(np.mean(d[val[:, 0]] < d[val[:, 1]])))
    tau = float(np.median(np.abs(d[comparisons[:, 1]] - d[comparisons[:, 0]])))
    assert result.extra["ranking_temperature"] == pytest.approx(tau, rel=1e-6)
    # Measured: held-out within-item Spearman 0.31 (the release's weights) -> 0.63.
    before = within_item(parent, terms[~fit], scores[~fit], groups[~fit])
    after = within_item(result.model, terms[~fit], scores[~fit], groups[~fit])
    assert after > before + 0.15, (before, after)
    assert result.best_epoch > 0 and result.model.channel_weights is not None


def test_ratings_and_judgments_train_together_and_bad_settings_are_refused(parent, ratings):
    terms, scores, groups = ratings
    data = RankingData(terms, scores, tuple(groups))
    # JND pairs: each reference's two mildest stimuli "same", the others "different".
    labels = np.array([int(s < 75) for s in scores])
    result = train(parent, None, labels, groups, TrainConfig(mode="channels", epochs=5, patience=5),
                   terms=terms, ranking=data, ranking_weight=0.5)  # fmt: skip
    assert result.extra["units"] == {"jnd": 72, "comparisons": 180} and result.extra["ranking_weight"] == 0.5
    n_val_jnd = int(np.sum(result.val_index < 72))
    assert 0 < n_val_jnd < len(result.val_index)  # both kinds in the validation split, split by reference
    val_refs = {groups[i] for i in result.val_index if i < 72}
    train_refs = {groups[i] for i in result.train_index if i < 72}
    assert val_refs and not val_refs & train_refs
    with pytest.raises(TrainingError, match="use mode 'channels'"):
        train(parent, None, [], [], TrainConfig(mode="head"), ranking=data)
    with pytest.raises(TrainingError, match="mode 'all' trains on JND pairs only"):
        train(parent, None, [], [], TrainConfig(mode="all"), ranking=data)
    with pytest.raises(TrainingError, match="nothing to rank"):
        train(parent, None, [], [], TrainConfig(mode="channels"),
              ranking=RankingData(terms[:2], np.array([50.0, 50.0]), ("a", "a")))  # fmt: skip
