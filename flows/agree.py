"""``jndqa agree``: how well each metric agrees with the listeners of a listening test.

Ratings files are read and validated (:func:`jndqa.datasets.read_ratings`; bad rows and listeners
who fail the post-screening are quarantined, and stored when a store is given), averaged per
stimulus over listeners (:func:`jndqa.datasets.stimulus_means`), and every stimulus is scored by
every metric asked for (:mod:`jndqa.metric.plugin`), each test aligned to its reference first as
the nightly aligns variants (:func:`jndqa.flows.pairing.align_pair`). The correlations and their
bootstrap intervals are :func:`jndqa.stats.agreement`'s; listener scores are oriented so that
higher is better (a ``jnd`` rating, 1 = "different", counts against quality).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MIN_STIMULI", "AgreeError", "MetricResult", "agree", "score_stimuli"]

MIN_STIMULI = 3  # fewer scored stimuli give no correlation (two points always correlate at ±1)


class AgreeError(ValueError):
    """The agreement cannot be measured as asked (no usable ratings, several scales, no metric)."""


@dataclass
class MetricResult:
    """One metric's values on the stimuli (None where it failed) and its failures."""

    metric: str
    version: str
    variant: str  # the settings that change its numbers (Metric.key's third part)
    protocol: str | None  # DPAM's protocol; a peer's variant (e.g. ViSQOL's mapping)
    orientation: str
    values: list[float | None]
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    offsets: list[int | None] = field(default_factory=list)


