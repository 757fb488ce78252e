"""The agreement page of ``jndqa agree``: per metric, its correlations with listeners, a scatter of
its values against the mean listener scores, and the listeners' per-system means."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import figures
from .pages import Figures, environment, jndqa_version, write_page, write_static

__all__ = ["render_agree_page"]


def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3f}"


def _ci(ci: Any) -> str:
    return "—" if not ci or ci[0] is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _scatter(result: Any, stimuli: Sequence[Any]) -> dict:
    xs, ys, text = [], [], []
    for s, v in zip(stimuli, result.values, strict=True):
        if v is not None:
            xs.append(v)
            ys.append(s.mean)
            text.append(figures.plotly_text(f"{s.item} / {s.condition or ''}"))
    axis = "distance (lower is better)" if result.orientation == "distance" else "quality (higher is better)"
    name = result.metric + (f" ({result.protocol})" if result.protocol else "")
    return {
        "data": [{"type": "scatter", "mode": "markers", "x": xs, "y": ys, "text": text, "name": name,
                  "hovertemplate": "%{text}<br>metric %{x:.4g}<br>listeners %{y:.3g}<extra></extra>"}],
        "layout": figures.layout(xaxis={"title": {"text": f"{name}: {axis}"}},
                                 yaxis={"title": {"text": "mean listener score"}}, showlegend=False),
    }  # fmt: skip


def _systems(stimuli: Sequence[Any]) -> dict:
    import numpy as np

    by: dict[str, list[float]] = {}
    for s in stimuli:
        by.setdefault(s.condition or "(none)", []).append(s.mean)
    names = sorted(by, key=lambda c: np.mean(by[c]))
    means = [float(np.mean(by[c])) for c in names]
    half = []
    for c in names:
        v = np.asarray(by[c])
        half.append(float(1.96 * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0)
    return {
        "data": [{"type": "scatter", "mode": "markers", "x": [figures.plotly_text(c) for c in names], "y": means,
                  "error_y": {"type": "data", "array": half, "visible": True}, "name": "listeners"}],
        "layout": figures.layout(xaxis={"title": {"text": "condition"}},
                                 yaxis={"title": {"text": "mean listener score"}}, showlegend=False),
    }  # fmt: skip


def render_agree_page(summary: dict, stimuli: Sequence[Any], results: Sequence[Any], out: str | Path) -> Path:
    """Write ``out/index.html`` (with its own plotly.min.js) for :func:`jndqa.flows.agree.agree`'s
    summary, its stimuli (:class:`jndqa.datasets.StimulusMean`) and the metrics' results."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_static(root)
    fig = Figures()
    rows = []
    for m in summary["metrics"]:
        row = dict(m)
        for k in ("stimulus_spearman", "stimulus_pearson", "stimulus_kendall", "within_item_spearman",
                  "system_spearman"):  # fmt: skip
            row[k] = _fmt(m.get(k))
            row[f"{k}_ci"] = _ci(m.get(f"{k}_ci"))
        rows.append(row)
    failures = [{"what": " ".join(str(f[k]) for k in ("metric", "file", "test") if f.get(k)), "reason": f["reason"]}
                for f in summary["failures"]]  # fmt: skip
    page = environment().get_template("agree.html.j2").render(
        root="", title="agreement with listeners", s=summary, rows=rows, failures=failures,
        systems=fig(_systems(stimuli)), scatters=[fig(_scatter(r, stimuli)) for r in results],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), version=jndqa_version(), db="ratings files",
    )  # fmt: skip
    path = root / "index.html"
    write_page(path, page)
    return path
