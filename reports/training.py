"""The training report: one static HTML page per retraining (loss curves, reliability diagram,
candidate vs production), written next to its own copy of plotly.min.js."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from . import figures
from .pages import Figures, environment, jndqa_version, write_page, write_static

__all__ = ["render_training_report"]

METRIC_NAMES = {"accuracy": ("accuracy", True), "auc": ("ROC AUC", True), "log_loss": ("log loss", False),
                "ece": ("expected calibration error", False)}  # fmt: skip


def _loss_figure(history: list[dict], best: int | None) -> dict:
    epochs = [h["epoch"] for h in history]
    data = [
        {"type": "scatter", "mode": "lines", "x": epochs, "y": [h["train_loss"] for h in history],
         "name": "training loss"},
        {"type": "scatter", "mode": "lines", "x": epochs, "y": [h["val_loss"] for h in history],
         "name": "validation loss"},
        {"type": "scatter", "mode": "lines", "x": epochs, "y": [h["val_accuracy"] for h in history],
         "name": "validation accuracy", "yaxis": "y2", "line": {"dash": "dot"}},
    ]  # fmt: skip
    shapes = []
    if best is not None:
        shapes.append({"type": "line", "x0": best, "x1": best, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#999", "dash": "dash"}})  # fmt: skip
    return {"data": data, "layout": {**figures.BASE_LAYOUT, "height": 360, "shapes": shapes,
            "xaxis": {"title": {"text": "epoch (0: the parent model)"}},
            "yaxis": {"title": {"text": "cross-entropy"}},
            "yaxis2": {"title": {"text": "accuracy"}, "overlaying": "y", "side": "right", "range": [0, 1]},
            "legend": {"orientation": "h", "y": -0.25}}}  # fmt: skip


def _reliability_figure(rel: dict) -> dict:
    data = [{"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "perfect calibration",
             "line": {"color": "#999", "dash": "dash"}}]  # fmt: skip
    for k, (who, r) in enumerate(rel.items()):
        keep = [i for i, c in enumerate(r["counts"]) if c > 0]
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": who,
            "x": [r["mean_predicted"][i] for i in keep], "y": [r["observed"][i] for i in keep],
            "marker": {"size": [6 + 14 * (r["counts"][i] / max(r["counts"])) ** 0.5 for i in keep],
                       "color": figures.PALETTE[k]},
            "text": [f"{r['counts'][i]} pairs" for i in keep],
            "hovertemplate": "predicted %{x:.2f}<br>judged different %{y:.2f}<br>%{text}"
                             "<extra>%{fullData.name}</extra>",
        })  # fmt: skip
    return {"data": data, "layout": {**figures.BASE_LAYOUT, "height": 420, "width": 520,
            "xaxis": {"title": {"text": "mean predicted p(different)"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "fraction judged different"}, "range": [0, 1]}}}  # fmt: skip


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def render_training_report(summary: dict, out: str | Path) -> Path:
    """Write ``out/index.html`` for a retraining summary (:func:`jndqa.flows.retrain.retrain`)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_static(root)
    fig = Figures()
    splits = []
    for key, title in (("test", "Held-out pairs"), ("golden", "Golden set")):
        m = (summary.get("metrics") or {}).get(key)
        if not m:
            continue
        rows = []
        for name, (label, higher) in METRIC_NAMES.items():
            c, p = m["candidate"][name], m["production"][name]
            better = (c["value"] > p["value"]) == higher if c["value"] != p["value"] else None
            rows.append({"name": label, "cand": _fmt(c["value"]), "prod": _fmt(p["value"]),
                         "cand_ci": f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]",
                         "prod_ci": f"[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}]",
                         "better": "candidate" if better else "production" if better is False else "tie"})  # fmt: skip
        splits.append({"title": title, "n": m["n"], "unit": "pairs", "rows": rows})
    for key, title in (
        ("ratings_test", "Held-out rated stimuli"),
        ("ratings_golden", "Golden rated stimuli"),
        ("preference_test", "Held-out preferred pairs"),
        ("preference_golden", "Golden preferred pairs"),
    ):
        m = (summary.get("metrics") or {}).get(key)
        if not m:
            continue
        c, p = m["candidate"]["within_item_spearman"], m["production"]["within_item_spearman"]
        d = m["difference"]
        better = (
            None if c["value"] is None or p["value"] is None or c["value"] == p["value"] else c["value"] > p["value"]
        )
        rows = [{"name": "within-item Spearman (per reference, averaged)", "cand": _fmt(c["value"]),
                 "prod": _fmt(p["value"]), "cand_ci": f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]",
                 "prod_ci": f"[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}]",
                 "better": "candidate" if better else "production" if better is False else "tie"},
                {"name": "candidate − production", "cand": _fmt(d["value"]), "prod": "",
                 "cand_ci": f"[{_fmt(d['ci'][0])}, {_fmt(d['ci'][1])}]", "prod_ci": "", "better": ""}]  # fmt: skip
        unit = "pairs" if key.startswith("preference") else "references"
        splits.append({"title": f"{title}, {m['references']} {unit}", "n": m["n"], "unit": "stimuli",
                       "rows": rows})  # fmt: skip
    history = summary.get("history") or []
    loss = fig(_loss_figure(history, summary.get("best_epoch"))) if history else None
    rel = (summary.get("reliability") or {}).get("test")
    status = summary.get("status", "failed")
    word = {"promoted": "PROMOTED", "rejected": "REJECTED", "skipped": "NOTHING NEW"}.get(status, "FAILED")
    headline = {
        "promoted": f"{summary.get('candidate')} is the production model now.",
        "rejected": f"{summary.get('candidate')} was rejected; production is unchanged.",
        "skipped": "No new judgments since the last training: nothing was trained.",
    }.get(status, "The training failed; production is unchanged.")
    files = [{**f, "kinds": ", ".join(f"{k}: {v}" for k, v in (f.get("quarantine_kinds") or {}).items())}
             for f in summary.get("files", [])]  # fmt: skip
    s = {**summary, "files": files}
    page = environment().get_template("training.html.j2").render(
        root="", title=f"training {summary.get('training_id')}", s=s, splits=splits, loss=loss,
        reliability=fig(_reliability_figure(rel)) if rel else None, word=word, headline=headline,
        css={"promoted": "passed", "rejected": "regressed"}.get(status, "failed_items"),
        settings=json.dumps(summary.get("settings", {}), sort_keys=True),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), version=jndqa_version(), db="the model registry",
    )  # fmt: skip
    path = root / "index.html"
    write_page(path, page)
    return path
