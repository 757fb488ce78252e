"""Static HTML reports from the store: an index of runs, a page per run, a page per item.

Layout of a report folder (everything relative, so it opens straight from disk)::

    index.html                     all runs, newest first, and each variant's trend
    runs/<run>/index.html          one run: verdict, regressions, curves, heatmap, failures
    runs/<run>/items/<item>.html   one item: listen, per-window distances, spectrogram difference
    audio/*.flac                   the decoded audio the runs kept (hard links when possible)
    plotly.min.js report.js report.css   written once per folder

Text from configs, file names and metadata is escaped by Jinja2 (autoescape) in HTML, by
:func:`script_json` inside ``<script>`` blocks, and by :func:`figures.plotly_text` in Plotly
labels. Reading the store never writes to it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import figures
from .pages import Figures, environment, jndqa_version, write_page, write_static
from .spectrum import SpectrumError, spectrogram_difference

__all__ = ["ReportError", "ReportResult", "render_report"]

STATUS_TEXT = {
    "passed": "passed",
    "regressed": "regressed",
    "regressed_ok": "regressed (not failing)",
    "failed_items": "failed items",
    "running": "running",
    "killed": "killed",
}


class ReportError(RuntimeError):
    """The report cannot be written as asked (no such run, an empty store)."""


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    root: Path
    index: Path
    run_page: Path
    run_id: str
    pages: int
    audio_files: int
    bytes: int
    seconds: float


# ------------------------------------------------------------------ helpers
def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", s) or "_"


def _fmt(x: float | None, spec: str, suffix: str = "", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return f"{x:{spec}}{suffix}"


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _place_audio(src: str | None, root: Path) -> str | None:
    """Put a kept audio file in the report's ``audio/`` folder (hard link, else copy); returns its
    path relative to the report root, None when the file is gone."""
    if not src:
        return None
    source = Path(src)
    if not source.is_file():
        return None
    dest = root / "audio" / source.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if dest.samefile(source) or dest.stat().st_size == source.stat().st_size:
            return f"audio/{source.name}"
        dest.unlink()
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
    return f"audio/{source.name}"


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------- entry
def render_report(store: Any, out: str | Path, run_id: str | None = None) -> ReportResult:
    """Render ``run_id`` (default: the newest run) and the index into ``out``.

    ``store`` is a :class:`jndqa.store.Store` or the path of a database (opened read-only).
    Pages of other runs already in ``out`` are kept; the index links every run that has one.
    """
    from jndqa.store import Store

    t0 = time.perf_counter()
    if not isinstance(store, Store):
        store = Store(store, read_only=True)
    runs = store.runs()
    if not runs:
        raise ReportError(f"{store.path}: no runs stored yet; run `jndqa run CONFIG` first")
    if run_id is None:
        run_id = runs[0]["run_id"]
    elif not any(r["run_id"] == run_id for r in runs):
        raise ReportError(f"{store.path}: no run {run_id!r}; `jndqa runs --db {store.path}` lists them")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_static(root)
    env = environment()
    common = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": jndqa_version(),
        "db": str(store.path),
    }
    pages, audio = _render_run(store, root, run_id, env, common)
    index = _render_index(store, root, runs, env, common)
    run_page = root / "runs" / _safe_name(run_id) / "index.html"
    return ReportResult(
        root=root,
        index=index,
        run_page=run_page,
        run_id=run_id,
        pages=pages + 1,
        audio_files=audio,
        bytes=_folder_bytes(root),
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------ metrics
def metric_unit(metric: str, orientation: str) -> str:
    """How a metric's values are named on axes: ``DPAM distance``; ``zimtohrli (higher is better)``."""
    if metric == "dpam":
        return "DPAM distance"
    return f"{metric} ({'higher' if orientation == 'quality' else 'lower'} is better)"


def _orientation(rows: list[dict]) -> str:
    return next((r["orientation"] for r in rows if r.get("orientation")), "distance")


def _worse(orientation: str) -> float:
    """+1 when a higher value sounds worse (a distance), -1 when it sounds better (a quality)."""
    return 1.0 if orientation == "distance" else -1.0


