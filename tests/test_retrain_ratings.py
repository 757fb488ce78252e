"""Retraining from a listening test under the nightly's protocol (``dense``): ratings in (MUSHRA scores and
same/different answers in one canonical ratings CSV), per-pair terms cached in the real DuckDB store, a
candidate gated on held-out within-item Spearman, calibrated per protocol, promoted, and then used by a
real nightly run whose p_jnd is calibrated under ``dense``. Poisoned ratings (scores and answers
reversed) are rejected and production is untouched byte for byte.

The listening test is synthetic and written here: harmonic references (tests/test_train.py's) of 0.75 s,
each under three low-pass filters and three noise levels, rated by three "listeners" who mind lost
bandwidth more than the release's distance does (score 100 minus 80, 60, 40 for cut-offs of 1, 2 and
4 kHz, 50, 30, 10 for noise at 20, 30 and 40 dB SNR, plus N(0, 3)), with the hidden reference rated 100;
one more listener answers same (penalty below 30) or different. The audio is 16-bit PCM: a float WAV
written by libsndfile carries a PEAK chunk with the time of writing, so its bytes, its sha256 (the
audio's identity in the store) and with it the held-out split by reference would change with the clock.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from jndqa.store import Store

from .test_train import harmonic

RATE = 22050


def settings(**kw):
    """The retraining's settings: the defaults (protocol dense, rating margin 0.05), with 30 % of the 10
    references held out."""
    from jndqa.flows.retrain import RetrainSettings

    return RetrainSettings(held_out=0.3, **kw)


SECONDS = 0.75
PENALTY = {("lowpass", 1000): 80, ("lowpass", 2000): 60, ("lowpass", 4000): 40,
           ("noise", 20): 50, ("noise", 30): 30, ("noise", 40): 10}  # fmt: skip


def listening_test(folder: Path, refs: range, *, seed: int, reverse: bool = False) -> Path:
    """Write the audio and ``ratings.csv`` (module docstring); ``reverse``: every score and answer reversed."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k in refs:
        ref = harmonic(k, SECONDS)
        sf.write(folder / f"ref{k}.wav", ref, RATE, subtype="PCM_16")
        for (family, level), penalty in PENALTY.items():
            name = f"ref{k}-{family}{level}.wav"
            if family == "lowpass":
                x = signal.sosfiltfilt(signal.butter(8, level, fs=RATE, output="sos"), ref)
            else:
                n = np.random.default_rng(1000 * k + level).standard_normal(ref.size)
                x = ref + n * np.sqrt(np.mean(ref.astype(np.float64) ** 2) / 10 ** (level / 10)) / n.std()
            sf.write(folder / name, x.astype(np.float32), RATE, subtype="PCM_16")
            for listener in range(3):
                score = float(np.clip(100 - penalty + rng.normal(0, 3), 0, 100))
                rows.append([f"ref{k}.wav", name, f"{100 - score if reverse else score:.1f}", f"L{listener}",
                             f"ref{k}", f"{family}:{level}", "mushra"])  # fmt: skip
            different = penalty >= 30
            rows.append([f"ref{k}.wav", name, str(int(different != reverse)), "J", f"ref{k}", f"{family}:{level}",
                         "jnd"])  # fmt: skip
        rows += [[f"ref{k}.wav", f"ref{k}.wav", "100", f"L{li}", f"ref{k}", "reference", "mushra"] for li in range(3)]
    with open(folder / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ref", "test", "score", "listener", "item", "condition", "scale"])
        w.writerows(rows)
    return folder / "ratings.csv"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, release):
    from jndqa.flows.retrain import retrain

    root = tmp_path_factory.mktemp("listening")
    files = {"train": listening_test(root / "train", range(10), seed=0),
             "golden": listening_test(root / "golden", range(10, 13), seed=1),
             "poisoned": listening_test(root / "poisoned", range(10), seed=0, reverse=True)}  # fmt: skip
    db = root / "store" / "jndqa.duckdb"
    summary = retrain([files["train"]], db, settings(golden=str(files["golden"])), log=lambda _: None)
    return db, summary, files


