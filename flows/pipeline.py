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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jndqa.datasets import CorpusItem, scan_corpus
from jndqa.metric import ModelRef
from jndqa.store import Store, compare_runs

from .config import RunConfig
from .golden import DEFAULT_AUDIBLE_DISTANCE, GoldenSettings, golden_counts
from .metrics import NightMetric, metric_failure, resolve_metrics, score_each, score_row
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
    "disagreements",
    "plan_night",
    "process_item",
]


@dataclass(frozen=True)
class VariantWork:
    """One variant of one item to render: its spec id, label, the encoder build it is rendered with,
    the spec as the config gave it (parsed again where it runs), the metrics (names) it still needs
    scores of, and why (kept audio: the reason)."""

    spec_id: str
    label: str
    encoder_version: str
    spec: dict
    reason: str = ""
    metrics: tuple[str, ...] = ()
    keep_output: bool = False  # keep the decoded output (golden.keep)
    golden: dict | None = None  # the golden output to compare with (outputs row: spec_id, sha256, path, ...)


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
    golden: GoldenSettings | None = None  # where outputs are kept and how changes are judged (plan_night sets it)

    @classmethod
    def from_config(cls, cfg: RunConfig, base_dir: str | Path | None = None) -> RenderSettings:
        return cls(str(cfg.ffmpeg) if cfg.ffmpeg else None, cfg.runner.timeout, cfg.loudness.match,
                   cfg.loudness.normalize_corpus, cfg.runner.workers, str(base_dir) if base_dir else None)  # fmt: skip


# -------------------------------------------------------------------- scoring
_SCORE_LOCK = threading.Lock()  # one scoring at a time per process: torch already uses every core


@dataclass
class ItemResult:
    sha256: str
    path: str
    scores: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    golden: list[dict] = field(default_factory=list)
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


def _unaligned_reason(nm: NightMetric, r) -> str:
    protocol = f" under the {nm.key[2]} protocol" if nm.name == "dpam" else ""
    return (f"aligned by its envelope only (envelope correlation {r.correlation:.3f}; the samples do not correlate: "
            f"a resynthesising codec?): {nm.name}{protocol} compares sample-aligned signals; the metrics that "
            "need no alignment scored it")  # fmt: skip


def process_item(work: ItemWork, metrics: Sequence[NightMetric], render: RenderSettings) -> ItemResult:
    """Render the variants of one item once, then score each with the metrics it still needs
    (:attr:`VariantWork.metrics`). Never raises for bad audio, a failing encoder or a metric that
    cannot score a pair: failures are rows (a metric's carry its name).

    A variant aligned by its envelope only (a resynthesising codec) is scored by the metrics that do
    not need sample alignment and is a failure of those that do."""
    from jndqa.metric.plugin import MetricError
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
        else:
            good.append((v, r))
    for nm in metrics:
        pairs = []
        for v, r in good:
            if nm.name not in v.metrics:
                continue
            if nm.needs_alignment and r.alignment != "samples":
                res.failures.append(metric_failure(nm.name, _unaligned_reason(nm, r), item=work.path,
                                                   variant=v.label, spec_id=v.spec_id))  # fmt: skip
            else:
                pairs.append((v, r))
        if not pairs:
            continue
        t1 = time.perf_counter()
        with _SCORE_LOCK:
            results = score_each(nm, ref.samples, [r.samples for _, r in pairs], ref.rate)
        seconds = time.perf_counter() - t1
        res.score_seconds += seconds
        for (v, r), s in zip(pairs, results, strict=True):
            if isinstance(s, MetricError):
                res.failures.append(metric_failure(nm.name, s.reason, item=work.path, variant=v.label,
                                                   spec_id=v.spec_id))  # fmt: skip
                continue
            res.scores.append({
                "item_sha256": work.sha256,
                "spec_id": v.spec_id,
                "encoder_version": v.encoder_version,
                **score_row(nm, s),
                "loudness_reference": r.loudness_reference,
                "loudness_variant": r.loudness_variant,
                "loudness_delta": r.loudness_delta,
                "offset_samples": r.offset,
                "correlation": r.correlation,
                "alignment": r.alignment,
                "render_seconds": float(sum(r.timings.values())),
                "score_seconds": seconds / len(pairs),
            })  # fmt: skip
    if render.golden is not None:
        dpam = next((nm for nm in metrics if nm.name == "dpam"), None)
        for v, r in good:
            if v.keep_output or v.golden:
                _golden_output(res, work, v, r, dpam, render.golden)
    return res