# --------------------------------------------------------------------- index
def _render_index(store, root: Path, runs: list[dict], env, common: dict) -> Path:
    fig = Figures()
    rows = []
    links = {}
    for r in runs:
        page = root / "runs" / _safe_name(r["run_id"]) / "index.html"
        link = f"runs/{_safe_name(r['run_id'])}/index.html" if page.exists() else None
        if link:
            links[r["run_id"]] = link
        rows.append(
            {
                **r,
                "link": link,
                "status_text": STATUS_TEXT.get(r["status"], r["status"]),
                "started": str(r["started"])[:19],
            }
        )
    means = store.variant_means()
    trends = []
    for metric in sorted({m["metric"] for m in means}, key=lambda name: (name != "dpam", name)):
        mine = [m for m in means if m["metric"] == metric]
        combos = {(m["model_id"], m["model_version"], m["protocol"]) for m in mine}
        points = []
        for m in mine:
            series = m["label"]
            if len(combos) > 1:
                series += f" ({' '.join(filter(None, (m['model_id'], m['model_version'], m['protocol'])))})"
            points.append({**m, "series": series})
        unit = metric_unit(metric, _orientation(mine))
        trends.append({"metric": metric, "unit": unit, "figure": fig(figures.trend(points, links, unit=unit))})
    path = root / "index.html"
    write_page(
        path, env.get_template("index.html.j2").render(root="", title="Runs", runs=rows, trends=trends, **common)
    )
    return path


# ----------------------------------------------------------------------- run
def _verdict(run: dict, summary: dict | None, comparisons: list[dict], failures: list[dict]) -> dict:
    status = run["status"]
    regressed = [c["label"] for c in comparisons if c["regressed"]]
    if status == "passed":
        headline = (
            "No variant regressed against the baseline."
            if comparisons
            else "Every item scored; there was nothing to compare against."
        )
        word = "PASSED"
    elif status == "regressed":
        word = "REGRESSED"
        headline = f"{len(regressed)} variant{'s' if len(regressed) != 1 else ''} regressed: {', '.join(regressed)}."
    elif status == "regressed_ok":
        word = "REGRESSED"
        headline = (
            f"{len(regressed)} variant{'s' if len(regressed) != 1 else ''} regressed: {', '.join(regressed)}; "
            "the config does not fail the night on regressions (regression.fail_on_regression: false)."
        )
    elif status == "changed":
        word = "CHANGED"
        audible = (summary or {}).get("golden", {}).get("audible_changes") or []
        names = sorted({a["label"] for a in audible})
        headline = (
            f"{len(audible)} output{'s' if len(audible) != 1 else ''} changed audibly since the golden run "
            f"{(summary or {}).get('golden', {}).get('run')}: {', '.join(names)}. Listen on the item pages."
        )
    elif status == "failed_items":
        word = "FAILED ITEMS"
        headline = f"{len(failures)} item/variant failure{'s' if len(failures) != 1 else ''}, recorded below."
        if regressed:
            headline += f" Regressed: {', '.join(regressed)}."
    else:
        word = status.upper()
        headline = (
            f"The run is {status}: it did not finish. The figures show the scores it stored "
            "before it stopped; rerun the config to complete it (stored scores are reused)."
        )
    return {"word": word, "headline": headline, "css": status}


def _definition(spec: dict) -> str:
    parts = []
    if spec.get("encode"):
        parts.append("encode: " + " ".join(map(str, spec["encode"])))
        if spec.get("decode"):
            parts.append("decode: " + " ".join(map(str, spec["decode"])))
    elif spec.get("codec"):
        parts.append(f"codec {spec['codec']}")
    for key in ("bitrate", "container", "rate", "channels", "effects"):
        if spec.get(key) is not None:
            parts.append(f"{key} {spec[key]}")
    return "; ".join(parts) or json.dumps(spec, sort_keys=True)