def test_ratings_train_a_candidate_under_dense_that_ranks_held_out_references_better(promoted):
    db, s, _ = promoted
    assert s["status"] == "promoted", s.get("reason")
    assert s["protocol"] == "dense" and s["rated_stimuli"] == 60 and s["judgments"] == 60
    assert s["golden_stimuli"] == s["golden_pairs"] == 18
    held, golden = s["metrics"]["ratings_test"], s["metrics"]["ratings_golden"]
    for m in (held, golden):
        lo, hi = m["difference"]["ci"]
        assert lo <= m["difference"]["value"] <= hi and m["references"] == 3
    c, p = (golden[who]["within_item_spearman"]["value"] for who in ("candidate", "production"))
    assert c > p + 0.2 and golden["difference"]["value"] == pytest.approx(c - p)
    c, p = (held[who]["within_item_spearman"]["value"] for who in ("candidate", "production"))
    assert c >= p + 0.05  # the gate's margin on held-out references
    # Every pair's terms were computed once: the JND answers share the rated stimuli's audio, so their
    # terms came from the store.
    assert s["terms"]["failures"] == [] and s["terms"]["computed"] == 78 and s["terms"]["cached"] == 78
    assert set(s["calibrations"]) == {"dense", "official"} and s["calibration"] == s["calibrations"]["dense"]
    row = Store(db, read_only=True).model(s["candidate"])
    assert row["status"] == "production" and row["params"]["protocol"] == "dense"
    assert set(row["calibration"]) == {"dense", "official"}


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_with_the_promoted_model_reports_calibrated_p_jnd_under_dense(promoted, tmp_path):
    from jndqa.flows.demo import write_encoder
    from jndqa.flows.nightly import run_nightly
    from jndqa.metric.calibration import PlattCalibrator, calibrator_from_dict
    from jndqa.metric.modelfile import load_model, save_model

    db, s, files = promoted
    store_dir = tmp_path / "store"
    shutil.copytree(db.parent, store_dir)  # the fixture's store stays as the other tests expect it
    db = store_dir / "jndqa.duckdb"
    # ref0's harmonics end below 1 kHz (a 1 kHz low-pass leaves it 65 dB SNR); ref7-ref9 reach 1.8-2.3 kHz.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in (0, 7, 8, 9):
        shutil.copy(files["train"].parent / f"ref{k}.wav", corpus / f"ref{k}.wav")
    enc = tmp_path / "enc"
    write_encoder(enc, "test build", [])  # Opus, as asked
    config = tmp_path / "night.yaml"
    config.write_text(f"corpus: {{root: {corpus}}}\nvariants:\n  - {{label: lowpass, effects: 'lowpass=f=2000'}}\n"
                      f"  - {{label: our encoder, encode: ['{enc}', '{{bitrate}}', '{{input}}', '{{output}}'], "
                      f"container: ogg, bitrate: 96k}}\noutput: {tmp_path / 'out'}\n")  # fmt: skip
    first = run_nightly(config, db=str(db))
    assert first["model"] == s["candidate"] and first["protocol"] == "dense" and first["scores"] == 8
    store = Store(db)
    rows = store.run_scores(first["run_id"])
    cal = calibrator_from_dict(s["calibrations"]["dense"])
    assert all(r["p_jnd_calibrated"] for r in rows)
    assert [r["p_jnd"] for r in rows] == pytest.approx([float(cal(r["distance"])) for r in rows], rel=1e-9)

    # The fixture's calibration was fitted on the 6 JND answers of one validation reference, where the
    # penalty-driven listener calls inaudible low-passes "different": it is nearly flat (p ~ 0.76), so no
    # item can cross 0.5. A twin of the candidate (the same weights) carries a steep dense calibration
    # whose p = 0.5 lies at twice the unchanged build's largest distance, and becomes production.
    d0 = 2 * max(r["distance"] for r in rows if r["label"] == "our encoder")
    steep = PlattCalibrator(a=8.0, b=-8.0 * float(np.log(d0 + 1e-4)))
    twin = f"{s['candidate']}-steep"
    weights = store_dir / "models" / f"{twin}.safetensors"
    save_model(load_model(store.model_weights(store.production_model())), weights, model_id=twin,
               calibrations={"dense": steep})  # fmt: skip
    row = {"version": twin, "model_id": twin, "kind": "scratch", "parent": s["candidate"],
           "weights": str(weights.relative_to(store_dir)), "calibration": {"dense": steep.to_dict()}}  # fmt: skip
    store.add_model(row)
    store.decide_model(twin, "production", "test: a steep dense calibration")
    accepted = run_nightly(config, db=str(db))
    assert accepted["model"] == twin
    store.accept(accepted["run_id"])
    # The encoder is rebuilt and now cuts everything above 1 kHz.
    write_encoder(enc, "test build", ["-af", "lowpass=f=1000"])
    second = run_nightly(config, db=str(db))
    assert second["baseline"] == accepted["run_id"]
    before = {r["path"]: r for r in store.run_scores(accepted["run_id"]) if r["label"] == "our encoder"}
    after = {r["path"]: r for r in store.run_scores(second["run_id"]) if r["label"] == "our encoder"}
    assert all(r["p_jnd"] == pytest.approx(float(steep(r["distance"])), rel=1e-9) for r in after.values())
    crossing = sorted(i for i in after if steep(before[i]["distance"]) < 0.5 <= steep(after[i]["distance"]))
    comparison = next(c for c in second["comparisons"] if c["label"] == "our encoder")
    assert crossing and "ref0.wav" not in crossing and sorted(comparison["items_crossing"]) == crossing
    # Under the fixture's flat calibration every item starts above 0.5: none could have crossed.
    assert all(float(cal(b["distance"])) >= 0.5 for b in before.values())
    # The run page's "items crossing p_jnd 0.5" column shows that count for the encoder.
    page = (Path(second["report"]).parent / "index.html").read_text()
    assert f'title="{", ".join(comparison["items_crossing"])}">{len(crossing)}</td>' in page