def _golden_output(res: ItemResult, work: ItemWork, v: VariantWork, r, dpam: NightMetric | None,
                   gs: GoldenSettings) -> None:  # fmt: skip
    """Keep ``r`` (tonight's output of ``v``) under ``gs.outputs_dir`` and compare it with ``v.golden``
    (flows/golden.py): identical by samples, else DPAM(golden, tonight) decides audible or inaudible."""
    from jndqa.metric.plugin import MetricError

    from .golden import decide, read_output, write_output

    out = write_output(gs.outputs_dir, r.samples, r.rate)
    if v.keep_output:
        res.outputs.append({"item_sha256": work.sha256, "spec_id": v.spec_id, "label": v.label,
                            "encoder_version": v.encoder_version, "sha256": out["sha256"], "path": out["path"],
                            "bytes": out["bytes"]})  # fmt: skip
    g = v.golden
    if not g:
        return
    row = {"item_sha256": work.sha256, "spec_id": v.spec_id, "label": v.label, "golden_run": g["run_id"],
           "golden_spec_id": g["spec_id"], "golden_sha256": g["sha256"], "sha256": out["sha256"]}  # fmt: skip
    if out["sha256"] == g["sha256"]:
        res.golden.append({**row, "status": "identical", "rule": "bit-identical (24-bit samples)"})
        return
    fail = {"item": work.path, "variant": v.label, "spec_id": v.spec_id, "kind": "golden"}
    if dpam is None:
        res.failures.append({**fail, "reason": "golden.compare needs dpam in metrics; the output changed, unscored"})
        return
    try:
        gold, rate = read_output(g["path"])
    except (OSError, RuntimeError) as exc:
        res.failures.append({**fail, "reason": f"golden output {g['path']} unreadable ({exc}); accept a newer run "
                                               "or run without golden.compare"})  # fmt: skip
        return
    test = out["samples"]
    if rate != r.rate or gold.shape != test.shape:
        res.failures.append({**fail, "reason": f"golden output {g['path']} is {gold.shape} at {rate} Hz, tonight's "
                                               f"is {test.shape} at {r.rate} Hz: not comparable"})  # fmt: skip
        return
    t0 = time.perf_counter()
    with _SCORE_LOCK:
        s = score_each(dpam, gold, [test], rate)[0]
    res.score_seconds += time.perf_counter() - t0
    if isinstance(s, MetricError):
        res.failures.append({**fail, "reason": f"golden comparison by dpam: {s.reason}"})
        return
    scored = score_row(dpam, s)
    status, rule = decide(scored["distance"], scored["p_jnd"], bool(scored["p_jnd_calibrated"]), gs)
    res.golden.append({**row, "status": status, "rule": rule, "distance": scored["distance"],
                       "p_jnd": scored["p_jnd"], "p_jnd_calibrated": scored["p_jnd_calibrated"],
                       **{k: scored[k] for k in ("window_starts", "window_ends", "window_distances")}})  # fmt: skip


