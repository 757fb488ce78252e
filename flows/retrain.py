"""Retraining the metric when new judgments arrive: ingest → train → evaluate → gate → register.

Plain functions do the work (tests call them); :func:`retrain_flow` wires them into Prefect and
:func:`scheduled_retrain` is the deployment's entry point (prefect.yaml).

- **Ingest**: every judgment file is read and validated (:mod:`jndqa.datasets.judgments`); good
  rows go to the store's ``judgments`` table, bad rows to ``quarantine`` with their reason. Ingest
  is idempotent: a judgment is keyed by its content (audio hashes, label, worker, time).
- **Nothing new, nothing done**: the training data hash is the hash of every stored judgment id;
  when it equals the last finished training's, the run stops there ("skipped").
- **Splits**, all by reference recording (no reference on two sides): a *golden* set, fixed for
  good (a judgment file given with ``golden``, else the references whose hash falls in a fixed
  1-in-5 bucket), never trained on; a *held-out* test split of the rest (``held_out``), never
  trained on; the remainder is training data, of which :func:`jndqa.metric.train` holds out its
  own validation split for early stopping and for fitting the calibration.
- **Train** a candidate from the production model (``mode``: head, channels or all), then fit the
  p_jnd calibration (Platt on log distance) on the validation split.
- **Evaluate** candidate and production on the same held-out and golden pairs: accuracy, ROC AUC,
  log loss, expected calibration error, bootstrap intervals by reference.
- **Gate**: promote only when, on held-out data, the candidate's accuracy beats production's by
  ``margin`` and its log loss is lower, and on the golden set its accuracy is not lower and its
  log loss not higher. Otherwise production stays; the reason is recorded.
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from jndqa.datasets.corpus import file_sha256

__all__ = ["RetrainSettings", "load_network", "official_registry_row", "retrain", "retrain_flow", "scheduled_retrain"]

GOLDEN_BUCKETS = 5  # a reference is golden when its hash falls in bucket 0 of 5


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


def official_registry_row() -> dict:
    """The registry row of the official DPAM release's scratch weights: the first production
    model of a new store (``store.ensure_model(official_registry_row())``)."""
    return {"version": "dpam-scratch-official", "model_id": "dpam-scratch-official", "kind": "scratch", "parent": None,
            "reason": "the official DPAM release (dpam 0.0.4), scratch model"}  # fmt: skip


def load_network(store, row: dict):
    """The :class:`jndqa.metric.DPAM` and calibrator of a registry row (the release's weights
    for the official model)."""
    from jndqa.metric import DPAM, load_calibration, load_model

    weights = store.model_weights(row)
    if weights is None:
        return DPAM.official("scratch"), None
    return load_model(weights), load_calibration(weights)


def model_key(row: dict) -> tuple[str, str]:
    """(model id, model version) stored with every score made with a registry model."""
    official = official_registry_row()["version"]
    if row["version"] == official:
        return official, "dpam-0.0.4"
    return row["version"], (row.get("weights_sha256") or "")[:16]


def _golden_reference(ref_sha256: str) -> bool:
    return int(hashlib.sha256(f"golden:{ref_sha256}".encode()).hexdigest(), 16) % GOLDEN_BUCKETS == 0


def ingest(store, paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """Read, validate and store judgment files. Returns (per-file counts, failures of files that
    could not be read at all)."""
    from jndqa.datasets.judgments import JudgmentFileError, read_judgments

    files, failures = [], []
    for path in paths:
        try:
            jf = read_judgments(path)
        except JudgmentFileError as exc:
            failures.append({"file": str(path), "reason": str(exc)})
            continue
        counts = store.ingest_judgments(
            {"content_hash": jf.content_hash, "path": str(jf.path), "format": jf.format},
            [r.row() for r in jf.rows],
            [q.row() for q in jf.quarantine],
        )
        files.append({"file": str(path), "format": jf.format, "rows": len(jf.rows), **counts,
                      "quarantine_kinds": jf.quarantine_counts()})  # fmt: skip
    return files, failures


def _predictions(net, calibrator, pairs, terms, mode_all: bool):
    """Distances and p(different): from precomputed terms when the feature network is the
    parent's, else by running the network; calibrated when there is a calibrator."""
    from jndqa.metric.train import predict, predict_from_terms

    pred = predict(net, pairs) if mode_all else predict_from_terms(net, terms)
    d = np.asarray(pred.distance, dtype=np.float64)
    p = calibrator(d) if calibrator is not None else np.asarray(pred.p_jnd, dtype=np.float64)
    return d, p


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

    from jndqa.datasets.judgments import data_hash, read_judgments
    from jndqa.store import Store

    settings = settings or RetrainSettings()
    started = time.perf_counter()
    store = Store(db)
    training_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    store.acquire_writer(f"retrain {training_id}")
    try:
        store.ensure_model(official_registry_row())
        files, file_failures = ingest(store, paths)
        for f in files:
            log(f"{f['file']}: {f['rows']} good rows ({f['new']} new), {f['quarantined']} quarantined")
        for f in file_failures:
            log(f"{f['file']}: not read: {f['reason']}")
        production = store.production_model()
        summary: dict[str, Any] = {
            "training_id": training_id, "files": files, "file_failures": file_failures,
            "production_before": production["version"], "production": production["version"],
            "settings": asdict(settings), "candidate": None, "report": None,
        }  # fmt: skip
        rows = [r for r in store.judgments() if Path(r["ref"]).is_file() and Path(r["test"]).is_file()]
        missing = len(store.judgments()) - len(rows)
        golden_ids: set[str] = set()
        golden_rows: list[dict] = []
        if settings.golden:
            gf = read_judgments(settings.golden)
            golden_rows = [r.row() for r in gf.rows]
            golden_ids = {r["judgment_id"] for r in golden_rows}
            golden_refs = {r["ref_sha256"] for r in golden_rows}
            rows = [r for r in rows if r["judgment_id"] not in golden_ids and r["ref_sha256"] not in golden_refs]
        else:
            golden_rows = [r for r in rows if _golden_reference(r["ref_sha256"])]
            rows = [r for r in rows if not _golden_reference(r["ref_sha256"])]
        dhash = data_hash([r["judgment_id"] for r in rows])
        summary.update(judgments=len(rows), golden_pairs=len(golden_rows), missing_audio=missing, data_hash=dhash)
        last = next((t for t in store.trainings() if t["status"] in ("promoted", "rejected")), None)
        if last is not None and last["data_hash"] == dhash:
            summary.update(status="skipped", reason=f"no new judgments since training {last['training_id']}")
            log(summary["reason"])
            return _done(summary, started)
        if len({r["ref_sha256"] for r in rows}) < 4 or not golden_rows:
            why = (
                "fewer than 4 reference recordings to train and test on"
                if golden_rows
                else "no golden pairs: pass a golden judgment file (--golden), or judgments on more references"
            )
            summary.update(status="failed", reason=why)  # fmt: skip
            return _done(summary, started)

        store.begin_training(training_id, dhash, len(rows))
        try:
            return _train_and_decide(store, db, settings, summary, production, rows, golden_rows, dhash, training_id,
                                     report_dir, log, started)  # fmt: skip
        except BaseException as exc:
            store.finish_training(training_id, "failed", reason=f"{type(exc).__name__}: {exc}")
            raise
    finally:
        store.release_writer()


