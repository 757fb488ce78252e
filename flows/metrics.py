"""The metrics a night scores with: the run config's ``metrics`` list resolved to plugins.

``metrics: [dpam, zimtohrli]`` names metrics registered in the ``jndqa.metrics`` entry points
(:func:`jndqa.metric.load_metric`); the first is the primary one, whose comparison decides the
night's status. ``dpam`` is built with the model the registry resolved for the config's
``metric:`` section, so its stored key is the model's (:attr:`jndqa.metric.ModelRef.key`), as
before there were peers; any other metric's key is its own (id, version, variant).

A metric that cannot run here (a peer not installed) is not a crash: :func:`resolve_metrics`
returns a failure row for it and the night goes on with the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jndqa.metric import ModelRef
from jndqa.metric.plugin import Metric, MetricError, MetricScore, MetricUnavailable, load_metric

__all__ = ["NightMetric", "metric_failure", "resolve_metrics", "score_row"]


@dataclass(frozen=True)
class NightMetric:
    """One metric of a night: ``name`` as the config lists it, the plugin (picklable: it rebuilds its
    engine where it is used), and whether it is the primary one."""

    name: str
    metric: Metric
    primary: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """(model id, model version, protocol) of every score it stores: DPAM's model key, else the
        metric's (id, version, variant)."""
        model = getattr(self.metric, "model", None)
        return model.key if isinstance(model, ModelRef) else self.metric.key

    @property
    def orientation(self) -> str:
        return self.metric.orientation

    @property
    def needs_alignment(self) -> bool:
        return bool(self.metric.needs_alignment)

    def describe(self) -> dict[str, Any]:
        """For summaries and reports: name, primary, the stored key and the declared properties."""
        model_id, version, protocol = self.key
        return {"metric": self.name, "primary": self.primary, "model_id": model_id, "version": version,
                "protocol": protocol, "orientation": self.orientation, "needs_alignment": self.needs_alignment,
                "rate": self.metric.rate}  # fmt: skip


def metric_failure(name: str, reason: str, *, item: str | None = None, variant: str | None = None,
                   spec_id: str | None = None) -> dict:  # fmt: skip
    """A failure row of metric ``name`` (``item``/``variant`` None: the metric failed as a whole)."""
    return {"item": item, "variant": variant, "spec_id": spec_id, "kind": "metric", "metric": name,
            "reason": reason if reason.startswith(f"{name}") else f"{name}: {reason}"}  # fmt: skip


def resolve_metrics(names: Sequence[str], model: ModelRef) -> tuple[tuple[NightMetric, ...], list[dict]]:
    """The metrics ``names`` (the first is primary) as :class:`NightMetric`, ``dpam`` with ``model``, and a
    failure row for each one that cannot run here (its reason says what to install)."""
    metrics, failures = [], []
    for i, name in enumerate(names):
        try:
            metric = load_metric(name, model=model) if name == "dpam" else load_metric(name)
        except MetricUnavailable as exc:
            failures.append(metric_failure(name, f"{exc} (every score of this metric is missing from the run)"))
            continue
        metrics.append(NightMetric(name, metric, primary=i == 0))
    return tuple(metrics), failures


# --------------------------------------------------------------- instances
_INSTANCES: dict[tuple, Metric] = {}
_INSTANCES_LOCK = threading.Lock()


def instance(nm: NightMetric) -> Metric:
    """One live instance per metric and key in a process (its model or engine is built once and shared
    by the items a worker runs; a task receives a pickled copy without it)."""
    k = (nm.name, type(nm.metric).__qualname__, nm.key)
    with _INSTANCES_LOCK:
        return _INSTANCES.setdefault(k, nm.metric)


# DPAM's extras that have their own columns in the store
_DPAM_COLUMNS = ("p_jnd", "p_jnd_calibrated", "layer_terms", "windows", "channels", "model", "protocol")


def score_row(nm: NightMetric, s: MetricScore) -> dict:
    """The metric's columns of a stored score (the caller adds the item, variant and alignment): ``metric``,
    the key, ``value`` and ``orientation``; DPAM's ``distance``, ``p_jnd``, layer terms, windows and
    channels in their columns; any other extra in ``extra`` (JSON)."""
    model_id, model_version, protocol = nm.key
    row: dict[str, Any] = {"metric": nm.name, "model_id": model_id, "model_version": model_version,
                           "protocol": protocol, "value": float(s.value), "orientation": nm.orientation}  # fmt: skip
    extra = dict(s.extra)
    if nm.name == "dpam":
        windows = extra.get("windows") or []
        row.update(
            distance=float(s.value),
            p_jnd=extra.get("p_jnd"),
            p_jnd_calibrated=extra.get("p_jnd_calibrated"),
            layer_terms=extra.get("layer_terms"),
            window_starts=[w["start"] for w in windows],
            window_ends=[w["end"] for w in windows],
            window_distances=[w["distance"] for w in windows],
            channel_distances=extra.get("channels"),
        )
        extra = {k: v for k, v in extra.items() if k not in _DPAM_COLUMNS}
    row["extra"] = json.dumps(extra, sort_keys=True, default=float) if extra else None
    return row


def score_each(nm: NightMetric, ref: Any, tests: Sequence[Any], rate: int) -> list[MetricScore | MetricError]:
    """:meth:`jndqa.metric.Metric.score_each` on the process's instance of ``nm``; a metric whose engine
    cannot be built here gives every test its :class:`MetricUnavailable`."""
    metric = instance(nm)
    try:
        return metric.score_each(ref, tests, rate)
    except MetricUnavailable as exc:
        return [exc.at(i) for i in range(len(tests))]
