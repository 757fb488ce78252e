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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jndqa.datasets import CorpusItem, scan_corpus
from jndqa.metric import ModelRef
from jndqa.store import Store, compare_runs

from .config import RunConfig
from .models import resolve_model
from .verdict import night_verdict

__all__ = [
    "ItemResult",
    "ItemWork",
    "Night",
    "NightPlan",
    "RenderSettings",
    "VariantWork",
    "choose_kept_audio",
    "plan_night",
    "process_item",
]


@dataclass(frozen=True)
class VariantWork:
    """One variant of one item to render: its spec id, label, the encoder build it is rendered with,
    the spec as the config gave it (parsed again where it runs) and why (kept audio: the reason)."""

    spec_id: str
    label: str
    encoder_version: str
    spec: dict
    reason: str = ""


@dataclass(frozen=True)
class ItemWork:
    """One corpus item and the variants it still needs (a task's unit of work; pickles for Dask)."""

    sha256: str
    path: str  # as named in the corpus
    abspath: str
    variants: tuple[VariantWork, ...]


@dataclass(frozen=True)
class RenderSettings:
    """How variants are rendered: ffmpeg, the per-call timeout, loudness handling, render threads per
    item and the config's folder (where external commands run)."""

    ffmpeg: str | None = None
    timeout: float = 120.0
    match_loudness: bool = False
    normalize_corpus: float | None = None
    workers: int = 2
    base_dir: str | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig, base_dir: str | Path | None = None) -> RenderSettings:
        return cls(str(cfg.ffmpeg) if cfg.ffmpeg else None, cfg.runner.timeout, cfg.loudness.match,
                   cfg.loudness.normalize_corpus, cfg.runner.workers, str(base_dir) if base_dir else None)  # fmt: skip


# -------------------------------------------------------------------- scoring
_SCORERS: dict[ModelRef, Any] = {}
_SCORER_LOCK = threading.Lock()
_SCORE_LOCK = threading.Lock()  # one scoring at a time per process: torch already uses every core


def _scorer(model: ModelRef):
    """One scorer per model (weights, protocol, windows), shared by the items of a process."""
    with _SCORER_LOCK:
        if model not in _SCORERS:
            _SCORERS[model] = model.scorer()
        return _SCORERS[model]


@dataclass
class ItemResult:
    sha256: str
    path: str
    scores: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    render_seconds: float = 0.0
    score_seconds: float = 0.0


def _load_reference(work: ItemWork, render: RenderSettings):
    """The item's reference as variants read it (loudness-normalised when the config asks);
    raises :class:`jndqa.variants.VariantError` naming the file."""
    from jndqa.variants import load_reference, normalize_loudness

    ref = load_reference(work.abspath, name=work.path, ffmpeg=render.ffmpeg)
    if render.normalize_corpus is not None:
        ref = normalize_loudness(ref, render.normalize_corpus)
    return ref


def _render(ref, variants: Sequence[VariantWork], render: RenderSettings) -> list:
    """Render ``variants`` of ``ref``: a rendered variant or its :class:`VariantError`, in order."""
    from jndqa.variants import parse_variants, render_all

    specs = parse_variants([v.spec for v in variants], base_dir=render.base_dir)
    return render_all(ref, specs, ffmpeg=render.ffmpeg, timeout=render.timeout,
                      match_loudness=render.match_loudness, workers=render.workers)  # fmt: skip


