"""Retraining the metric when new judgments or ratings arrive: ingest → terms → train → calibrate →
evaluate → gate → register (docs/architecture.md "Retraining" is the long form).

Plain functions do the work (tests call them); :func:`retrain_flow` wires them into Prefect and
:func:`scheduled_retrain` is the deployment's entry point (prefect.yaml).

- **Ingest**: JND lists and judgment CSVs to the store's ``judgments`` (:mod:`jndqa.datasets.judgments`),
  ratings CSVs and webMUSHRA results to its ``ratings`` (:mod:`jndqa.datasets.ratings`); bad rows to
  quarantine with their reason. Idempotent: rows are keyed by their content.
- **Data**: JND pairs (judgments, ``jnd``-scale ratings) and rated stimuli (MUSHRA/MOS means per
  stimulus, compared within one reference and scale) and preferred pairs (preference ratings that name
  their ``original``: two versions of it, ranked by the share of listeners preferring each); preference
  ratings without an original are counted, not used.
- **Nothing new, nothing done**: the data hash covers the ids used and the protocol; when it equals that
  of the last finished training with the same settings, the run stops there ("skipped").
- **Splits**, all by reference recording: a *golden* set (a judgment or ratings file given with
  ``golden``, else the references in a fixed 1-in-5 hash bucket), never trained on; a *held-out* test
  split (``held_out``) of JND pairs and of rated stimuli, never trained on; the rest is training data,
  of which :func:`jndqa.metric.train` holds out its own validation split.
- **Terms** under ``protocol`` (the nightly's, ``dense`` by default): each pair's per-channel terms with
  the parent's kernels, cached in the store (:mod:`jndqa.flows.terms`).
- **Train** a candidate from the production model (``mode``: head, channels or all; all trains through
  ``official`` on JND pairs only): cross-entropy on JND pairs, the ranking loss on rated stimuli.
- **Calibrate** p_jnd per protocol (Platt on log distance) on the validation split's JND pairs: under
  ``protocol`` and ``official``; none without JND pairs.
- **Evaluate** candidate and production on the same held-out and golden data under ``protocol``: JND
  accuracy, ROC AUC, log loss, ECE; within-item Spearman on rated stimuli (per reference) and on
  preferred pairs apart (per pair: 2 × the share ordered as listeners preferred − 1); bootstrap intervals
  by reference (by pair for preferences).
- **Gate** (:func:`gate`): promote only when every kind of data present says the candidate is better on
  held-out data by its margin and not worse on the golden set; otherwise production stays, the reason
  recorded.
- **Register**: the weights are written atomically as safetensors under ``<db folder>/models``
  *before* the registry row; promotion is one transaction. A run killed anywhere before that
  leaves the registry and the production weights as they were (training checkpoints live under
  ``models/.training`` and a rerun resumes from them).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from jndqa.datasets.corpus import file_sha256

from .models import seed_registry

__all__ = ["RetrainSettings", "load_network", "retrain", "retrain_flow", "scheduled_retrain"]

GOLDEN_BUCKETS = 5  # a reference is golden when its hash falls in bucket 0 of 5
PROTOCOLS = ("dense", "official")  # what a retraining trains and gates under


@dataclass
class RetrainSettings:
    """What ``jndqa retrain`` and the deployment can set."""

    mode: str = "channels"  # head | channels | all
    margin: float = 0.02  # held-out accuracy the candidate must gain over production
    golden: str | None = None  # a judgment file: the fixed golden set (else the 1-in-5 reference bucket)
    held_out: float = 0.25  # share of the references kept for testing
    seed: int = 0
    epochs: int = 200
    patience: int = 20
    lr: float = 1e-2
    calibration: str = "platt"
    bootstrap: int = 1000
    protocol: str = "dense"  # the nightly's protocol: terms, calibration and the gate are under it
    window_seconds: float = 8.0  # dense analysis windows (the nightly's metric.window_seconds / hop_seconds)
    hop_seconds: float = 4.0
    rating_margin: float = 0.05  # held-out within-item Spearman the candidate must gain over production
    ranking_weight: float = 1.0  # weight of a ratings comparison against a JND pair in the loss
    webmushra_config: str | None = None  # the webMUSHRA test's YAML config, for webMUSHRA results files


def load_network(store, row: dict):
    """The :class:`jndqa.metric.DPAM` of a registry row (the release's weights for the official model) and
    its calibrations by protocol key (:func:`jndqa.metric.load_calibrations`; none for the release)."""
    from jndqa.metric import DPAM, load_calibrations, load_model

    weights = store.model_weights(row)
    if weights is None:
        return DPAM.official("scratch"), {}
    return load_model(weights), load_calibrations(weights)


def _golden_reference(ref_sha256: str) -> bool:
    return int(hashlib.sha256(f"golden:{ref_sha256}".encode()).hexdigest(), 16) % GOLDEN_BUCKETS == 0


def ingest(store, paths: list[str | Path], webmushra_config: str | None = None) -> tuple[list[dict], list[dict]]:
    """Read, validate and store judgment and rating files. JND lists and judgment CSVs go to the
    store's judgments (as always); ratings CSVs and webMUSHRA results (with ``webmushra_config``) to its
    ratings. Returns (per-file counts, failures of files that could not be read at all)."""
    from jndqa.datasets.judgments import JudgmentFileError
    from jndqa.datasets.ratings import JND_LIST, JUDGMENT_CSV, RatingFileError, read_ratings

    files, failures = [], []
    for path in paths:
        try:
            try:
                rf = read_ratings(path)
            except RatingFileError as exc:
                if webmushra_config is None or "webMUSHRA results" not in str(exc):
                    raise
                rf = read_ratings(path, config=webmushra_config)
            if rf.format in (JND_LIST, JUDGMENT_CSV):
                jf = rf.judgments
                counts = store.ingest_judgments(
                    {"content_hash": jf.content_hash, "path": str(jf.path), "format": jf.format},
                    [r.row() for r in jf.rows],
                    [q.row() for q in jf.quarantine],
                )
                kinds = jf.quarantine_counts()
                n = len(jf.rows)
            else:
                counts = store.ingest_ratings(
                    {"content_hash": rf.content_hash, "path": str(rf.path), "format": rf.format,
                     "config": str(rf.config) if rf.config else None},
                    [r.row() for r in rf.rows], [q.row() for q in rf.quarantine],
                )  # fmt: skip
                kinds = dict(sorted(Counter(q.kind for q in rf.quarantine).items()))
                n = len(rf.rows)
        except (JudgmentFileError, RatingFileError) as exc:
            failures.append({"file": str(path), "reason": str(exc)})
            continue
        files.append({"file": str(path), "format": rf.format, "rows": n, **counts, "quarantine_kinds": kinds})
    return files, failures


def _predictions(net, calibrator, terms):
    """Distances and p(different) of ``terms`` rows (of ``net``'s kernels) with ``net``'s channel weights;
    p from ``calibrator`` when there is one, else from ``net``'s head."""
    from jndqa.metric.train import predict_from_terms

    pred = predict_from_terms(net, terms)
    d = np.asarray(pred.distance, dtype=np.float64)
    p = calibrator(d) if calibrator is not None else np.asarray(pred.p_jnd, dtype=np.float64)
    return d, p


@dataclass
class _Data:
    """What one retraining learns from and is judged on: JND pairs (``jnd``: train, test, golden rows of
    ``ref``, ``test``, ``ref_sha256``, ``test_sha256``, ``label``) and rated stimuli (``graded``: train,
    test, golden :class:`jndqa.datasets.StimulusMean` rows as dicts, ``group`` their reference key)."""

    jnd: dict[str, list[dict]]
    graded: dict[str, list[dict]]

    def count(self, kind: str, split: str) -> int:
        return len(getattr(self, kind)[split])


def _graded_rows(rows: list[dict]) -> list[dict]:
    """Stimulus means of stored graded ratings (MUSHRA, MOS), as dicts with ``group`` (scale and reference:
    stimuli are compared only within one)."""
    from jndqa.datasets.ratings import Rating, stimulus_means

    out = []
    for m in stimulus_means(Rating.from_row(r) for r in rows if r["scale"] in ("mushra", "mos")):
        out.append({**m.row(), "group": f"{m.scale}:{m.ref_sha256}", "lineup": "align"})
    return out


def _extra(row: dict) -> dict:
    import json

    extra = row.get("extra")
    return json.loads(extra) if isinstance(extra, str) and extra else dict(extra or {})


def _preference_rows(rows: list[dict]) -> list[dict]:
    """Stimuli of the stored preference ratings that name their ``original``: each pair of versions (``ref``,
    ``test``) of one original is a group of two stimuli lined up with the original (``align``), scored by
    the share of its listeners who preferred each (so ``test`` preferred by 3 of 4: 0.75 against 0.25; an
    even split ranks neither). ``ref_sha256`` is the original's: the held-out split keeps an original's
    comparisons on one side."""
    votes: dict[tuple, list] = {}
    for r in rows:
        extra = _extra(r)
        if r["scale"] != "preference" or not extra.get("original_sha256"):
            continue
        a, b = (r["ref"], r["ref_sha256"]), (r["test"], r["test_sha256"])
        first, second = sorted([a, b], key=lambda v: v[1])
        key = (extra["original_sha256"], first[1], second[1])
        entry = votes.setdefault(key, [extra["original"], first, second, 0.0, 0])
        preferred = b if r["score"] == 1.0 else a
        entry[3] += preferred[1] == second[1]
        entry[4] += 1
    out = []
    for (orig_sha, sha_1, sha_2), (orig, first, second, wins_2, n) in votes.items():
        group = f"preference:{orig_sha}:{sha_1}:{sha_2}"
        for (path, sha), share in ((first, 1 - wins_2 / n), (second, wins_2 / n)):
            out.append({"ref": orig, "test": path, "ref_sha256": orig_sha, "test_sha256": sha, "mean": share,
                        "n": n, "scale": "preference", "group": group, "lineup": "align"})  # fmt: skip
    return out


def _jnd_from_ratings(rows: list[dict]) -> list[dict]:
    """Ratings CSV rows on the ``jnd`` scale as judgment rows (label = score). A listening test's stimuli
    are lined up with their reference as the nightly aligns variants (``lineup`` ``align``); the release's
    judged pairs as the release presented them (``pad``)."""
    keep = ("ref", "test", "ref_sha256", "test_sha256")
    return [{"judgment_id": r["rating_id"], **{k: r[k] for k in keep}, "label": int(r["score"]), "lineup": "align"}
            for r in rows if r["scale"] == "jnd"]  # fmt: skip


def _golden_file(path: str) -> tuple[list[dict], list[dict]]:
    """The golden set given as a file: (JND rows, graded stimulus rows)."""
    from jndqa.datasets.ratings import JND_LIST, JUDGMENT_CSV, read_ratings

    rf = read_ratings(path)
    if rf.format in (JND_LIST, JUDGMENT_CSV):
        return [r.row() for r in rf.judgments.rows], []
    rows = [r.row() for r in rf.rows]
    return _jnd_from_ratings(rows), _graded_rows(rows) + _preference_rows(rows)


def _protocol_key(settings: RetrainSettings) -> str:
    from jndqa.metric import ModelRef

    return ModelRef.official("scratch", settings.protocol, window_seconds=settings.window_seconds,
                             hop_seconds=settings.hop_seconds).protocol_key  # fmt: skip


def retrain(
    paths: list[str | Path],
    db: str | Path,
    settings: RetrainSettings | None = None,
    *,
    report_dir: str | Path | None = None,
    log=None,
) -> dict:
    """One retraining; returns its summary (``status``: promoted, rejected, skipped or failed).
    ``log``: progress lines (default: stderr, so that stdout stays free for ``--json``)."""
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    from jndqa.datasets.judgments import data_hash
    from jndqa.store import Store

    settings = settings or RetrainSettings()
    if settings.protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {settings.protocol!r}")
    started = time.perf_counter()
    store = Store(db)
    training_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    store.acquire_writer(f"retrain {training_id}")
    try:
        seed_registry(store)
        files, file_failures = ingest(store, paths, settings.webmushra_config)
        for f in files:
            log(f"{f['file']}: {f['rows']} good rows ({f['new']} new), {f['quarantined']} quarantined")
        for f in file_failures:
            log(f"{f['file']}: not read: {f['reason']}")
        production = store.production_model()
        protocol_key = _protocol_key(settings)
        summary: dict[str, Any] = {
            "training_id": training_id, "files": files, "file_failures": file_failures,
            "production_before": production["version"], "production": production["version"],
            "settings": asdict(settings), "protocol": protocol_key, "candidate": None, "report": None,
        }  # fmt: skip
        stored = store.judgments()
        rows = [r for r in stored if Path(r["ref"]).is_file() and Path(r["test"]).is_file()]
        missing = len(stored) - len(rows)
        ratings = [r for r in store.ratings() if Path(r["ref"]).is_file() and Path(r["test"]).is_file()]
        rows += _jnd_from_ratings(ratings)
        graded = _graded_rows(ratings) + _preference_rows(ratings)
        ignored = {"preference": sum(1 for r in ratings if r["scale"] == "preference"
                                     and not _extra(r).get("original_sha256"))}  # fmt: skip
        if settings.golden:
            golden_rows, golden_graded = _golden_file(settings.golden)
            golden_ids = {r["judgment_id"] for r in golden_rows}
            golden_refs = {r["ref_sha256"] for r in golden_rows} | {g["ref_sha256"] for g in golden_graded}
            rows = [r for r in rows if r["judgment_id"] not in golden_ids and r["ref_sha256"] not in golden_refs]
            graded = [g for g in graded if g["ref_sha256"] not in golden_refs]
        else:
            golden_rows = [r for r in rows if _golden_reference(r["ref_sha256"])]
            rows = [r for r in rows if not _golden_reference(r["ref_sha256"])]
            golden_graded = [g for g in graded if _golden_reference(g["ref_sha256"])]
            graded = [g for g in graded if not _golden_reference(g["ref_sha256"])]
        ids = [r["judgment_id"] for r in rows]
        if graded:  # the stimuli's means: what they are made of
            used = {(g["ref_sha256"], g["test_sha256"]) for g in graded}
            originals = {g["ref_sha256"] for g in graded if g["scale"] == "preference"}
            ids += [r["rating_id"] for r in ratings if ((r["ref_sha256"], r["test_sha256"]) in used
                    and r["scale"] in ("mushra", "mos")) or (r["scale"] == "preference"
                    and _extra(r).get("original_sha256") in originals)]  # fmt: skip
        if protocol_key != "official":
            ids.append(f"protocol:{protocol_key}")
        dhash = data_hash(ids)

        def preferred(stimuli: list[dict]) -> int:
            return len({g["group"] for g in stimuli if g["scale"] == "preference"})

        summary.update(judgments=len(rows), golden_pairs=len(golden_rows),
                       rated_stimuli=sum(g["scale"] != "preference" for g in graded),
                       golden_stimuli=sum(g["scale"] != "preference" for g in golden_graded),
                       preference_pairs=preferred(graded), golden_preference_pairs=preferred(golden_graded),
                       missing_audio=missing, ignored=ignored,
                       data_hash=dhash)  # fmt: skip
        if ignored["preference"]:
            log(f"{ignored['preference']} preference ratings not used: they name no original (an 'original' "
                "column: the recording both versions were made from) to rank their distances against")  # fmt: skip
        last = next((t for t in store.trainings() if t["status"] in ("promoted", "rejected")
                     and _settings_of(t) in (None, asdict(settings))), None)  # fmt: skip
        if last is not None and last["data_hash"] == dhash:
            summary.update(status="skipped", reason=f"no new judgments since training {last['training_id']} "
                                                    "(with the same settings)")  # fmt: skip
            log(summary["reason"])
            return _done(summary, started)
        refs = {r["ref_sha256"] for r in rows} | {g["ref_sha256"] for g in graded}
        why = None
        if len(refs) < 4:
            why = "fewer than 4 reference recordings to train and test on"
        elif not golden_rows and not golden_graded:
            why = "no golden pairs: pass a golden judgment or ratings file (--golden), or data on more references"
        elif graded and settings.mode == "all":
            why = ("ratings train the distance through its channel weights: use --mode channels "
                   "(mode all trains on JND pairs only)")  # fmt: skip
        if why:
            summary.update(status="failed", reason=why)
            return _done(summary, started)

        data = _split(rows, golden_rows, graded, golden_graded, settings)
        store.begin_training(training_id, dhash, len(rows) + len(graded))
        try:
            return _train_and_decide(store, db, settings, summary, production, data, dhash, training_id,
                                     report_dir, log, started)  # fmt: skip
        except BaseException as exc:
            store.finish_training(training_id, "failed", reason=f"{type(exc).__name__}: {exc}")
            raise
    finally:
        store.release_writer()


def _settings_of(training: dict) -> dict | None:
    """The settings a stored training ran with (None for a training that recorded none)."""
    import json

    summary = training.get("summary")
    if isinstance(summary, str):
        summary = json.loads(summary)
    settings = (summary or {}).get("settings")
    return None if settings is None else {**asdict(RetrainSettings()), **settings}


def _split(rows, golden_rows, graded, golden_graded, settings) -> _Data:
    """The held-out test split, by reference recording, once for both kinds: a reference's JND pairs and
    its rated stimuli are on the same side (with fewer than two references, everything trains)."""
    from jndqa.metric.train import split_by_group

    keys = [r["ref_sha256"] for r in rows] + [g["ref_sha256"] for g in graded]
    held: set[str] = set()
    if len(set(keys)) >= 2:
        _, test = split_by_group(keys, settings.held_out, seed=settings.seed)
        held = {keys[i] for i in test}

    def side(items: list[dict], test: bool) -> list[dict]:
        return [r for r in items if (r["ref_sha256"] in held) == test]

    return _Data({"train": side(rows, False), "test": side(rows, True), "golden": golden_rows},
                 {"train": side(graded, False), "test": side(graded, True), "golden": golden_graded})  # fmt: skip


def _terms(store, net, items: list[dict], settings, log):
    """:func:`jndqa.flows.terms.cached_terms` of ``items`` under the settings' protocol, each lined up as its
    ``lineup`` says (JND pairs: ``pad`` by default; rated stimuli: ``align``): (terms ``[N, 992]`` float32 of
    the pairs that have them, their indices, the full result)."""
    import torch

    from .terms import TermsPair, cached_terms

    pairs = [TermsPair(str(r["ref"]), str(r["test"]), r["ref_sha256"], r["test_sha256"],
                       r.get("lineup", "pad")) for r in items]  # fmt: skip
    res = cached_terms(store, net, pairs, protocol=settings.protocol, protocol_key=_protocol_key(settings),
                       window=round(settings.window_seconds * 22050), hop=round(settings.hop_seconds * 22050),
                       log=log)  # fmt: skip
    ok = res.ok
    return torch.from_numpy(res.terms[ok]).float(), ok, res


def _train_and_decide(store, db, settings, summary, production, data: _Data, dhash, training_id, report_dir,
                      log, started) -> dict:  # fmt: skip
    """Train, calibrate, evaluate, gate and register (see the module docstring)."""
    import torch

    from jndqa.metric import RankingData, fit_calibrator, save_model
    from jndqa.metric.modelfile import parameter_digest
    from jndqa.metric.train import TrainConfig, distances_from_terms, load_pair, train

    parent, parent_cals = load_network(store, production)
    key = _protocol_key(settings)
    parent_cal = parent_cals.get(key)
    mode_all = settings.mode == "all"
    n = {(k, s): data.count(k, s) for k in ("jnd", "graded") for s in ("train", "test", "golden")}
    log(f"training {training_id} under {key}: {n['jnd', 'train']} pairs and {n['graded', 'train']} rated stimuli "
        f"to train on, {n['jnd', 'test']} pairs and {n['graded', 'test']} stimuli held out, {n['jnd', 'golden']} "
        f"golden pairs and {n['graded', 'golden']} golden stimuli; parent {production['version']}, "
        f"mode {settings.mode}")  # fmt: skip

    # Terms under the protocol with the parent's kernels: cached in the store, computed once.
    t0 = time.perf_counter()
    terms, failures, computed, cached = {}, [], 0, 0
    for kind in ("jnd", "graded"):
        for split in ("train", "test", "golden"):
            items = getattr(data, kind)[split]
            t, ok, res = _terms(store, parent, items, settings, log)
            computed, cached = computed + res.computed, cached + res.cached
            getattr(data, kind)[split] = [items[i] for i in ok]
            terms[(kind, split)] = t
            failures += [{**f, "kind": kind, "split": split} for f in res.failures]
    summary["terms"] = {"seconds": round(time.perf_counter() - t0, 3), "computed": computed, "cached": cached,
                        "failures": failures}  # fmt: skip
    jnd, graded = data.jnd, data.graded
    labels = {s: np.array([r["label"] for r in jnd[s]], dtype=np.int64) for s in ("train", "test", "golden")}
    n_jnd = len(jnd["train"])
    ranking = None
    if graded["train"]:
        ranking = RankingData(terms[("graded", "train")], np.array([g["mean"] for g in graded["train"]]),
                              tuple(g["group"] for g in graded["train"]),
                              split_keys=tuple(g["ref_sha256"] for g in graded["train"]))  # fmt: skip

    # Train (mode all: through the official protocol on the judged pairs' audio).
    history: list[dict] = []
    config = TrainConfig(mode=settings.mode, epochs=settings.epochs, patience=settings.patience, lr=settings.lr,
                         seed=settings.seed)  # fmt: skip
    ckpt = Path(db).parent / "models" / ".training" / f"{dhash[:16]}-{production['version']}-{settings.mode}"
    train_pairs = [load_pair(r["ref"], r["test"]) for r in jnd["train"]] if mode_all else None
    result = train(parent, train_pairs, labels["train"], [r["ref_sha256"] for r in jnd["train"]], config,
                   terms=None if mode_all else terms[("jnd", "train")], checkpoint_dir=ckpt,
                   progress=lambda e: history.append(asdict(e)), ranking=ranking,
                   ranking_weight=settings.ranking_weight)  # fmt: skip
    candidate = result.model
    cand_terms = terms
    if mode_all:  # new kernels: the candidate's own terms under the protocol (cached under its digest)
        cand_terms = {k: _terms(store, candidate, getattr(data, k[0])[k[1]], settings, None)[0]
                      for k in terms if k[0] == "jnd"}  # fmt: skip

    # Calibration of p_jnd, fitted on the JND pairs of the training's validation split, under the protocol
    # trained (and under official, from the same pairs' official terms).
    val = np.array([u for u in result.val_index if u < n_jnd], dtype=np.int64)
    calibrations: dict[str, Any] = {}
    if len(val) and len(set(labels["train"][val])) == 2:
        d_val, _ = _predictions(candidate, None, cand_terms[("jnd", "train")][val])
        calibrations[key] = fit_calibrator(d_val, labels["train"][val], method=settings.calibration)
        if key != "official":
            official = RetrainSettings(**{**asdict(settings), "protocol": "official"})
            t_off, ok, _ = _terms(store, candidate, [jnd["train"][i] for i in val], official, None)
            d_off, _ = _predictions(candidate, None, t_off)
            calibrations["official"] = fit_calibrator(d_off, labels["train"][val][ok], method=settings.calibration)
    calibrator = calibrations.get(key)

    metrics: dict[str, Any] = {}
    reliability: dict[str, Any] = {}
    for split in ("test", "golden"):
        if len(jnd[split]):
            groups = [r["ref_sha256"] for r in jnd[split]]
            _, p_cand = _predictions(candidate, calibrator, cand_terms[("jnd", split)])
            _, p_prod = _predictions(parent, parent_cal, terms[("jnd", split)])
            ev_c = evaluate_pairs(p_cand, labels[split], groups, settings)
            ev_p = evaluate_pairs(p_prod, labels[split], groups, settings)
            metrics[split] = {"candidate": _estimates(ev_c), "production": _estimates(ev_p), "n": ev_c.n}
            reliability[split] = {"candidate": asdict(ev_c.reliability), "production": asdict(ev_p.reliability)}
        if len(graded[split]):
            with torch.no_grad():
                d_c = distances_from_terms(candidate, terms[("graded", split)]).double().numpy()
                d_p = distances_from_terms(parent, terms[("graded", split)]).double().numpy()
            for kind in ("ratings", "preference"):  # MUSHRA/MOS references; preferred pairs, apart
                idx = [i for i, g in enumerate(graded[split]) if (g["scale"] == "preference") == (kind == "preference")]
                if idx:
                    metrics[f"{kind}_{split}"] = rating_evaluation(d_c[idx], d_p[idx], [graded[split][i] for i in idx],
                                                                   settings)  # fmt: skip
    verdict, reason = gate(metrics, settings.margin, settings.rating_margin)
    version = f"dpam-{parent.model}-ft-{parameter_digest(candidate)[:12]}"
    summary.update(candidate=version, decision=verdict, reason=reason, metrics=metrics,
                   reliability=reliability, history=history, best_epoch=result.best_epoch,
                   train_pairs=len(result.train_index), val_pairs=len(result.val_index),
                   test_pairs=len(jnd["test"]), test_stimuli=len(graded["test"]),
                   calibration=calibrator.to_dict() if calibrator else None,
                   calibrations={k: c.to_dict() for k, c in calibrations.items()},
                   ranking=result.extra, resumed_from=result.resumed_from,
                   trained_under="official" if mode_all else key)  # fmt: skip
    log(f"candidate {version}: {verdict} ({reason})")

    if store.model(version) is None:
        weights = Path(db).parent / "models" / f"{version}.safetensors"
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_model(candidate, weights, model_id=version, calibration=calibrations.get("official"),
                   calibrations=calibrations, metadata={"parent": production["version"], "data_hash": dhash,
                                                        "training_id": training_id, "protocol": key})  # fmt: skip
        store.add_model({
            "version": version, "model_id": version, "kind": parent.model, "parent": production["version"],
            "data_hash": dhash, "weights": str(weights.relative_to(Path(db).parent)),
            "weights_sha256": file_sha256(weights), "metrics": metrics,
            "calibration": {k: c.to_dict() for k, c in calibrations.items()},
            "params": {**result.hyperparameters(), "protocol": key, **result.extra},
        })  # fmt: skip
        store.decide_model(version, "production" if verdict == "promote" else "rejected", reason)
    else:
        reason = f"{reason}; the same weights are already registered as {version}: registry unchanged"
        summary["reason"] = reason
    summary["status"] = "promoted" if verdict == "promote" else "rejected"
    summary["production"] = store.production_model()["version"]
    from jndqa.reports import render_training_report

    out = Path(report_dir) if report_dir else Path(db).parent / "models" / "reports"
    summary["report"] = str(render_training_report(summary, out / training_id))
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: nothing left to resume
    store.finish_training(training_id, summary["status"], candidate=version, decision=verdict, reason=reason,
                          summary=summary)  # fmt: skip
    return _done(summary, started)


def evaluate_pairs(p, labels, groups, settings):
    from jndqa.metric import evaluate

    return evaluate(p, labels, groups, n_boot=settings.bootstrap, seed=settings.seed)


def rating_evaluation(d_cand: np.ndarray, d_prod: np.ndarray, stimuli: list[dict], settings) -> dict:
    """Within-item Spearman (per reference, averaged: does the distance rank one recording's versions as
    listeners did?) of candidate and production on ``stimuli``, and of their difference, each with a
    percentile-bootstrap 95 % interval resampling references (the same resamples for both: paired)."""
    from jndqa.stats import bootstrap, within_item_spearman

    scores = np.array([g["mean"] for g in stimuli], dtype=np.float64)
    groups = np.array([g["group"] for g in stimuli], dtype=object)

    def stat(idx: np.ndarray) -> np.ndarray:
        c = within_item_spearman(scores[idx], -d_cand[idx], groups[idx])
        p = within_item_spearman(scores[idx], -d_prod[idx], groups[idx])
        return np.array([c, p, c - p])

    point = stat(np.arange(len(scores)))
    low, high = bootstrap(stat, len(scores), groups=groups, n_boot=settings.bootstrap, seed=settings.seed,
                          omit_undefined=True)  # fmt: skip

    def est(k: int) -> dict:
        return {"value": _num(point[k]), "ci": [_num(low[k]), _num(high[k])]}

    return {"candidate": {"within_item_spearman": est(0)}, "production": {"within_item_spearman": est(1)},
            "difference": est(2), "n": len(scores), "references": len(set(groups))}  # fmt: skip


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _estimates(ev) -> dict:
    return {m: {"value": getattr(ev, m).value, "ci": [getattr(ev, m).low, getattr(ev, m).high]}
            for m in ("accuracy", "auc", "log_loss", "ece")}  # fmt: skip


def gate(metrics: dict, margin: float, rating_margin: float = 0.05) -> tuple[str, str]:
    """("promote" | "reject", why) from the held-out and golden metrics of candidate and production.

    JND pairs (``test``, ``golden``): on held-out pairs, accuracy above production's by ``margin`` and
    lower log loss; on the golden set, accuracy not lower and log loss not higher. Ratings
    (``ratings_test``, ``ratings_golden``) and preferred pairs (``preference_test``,
    ``preference_golden``): held out, within-item Spearman above production's by ``rating_margin``;
    golden, not lower. Every kind of data present must
    pass; the reason gives the numbers (with the bootstrap interval of the rating difference)."""
    facts, problems = [], []
    if "test" in metrics or "golden" in metrics:
        t, g = metrics.get("test"), metrics.get("golden")

        def v(split, who, m):
            return split[who][m]["value"]

        if t:
            acc_c, acc_p = v(t, "candidate", "accuracy"), v(t, "production", "accuracy")
            ll_c, ll_p = v(t, "candidate", "log_loss"), v(t, "production", "log_loss")
            facts.append(f"held-out accuracy {acc_c:.3f} vs {acc_p:.3f}, log loss {ll_c:.3f} vs {ll_p:.3f}")
            if acc_c < acc_p + margin:
                problems.append(f"held-out accuracy does not beat production by the margin {margin}")
            elif ll_c >= ll_p:
                problems.append("held-out log loss is not lower than production's")
        if g:
            ga, gl = (v(g, "candidate", "accuracy"), v(g, "production", "accuracy")), (
                v(g, "candidate", "log_loss"), v(g, "production", "log_loss"))  # fmt: skip
            facts.append(f"golden accuracy {ga[0]:.3f} vs {ga[1]:.3f}, log loss {gl[0]:.3f} vs {gl[1]:.3f}")
            if v(g, "candidate", "accuracy") < v(g, "production", "accuracy"):
                problems.append("worse than production on the golden set")
            elif v(g, "candidate", "log_loss") > v(g, "production", "log_loss"):
                problems.append("worse log loss than production on the golden set")
    for split, name, unit in (("ratings_test", "held-out", "references"), ("ratings_golden", "golden", "references"),
                              ("preference_test", "held-out preference", "pairs"),
                              ("preference_golden", "golden preference", "pairs")):  # fmt: skip
        r = metrics.get(split)
        if not r:
            continue
        c, p = r["candidate"]["within_item_spearman"]["value"], r["production"]["within_item_spearman"]["value"]
        lo, hi = r["difference"]["ci"]
        facts.append(f"{name} within-item Spearman {_f(c)} vs {_f(p)} (difference 95% CI [{_f(lo)}, {_f(hi)}], "
                     f"{r['references']} {unit})")  # fmt: skip
        if c is None or p is None:
            problems.append(f"{name} within-item Spearman is undefined (too few distinct ratings per {unit[:-1]})")
        elif split.endswith("_test") and c < p + rating_margin:
            problems.append(f"{name} within-item Spearman does not beat production by the margin {rating_margin}")
        elif split.endswith("_golden") and c < p:
            problems.append(f"ranks the {name} stimuli worse than production")
    if not facts:
        return "reject", "nothing to evaluate on: no held-out or golden data"
    text = "; ".join(facts)
    if problems:
        return "reject", f"{problems[0]}: {text}"
    return "promote", f"better on held-out data by the margin and not worse on the golden set: {text}"


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _done(summary: dict, started: float) -> dict:
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


# ------------------------------------------------------------------- Prefect
@flow(name="jndqa-retrain", log_prints=True)
def retrain_flow(judgments: list[str], db: str, settings: dict | None = None) -> dict:
    """Ingest judgments, train a candidate, evaluate, gate and register (module docstring)."""
    return retrain(judgments, db, RetrainSettings(**(settings or {})))


JUDGMENT_PATTERNS = ("*.csv", "*.tsv", "*.txt")


@flow(name="jndqa-retrain-scheduled")
def scheduled_retrain(judgments_dir: str, db: str, settings: dict | None = None):
    """Deployment entry point (prefect.yaml): retrain on every judgment and rating file (``*.csv``, ``*.tsv``,
    ``*.txt``) in ``judgments_dir``; ``settings`` as :class:`RetrainSettings` (``webmushra_config`` for
    webMUSHRA results).
    Does nothing (state Completed, "skipped") when no new judgment has arrived since the last
    training; ends Failed when the run failed."""
    from prefect.states import Completed, Failed

    folder = Path(judgments_dir)
    files = sorted({str(p) for pattern in JUDGMENT_PATTERNS for p in folder.glob(pattern)})
    if not files:
        return Completed(message=f"no judgment files in {folder}: nothing to do")
    summary = retrain_flow(files, db, settings)
    message = f"training {summary['training_id']}: {summary['status']} ({summary.get('reason', '')})"
    # A Failed state's data must be an exception: the summary travels with Completed only.
    return Failed(message=message) if summary["status"] == "failed" else Completed(message=message, data=summary)