def _train_and_decide(store, db, settings, summary, production, rows, golden_rows, dhash, training_id, report_dir,
                      log, started) -> dict:  # fmt: skip
    """Train, calibrate, evaluate, gate and register (see the module docstring)."""
    import torch

    from jndqa.metric import evaluate, fit_calibrator, save_model
    from jndqa.metric.modelfile import parameter_digest
    from jndqa.metric.train import TrainConfig, load_pair, pair_terms, split_by_group, train

    parent, parent_cal = load_network(store, production)
    refs = np.array([r["ref_sha256"] for r in rows], dtype=object)
    rest, test = split_by_group(refs, settings.held_out, seed=settings.seed)
    log(f"training {training_id}: {len(rest)} pairs to train on, {len(test)} held out, "
        f"{len(golden_rows)} golden; parent {production['version']}, mode {settings.mode}")  # fmt: skip

    mode_all = settings.mode == "all"
    train_rows = [rows[i] for i in rest]
    test_rows = [rows[i] for i in test]
    # Each pair's per-channel layer terms under the parent, computed once, in chunks; the
    # audio is kept only when the whole network trains (mode all).
    sets: dict[str, list | None] = {}
    terms = {}
    for split, rs in (("train", train_rows), ("test", test_rows), ("golden", golden_rows)):
        chunks, kept = [], []
        for start in range(0, len(rs), 64):
            pairs = [load_pair(r["ref"], r["test"]) for r in rs[start : start + 64]]
            with torch.no_grad():
                chunks.append(pair_terms(parent, pairs))
            if mode_all:
                kept += pairs
        terms[split] = torch.cat(chunks)
        sets[split] = kept if mode_all else None
    labels = {k: np.array([r["label"] for r in rs]) for k, rs in
              (("train", train_rows), ("test", test_rows), ("golden", golden_rows))}  # fmt: skip
    groups = {"test": [r["ref_sha256"] for r in test_rows], "golden": [r["ref_sha256"] for r in golden_rows]}
    history: list[dict] = []
    config = TrainConfig(mode=settings.mode, epochs=settings.epochs, patience=settings.patience, lr=settings.lr,
                         seed=settings.seed)  # fmt: skip
    ckpt = Path(db).parent / "models" / ".training" / f"{dhash[:16]}-{production['version']}-{settings.mode}"
    train_groups = [r["ref_sha256"] for r in train_rows]
    result = train(parent, sets["train"] if mode_all else None, labels["train"], train_groups, config,
                   terms=None if mode_all else terms["train"], checkpoint_dir=ckpt,
                   progress=lambda e: history.append(asdict(e)))  # fmt: skip
    candidate = result.model
    # Calibration: fitted on the validation split the training held out.
    val = result.val_index
    val_terms = terms["train"][val]
    val_pairs = [sets["train"][i] for i in val] if mode_all else None
    d_val, _ = _predictions(candidate, None, val_pairs, val_terms, mode_all)
    calibrator = fit_calibrator(d_val, labels["train"][val], method=settings.calibration)

    metrics: dict[str, Any] = {}
    reliability: dict[str, Any] = {}
    for split in ("test", "golden"):
        _, p_cand = _predictions(candidate, calibrator, sets[split], terms[split], mode_all)
        _, p_prod = _predictions(parent, parent_cal, sets[split], terms[split], False)
        ev_c = evaluate(p_cand, labels[split], groups[split], n_boot=settings.bootstrap, seed=settings.seed)
        ev_p = evaluate(p_prod, labels[split], groups[split], n_boot=settings.bootstrap, seed=settings.seed)
        metrics[split] = {"candidate": _estimates(ev_c), "production": _estimates(ev_p), "n": ev_c.n}
        reliability[split] = {"candidate": asdict(ev_c.reliability), "production": asdict(ev_p.reliability)}
    verdict, reason = gate(metrics, settings.margin)
    version = f"dpam-{parent.model}-ft-{parameter_digest(candidate)[:12]}"
    summary.update(candidate=version, decision=verdict, reason=reason, metrics=metrics,
                   reliability=reliability, history=history, best_epoch=result.best_epoch,
                   train_pairs=len(result.train_index), val_pairs=len(val), test_pairs=len(test_rows),
                   calibration=calibrator.to_dict(), resumed_from=result.resumed_from)  # fmt: skip
    log(f"candidate {version}: {verdict} ({reason})")

    if store.model(version) is None:
        weights = Path(db).parent / "models" / f"{version}.safetensors"
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_model(candidate, weights, model_id=version, calibration=calibrator,
                   metadata={"parent": production["version"], "data_hash": dhash,
                             "training_id": training_id})  # fmt: skip
        store.add_model({
            "version": version, "model_id": version, "kind": parent.model, "parent": production["version"],
            "data_hash": dhash, "weights": str(weights.relative_to(Path(db).parent)),
            "weights_sha256": file_sha256(weights),
            "metrics": metrics, "calibration": calibrator.to_dict(), "params": result.hyperparameters(),
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


def _estimates(ev) -> dict:
    return {m: {"value": getattr(ev, m).value, "ci": [getattr(ev, m).low, getattr(ev, m).high]}
            for m in ("accuracy", "auc", "log_loss", "ece")}  # fmt: skip


def gate(metrics: dict, margin: float) -> tuple[str, str]:
    """("promote" | "reject", why) from held-out and golden metrics of candidate and production."""
    t, g = metrics["test"], metrics["golden"]

    def v(split, who, m):
        return split[who][m]["value"]

    acc_c, acc_p = v(t, "candidate", "accuracy"), v(t, "production", "accuracy")
    ll_c, ll_p = v(t, "candidate", "log_loss"), v(t, "production", "log_loss")
    facts = (f"held-out accuracy {acc_c:.3f} vs {acc_p:.3f}, log loss {ll_c:.3f} vs {ll_p:.3f}; golden accuracy "
             f"{v(g, 'candidate', 'accuracy'):.3f} vs {v(g, 'production', 'accuracy'):.3f}, log loss "
             f"{v(g, 'candidate', 'log_loss'):.3f} vs {v(g, 'production', 'log_loss'):.3f}")  # fmt: skip
    if acc_c < acc_p + margin:
        return "reject", f"held-out accuracy does not beat production by the margin {margin}: {facts}"
    if ll_c >= ll_p:
        return "reject", f"held-out log loss is not lower than production's: {facts}"
    if v(g, "candidate", "accuracy") < v(g, "production", "accuracy"):
        return "reject", f"worse than production on the golden set: {facts}"
    if v(g, "candidate", "log_loss") > v(g, "production", "log_loss"):
        return "reject", f"worse log loss than production on the golden set: {facts}"
    return "promote", f"better on held-out data by the margin and not worse on the golden set: {facts}"


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
    """Deployment entry point (prefect.yaml): retrain on every judgment file in ``judgments_dir``.
    Does nothing (state Completed, "skipped") when no new judgment has arrived since the last
    training; ends Failed when the run failed."""
    from prefect.states import Completed, Failed

    folder = Path(judgments_dir)
    files = sorted({str(p) for pattern in JUDGMENT_PATTERNS for p in folder.glob(pattern)})
    if not files:
        return Completed(message=f"no judgment files in {folder}: nothing to do")
    summary = retrain_flow(files, db, settings)
    message = f"training {summary['training_id']}: {summary['status']} ({summary.get('reason', '')})"
    return (
        Failed(message=message, data=summary)
        if summary["status"] == "failed"
        else Completed(message=message, data=summary)
    )