# ----------------------------------------------------------------- kept audio
def choose_kept_audio(
    rows: list[dict],
    baseline_rows: list[dict],
    regressed: set[str],
    *,
    worst: int,
    flagged: int,
    threshold: float,
    orientation: str = "distance",
) -> dict[tuple[str, str], str]:
    """Which (item sha256, spec id) pairs a run keeps decoded audio of, with the reason, from one
    metric's rows (``value``; ``orientation`` ``distance``: higher is worse, ``quality``: lower is worse).

    For every variant, its ``worst`` worst-valued items ("worst"). For every regressed variant, every
    item whose p_jnd crossed 0.5 upwards since the baseline, and its ``flagged`` items that worsened
    most, among those that worsened by more than ``threshold`` ("flagged"). Ties break by item path,
    so the choice is deterministic.
    """
    worse = 1.0 if orientation == "distance" else -1.0  # worse * value grows as the item sounds worse
    unit = "distance" if orientation == "distance" else "value"
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
                change = worse * (r["value"] - b["value"])
                if change > threshold:
                    changes.append((-change, r.get("path") or "", r["item_sha256"], r["value"] - b["value"]))
            for _, _, sha, raw in sorted(changes)[:flagged]:
                chosen.setdefault((sha, spec_id), f"flagged: {unit} {raw:+.3f} since the baseline")
        for r in sorted(mine, key=lambda r: (-worse * r["value"], r.get("path") or ""))[:worst]:
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
    """16-bit FLAC (:func:`jndqa.flows.golden.write_flac`: clipped as playback would, renamed into place)."""
    from .golden import write_flac

    write_flac(path, samples, rate, "PCM_16")


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
    """What a night will do, decided before anything runs: the DPAM model, the metrics (the primary
    first; those that cannot run here are planning failures), the variants and the encoder build of
    each (None when its version command failed), the corpus items, the failures found while planning
    (corpus entries, encoders, metrics), the work units for items with missing keys and the stored
    keys that are reused."""

    run_id: str
    model: ModelRef
    metrics: tuple[NightMetric, ...]
    metric_names: tuple[str, ...]  # as the config lists them: the first is primary, even when it cannot run
    render: RenderSettings
    specs: tuple[Any, ...]  # jndqa.variants.VariantSpec
    spec_versions: dict[str, str | None]
    items: tuple[CorpusItem, ...]
    failures: tuple[dict, ...]
    work: tuple[ItemWork, ...]
    reused: tuple[tuple, ...]
    golden_run: str | None = None  # the accepted run whose outputs are golden (golden.compare)
    outputs: tuple[dict, ...] = ()  # outputs kept by an earlier run of the same build, recorded for this one
    golden: tuple[dict, ...] = ()  # comparisons decided while planning: the same build (identical), new

    @property
    def primary(self) -> NightMetric | None:
        """The primary metric, None when it cannot run here."""
        return next((m for m in self.metrics if m.primary), None)

    @property
    def run_key(self) -> tuple[str, str, str]:
        """The run's (model id, model version, protocol): the primary metric's key, which baselines
        must share."""
        return self.primary.key if self.primary else (self.metric_names[0], "", "")


