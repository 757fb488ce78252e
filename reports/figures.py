"""Plotly figures as plain dicts (``{"data": [...], "layout": {...}}``), drawn in the page by
``static/report.js``. Building dicts instead of ``plotly.graph_objects`` keeps a demo report's
rendering well under a second; the page's script validates nothing, so every trace here uses
only documented Plotly attributes.

Text from configs, file names and metadata goes through :func:`plotly_text`: Plotly draws a
subset of HTML tags in its labels and decodes entities, so ``<`` and ``&`` are escaped there.
An extra ``click`` key tells the page what a click on a point does: ``link`` (go to the
point's ``customdata``) or ``seek`` (play the audio element ``audio`` from ``customdata`` s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from jndqa.stats import bootstrap_mean

__all__ = [
    "bitrate_kbps",
    "codec_family",
    "distance_distribution",
    "heatmap",
    "layout",
    "mean_ci",
    "plotly_text",
    "rate_quality",
    "spectrogram_difference",
    "trend",
    "window_strip",
]

# Colour-blind-safe qualitative palette (Okabe & Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BASE_LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "paper_bgcolor": "white",
    "plot_bgcolor": "#fafafa",
    "hovermode": "closest",
}


def plotly_text(s: object) -> str:
    """Text for a Plotly label: shown literally, never interpreted as markup."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def layout(**kw) -> dict:
    """The reports' common Plotly layout, updated with ``kw``."""
    out = {**BASE_LAYOUT}
    out.update(kw)
    return out


def bitrate_kbps(spec: dict) -> float | None:
    """A variant's bitrate in kbit/s from its spec (``96k``, ``1.5M``, ``64000``), None without one."""
    b = spec.get("bitrate")
    if b is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", str(b))
    if not m:
        return None
    value = float(m.group(1))
    unit = m.group(2).lower()
    return value * 1000 if unit == "m" else value if unit == "k" else value / 1000


def codec_family(spec: dict) -> str:
    """The curve a variant belongs to: its codec, with its effects when it has some (a codec
    after a high-pass is another curve); external coders by their encoder's name."""
    if spec.get("encode"):
        name = str(spec["encode"][0]).rsplit("/", 1)[-1]
        family = f"external: {name}"
    else:
        family = str(spec.get("codec") or "pcm")
    if spec.get("effects"):
        family += f" + {spec['effects']}"
    return family


