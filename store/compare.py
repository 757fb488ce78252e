"""Baseline comparison: paired per-item statistics per variant.

Of one metric's scores: for each variant present in both runs, the per-item differences
(candidate − baseline value, over items scored in both) give the mean change,
a seeded percentile-bootstrap 95 % confidence interval resampling items
(:func:`jndqa.stats.bootstrap_mean`; the variants, in label order, draw from one
random stream seeded by ``seed``) and a Wilcoxon signed-rank p-value; p-values
are Holm-corrected across variants. A variant regresses when the whole interval
lies on the worse side beyond the threshold: above ``+threshold`` for a distance
(DPAM: higher is worse), below ``-threshold`` for a quality (a MOS: lower is worse).
Items whose p_jnd crosses 0.5 upwards are listed (DPAM only: other metrics have no p_jnd).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from jndqa.stats import bootstrap_mean

__all__ = ["VariantComparison", "compare_runs", "holm"]


@dataclass
class VariantComparison:
    spec_id: str
    label: str
    items: int
    mean_change: float
    ci: tuple[float, float]
    p_value: float  # Holm-corrected
    p_value_raw: float
    regressed: bool
    items_crossing: list[str] = field(default_factory=list)
    baseline_mean: float = float("nan")
    candidate_mean: float = float("nan")
    orientation: str = "distance"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def holm(p: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(p)
    order = np.argsort(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        adjusted[i] = running
    return adjusted


def _wilcoxon(diffs: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if len(diffs) == 0 or not np.any(diffs != 0):
        return 1.0
    return float(wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)


def compare_runs(
    baseline: Sequence[dict],
    candidate: Sequence[dict],
    *,
    threshold: float,
    seed: int = 0,
    n_boot: int = 10_000,
    level: float = 0.95,
    orientation: str = "distance",
) -> list[VariantComparison]:
    """Compare two runs' score rows of one metric (``item_sha256``, ``spec_id``, ``label``, ``value``,
    optional ``p_jnd`` and ``path``). Variants are matched by spec id, items by content hash.
    ``orientation``: the metric's, ``distance`` or ``quality`` (module docstring: when a variant regresses)."""
    if orientation not in ("distance", "quality"):
        raise ValueError(f"orientation must be 'distance' or 'quality', not {orientation!r}")

    def index(rows: Sequence[dict]) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        for r in rows:
            out.setdefault(r["spec_id"], {})[r["item_sha256"]] = r
        return out

    base, cand = index(baseline), index(candidate)
    rng = np.random.default_rng(seed)
    results = []
    for spec_id in sorted(set(base) & set(cand), key=lambda s: next(iter(cand[s].values())).get("label") or s):
        items = sorted(set(base[spec_id]) & set(cand[spec_id]))
        if not items:
            continue
        b = np.array([base[spec_id][i]["value"] for i in items], dtype=np.float64)
        c = np.array([cand[spec_id][i]["value"] for i in items], dtype=np.float64)
        diffs = c - b
        crossing = []
        for i in items:
            pb, pc = base[spec_id][i].get("p_jnd"), cand[spec_id][i].get("p_jnd")
            if pb is not None and pc is not None and pb < 0.5 <= pc:
                crossing.append(cand[spec_id][i].get("path") or i)
        results.append(
            VariantComparison(
                spec_id=spec_id,
                label=next(iter(cand[spec_id].values())).get("label") or spec_id,
                items=len(items),
                mean_change=float(diffs.mean()),
                ci=bootstrap_mean(diffs, n_boot=n_boot, level=level, seed=rng),
                p_value=1.0,
                p_value_raw=_wilcoxon(diffs),
                regressed=False,
                items_crossing=crossing,
                baseline_mean=float(b.mean()),
                candidate_mean=float(c.mean()),
                orientation=orientation,
            )
        )
    for r, p in zip(results, holm([r.p_value_raw for r in results]), strict=True):
        r.p_value = p
        r.regressed = r.ci[0] > threshold if orientation == "distance" else r.ci[1] < -threshold
    return results