def plan_night(cfg: RunConfig, store: Store, *, run_id: str | None = None,
               config_dir: str | Path | None = None) -> NightPlan:  # fmt: skip
    """Plan a night of ``cfg`` against ``store``: resolve the model in the registry and the metrics,
    ask every encoder its version, scan the corpus and find which keys (item, variant, build, metric)
    are already stored. Writes nothing to the store but the registry's seed rows. ``config_dir``: where
    relative commands of external coders run."""
    from jndqa.variants import VariantError, encoder_version, parse_variants

    m = cfg.metric
    model = resolve_model(m.model, store, protocol=m.protocol, window_seconds=m.window_seconds,
                          hop_seconds=m.hop_seconds, length_tolerance=m.length_tolerance)  # fmt: skip
    metrics, failures = resolve_metrics(cfg.metrics, model)
    render = RenderSettings.from_config(cfg, config_dir)
    specs = parse_variants(cfg.variants, base_dir=render.base_dir)
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
    wanted = {(item.sha256, s.id, nm.name): (item.sha256, s.id, versions[s.id], nm.name, *nm.key)
              for item in items for s in live for nm in metrics}  # fmt: skip
    have = store.existing_keys(wanted.values())
    g = cfg.golden
    golden_run, gold, built, kept_rows, golden_rows = None, {}, {}, [], []
    if g.keep or g.compare:
        threshold = g.audible_distance if g.audible_distance is not None else DEFAULT_AUDIBLE_DISTANCE
        render = replace(render, golden=GoldenSettings(str(store.path.parent / "outputs"), audible=g.audible,
                                                       audible_distance=threshold))  # fmt: skip
        built = {k: o for k, o in store.outputs_by_build().items() if o["path"] and Path(o["path"]).exists()}
        golden_run = store.golden_run() if g.compare else None
        if golden_run:
            gold = {(o["item_sha256"], o["label"]): o for o in store.outputs(golden_run)}
    work = []
    for item in items:
        variants = []
        for s in live:
            todo = tuple(nm.name for nm in metrics if wanted[(item.sha256, s.id, nm.name)] not in have)
            known = built.get((item.sha256, s.id, versions[s.id]))
            keep = g.keep and known is None
            if known is not None and g.keep:
                kept_rows.append({**known, "label": s.label})
            compare = None
            if golden_run:
                old = gold.get((item.sha256, s.label))
                row = {"item_sha256": item.sha256, "spec_id": s.id, "label": s.label, "golden_run": golden_run}
                if old is None:
                    golden_rows.append({**row, "status": "new", "rule": "no golden output of this item and variant"})
                elif (old["spec_id"], old["encoder_version"]) == (s.id, versions[s.id]):
                    golden_rows.append({**row, "golden_spec_id": old["spec_id"], "golden_sha256": old["sha256"],
                                        "sha256": old["sha256"], "status": "identical",
                                        "rule": "same build (spec and encoder version): not rendered"})  # fmt: skip
                elif known is not None and known["sha256"] == old["sha256"]:
                    golden_rows.append({**row, "golden_spec_id": old["spec_id"], "golden_sha256": old["sha256"],
                                        "sha256": known["sha256"], "status": "identical",
                                        "rule": "bit-identical (24-bit samples, kept earlier)"})  # fmt: skip
                else:
                    compare = old
                    keep = keep or known is None
            if todo or keep or compare:
                variants.append(VariantWork(s.id, s.label, versions[s.id], s.model_dump(mode="json", exclude_none=True),
                                            metrics=todo, keep_output=keep, golden=compare))  # fmt: skip
        if variants:
            work.append(ItemWork(item.sha256, item.path, str(item.abspath), tuple(variants)))
    return NightPlan(run_id or _new_run_id(), model, metrics, tuple(cfg.metrics), render, tuple(specs), versions,
                     tuple(items), tuple(failures), tuple(work), tuple(sorted(have)), golden_run, tuple(kept_rows),
                     tuple(golden_rows))  # fmt: skip


FAILURE_FIELDS = (("item", "item"), ("variant", "label"), ("metric", "metric"), ("reason", "reason"))