def mean_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple:
    """Mean and its percentile-bootstrap confidence interval (:func:`jndqa.stats.bootstrap_mean`,
    seeded): ``(mean, low, high)``; a single value is its own interval, no values give NaNs."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_mean(x, n_boot=n_boot, level=level, seed=seed)
    return float(x.mean()), lo, hi


def rate_quality(curves: list[dict], unit: str = "DPAM distance") -> dict:
    """Bitrate against the mean value of one metric (``unit``: its name on the axis), one curve per codec
    family and run. ``curves``: ``name``,
    ``colour`` (a palette index: one per family), ``dash`` (``solid`` this run, ``dash`` the
    baseline), ``points``: list of ``(kbps, mean, lo, hi, label, n)``."""
    data = []
    for run in curves:
        pts = sorted(run["points"])
        if not pts:
            continue
        x = [p[0] for p in pts]
        colour = PALETTE[run["colour"] % len(PALETTE)]
        if len(pts) > 1:  # the band: upper edge, then the lower edge filled up to it
            data.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": [p[3] for p in pts],
                    "mode": "lines",
                    "line": {"width": 0},
                    "showlegend": False,
                    "hoverinfo": "skip",
                }
            )
            data.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": [p[2] for p in pts],
                    "mode": "lines",
                    "line": {"width": 0},
                    "fill": "tonexty",
                    "fillcolor": _alpha(colour, 0.18),
                    "showlegend": False,
                    "hoverinfo": "skip",
                }
            )
        data.append(
            {
                "type": "scatter",
                "x": x,
                "y": [p[1] for p in pts],
                "mode": "lines+markers",
                "name": plotly_text(run["name"]),
                "line": {"color": colour, "dash": run.get("dash", "solid")},
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [p[3] - p[1] for p in pts],
                    "arrayminus": [p[1] - p[2] for p in pts],
                    "color": colour,
                    "thickness": 1,
                },
                "text": [plotly_text(p[4]) for p in pts],
                "customdata": [[p[2], p[3], p[5]] for p in pts],
                "hovertemplate": "%{text}<br>%{x:g} kbit/s<br>mean %{y:.4f}"
                "<br>95% CI [%{customdata[0]:.4f}, %{customdata[1]:.4f}]<br>%{customdata[2]} items"
                "<extra>%{fullData.name}</extra>",
            }
        )
    return {
        "data": data,
        "layout": layout(
            xaxis={"title": {"text": "bitrate (kbit/s)"}, "type": "log"},
            yaxis={"title": {"text": plotly_text(f"mean {unit}")}, "rangemode": "tozero"},
            height=420,
            legend={"orientation": "v"},
        ),
    }


def _alpha(hex_colour: str, a: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


def heatmap(
    items: list[str],
    variants: list[str],
    z: list[list[float | None]],
    links: list[str],
    unit: str = "distance",
    higher_is_worse: bool = True,
) -> dict:
    """Items (rows) × variants (columns) of one metric's values (``unit``: its name), the worse the redder
    (``higher_is_worse``: a distance); a click opens the item's page."""
    height = max(260, 22 * len(items) + 140)
    return {
        "data": [
            {
                "type": "heatmap",
                "x": [plotly_text(v) for v in variants],
                "y": [plotly_text(i) for i in items],
                "z": z,
                "colorscale": "YlOrRd",
                "reversescale": higher_is_worse,
                "colorbar": {"title": {"text": plotly_text(unit)}},
                "customdata": [[link] * len(variants) for link in links],
                "hovertemplate": "%{y}<br>%{x}<br>%{z:.4f}<extra>click: open the item</extra>",
                "xgap": 1,
                "ygap": 1,
            }
        ],
        "layout": layout(
            height=height,
            margin={"l": 220, "r": 20, "t": 20, "b": 100},
            yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
            xaxis={"automargin": True, "type": "category"},
        ),
        "click": "link",
    }


def distance_distribution(series: list[dict], unit: str = "DPAM distance") -> dict:
    """Box plots of one metric's values (``unit``: its name) with every item as a point: ``series`` of
    ``name``, ``values``, ``items``, ``group``
    (``candidate`` / ``baseline``)."""
    data = []
    colours = {"candidate": PALETTE[0], "baseline": "#999999"}
    seen = set()
    for s in series:
        data.append(
            {
                "type": "box",
                "x": [plotly_text(s["name"])] * len(s["values"]),
                "y": s["values"],
                "name": s["group"],
                "legendgroup": s["group"],
                "showlegend": s["group"] not in seen,
                "marker": {"color": colours.get(s["group"], PALETTE[2]), "size": 5},
                "boxpoints": "all",
                "jitter": 0.4,
                "pointpos": 0,
                "text": [plotly_text(i) for i in s["items"]],
                "hovertemplate": "%{text}<br>%{y:.4f}<extra>%{fullData.name}</extra>",
            }
        )
        seen.add(s["group"])
    return {
        "data": data,
        "layout": layout(
            boxmode="group",
            height=360,
            yaxis={"title": {"text": plotly_text(unit)}, "rangemode": "tozero"},
            xaxis={"automargin": True},
            legend={"orientation": "h", "y": 1.12},
        ),
    }