def process_item(work: ItemWork, model: ModelRef, render: RenderSettings) -> ItemResult:
    """Render and score the variants of one item with ``model``. Never raises for bad audio or a
    failing encoder: failures are rows."""
    from jndqa.variants import VariantError

    res = ItemResult(work.sha256, work.path)
    t0 = time.perf_counter()
    try:
        ref = _load_reference(work, render)
    except VariantError as exc:
        res.failures = [{**exc.row(), "variant": v.label, "spec_id": v.spec_id} for v in work.variants]
        return res
    rendered = _render(ref, work.variants, render)
    res.render_seconds = time.perf_counter() - t0
    good = []
    for v, r in zip(work.variants, rendered, strict=True):
        if isinstance(r, VariantError):
            res.failures.append(r.row())
        elif r.alignment != "samples" and model.rule.windowed:
            res.failures.append({
                "item": work.path, "variant": v.label, "spec_id": v.spec_id, "kind": "metric",
                "reason": f"aligned by its envelope only (envelope correlation {r.correlation:.3f}; the samples do not "
                          f"correlate: a resynthesising codec?): the {model.protocol} protocol compares sample-aligned "
                          "signals; score it under protocol official or with a metric that does not need alignment",
            })  # fmt: skip
        else:
            good.append((v, r))
    if not good:
        return res
    t1 = time.perf_counter()
    scorer = _scorer(model)
    ref22 = scorer.prepare(ref.samples, ref.rate)
    tests = [scorer.prepare(r.samples, r.rate) for _, r in good]
    # Rendering equalises lengths at the item's rate; resampling can leave them a sample apart.
    n = min(len(ref22), *(len(t) for t in tests))
    ref22, tests = ref22[:n], [t[:n] for t in tests]
    with _SCORE_LOCK:
        reference = scorer.reference(ref22)
        scores = scorer.score_reference(reference, tests)
    res.score_seconds = time.perf_counter() - t1
    per_variant_score = res.score_seconds / len(good)
    model_id, model_version, protocol = model.key
    for (v, r), s in zip(good, scores, strict=True):
        windows = s.windows or []
        res.scores.append(
            {
                "item_sha256": work.sha256,
                "spec_id": v.spec_id,
                "encoder_version": v.encoder_version,
                "model_id": model_id,
                "model_version": model_version,
                "protocol": protocol,
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


def keep_item_audio(work: ItemWork, render: RenderSettings, audio_dir: Path) -> list[dict]:
    """Render again the chosen variants of one item (``work.variants``, each with its ``reason``) and
    keep them, with the reference, as FLAC in ``audio_dir``. Files already there are reused. Returns
    kept-audio rows; a failure is a row with its error, never an exception."""
    from jndqa.variants import VariantError

    audio_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    todo = []
    for v in work.variants:
        name = _audio_name(work.sha256, v.spec_id, v.encoder_version)
        row = {"item_sha256": work.sha256, "spec_id": v.spec_id, "path": str(audio_dir / name), "reason": v.reason}
        rows.append(row)
        if not (audio_dir / name).exists():
            todo.append((v, row))
    ref_row = {"item_sha256": work.sha256, "spec_id": "", "reason": "reference",
               "path": str(audio_dir / _audio_name(work.sha256))}  # fmt: skip
    if not todo and Path(ref_row["path"]).exists():
        return [ref_row, *rows]
    try:
        ref = _load_reference(work, render)
    except VariantError as exc:
        for row in (ref_row, *rows):
            row.update(path=None, error=str(exc))
        return [ref_row, *rows]
    if not Path(ref_row["path"]).exists():
        _write_flac(Path(ref_row["path"]), ref.samples, ref.rate)
    if todo:
        rendered = _render(ref, [v for v, _ in todo], render)
        for (_, row), r in zip(todo, rendered, strict=True):
            if isinstance(r, VariantError):
                row.update(path=None, error=str(r))
            else:
                _write_flac(Path(row["path"]), r.samples, r.rate)
    return [ref_row, *rows]


# ---------------------------------------------------------------------- night
def _new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class NightPlan:
    """What a night will do, decided before anything runs: the model, the variants and the encoder
    build of each (None when its version command failed), the corpus items, the failures found while
    planning (corpus entries, encoders), the work units for items with missing keys and the stored
    keys that are reused."""

    run_id: str
    model: ModelRef
    render: RenderSettings
    specs: tuple[Any, ...]  # jndqa.variants.VariantSpec
    spec_versions: dict[str, str | None]
    items: tuple[CorpusItem, ...]
    failures: tuple[dict, ...]
    work: tuple[ItemWork, ...]
    reused: tuple[tuple, ...]


def plan_night(cfg: RunConfig, store: Store, *, run_id: str | None = None,
               config_dir: str | Path | None = None) -> NightPlan:  # fmt: skip
    """Plan a night of ``cfg`` against ``store``: resolve the model in the registry, ask every encoder
    its version, scan the corpus and find which keys are already stored. Writes nothing to the store
    but the registry's seed rows. ``config_dir``: where relative commands of external coders run."""
    from jndqa.variants import VariantError, encoder_version, parse_variants

    m = cfg.metric
    model = resolve_model(m.model, store, protocol=m.protocol, window_seconds=m.window_seconds,
                          hop_seconds=m.hop_seconds, length_tolerance=m.length_tolerance)  # fmt: skip
    render = RenderSettings.from_config(cfg, config_dir)
    specs = parse_variants(cfg.variants, base_dir=render.base_dir)
    failures: list[dict] = []
    versions: dict[str, str | None] = {}
    for spec in specs:
        try:
            versions[spec.id] = encoder_version(spec, cfg.ffmpeg, timeout=cfg.runner.timeout)
        except VariantError as exc:
            versions[spec.id] = None
            failures.append(exc.row())
    items, corpus_failures = scan_corpus(cfg.corpus.root, cfg.corpus.manifest)
    failures += [f.row() for f in corpus_failures]
    live = [s for s in specs if versions[s.id] is not None]
    wanted = {(item.sha256, s.id): (item.sha256, s.id, versions[s.id], *model.key) for item in items for s in live}
    have = store.existing_keys(wanted.values())
    work = []
    for item in items:
        todo = [s for s in live if wanted[(item.sha256, s.id)] not in have]
        if todo:
            variants = tuple(VariantWork(s.id, s.label, versions[s.id], s.model_dump(mode="json", exclude_none=True))
                             for s in todo)  # fmt: skip
            work.append(ItemWork(item.sha256, item.path, str(item.abspath), variants))
    return NightPlan(run_id or _new_run_id(), model, render, tuple(specs), versions, tuple(items), tuple(failures),
                     tuple(work), tuple(sorted(have)))  # fmt: skip


class Night:
    """One night carried out: its plan recorded (:meth:`open`), item results stored as they arrive,
    then the verdict (:meth:`finish`) and the report."""

    def __init__(self, cfg: RunConfig, plan: NightPlan, store: Store, *, out: Path | None = None,
                 baseline: str | None = None):  # fmt: skip
        self.cfg = cfg
        self.plan = plan
        self.store = store
        self.out = Path(out) if out else cfg.output  # where the run's report and kept audio go
        self.baseline_policy = baseline if baseline is not None else cfg.baseline
        self.started = time.perf_counter()
        self.scored = 0
        self.item_failures: list[dict] = []

    @classmethod
    def open(cls, cfg: RunConfig, *, db: Path, out: Path | None = None, baseline: str | None = None,
             config_dir: str | Path | None = None) -> Night:  # fmt: skip
        """Take the store's writer lock, plan the night and record the plan (the run, its items and
        variants, planning failures, reused keys). The lock is released if any of that fails."""
        store = Store(db)
        run_id = _new_run_id()
        store.acquire_writer(run_id)
        try:
            night = cls(cfg, plan_night(cfg, store, run_id=run_id, config_dir=config_dir), store, out=out,
                        baseline=baseline)  # fmt: skip
            night._begin()
        except BaseException:
            store.release_writer()
            raise
        return night

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def _begin(self) -> None:
        from jndqa.variants import tool_versions

        plan, cfg = self.plan, self.cfg
        model_id, model_version, protocol = plan.model.key
        self.store.mark_stale_runs()
        self.store.begin_run(plan.run_id, config_hash=cfg.config_hash(), config=cfg.model_dump(mode="json"),
                             model_id=model_id, model_version=model_version, protocol=protocol,
                             tool_versions=tool_versions(cfg.ffmpeg), host=socket.gethostname())  # fmt: skip
        self.store.add_items(plan.run_id, [i.row() for i in plan.items])
        self.store.add_variants(
            plan.run_id,
            [{"spec_id": s.id, "label": s.label, "spec": s.model_dump(mode="json", exclude_none=True),
              "encoder_version": plan.spec_versions[s.id]} for s in plan.specs],
        )  # fmt: skip
        self.store.write_failures(plan.run_id, list(plan.failures))
        self.store.write_scores(plan.run_id, [], reused=list(plan.reused))

    def record(self, result: ItemResult) -> None:
        """Store one item's results in one transaction."""
        self.store.write_scores(self.run_id, result.scores)
        self.store.write_failures(self.run_id, result.failures)
        self.scored += len(result.scores)
        self.item_failures += result.failures

    def record_crash(self, work: ItemWork, exc: BaseException) -> None:
        rows = [{"item": work.path, "variant": v.label, "spec_id": v.spec_id, "kind": "crash",
                 "reason": f"the item's task failed after its retries: {type(exc).__name__}: {exc}"}
                for v in work.variants]  # fmt: skip
        self.store.write_failures(self.run_id, rows)
        self.item_failures += rows

    def finish(self, report: str | None = None) -> dict:
        """Compare with the baseline, decide the verdict (:func:`jndqa.flows.verdict.night_verdict`),
        record it, return the run summary (docs/cli.md "run")."""
        cfg, plan = self.cfg, self.plan
        model_id, model_version, protocol = plan.model.key
        rows = self.store.run_scores(self.run_id)
        baseline, why = self.store.resolve_baseline(self.baseline_policy, model_id=model_id,
                                                    model_version=model_version, protocol=protocol,
                                                    exclude=self.run_id)  # fmt: skip
        baseline_rows = self.store.run_scores(baseline) if baseline else []
        comparisons = []
        if baseline:
            comparisons = compare_runs(baseline_rows, rows, threshold=cfg.regression.threshold,
                                       seed=cfg.regression.seed, n_boot=cfg.regression.bootstrap)  # fmt: skip
        failures = self.store.run_failures(self.run_id)
        regressions = [c for c in comparisons if c.regressed]
        kept = self.keep_audio(rows, baseline_rows, {c.spec_id for c in regressions})
        status = night_verdict(regressions=len(regressions), failures=len(failures),
                               fail_on_regression=cfg.regression.fail_on_regression)  # fmt: skip
        per_variant = []
        for s in plan.specs:
            mine = [r for r in rows if r["spec_id"] == s.id]
            fails = [f for f in failures if f["spec_id"] == s.id]
            per_variant.append({
                "id": s.id, "label": s.label, "encoder_version": plan.spec_versions[s.id],
                "mean_distance": float(np.mean([r["distance"] for r in mine])) if mine else None,
                "items": len(mine), "failures": len(fails),
            })  # fmt: skip
        summary = {
            "run_id": self.run_id,
            "status": str(status),
            "items": len(plan.items),
            "variants": len(plan.specs),
            "scores": len(rows),
            "reused": len(plan.reused),
            "model": model_id,
            "model_version": model_version,
            "protocol": protocol,
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
        self.store.finish_run(self.run_id, str(status), summary)
        return summary

    def keep_audio(self, rows: list[dict], baseline_rows: list[dict], regressed: set[str]) -> list[dict]:
        """Keep the decoded audio the report needs (:func:`choose_kept_audio`) under ``<out>/audio``."""
        chosen = choose_kept_audio(rows, baseline_rows, regressed, worst=self.cfg.keep_audio,
                                   flagged=self.cfg.keep_flagged, threshold=self.cfg.regression.threshold)  # fmt: skip
        if not chosen:
            return []
        specs = {s.id: s for s in self.plan.specs}
        versions = {(r["item_sha256"], r["spec_id"]): r["encoder_version"] for r in rows}
        kept: list[dict] = []
        for item in self.plan.items:
            mine = sorted((spec_id, reason) for (sha, spec_id), reason in chosen.items() if sha == item.sha256)
            if not mine:
                continue
            variants = tuple(
                VariantWork(spec_id, specs[spec_id].label, versions[(item.sha256, spec_id)],
                            specs[spec_id].model_dump(mode="json", exclude_none=True), reason)
                for spec_id, reason in mine
            )  # fmt: skip
            work = ItemWork(item.sha256, item.path, str(item.abspath), variants)
            kept += keep_item_audio(work, self.plan.render, self.out / "audio")
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