def _read(path: Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    """``[L, C]`` float32 samples of an audio file and their rate (resampled to ``rate`` when given),
    read as the nightly reads references (:func:`jndqa.variants.load_reference`: soundfile, else
    ffmpeg); :class:`jndqa.variants.InputError` names the file."""
    from jndqa.variants import load_reference

    ref = load_reference(path)
    x, sr = ref.samples, ref.rate
    if rate is not None and sr != rate:
        import soxr

        x, sr = soxr.resample(x, sr, rate, quality="HQ").astype(np.float32), rate
    return x, sr


def score_stimuli(metric: Any, stimuli: Sequence[Any], *, align: bool = True,
                  progress: Callable[[int], None] | None = None) -> MetricResult:  # fmt: skip
    """Score every stimulus (``ref``, ``test`` paths) with ``metric`` (a :class:`jndqa.metric.Metric`),
    each reference read once and scored against all its tests at the reference's rate. A test is
    resampled to its reference's rate, mixed to mono when the channel counts differ, and aligned
    when ``align`` (a metric that needs alignment refuses a test that aligns by envelope only). A
    pair that cannot be read, aligned or scored is a failure row with its reason."""
    from jndqa.metric.plugin import MetricError
    from jndqa.variants import VariantError

    from .pairing import align_pair

    variant = getattr(metric, "variant", "")
    model = getattr(metric, "model", None)  # DPAM's ModelRef
    protocol = model.protocol_key if model is not None else (variant or None)
    result = MetricResult(metric.id, metric.version, variant, protocol, metric.orientation,
                          [None] * len(stimuli), offsets=[None] * len(stimuli))  # fmt: skip
    by_ref: dict[Path, list[int]] = {}
    for i, s in enumerate(stimuli):
        by_ref.setdefault(Path(s.ref), []).append(i)
    t0 = time.perf_counter()
    for ref_path, idx in by_ref.items():
        try:
            ref, rate = _read(ref_path)
        except VariantError as exc:
            result.failures += [{"ref": str(ref_path), "test": str(stimuli[i].test), "metric": metric.id,
                                 "reason": str(exc)} for i in idx]  # fmt: skip
            continue
        mono_ref = ref.mean(axis=1, keepdims=True) if ref.shape[1] > 1 else ref
        # A test whose channel count differs from its reference's is scored, mixed to mono, against the
        # reference mixed to mono; the others against the reference as it is.
        groups: dict[bool, list[tuple[int, np.ndarray]]] = {False: [], True: []}
        for i in idx:
            try:
                test, _ = _read(Path(stimuli[i].test), rate)
                mixed = test.shape[1] != ref.shape[1]
                if mixed:
                    test = test.mean(axis=1, keepdims=True)
                if align:
                    test, result.offsets[i], _ = align_pair(mono_ref if mixed else ref, test, rate,
                                                            samples_only=metric.needs_alignment)  # fmt: skip
                groups[mixed].append((i, test))
            except Exception as exc:  # unreadable, unalignable: a failure of this pair, with its reason
                result.failures.append({"ref": str(ref_path), "test": str(stimuli[i].test), "metric": metric.id,
                                        "reason": str(exc)})  # fmt: skip
        for mixed, pairs in groups.items():
            if not pairs:
                continue
            outs = metric.score_each(mono_ref if mixed else ref, [t for _, t in pairs], rate)
            for (i, _), out in zip(pairs, outs, strict=True):
                if isinstance(out, MetricError):
                    result.failures.append({"ref": str(ref_path), "test": str(stimuli[i].test), "metric": metric.id,
                                            "reason": out.reason})  # fmt: skip
                else:
                    result.values[i] = float(out.value)
            if progress:
                progress(len(pairs))
    scored = sum(v is not None for v in result.values)
    result.seconds = (time.perf_counter() - t0) / max(scored, 1)
    return result


def agree(
    paths: Sequence[str | Path],
    *,
    metrics: Sequence[str] = ("dpam",),
    metric_options: dict[str, dict] | None = None,
    db: str | Path | None = None,
    out: str | Path | None = None,
    align: bool = True,
    scale: str | None = None,
    config: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Measure each metric's agreement with the listeners of the rating files ``paths``; returns the
    summary (docs/cli.md "agree"). ``metric_options``: keyword options per metric name (e.g.
    ``{"dpam": {"protocol": "official"}}``). ``db``: also store the ratings (idempotent). ``out``:
    where the HTML page goes (``<out>/agree/index.html``; none without ``out``). ``scale``/``config``:
    for rating files without a scale column / webMUSHRA exports (their test config). Raises
    :class:`AgreeError` when nothing can be measured; a metric that cannot run or a pair it cannot
    score is a failure in the summary."""
    from jndqa.datasets import HIGHER_IS_BETTER, RatingFileError, read_ratings, stimulus_means
    from jndqa.metric.plugin import MetricError, load_metric
    from jndqa.stats import agreement

    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    files, rows, quarantined, failures = [], [], 0, []
    for p in paths:
        try:
            rf = read_ratings(p, scale=scale, config=config)
        except RatingFileError as exc:
            failures.append({"file": str(p), "reason": str(exc)})
            continue
        files.append(rf)
        rows += rf.rows
        quarantined += len(rf.quarantine)
        log(f"{p}: {len(rf.rows)} ratings, {len(rf.quarantine)} quarantined ({rf.format})")
    if db is not None and files:
        from jndqa.store import Store

        store = Store(db)
        for rf in files:
            store.ingest_ratings(rf.file_row(), [r.row() for r in rf.rows], [q.row() for q in rf.quarantine])
    stimuli = stimulus_means(rows)
    scales = sorted({s.scale for s in stimuli})
    if not stimuli:
        raise AgreeError("no usable ratings: " + ("; ".join(f["reason"] for f in failures) or "every row quarantined"))
    if len(scales) > 1:
        raise AgreeError(f"ratings on several scales ({', '.join(scales)}): measure one listening test at a time")
    sign = 1 if HIGHER_IS_BETTER[scales[0]] else -1  # jnd: 1 = "different", against quality
    listener = np.array([sign * s.mean for s in stimuli])
    items = [s.item for s in stimuli]
    conditions = [s.condition or "" for s in stimuli]
    listeners = {r.listener for r in rows if r.listener and not r.hidden_reference}
    summary: dict[str, Any] = {
        "stimuli": len(stimuli), "items": len(set(items)), "conditions": len(set(conditions)),
        "listeners": len(listeners), "quarantined": quarantined, "scale": scales[0], "metrics": [],
        "failures": failures, "page": None,
    }  # fmt: skip
    results = []
    for name in metrics:
        try:
            metric = load_metric(name, **(metric_options or {}).get(name, {}))
        except MetricError as exc:
            failures.append({"metric": name, "reason": str(exc)})
            continue
        log(f"{name}: scoring {len(stimuli)} stimuli")
        res = score_stimuli(metric, stimuli, align=align)
        failures += res.failures
        ok = [i for i, v in enumerate(res.values) if v is not None]
        entry: dict[str, Any] = {"metric": res.metric, "protocol": res.protocol, "version": res.version,
                                 "orientation": res.orientation, "scored": len(ok),
                                 "seconds_per_stimulus": round(res.seconds, 4)}  # fmt: skip
        if len(ok) >= MIN_STIMULI:
            a = agreement(listener[ok], [res.values[i] for i in ok], [items[i] for i in ok],
                          [conditions[i] for i in ok], higher_is_better=res.orientation == "quality",
                          n_boot=n_boot, seed=seed)  # fmt: skip
            entry.update(a.to_dict())
        summary["metrics"].append(entry)
        results.append(res)
    if out is not None and results:
        from jndqa.reports import render_agree_page

        summary["page"] = str(render_agree_page(summary, stimuli, results, Path(out) / "agree"))
    return summary