def _render_run(store, root: Path, run_id: str, env, common: dict) -> tuple[int, int]:
    run = store.run(run_id)
    summary = _json_field(run.get("summary"))
    config = _json_field(run.get("config")) or {}
    tools = _json_field(run.get("tool_versions")) or {}
    metric_list = config.get("metrics") or ["dpam"]
    primary = (summary or {}).get("primary_metric") or metric_list[0]
    all_rows = store.run_scores(run_id)
    rows = [r for r in all_rows if r["metric"] == primary]
    orientation = _orientation(rows)
    worse = _worse(orientation)
    unit = metric_unit(primary, orientation)
    variants = store.run_variants(run_id)
    items = store.run_items(run_id)
    failures = store.run_failures(run_id)
    kept = {(k["item_sha256"], k["spec_id"]): k for k in store.kept_audio(run_id)}
    golden = {(g["item_sha256"], g["label"]): g for g in store.golden(run_id)}
    listen_tests = [{**t, "href": os.path.relpath(Path(t["folder"]) / "index.html", root / "runs" / _safe_name(run_id))}
                    for t in store.listen_tests(run_id)]  # fmt: skip
    listen_by_variant: dict[str, dict] = {}
    for t in listen_tests:  # newest first: an abx test of a variant wins over a mushra test of it
        for label in t["variants"] or []:
            if label not in listen_by_variant or (t["kind"] == "abx" and listen_by_variant[label]["kind"] != "abx"):
                listen_by_variant[label] = t
    # A/B players (two files each) for the keep_audio largest changes per variant only: the report stays small
    changed = sorted((g for g in golden.values() if g["distance"] is not None), key=lambda g: -g["distance"])
    for label in {g["label"] for g in changed}:
        for g in [g for g in changed if g["label"] == label][: config.get("keep_audio", 3)]:
            g["players"] = True
    golden_rows = [{"label": v["label"], **v["golden"]} for v in (summary or {}).get("per_variant", [])
                   if v.get("golden")]  # fmt: skip
    baseline_id = run.get("baseline_run")
    run_key = (run["model_id"], run["model_version"], run["protocol"])
    baseline_all = store.run_scores(baseline_id) if baseline_id else []
    baseline_rows = [
        r
        for r in baseline_all
        if r["metric"] == primary and (r["model_id"], r["model_version"], r["protocol"]) == run_key
    ]
    base = {(r["item_sha256"], r["spec_id"]): r for r in baseline_rows}
    # every metric's baseline score, by the full key of the score it is compared with
    base_all = {(r["item_sha256"], r["spec_id"], r["metric"], r["model_id"], r["model_version"], r["protocol"]): r
                for r in baseline_all}  # fmt: skip
    others: dict[tuple[str, str], list[dict]] = {}
    for r in all_rows:
        if r["metric"] != primary:
            others.setdefault((r["item_sha256"], r["spec_id"]), []).append(r)
    comparisons = (summary or {}).get("comparisons", [])
    if summary:
        baseline_note = summary.get("baseline_note") or ""
    else:
        baseline_note = "The run did not finish, so it was not compared with a baseline."
    if not baseline_id and summary:
        baseline_note = f"No baseline: {baseline_note}." if not baseline_note.startswith("No ") else baseline_note

    run_dir = root / "runs" / _safe_name(run_id)
    fig = Figures()
    item_link = {it["sha256"]: f"items/{it['sha256'][:16]}.html" for it in items}
    labels = [v["label"] for v in variants]
    by_key = {(r["item_sha256"], r["spec_id"]): r for r in rows}

    # Rate-quality curves: one chart per codec family, this run and its baseline.
    families: dict[str, list[dict]] = {}
    for v in variants:
        kbps = figures.bitrate_kbps(v["spec"])
        if kbps is not None:
            families.setdefault(figures.codec_family(v["spec"]), []).append({**v, "kbps": kbps})
    curves = []
    for k, (family, members) in enumerate(sorted(families.items())):
        for source, dash, name in ((rows, "solid", family), (baseline_rows, "dash", f"{family} (baseline)")):
            points = []
            for v in members:
                d = [r["value"] for r in source if r["spec_id"] == v["spec_id"]]
                if d:
                    mean, lo, hi = figures.mean_ci(d)
                    points.append((v["kbps"], mean, lo, hi, v["label"], len(d)))
            if points:
                curves.append({"name": name, "colour": k, "dash": dash, "points": points})
    rate_quality = fig(figures.rate_quality(curves, unit=unit)) if curves else None

    heatmap = distribution = None
    if rows:
        z = [[(by_key.get((it["sha256"], v["spec_id"])) or {}).get("value") for v in variants] for it in items]
        heatmap = fig(
            figures.heatmap([it["path"] for it in items], labels, z, [item_link[it["sha256"]] for it in items],
                            unit=unit, higher_is_worse=worse > 0)
        )  # fmt: skip
        series = []
        for v in variants:
            for group, source in (("baseline", baseline_rows), ("candidate", rows)):
                mine = [r for r in source if r["spec_id"] == v["spec_id"]]
                if mine:
                    series.append(
                        {
                            "name": v["label"],
                            "group": "this run" if group == "candidate" else "baseline",
                            "values": [r["value"] for r in mine],
                            "items": [r.get("path") or r["item_sha256"][:16] for r in mine],
                        }
                    )
        distribution = fig(figures.distance_distribution(series, unit=unit))

    item_rows = []
    for it in items:
        mine = [by_key[(it["sha256"], v["spec_id"])] for v in variants if (it["sha256"], v["spec_id"]) in by_key]
        worst = max(mine, key=lambda r: worse * r["value"]) if mine else None
        item_rows.append(
            {
                "path": it["path"],
                "link": item_link[it["sha256"]],
                "tags": ", ".join(it["tags"] or []),
                "duration": _fmt(it["duration"], ".1f", " s"),
                "format": f"{it['rate']} Hz / {it['channels']} ch",
                "loudness": _fmt(it["loudness"], ".1f", " LUFS"),
                "worst_label": worst["label"] if worst else "—",
                "worst_value": _fmt(worst and worst["value"], ".4f"),
                "kept": any(k[0] == it["sha256"] and k[1] and kept[k].get("path") for k in kept),
            }
        )

    fail_by_spec: dict[str, int] = {}
    for f in failures:
        fail_by_spec[f["spec_id"]] = fail_by_spec.get(f["spec_id"], 0) + 1
    names = [primary] + [m for m in metric_list if m != primary and any(r["metric"] == m for r in all_rows)]
    variant_rows = []
    for v in variants:
        means = []
        for name in names:
            d = [r["value"] for r in all_rows if r["spec_id"] == v["spec_id"] and r["metric"] == name]
            means.append(_fmt(sum(d) / len(d), ".4f") if d else "—")
        variant_rows.append(
            {
                **v,
                "definition": _definition(v["spec"]),
                "n_items": sum(1 for r in rows if r["spec_id"] == v["spec_id"]),
                "means": means,
                "failures": fail_by_spec.get(v["spec_id"], 0),
            }
        )
    scored = len({r["item_sha256"] for r in rows})
    by_metric = f" ({', '.join(names)})" if len(names) > 1 else ""
    counts = (
        f"{len(items)} items × {len(variants)} variants: {len(all_rows)} scores{by_metric} "
        f"({sum(1 for r in all_rows if r['reused'])} reused from earlier nights), {len(failures)} failures; "
        f"{scored} items scored by {primary}. Model {run['model_id']} {run['model_version']}, "
        f"protocol {run['protocol']}."
    )
    metric_rows, disagreement = _metric_verdicts(summary, primary)
    threshold = (config.get("regression") or {}).get("threshold", "the configured threshold")
    page = env.get_template("run.html.j2").render(
        root="../../",
        title=f"run {run_id}",
        run={**run, "started": str(run["started"])[:19], "finished": str(run["finished"] or "")[:19]},
        verdict=_verdict(run, summary, comparisons, failures),
        counts=counts,
        baseline_note=baseline_note,
        comparisons=[{**c, "n_items": c["items"]} for c in comparisons],
        threshold=threshold,
        primary=primary,
        unit=unit,
        quality=worse < 0,
        metric_names=names,
        metrics=metric_rows,
        disagreement=disagreement,
        rate_quality=rate_quality,
        has_baseline=bool(baseline_rows),
        heatmap=heatmap,
        distribution=distribution,
        items=item_rows,
        failures=failures,
        variants=variant_rows,
        golden=(summary or {}).get("golden"),
        listen_tests=listen_tests,
        listen_by_variant=listen_by_variant,
        golden_rows=golden_rows,
        tools=sorted((str(k), str(v)) for k, v in tools.items()),
        config=json.dumps(config, indent=2, sort_keys=True, default=str),
        **common,
    )
    write_page(run_dir / "index.html", page)

    # Item pages.
    audio_files = 0
    fail_by_item: dict[str, list[dict]] = {}
    for f in failures:
        fail_by_item.setdefault(f["item"], []).append(f)
    for it in items:
        n_audio = _render_item(
            it, variants, by_key, base, kept, fail_by_item.get(it["path"], []), run, root, run_dir, env, common, config,
            scores=_ItemScores(others, base_all, primary, unit, worse), golden=golden,
        )  # fmt: skip
        audio_files += n_audio
    return 1 + len(items), audio_files


