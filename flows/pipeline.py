"""The nightly run as plain functions; ``flows/nightly.py`` wires them into Prefect.

One unit of work is one corpus item with the variants it still needs: every
variant is rendered (``jndqa.variants``), then scored against the reference,
whose features are computed once (``jndqa.metric``). Work units return rows;
only the process running the night writes to the store, one transaction per
item as results arrive, so a killed night keeps what it finished and a rerun
completes only the rest.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jndqa.datasets import scan_corpus
from jndqa.store import Store, compare_runs

from .config import RunConfig

__all__ = ["ItemResult", "Night", "choose_kept_audio", "process_item", "resolve_model"]

OFFICIAL_MODEL_VERSION = "dpam-0.0.4"


def resolve_model(name: str, store: Store | None = None, *, protocol: str = "dense") -> dict:
    """The model a config's ``metric.model`` names: ``production`` (the registry's production
    model), a registered version (``jndqa models`` lists them), or an official model name
    (``scratch``, ``finetune``, ... or ``dpam-scratch-official``). Returns ``model_id``,
    ``model_version`` (stored with every score), ``weights`` (None: the release's) and
    ``official`` (the release model's name, for the release's weights)."""
    from jndqa.metric import MODELS
    from jndqa.metric import resolve_model as official

    from .retrain import model_key, official_registry_row

    if protocol == "student":  # the committed student (metric/weights), whatever metric.model says
        import hashlib

        from jndqa.metric.student import STUDENT_VERSION, student_weights

        from .student import register_student

        digest = hashlib.sha256(student_weights().read_bytes()).hexdigest()[:16]
        if store is not None:
            register_student(store)
        return {"model_id": STUDENT_VERSION, "model_version": digest, "weights": None, "official": "scratch"}
    row = None
    if store is not None:
        store.ensure_model(official_registry_row())
        row = store.production_model() if name == "production" else store.model(name)
    elif name == "production":
        name = "scratch"
    if row is not None and row.get("weights"):
        model_id, version = model_key(row)
        weights = str(store.model_weights(row))
        return {"model_id": model_id, "model_version": version, "weights": weights, "official": None}
    if row is not None:
        name = "scratch"
    if name not in MODELS and not any(name == f"dpam-{m}-official" for m in MODELS):
        raise ValueError(f"metric.model {name!r} is neither an official model ({', '.join(MODELS)}) nor a "
                         "registered version (see `jndqa models`)")  # fmt: skip
    kind, model_id = official(name)
    return {"model_id": model_id, "model_version": OFFICIAL_MODEL_VERSION, "weights": None, "official": kind}


def protocol_key(cfg: RunConfig) -> str:
    """The protocol as stored in a result's key: window settings other than the defaults are part
    of it, since they change the numbers."""
    m = cfg.metric
    if m.protocol != "dense" or (m.window_seconds, m.hop_seconds) == (8.0, 4.0):
        return m.protocol
    return f"dense:w{m.window_seconds:g}h{m.hop_seconds:g}"


# -------------------------------------------------------------------- scoring
_SCORERS: dict[tuple, Any] = {}
_SCORER_LOCK = threading.Lock()
_SCORE_LOCK = threading.Lock()  # one scoring at a time per process: torch already uses every core


def _scorer(model: str | None, weights: str | None, protocol: str, window: float, hop: float, tolerance: int):
    """A scorer per (model, protocol, windows), shared by the items of a process. ``weights``: a
    registered model's safetensors file (with its p_jnd calibration), else the release's ``model``."""
    from jndqa.metric import DPAMScorer, load_calibration, load_model

    key = (model, weights, protocol, window, hop, tolerance)
    with _SCORER_LOCK:
        if key not in _SCORERS:
            network = calibrator = None
            if weights:
                network, calibrator = load_model(weights), load_calibration(weights)
            _SCORERS[key] = DPAMScorer(model or "scratch", protocol, network=network, calibrator=calibrator,
                                       window_seconds=window, hop_seconds=hop, length_tolerance=tolerance)  # fmt: skip
        return _SCORERS[key]


@dataclass
class ItemResult:
    sha256: str
    path: str
    scores: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    render_seconds: float = 0.0
    score_seconds: float = 0.0


def process_item(work: dict, settings: dict) -> ItemResult:
    """Render and score the variants of one item. ``work``: ``sha256``, ``path`` (as named in the
    corpus), ``abspath``, ``specs`` (spec dicts with ``id`` and ``encoder_version``).
    ``settings``: model, protocol, protocol_key, model_id, model_version, window/hop/tolerance,
    ffmpeg, timeout, match_loudness, normalize_corpus. Never raises for bad audio: failures
    are rows."""
    from jndqa.metric import prepare_samples
    from jndqa.variants import VariantError, load_reference, normalize_loudness, parse_variants, render_all

    res = ItemResult(work["sha256"], work["path"])
    specs = parse_variants([s["spec"] for s in work["specs"]], base_dir=settings.get("base_dir"))
    versions = {s["id"]: s["encoder_version"] for s in work["specs"]}
    t0 = time.perf_counter()
    try:
        ref = load_reference(work["abspath"], name=work["path"], ffmpeg=settings.get("ffmpeg"))
        if settings.get("normalize_corpus") is not None:
            ref = normalize_loudness(ref, settings["normalize_corpus"])
    except VariantError as exc:
        res.failures = [{**exc.row(), "variant": s.label, "spec_id": s.id} for s in specs]
        return res
    rendered = render_all(
        ref,
        specs,
        ffmpeg=settings.get("ffmpeg"),
        timeout=settings.get("timeout", 120.0),
        match_loudness=settings.get("match_loudness", False),
        workers=settings.get("render_workers", 2),
    )
    res.render_seconds = time.perf_counter() - t0
    good = []
    for spec, r in zip(specs, rendered, strict=True):
        if isinstance(r, VariantError):
            res.failures.append(r.row())
        else:
            good.append((spec, r))
    if not good:
        return res
    mono = settings["protocol"] == "official"
    t1 = time.perf_counter()
    scorer = _scorer(settings["model"], settings.get("weights"), settings["protocol"], settings["window"],
                     settings["hop"], settings["tolerance"])  # fmt: skip
    ref22 = prepare_samples(ref.samples, ref.rate, scale="unit", mono=mono).samples
    tests = [prepare_samples(r.samples, r.rate, scale="unit", mono=mono).samples for _, r in good]
    # Rendering equalises lengths at the item's rate; resampling can leave them a sample apart.
    n = min(len(ref22), *(len(t) for t in tests))
    ref22, tests = ref22[:n], [t[:n] for t in tests]
    with _SCORE_LOCK:
        reference = scorer.reference(ref22)
        scores = scorer.score_reference(reference, tests)
    res.score_seconds = time.perf_counter() - t1
    per_variant_score = res.score_seconds / len(good)
    for (spec, r), s in zip(good, scores, strict=True):
        windows = s.windows or []
        res.scores.append(
            {
                "item_sha256": work["sha256"],
                "spec_id": spec.id,
                "encoder_version": versions[spec.id],
                "model_id": settings["model_id"],
                "model_version": settings["model_version"],
                "protocol": settings["protocol_key"],
                "distance": s.distance,
                "p_jnd": s.p_jnd,
                "p_jnd_calibrated": s.p_jnd_calibrated,
                "layer_terms": s.layer_terms,
                "window_starts": [w.start for w in windows],
                "window_ends": [w.end for w in windows],
                "window_distances": [w.distance for w in windows],
                "channel_distances": s.channels,
                "loudness_reference": r.loudness_reference,
                "loudness_variant": r.loudness_variant,
                "loudness_delta": r.loudness_delta,
                "offset_samples": r.offset,
                "correlation": r.correlation,
                "render_seconds": float(sum(r.timings.values())),
                "score_seconds": per_variant_score,
            }
        )
    return res


# ----------------------------------------------------------------- kept audio
def choose_kept_audio(
    rows: list[dict], baseline_rows: list[dict], regressed: set[str], *, worst: int, flagged: int, threshold: float
) -> dict[tuple[str, str], str]:
    """Which (item sha256, spec id) pairs a run keeps decoded audio of, with the reason.

    For every variant, its ``worst`` highest-distance items ("worst"). For every regressed
    variant, every item whose p_jnd crossed 0.5 upwards since the baseline, and its ``flagged``
    items that worsened most, among those whose distance rose by more than ``threshold``
    ("flagged"). Ties break by item path, so the choice is deterministic.
    """
    chosen: dict[tuple[str, str], str] = {}
    by_spec: dict[str, list[dict]] = {}
    for r in rows:
        by_spec.setdefault(r["spec_id"], []).append(r)
    base = {(r["item_sha256"], r["spec_id"]): r for r in baseline_rows}
    for spec_id, mine in by_spec.items():
        if spec_id in regressed:
            changes = []
            for r in mine:
                b = base.get((r["item_sha256"], spec_id))
                if b is None:
                    continue
                if b.get("p_jnd") is not None and r.get("p_jnd") is not None and b["p_jnd"] < 0.5 <= r["p_jnd"]:
                    chosen[(r["item_sha256"], spec_id)] = "flagged: p_jnd crossed 0.5"
                change = r["distance"] - b["distance"]
                if change > threshold:
                    changes.append((-change, r.get("path") or "", r["item_sha256"]))
            for change, _, sha in sorted(changes)[:flagged]:
                chosen.setdefault((sha, spec_id), f"flagged: distance +{-change:.3f} since the baseline")
        for r in sorted(mine, key=lambda r: (-r["distance"], r.get("path") or ""))[:worst]:
            chosen.setdefault((r["item_sha256"], spec_id), "worst")
    return chosen


def _audio_name(sha256: str, spec_id: str = "", encoder_version: str | None = None) -> str:
    """Content-addressed file name of kept audio: the same item, spec and encoder build always
    decode to the same file, so later nights reuse it."""
    import hashlib

    if not spec_id:
        return f"{sha256[:16]}-reference.flac"
    build = hashlib.sha256((encoder_version or "").encode()).hexdigest()[:8]
    return f"{sha256[:16]}-{spec_id}-{build}.flac"


def _write_flac(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit FLAC, written next to its final name then renamed (a killed run leaves no half file).
    Samples beyond full scale are clipped, as playback would."""
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        sf.write(tmp, np.clip(samples, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def keep_item_audio(work: dict, settings: dict, audio_dir: Path) -> list[dict]:
    """Render again the chosen variants of one item and keep them, with the reference, as FLAC in
    ``audio_dir``. ``work``: ``sha256``, ``path``, ``abspath``, ``specs`` (dicts with ``id``,
    ``encoder_version``, ``spec``, ``reason``). Files already there are reused. Returns
    kept-audio rows; a failure is a row with its error, never an exception."""
    from jndqa.variants import VariantError, load_reference, normalize_loudness, parse_variants, render_all

    audio_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    todo = []
    for s in work["specs"]:
        name = _audio_name(work["sha256"], s["id"], s["encoder_version"])
        row = {"item_sha256": work["sha256"], "spec_id": s["id"], "path": str(audio_dir / name), "reason": s["reason"]}
        rows.append(row)
        if not (audio_dir / name).exists():
            todo.append((s, row))
    ref_row = {"item_sha256": work["sha256"], "spec_id": "", "reason": "reference",
               "path": str(audio_dir / _audio_name(work["sha256"]))}  # fmt: skip
    if not todo and Path(ref_row["path"]).exists():
        return [ref_row, *rows]
    try:
        ref = load_reference(work["abspath"], name=work["path"], ffmpeg=settings.get("ffmpeg"))
        if settings.get("normalize_corpus") is not None:
            ref = normalize_loudness(ref, settings["normalize_corpus"])
    except VariantError as exc:
        for row in (ref_row, *rows):
            row.update(path=None, error=str(exc))
        return [ref_row, *rows]
    if not Path(ref_row["path"]).exists():
        _write_flac(Path(ref_row["path"]), ref.samples, ref.rate)
    if todo:
        specs = parse_variants([s["spec"] for s, _ in todo], base_dir=settings.get("base_dir"))
        rendered = render_all(ref, specs, ffmpeg=settings.get("ffmpeg"), timeout=settings.get("timeout", 120.0),
                              match_loudness=settings.get("match_loudness", False),
                              workers=settings.get("render_workers", 2))  # fmt: skip
        for (_, row), r in zip(todo, rendered, strict=True):
            if isinstance(r, VariantError):
                row.update(path=None, error=str(r))
            else:
                _write_flac(Path(row["path"]), r.samples, r.rate)
    return [ref_row, *rows]


# ---------------------------------------------------------------------- night
def _new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class Night:
    """One night: prepare (corpus, keys, reuse), record item results, finish (verdict)."""

    def __init__(self, cfg: RunConfig, *, db: Path, out: Path | None = None, baseline: str | None = None,
                 config_path: Path | None = None):  # fmt: skip
        from jndqa.variants import VariantError, encoder_version, parse_variants, tool_versions

        self.cfg = cfg
        self.out = Path(out) if out else cfg.output  # where the run's report goes (issue 6)
        self.baseline_policy = baseline if baseline is not None else cfg.baseline
        self.run_id = _new_run_id()
        self.started = time.perf_counter()
        self.store = Store(db)
        self.store.acquire_writer(self.run_id)
        try:
            self.model = resolve_model(cfg.metric.model, self.store, protocol=cfg.metric.protocol)
            self.model_id, self.model_version = self.model["model_id"], self.model["model_version"]
            self.protocol_key = protocol_key(cfg)
            base_dir = self.base_dir = str(config_path.parent) if config_path else None
            self.specs = parse_variants(cfg.variants, base_dir=base_dir)
            self.failures: list[dict] = []
            self.spec_versions: dict[str, str | None] = {}
            for spec in self.specs:
                try:
                    self.spec_versions[spec.id] = encoder_version(spec, cfg.ffmpeg, timeout=cfg.runner.timeout)
                except VariantError as exc:
                    self.spec_versions[spec.id] = None
                    self.failures.append(exc.row())
            self.items, corpus_failures = scan_corpus(cfg.corpus.root, cfg.corpus.manifest)
            self.failures += [f.row() for f in corpus_failures]
            self._mark_stale_runs()
            self.store.begin_run(
                self.run_id,
                config_hash=cfg.config_hash(),
                config=cfg.model_dump(mode="json"),
                model_id=self.model_id,
                model_version=self.model_version,
                protocol=self.protocol_key,
                tool_versions=tool_versions(cfg.ffmpeg),
                host=socket.gethostname(),
            )
            self.store.add_items(self.run_id, [i.row() for i in self.items])
            self.store.add_variants(
                self.run_id,
                [{"spec_id": s.id, "label": s.label, "spec": s.model_dump(mode="json", exclude_none=True),
                  "encoder_version": self.spec_versions[s.id]} for s in self.specs],
            )  # fmt: skip
            self.store.write_failures(self.run_id, self.failures)
            self.work, self.reused = self._plan(base_dir)
            self.store.write_scores(self.run_id, [], reused=self.reused)
        except BaseException:
            self.store.release_writer()
            raise
        self.scored = 0
        self.item_failures: list[dict] = []

    def _mark_stale_runs(self) -> None:
        self.store.mark_stale_runs()

    def _plan(self, base_dir: str | None) -> tuple[list[dict], list[tuple]]:
        """Work units for items with missing keys, and the keys reused from the store."""
        live = [s for s in self.specs if self.spec_versions[s.id] is not None]
        wanted = {
            (item.sha256, s.id): (item.sha256, s.id, self.spec_versions[s.id], self.model_id, self.model_version,
                                  self.protocol_key)
            for item in self.items for s in live
        }  # fmt: skip
        have = self.store.existing_keys(wanted.values())
        work = []
        for item in self.items:
            todo = [s for s in live if wanted[(item.sha256, s.id)] not in have]
            if todo:
                work.append({
                    "sha256": item.sha256, "path": item.path, "abspath": str(item.abspath),
                    "specs": [{"id": s.id, "encoder_version": self.spec_versions[s.id],
                               "spec": s.model_dump(mode="json", exclude_none=True)} for s in todo],
                })  # fmt: skip
        return work, sorted(have)

    @property
    def settings(self) -> dict:
        m = self.cfg.metric
        return {
            "model": self.model["official"], "weights": self.model["weights"], "protocol": m.protocol,
            "protocol_key": self.protocol_key,
            "model_id": self.model_id, "model_version": self.model_version, "window": m.window_seconds,
            "hop": m.hop_seconds, "tolerance": m.length_tolerance,
            "ffmpeg": str(self.cfg.ffmpeg) if self.cfg.ffmpeg else None, "timeout": self.cfg.runner.timeout,
            "match_loudness": self.cfg.loudness.match, "normalize_corpus": self.cfg.loudness.normalize_corpus,
            "render_workers": self.cfg.runner.workers, "base_dir": self.base_dir,
        }  # fmt: skip

    def record(self, result: ItemResult) -> None:
        """Store one item's results in one transaction."""
        self.store.write_scores(self.run_id, result.scores)
        self.store.write_failures(self.run_id, result.failures)
        self.scored += len(result.scores)
        self.item_failures += result.failures

    def record_crash(self, work: dict, exc: BaseException) -> None:
        rows = [{"item": work["path"], "variant": s["spec"].get("label"), "spec_id": s["id"], "kind": "crash",
                 "reason": f"the item's task failed after its retries: {type(exc).__name__}: {exc}"}
                for s in work["specs"]]  # fmt: skip
        self.store.write_failures(self.run_id, rows)
        self.item_failures += rows

    def finish(self, report: str | None = None) -> dict:
        """Compare with the baseline, write the verdict, return the run summary (DESIGN.md)."""
        cfg = self.cfg
        rows = self.store.run_scores(self.run_id)
        baseline, why = self.store.resolve_baseline(
            self.baseline_policy, model_id=self.model_id, model_version=self.model_version,
            protocol=self.protocol_key, exclude=self.run_id,
        )  # fmt: skip
        comparisons = []
        if baseline:
            comparisons = compare_runs(
                self.store.run_scores(baseline), rows, threshold=cfg.regression.threshold,
                seed=cfg.regression.seed, n_boot=cfg.regression.bootstrap,
            )  # fmt: skip
        failures = self.store.run_failures(self.run_id)
        regressions = [c for c in comparisons if c.regressed]
        kept = self.keep_audio(rows, self.store.run_scores(baseline) if baseline else [],
                               {c.spec_id for c in regressions})  # fmt: skip
        if regressions and cfg.regression.fail_on_regression:
            status = "regressed"
        elif failures:
            status = "failed_items"
        else:
            status = "regressed" if regressions else "passed"
        per_variant = []
        for s in self.specs:
            mine = [r for r in rows if r["spec_id"] == s.id]
            fails = [f for f in failures if f["spec_id"] == s.id]
            per_variant.append({
                "id": s.id, "label": s.label, "encoder_version": self.spec_versions[s.id],
                "mean_distance": float(np.mean([r["distance"] for r in mine])) if mine else None,
                "items": len(mine), "failures": len(fails),
            })  # fmt: skip
        summary = {
            "run_id": self.run_id,
            "status": status,
            "items": len(self.items),
            "variants": len(self.specs),
            "scores": len(rows),
            "reused": len(self.reused),
            "model": self.model_id,
            "model_version": self.model_version,
            "protocol": self.protocol_key,
            "per_variant": per_variant,
            "failures": [{"item": f["item"], "variant": f["label"], "reason": f["reason"]} for f in failures],
            "regressions": [
                {
                    "variant": c.label,
                    "mean_change": c.mean_change,
                    "ci": list(c.ci),
                    "p_value": c.p_value,
                    "items_crossing": len(c.items_crossing),
                }
                for c in regressions
            ],
            "comparisons": [c.as_dict() for c in comparisons],
            "baseline": baseline,
            "baseline_note": why,
            "kept_audio": sum(1 for k in kept if k["spec_id"] and k.get("path")),
            "report": report,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.store.set_run_baseline(self.run_id, baseline)
        self.store.finish_run(self.run_id, status, summary)
        return summary

    def keep_audio(self, rows: list[dict], baseline_rows: list[dict], regressed: set[str]) -> list[dict]:
        """Keep the decoded audio the report needs (:func:`choose_kept_audio`) under ``<out>/audio``."""
        chosen = choose_kept_audio(rows, baseline_rows, regressed, worst=self.cfg.keep_audio,
                                   flagged=self.cfg.keep_flagged, threshold=self.cfg.regression.threshold)  # fmt: skip
        if not chosen:
            return []
        specs = {s.id: s for s in self.specs}
        versions = {(r["item_sha256"], r["spec_id"]): r["encoder_version"] for r in rows}
        kept: list[dict] = []
        for item in self.items:
            mine = [(spec_id, reason) for (sha, spec_id), reason in chosen.items() if sha == item.sha256]
            if not mine:
                continue
            work = {"sha256": item.sha256, "path": item.path, "abspath": str(item.abspath),
                    "specs": [{"id": spec_id, "encoder_version": versions[(item.sha256, spec_id)], "reason": reason,
                               "spec": specs[spec_id].model_dump(mode="json", exclude_none=True)}
                              for spec_id, reason in sorted(mine)]}  # fmt: skip
            kept += keep_item_audio(work, self.settings, self.out / "audio")
        self.store.keep_audio(self.run_id, kept)
        return kept

    def report(self, summary: dict, out: Path | None = None) -> dict:
        """Render the run's HTML report (into ``<out>/report`` by default); the summary gains its path.
        A report that cannot be written is said in the summary; the run's results stand."""
        from jndqa.reports import render_report

        try:
            result = render_report(self.store, out or self.out / "report", self.run_id)
            summary["report"] = str(result.run_page)
        except Exception as exc:  # the night's results are stored; say why there is no report
            summary["report"] = None
            summary["report_error"] = f"{type(exc).__name__}: {exc}"
        self.store.set_run_summary(self.run_id, summary)
        return summary

    def close(self) -> None:
        self.store.release_writer()


def default_db(cfg: RunConfig) -> Path:
    return cfg.output / "jndqa.duckdb"