def disagreements(per_metric: list[dict]) -> list[dict]:
    """The variants whose regression verdict differs between metrics (among the metrics that compared
    it with the baseline): ``{"variant", "regressed": [metrics], "not_regressed": [metrics]}``."""
    verdicts: dict[str, dict[str, bool]] = {}
    for m in per_metric:
        for c in m["comparisons"]:
            verdicts.setdefault(c["label"], {})[m["metric"]] = bool(c["regressed"])
    out = []
    for label, by_metric in sorted(verdicts.items()):
        if len(set(by_metric.values())) > 1:
            out.append({"variant": label, "regressed": [k for k, v in by_metric.items() if v],
                        "not_regressed": [k for k, v in by_metric.items() if not v]})  # fmt: skip
    return out


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
        model_id, model_version, protocol = plan.run_key
        versions = {**tool_versions(cfg.ffmpeg), **{f"metric:{nm.name}": nm.key[1] for nm in plan.metrics}}
        self.store.mark_stale_runs()
        self.store.begin_run(plan.run_id, config_hash=cfg.config_hash(), config=cfg.model_dump(mode="json"),
                             model_id=model_id, model_version=model_version, protocol=protocol,
                             tool_versions=versions, host=socket.gethostname())  # fmt: skip
        self.store.add_items(plan.run_id, [i.row() for i in plan.items])
        self.store.add_variants(
            plan.run_id,
            [{"spec_id": s.id, "label": s.label, "spec": s.model_dump(mode="json", exclude_none=True),
              "encoder_version": plan.spec_versions[s.id]} for s in plan.specs],
        )  # fmt: skip
        self.store.write_failures(plan.run_id, list(plan.failures))
        self.store.write_scores(plan.run_id, [], reused=list(plan.reused))
        self.store.write_outputs(plan.run_id, list(plan.outputs))
        self.store.write_golden(plan.run_id, list(plan.golden))

    def record(self, result: ItemResult) -> None:
        """Store one item's results in one transaction."""
        self.store.write_scores(self.run_id, result.scores)
        self.store.write_failures(self.run_id, result.failures)
        self.store.write_outputs(self.run_id, result.outputs)
        self.store.write_golden(self.run_id, result.golden)
        self.scored += len(result.scores)
        self.item_failures += result.failures

    def record_crash(self, work: ItemWork, exc: BaseException) -> None:
        rows = [{"item": work.path, "variant": v.label, "spec_id": v.spec_id, "kind": "crash",
                 "reason": f"the item's task failed after its retries: {type(exc).__name__}: {exc}"}
                for v in work.variants]  # fmt: skip
        self.store.write_failures(self.run_id, rows)
        self.item_failures += rows

    def _compare(self, nm: NightMetric, rows: list[dict], baseline: str | None) -> tuple[list, str]:
        """``nm``'s comparisons with the baseline run (only its scores with the same key) and a note."""
        if not baseline:
            return [], "no baseline"
        base = [r for r in self.store.run_scores(baseline, metric=nm.name)
                if (r["model_id"], r["model_version"], r["protocol"]) == nm.key]  # fmt: skip
        if not base:
            return [], f"the baseline {baseline} has no {nm.name} scores with {' / '.join(filter(None, nm.key))}"
        reg = self.cfg.regression
        comparisons = compare_runs(base, rows, threshold=reg.threshold_for(nm.name), seed=reg.seed,
                                   n_boot=reg.bootstrap, orientation=nm.orientation)  # fmt: skip
        return comparisons, f"compared with {baseline}"

    def finish(self, report: str | None = None) -> dict:
        """Compare every metric with the baseline, decide the verdict from the primary metric's
        comparisons and the failures that are not another metric's
        (:func:`jndqa.flows.verdict.night_verdict`), record it, return the run summary (docs/cli.md "run")."""
        cfg, plan = self.cfg, self.plan
        model_id, model_version, protocol = plan.run_key
        primary = plan.primary
        baseline, why = self.store.resolve_baseline(self.baseline_policy, model_id=model_id,
                                                    model_version=model_version, protocol=protocol,
                                                    exclude=self.run_id)  # fmt: skip
        if primary is None:
            baseline, why = None, f"the primary metric {plan.metric_names[0]} cannot run here: nothing to compare"
        all_rows = self.store.run_scores(self.run_id)
        failures = self.store.run_failures(self.run_id)
        per_metric, comparisons, rows = [], [], []
        for nm in plan.metrics:
            mine = [r for r in all_rows if r["metric"] == nm.name]
            comps, note = self._compare(nm, mine, baseline)
            if nm.primary:
                comparisons, rows = comps, mine
            per_metric.append({
                **nm.describe(),
                "scores": len(mine),
                "failures": sum(1 for f in failures if f["metric"] == nm.name),
                "regressions": [c.label for c in comps if c.regressed],
                "comparisons": [c.as_dict() for c in comps],
                "note": note,
            })  # fmt: skip
        for name in plan.metric_names:
            if all(m["metric"] != name for m in per_metric):
                per_metric.append({"metric": name, "primary": name == plan.metric_names[0], "scores": 0,
                                   "failures": sum(1 for f in failures if f["metric"] == name), "regressions": [],
                                   "comparisons": [], "note": "cannot run here (see failures)"})  # fmt: skip
        primary_name = plan.metric_names[0]
        counted = [f for f in failures if f["metric"] in (None, primary_name)]
        regressions = [c for c in comparisons if c.regressed]
        baseline_rows = self.store.run_scores(baseline, metric=primary_name) if baseline and primary else []
        kept = self.keep_audio(rows, baseline_rows, {c.spec_id for c in regressions},
                               orientation=primary.orientation if primary else "distance")  # fmt: skip
        golden_rows = self.store.golden(self.run_id) if plan.golden_run else []
        by_label = golden_counts(golden_rows, [s.label for s in plan.specs])
        audible = [r for r in golden_rows if r["status"] == "audible"]
        status = night_verdict(regressions=len(regressions), failures=len(counted),
                               fail_on_regression=cfg.regression.fail_on_regression, audible=len(audible),
                               fail_on_audible_change=cfg.golden.fail_on_audible_change)  # fmt: skip
        per_variant = []
        for s in plan.specs:
            means = {}
            for nm in plan.metrics:
                values = [r["value"] for r in all_rows if r["spec_id"] == s.id and r["metric"] == nm.name]
                means[nm.name] = {"mean": float(np.mean(values)) if values else None, "items": len(values)}
            dpam = [r["distance"] for r in all_rows if r["spec_id"] == s.id and r["metric"] == "dpam"]
            per_variant.append({
                "id": s.id, "label": s.label, "encoder_version": plan.spec_versions[s.id],
                "mean_distance": float(np.mean(dpam)) if dpam else None,
                "items": len([r for r in rows if r["spec_id"] == s.id]),
                "failures": sum(1 for f in failures if f["spec_id"] == s.id),
                "metrics": means,
                **({"golden": by_label[s.label]} if plan.golden_run else {}),
            })  # fmt: skip
        summary = {
            "run_id": self.run_id,
            "status": str(status),
            "items": len(plan.items),
            "variants": len(plan.specs),
            "scores": len(all_rows),
            "reused": len(plan.reused),
            "model": plan.model.key[0],
            "model_version": plan.model.key[1],
            "protocol": plan.model.key[2],
            "primary_metric": primary_name,
            "metrics": per_metric,
            "disagreements": disagreements(per_metric),
            "per_variant": per_variant,
            "failures": [{k: f[c] for k, c in FAILURE_FIELDS} for f in failures],
            "regressions": [
                {
                    "variant": c.label,
                    "metric": primary_name,
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
            "golden": self._golden_summary(golden_rows, audible),
            "report": report,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.store.set_run_baseline(self.run_id, baseline)
        self.store.finish_run(self.run_id, str(status), summary)
        return summary

    def _golden_summary(self, rows: list[dict], audible: list[dict]) -> dict | None:
        """The summary's ``golden``: the golden run, counts by status, the audible changes (item, variant,
        distance, p_jnd, rule) and the outputs this run kept (count, bytes); None without golden outputs."""
        g = self.cfg.golden
        if not (g.keep or g.compare):
            return None
        outputs = self.store.outputs(self.run_id)
        counts = {k: sum(1 for r in rows if r["status"] == k) for k in ("identical", "inaudible", "audible", "new")}
        return {"run": self.plan.golden_run, **counts,
                "audible_changes": [{k: r.get(k) for k in ("item", "label", "distance", "p_jnd", "rule")}
                                    for r in audible],
                "outputs": len(outputs),
                "output_bytes": sum({o["path"]: o["bytes"] or 0 for o in outputs}.values())}  # fmt: skip

    def keep_audio(self, rows: list[dict], baseline_rows: list[dict], regressed: set[str], *,
                   orientation: str = "distance") -> list[dict]:  # fmt: skip
        """Keep the decoded audio the report needs (:func:`choose_kept_audio` on the primary metric's
        rows) under ``<out>/audio``."""
        chosen = choose_kept_audio(rows, baseline_rows, regressed, worst=self.cfg.keep_audio,
                                   flagged=self.cfg.keep_flagged, threshold=self.cfg.regression.threshold,
                                   orientation=orientation)  # fmt: skip
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