def trend(points: list[dict], links: dict[str, str], unit: str = "DPAM distance") -> dict:
    """Each variant's mean value of one metric (``unit``: its name) across nights: ``points`` of ``series``,
    ``run_id``, ``started``, ``mean_value``, ``items``; a click opens the run's page when it has one."""
    by_series: dict[str, list[dict]] = {}
    for p in points:
        by_series.setdefault(p["series"], []).append(p)
    data = []
    for k, (name, pts) in enumerate(sorted(by_series.items())):
        pts = sorted(pts, key=lambda p: p["started"])
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plotly_text(name),
                "x": [_iso(p["started"]) for p in pts],
                "y": [p["mean_value"] for p in pts],
                "line": {"color": PALETTE[k % len(PALETTE)]},
                "text": [plotly_text(p["run_id"]) for p in pts],
                "customdata": [links.get(p["run_id"], "") for p in pts],
                "hovertemplate": "run %{text}<br>%{x}<br>mean %{y:.4f}<extra>%{fullData.name}</extra>",
            }
        )
    return {
        "data": data,
        "layout": layout(
            height=380,
            xaxis={"title": {"text": "night"}, "type": "date"},
            yaxis={"title": {"text": plotly_text(f"mean {unit}")}, "rangemode": "tozero"},
            legend={"orientation": "h", "y": -0.2},
        ),
        "click": "link",
    }


def _iso(t: object) -> str:
    return t.isoformat(sep=" ") if isinstance(t, datetime) else str(t)


def window_strip(
    windows: list[tuple[float, float, float]],
    baseline: list[tuple[float, float, float]] | None,
    audio_id: str | None,
    unit: str = "distance",
) -> dict:
    """Value (``unit``: the metric's name) of each analysis window over time (a segment per window, drawn
    at its span, and a marker at its centre); a click plays the variant's audio from the window's start."""
    data = []
    for name, wins, colour, dash in (
        ("baseline", baseline, "#999999", "dot"),
        ("this run", windows, PALETTE[3], "solid"),
    ):
        if not wins:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        for start, end, d in wins:
            xs += [start, end, None]
            ys += [d, d, None]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": xs,
                "y": ys,
                "name": name,
                "legendgroup": name,
                "line": {"color": colour, "dash": dash, "width": 3},
                "hoverinfo": "skip",
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [(s + e) / 2 for s, e, _ in wins],
                "y": [d for *_, d in wins],
                "marker": {"color": colour, "size": 9},
                "name": name,
                "legendgroup": name,
                "showlegend": False,
                "customdata": [s for s, _, _ in wins],
                "text": [f"{s:.1f}–{e:.1f} s" for s, e, _ in wins],
                "hovertemplate": "window %{text}<br>%{y:.4f}<extra>click: play from here</extra>",
            }
        )
    return {
        "data": data,
        "layout": layout(
            height=220,
            margin={"l": 60, "r": 20, "t": 10, "b": 40},
            xaxis={"title": {"text": "time (s)"}, "rangemode": "tozero"},
            yaxis={"title": {"text": plotly_text(unit)}, "rangemode": "tozero"},
            legend={"orientation": "h", "y": 1.15},
        ),
        "click": "seek" if audio_id else None,
        "audio": audio_id,
    }


def spectrogram_difference(times: np.ndarray, freqs_khz: np.ndarray, diff_db: np.ndarray, limit: float) -> dict:
    """Variant minus reference level (dB) over time and frequency: red where the variant adds
    energy (noise, artefacts), blue where it removes it (band limits, dropouts)."""
    return {
        "data": [
            {
                "type": "heatmap",
                "x": np.round(times, 3).tolist(),
                "y": np.round(freqs_khz, 3).tolist(),
                "z": diff_db.tolist(),
                "zmin": -limit,
                "zmax": limit,
                "zmid": 0,
                "colorscale": "RdBu",
                "colorbar": {"title": {"text": "dB"}},
                "hovertemplate": "%{x:.2f} s, %{y:.2f} kHz<br>variant − reference: %{z:+.1f} dB<extra></extra>",
            }
        ],
        "layout": layout(
            height=300,
            margin={"l": 60, "r": 20, "t": 10, "b": 40},
            xaxis={"title": {"text": "time (s)"}},
            yaxis={"title": {"text": "frequency (kHz)"}},
        ),
    }