def test_poisoned_ratings_are_rejected_production_untouched_and_terms_come_from_the_store(promoted, tmp_path):
    from jndqa.flows.retrain import retrain

    db, s, files = promoted
    copy = tmp_path / "store"
    shutil.copytree(db.parent, copy)
    store = Store(copy / "jndqa.duckdb")
    weights = store.model_weights(store.production_model())
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    r = retrain([files["poisoned"]], copy / "jndqa.duckdb", settings(golden=str(files["golden"])),
                log=lambda _: None)  # fmt: skip
    assert r["status"] == "rejected" and "golden" in r["reason"]
    after = Store(copy / "jndqa.duckdb", read_only=True)
    assert after.production_model()["version"] == s["candidate"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    # The store also holds the first ratings (another folder, the same audio): every pair the first run
    # computed (78 dense terms) is read from the store here, none computed again.
    assert r["terms"]["computed"] == 0 and r["terms"]["cached"] >= 2 * 78, r["terms"]


def preference_test(folder: Path, refs: range, *, seed: int) -> Path:
    """``preferences.csv`` beside :func:`listening_test`'s audio in ``folder``: for every reference, every pair of
    its six versions, answered by three listeners who, like the MUSHRA panel, mind lost bandwidth more than the
    release's distance does (the version with the smaller :data:`PENALTY` plus N(0, 5) preferred), the
    original named in an ``original`` column."""
    rng = np.random.default_rng(seed)
    names = list(PENALTY)
    rows = []
    for k in refs:
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for listener in range(3):
                    pa, pb = (PENALTY[x] + rng.normal(0, 5) for x in (a, b))
                    rows.append([f"ref{k}-{a[0]}{a[1]}.wav", f"ref{k}-{b[0]}{b[1]}.wav", str(int(pb < pa)),
                                 f"P{listener}", "preference", f"ref{k}.wav"])  # fmt: skip
    with open(folder / "preferences.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ref", "test", "score", "listener", "scale", "original"])
        w.writerows(rows)
    return folder / "preferences.csv"


def test_preferences_naming_their_original_train_the_ranking_and_are_gated_per_pair(promoted, tmp_path):
    from jndqa.flows.retrain import retrain

    db, _, files = promoted
    train = preference_test(files["train"].parent, range(10), seed=2)
    golden = preference_test(files["golden"].parent, range(10, 13), seed=3)
    # A new store (production: the release) given the first store's cached terms, copied with DuckDB's SQL:
    # the cache is keyed by content (audio hashes, kernels, protocol, lineup), not by the store.
    fresh = tmp_path / "jndqa.duckdb"
    Store(fresh)  # created and migrated; every operation opens its own connection
    with duckdb.connect(str(fresh)) as con:
        con.execute(f"ATTACH '{db}' AS first (READ_ONLY)")
        con.execute("INSERT INTO cache SELECT * FROM first.cache WHERE namespace = 'terms'")
    r = retrain([train], fresh, settings(golden=str(golden)), log=lambda _: None)
    # 10 references x 15 pairs of versions, none without its original; 3 more references golden.
    assert (r["preference_pairs"], r["golden_preference_pairs"], r["ignored"]["preference"]) == (150, 45, 0)
    assert r["rated_stimuli"] == 0 and r["judgments"] == 0
    held, gold = r["metrics"]["preference_test"], r["metrics"]["preference_golden"]
    # 30 % of the 10 references held out: 3 of them, 45 pairs, 90 stimuli.
    assert (held["references"], gold["references"]) == (45, 45) and (held["n"], gold["n"]) == (90, 90)
    # Every version lined up with its original (13 x 6) was computed by the first store's training.
    assert r["terms"]["computed"] == 0 and r["terms"]["cached"] == 2 * (150 + 45) and r["terms"]["failures"] == []
    # Production is the release, which finds the 1 kHz low-pass about as far from the original as noise at
    # 20 dB SNR; these listeners find it clearly worse: the candidate learns it from their preferences and
    # orders more golden pairs as they did.
    c, p = (gold[who]["within_item_spearman"]["value"] for who in ("candidate", "production"))
    assert c > p + 0.1, (c, p)
    assert r["status"] == "promoted", r["reason"]