@dataclass
class _ItemScores:
    """What an item page needs beyond the primary metric's rows: the other metrics' scores by (item, spec),
    every metric's baseline scores by full key, the primary's name and unit, and its direction."""

    others: dict[tuple[str, str], list[dict]]
    base_all: dict[tuple, dict]
    primary: str
    unit: str
    worse: float

    def other_metrics(self, sha: str, spec_id: str) -> list[dict]:
        out = []
        for r in self.others.get((sha, spec_id), []):
            b = self.base_all.get((sha, spec_id, r["metric"], r["model_id"], r["model_version"], r["protocol"]))
            out.append({"metric": r["metric"], "value": r["value"], "version": r["model_version"],
                        "unit": metric_unit(r["metric"], r["orientation"]),
                        "baseline": b["value"] if b else None, "alignment": r.get("alignment")})  # fmt: skip
        return out


def _metric_verdicts(summary: dict | None, primary: str) -> tuple[list[dict], str | None]:
    """The run page's per-metric verdicts (from the summary) and a sentence when metrics disagree."""
    rows = []
    for m in (summary or {}).get("metrics") or []:
        rows.append({**m, "key": " ".join(filter(None, (m.get("model_id"), m.get("version"), m.get("protocol")))),
                     "compared": len(m.get("comparisons") or [])})  # fmt: skip
    parts = []
    for d in (summary or {}).get("disagreements") or []:
        parts.append(f"{d['variant']}: regressed by {', '.join(d['regressed'])}, "
                     f"not by {', '.join(d['not_regressed'])}")  # fmt: skip
    sentence = None
    if parts:
        n = len(parts)
        sentence = (
            f"The metrics disagree on {n} variant{'s' if n != 1 else ''} ({'; '.join(parts)}). "
            f"The night's status follows the primary metric, {primary}; listen before trusting either."
        )
    return rows, sentence


def _place_audio16(src: str | None, root: Path) -> str | None:
    """A kept output (24-bit FLAC) as 16-bit FLAC in the report's ``audio/`` folder, as the report's other
    audio is (both sides of an A/B at the same depth; a smaller report); None when the file is gone."""
    if not src or not Path(src).is_file():
        return None
    import numpy as np
    import soundfile as sf

    dest = root / "audio" / f"{Path(src).stem}-16.flac"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        x, rate = sf.read(src, dtype="float32", always_2d=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        sf.write(tmp, np.clip(x, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
        tmp.replace(dest)
    return f"audio/{dest.name}"


def _golden_section(g: dict | None, spec_id: str, root: Path, rel_root: str, fig: Figures) -> tuple[dict | None, int]:
    """An item page's comparison with the golden output (status, rule, distance, p_jnd), the two outputs for
    A/B listening and the distance per window; and how many audio files it placed."""
    if g is None:
        return None, 0
    note = None
    if g.get("golden_path") and g.get("golden_path") == g.get("output_path"):  # identical: one file, nothing to A/B
        gsrc = osrc = None
    elif not g.get("players"):
        gsrc = osrc = None
        if g.get("distance") is not None:
            note = ("No A/B player: the report plays each variant's largest changes (keep_audio); "
                    "`jndqa listen make --kind abx` makes a listening test of them all.")  # fmt: skip
    else:
        gsrc, osrc = _place_audio16(g.get("golden_path"), root), _place_audio16(g.get("output_path"), root)
    windows = list(zip(g.get("window_starts") or [], g.get("window_ends") or [], g.get("window_distances") or [],
                       strict=True))  # fmt: skip
    p = g.get("p_jnd")
    return {
        "status": g["status"], "rule": g.get("rule") or "", "run": g.get("golden_run"),
        "distance": None if g.get("distance") is None else f"{g['distance']:.4f}",
        "p_jnd": None if p is None else f"{p:.3f}" + ("" if g.get("p_jnd_calibrated") else " (uncalibrated)"),
        "golden_src": rel_root + gsrc if gsrc else None, "output_src": rel_root + osrc if osrc else None,
        "note": note,
        "strip": fig(figures.window_strip(windows, None, f"tonight-{spec_id}" if osrc else None)) if windows else None,
    }, int(bool(gsrc)) + int(bool(osrc))  # fmt: skip


def _render_item(it, variants, by_key, base, kept, failures, run, root, run_dir, env, common, config, *,
                 scores: _ItemScores, golden: dict | None = None) -> int:  # fmt: skip
    fig = Figures()
    rel_root = "../../../"
    keep_n = config.get("keep_audio", 3)
    ref_kept = kept.get((it["sha256"], ""))
    ref_src = _place_audio(ref_kept.get("path"), root) if ref_kept else None
    placed = 1 if ref_src else 0
    reference = {"src": rel_root + ref_src if ref_src else None, "note": _missing_note(ref_kept, keep_n)}
    sections = []
    for v in variants:
        r = by_key.get((it["sha256"], v["spec_id"]))
        if r is None:
            continue
        k = kept.get((it["sha256"], v["spec_id"]))
        src = _place_audio(k.get("path"), root) if k else None
        placed += 1 if src else 0
        audio_id = f"audio-{v['spec_id']}" if src else None
        b = base.get((it["sha256"], v["spec_id"]))
        windows = list(zip(r["window_starts"] or [], r["window_ends"] or [], r["window_distances"] or [], strict=True))
        if not windows:  # official protocol or a metric without windows: one value for the whole item
            windows = [(0.0, float(it["duration"] or 0.0), r["value"])]
        bwin = None
        if b and b.get("window_starts"):
            bwin = list(zip(b["window_starts"], b["window_ends"], b["window_distances"], strict=True))
        spectrogram = note = None
        if ref_src and src:
            try:
                t, f, d = spectrogram_difference(root / ref_src, root / src)
                spectrogram = fig(figures.spectrogram_difference(t, f, d, limit=30.0))
            except SpectrumError as exc:
                note = f"No spectrogram difference: {exc}"
        gold, n_golden = _golden_section((golden or {}).get((it["sha256"], v["label"])), v["spec_id"], root, rel_root,
                                         fig)  # fmt: skip
        placed += n_golden
        offset = r.get("offset_samples")
        rate = it["rate"] or 0
        sections.append(
            {
                "spec_id": v["spec_id"],
                "label": v["label"],
                "value": r["value"],
                "unit": scores.unit,
                "p_jnd": None
                if r.get("p_jnd") is None
                else _fmt(r["p_jnd"], ".3f") + ("" if r.get("p_jnd_calibrated") else " (uncalibrated)"),
                "baseline": b["value"] if b else None,
                "others": scores.other_metrics(it["sha256"], v["spec_id"]),
                "loudness": (
                    f"{_fmt(r.get('loudness_variant'), '.1f', ' LUFS')} "
                    f"({_fmt(r.get('loudness_delta'), '+.2f', ' LU')} against the reference)"
                ),
                "offset": (
                    f"{offset} samples ({offset / rate * 1000:.2f} ms) removed to align; correlation "
                    f"{_fmt(r.get('correlation'), '.3f')}"
                )
                if offset is not None and rate
                else "—",
                "encoder_version": r.get("encoder_version"),
                "reason": (k or {}).get("reason") if src else None,
                "src": rel_root + src if src else None,
                "note": _missing_note(k, keep_n),
                "strip": fig(figures.window_strip(windows, bwin, audio_id, unit=scores.unit)),
                "spectrogram": spectrogram,
                "spectrogram_note": note,
                "golden": gold,
            }
        )
    sections.sort(key=lambda s: -scores.worse * s["value"])
    page = env.get_template("item.html.j2").render(
        root=rel_root,
        title=it["path"],
        run=run,
        item={
            "path": it["path"],
            "format": f"{it['rate']} Hz, {it['channels']} channel(s)",
            "duration": _fmt(it["duration"], ".2f", " s"),
            "loudness": _fmt(it["loudness"], ".1f", " LUFS"),
            "tags": ", ".join(it["tags"] or []),
        },
        reference=reference,
        variants=sections,
        failures=failures,
        **common,
    )
    write_page(run_dir / "items" / f"{it['sha256'][:16]}.html", page)
    return placed


def _missing_note(kept: dict | None, keep_n: int) -> str:
    if kept is None:
        return (
            f"Audio not kept: a run keeps the decoded audio of each variant's {keep_n} worst items and of "
            "flagged items (keep_audio / keep_flagged in the config)."
        )
    if kept.get("error"):
        return f"Audio could not be kept: {kept['error']}"
    return f"Audio file missing: {kept.get('path')} (deleted since the run?)"
