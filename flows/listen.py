"""`jndqa listen make`: a listening test built from a stored run (docs/listen.md).

:func:`make_test` chooses the run's worst items (the primary metric's largest distance over the
run's variants; a regressed variant's items first), gathers their audio (the run's kept audio and
golden outputs where they exist, rendered again from the run's config where they do not, refusing
an external encoder whose build is no longer the run's), and writes a self-contained folder:
``index.html`` (the test embedded), ``test.json``, ``listen.js``, ``listen.css`` and ``audio/``, every
stimulus a FLAC named by the sha256 of its samples.

Kinds:

- ``jnd``: per item, a ladder of ``levels`` degradations of one family of the simulated listener's
  (:data:`jndqa.datasets.listener.PSYCHOMETRIC`, rotating over items), run in the page as a 1-up/1-down
  staircase starting at the most severe level (one step down after "different", one up after
  "same"), ``trials`` trials per item, with ``catch`` identical pairs at pre-drawn positions;
- ``mushra``: per item, ITU-R BS.1534-3: the open reference, the hidden reference, a 3.5 kHz low-pass
  anchor and the run's variants (a variant with a golden output that differs: the baseline build
  beside it), in an order drawn per trial;
- ``abx``: per item, the golden (accepted) build's output A and tonight's output B of a changed
  variant (the run's golden comparisons, the largest distance first), X drawn per trial.

Draws (order, X, catch positions) are seeded by ``seed`` and written into the test, so a test is
reproducible and a scripted listener knows what it is answering.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KINDS", "ListenError", "make_test"]

KINDS = ("jnd", "mushra", "abx")
FORMAT = "jndqa-listen/1"


class ListenError(ValueError):
    """A test cannot be made as asked; the message says why and what to do."""


def _write_flac(folder: Path, samples: np.ndarray, rate: int) -> str:
    """``samples`` (float ``[L]`` or ``[L, C]``) as 24-bit FLAC in ``folder/audio`` named by their hash;
    returns the path relative to ``folder``."""
    from .golden import write_output

    return f"audio/{Path(write_output(folder / 'audio', samples, rate, flat=True)['path']).name}"


def _copy_flac(folder: Path, src: str) -> str:
    """A kept FLAC (a golden output or kept audio) into the test, named by the sha256 of its samples."""
    from .golden import read_output

    x, rate = read_output(src)
    return _write_flac(folder, x, rate)


def _lowpass_anchor(x: np.ndarray, rate: int, cutoff: float = 3500.0) -> np.ndarray:
    """BS.1534-3's low-pass anchor: ``x`` low-passed at 3.5 kHz (8th-order Butterworth, zero phase)."""
    from scipy import signal

    if cutoff >= rate / 2:
        return x.copy()
    sos = signal.butter(8, cutoff, fs=rate, output="sos")
    return signal.sosfiltfilt(sos, x, axis=0).astype(np.float32)


class _Run:
    """What a test needs of a stored run: its config, items (with their files), variants, the primary
    metric's rows, kept audio and golden comparisons."""

    def __init__(self, store, run_id: str | None):
        from .config import RunConfig
        from .pipeline import RenderSettings

        runs = store.runs()
        if not runs:
            raise ListenError(f"{store.path}: no runs; run `jndqa run CONFIG --db {store.path}` first")
        run_id = run_id or runs[0]["run_id"]
        self.run = store.run(run_id)
        if self.run is None:
            raise ListenError(f"{store.path}: no run {run_id!r}; `jndqa runs --db {store.path}` lists them")
        self.run_id = run_id
        config = self.run["config"]
        self.cfg = RunConfig.model_validate(json.loads(config) if isinstance(config, str) else config)
        summary = self.run.get("summary")
        self.summary = (json.loads(summary) if isinstance(summary, str) else summary) or {}
        primary = self.summary.get("primary_metric") or self.cfg.metrics[0]
        self.rows = store.run_scores(run_id, metric=primary)
        self.variants = store.run_variants(run_id)
        self.labels = {v["label"] for v in self.variants}
        self.items = {i["sha256"]: i for i in store.run_items(run_id)}
        self.kept = {(k["item_sha256"], k["spec_id"]): k["path"] for k in store.kept_audio(run_id) if k["path"]}
        self.golden = store.golden(run_id)
        self.regressed = {r["variant"] for r in self.summary.get("regressions", [])}
        self.render = RenderSettings.from_config(self.cfg)

    def worst_items(self, n: int) -> list[str]:
        """The ``n`` items (sha256) with the largest primary value over the variants (lowest for a quality),
        the regressed variants' items first; ties by path."""
        worse = 1.0 if all(r.get("orientation", "distance") == "distance" for r in self.rows) else -1.0
        best: dict[str, tuple] = {}
        for r in self.rows:
            key = (r["label"] not in self.regressed, -worse * r["value"], r.get("path") or "")
            if r["item_sha256"] not in best or key < best[r["item_sha256"]]:
                best[r["item_sha256"]] = key
        return [sha for sha, _ in sorted(best.items(), key=lambda kv: kv[1])][:n]

    @cached_property
    def _paths(self) -> dict[str, Path]:
        from jndqa.datasets import scan_corpus

        items, _ = scan_corpus(self.cfg.corpus.root, self.cfg.corpus.manifest)
        return {i.sha256: Path(i.abspath) for i in items}

    def _work(self, sha: str, variants=()):
        """The pipeline's unit of work for item ``sha`` (and ``variants``), to load and render as a night does."""
        from .pipeline import ItemWork

        if sha not in self._paths:
            raise ListenError(f"item {self.items.get(sha, {}).get('path', sha)} of run {self.run_id} is no longer in "
                              f"the corpus {self.cfg.corpus.root}: restore it or choose another run")  # fmt: skip
        return ItemWork(sha, self.items[sha]["path"], str(self._paths[sha]), tuple(variants))

    def reference(self, sha: str):
        """The item's reference as the run's variants read it (:func:`jndqa.flows.pipeline._load_reference`)."""
        from .pipeline import _load_reference

        return _load_reference(self._work(sha), self.render)

    def outputs(self, sha: str, ref, log: Callable[[str], None]) -> dict[str, tuple[np.ndarray, int] | str]:
        """Every variant's output of item ``sha`` by label: the kept file (path) when the run kept it, else
        rendered from the spec as the night did (:func:`jndqa.flows.pipeline._render`, giving samples and
        rate); a variant whose encoder is no longer the run's build is left out (logged)."""
        from jndqa.variants import VariantError, encoder_version, parse_variants

        from .pipeline import VariantWork, _render

        out: dict[str, Any] = {}
        todo = []
        for v in self.variants:
            if (sha, v["spec_id"]) in self.kept:
                out[v["label"]] = self.kept[(sha, v["spec_id"])]
                continue
            try:
                now = encoder_version(parse_variants([v["spec"]])[0], self.cfg.ffmpeg)
            except VariantError as exc:
                log(f"  {v['label']}: left out ({exc})")
                continue
            if now != v["encoder_version"]:
                log(f"  {v['label']}: left out (its build changed since run {self.run_id}, and the run did not "
                    "keep this output: enable golden.keep to keep every output)")  # fmt: skip
                continue
            todo.append(VariantWork(v["spec_id"], v["label"], v["encoder_version"], v["spec"]))
        for v, r in zip(todo, _render(ref, todo, self.render) if todo else [], strict=True):
            if isinstance(r, VariantError):
                log(f"  {v.label}: left out ({r})")
            else:
                out[v.label] = (r.samples, r.rate)
        return out


def _stimulus(folder: Path, value) -> str:
    return _copy_flac(folder, value) if isinstance(value, str) else _write_flac(folder, *value)


def _mushra(run: _Run, folder: Path, shas: list[str], rng: np.random.Generator, log) -> list[dict]:
    trials = []
    changed = {(g["item_sha256"], g["label"]): g for g in run.golden if g["status"] in ("audible", "inaudible")}
    for sha in shas:
        ref = run.reference(sha)
        log(f"  {run.items[sha]['path']}")
        reference = _write_flac(folder, ref.samples, ref.rate)
        stimuli = [{"key": "reference", "file": reference, "condition": "hidden reference"},
                   {"key": "anchor35", "file": _write_flac(folder, _lowpass_anchor(ref.samples, ref.rate), ref.rate),
                    "condition": "anchor 3.5 kHz"}]  # fmt: skip
        for label, value in run.outputs(sha, ref, log).items():
            stimuli.append({"key": label, "file": _stimulus(folder, value), "condition": label})
            g = changed.get((sha, label))
            if g and g.get("golden_path") and Path(g["golden_path"]).is_file():
                stimuli.append({"key": f"{label} (baseline build)", "file": _copy_flac(folder, g["golden_path"]),
                                "condition": f"{label} (baseline build)"})  # fmt: skip
        order = [int(i) for i in rng.permutation(len(stimuli))]
        trials.append({"id": f"t{len(trials) + 1}", "item": run.items[sha]["path"], "reference": reference,
                       "stimuli": [stimuli[i] for i in order]})  # fmt: skip
    return trials


def _abx(run: _Run, folder: Path, n: int, rng: np.random.Generator, log) -> list[dict]:
    pairs = [g for g in run.golden if g["status"] in ("audible", "inaudible") and g.get("golden_path")
             and g.get("output_path") and Path(g["golden_path"]).is_file()
             and Path(g["output_path"]).is_file()]  # fmt: skip
    if not pairs:
        raise ListenError(
            f"run {run.run_id} has no changed output with its golden one to compare: an ABX test needs nights with "
            "golden: {keep: true, compare: true} (docs/config.md), a run accepted, and a later run whose outputs "
            "changed; or make a mushra or jnd test"
        )  # fmt: skip
    pairs.sort(key=lambda g: (g["label"] not in run.regressed, -(g["distance"] or 0.0), g.get("item") or ""))
    trials = []
    for g in pairs[:n]:
        log(f"  {g.get('item')}: {g['label']} ({g['status']}, distance {g['distance']:.4f})")
        a, b = _copy_flac(folder, g["golden_path"]), _copy_flac(folder, g["output_path"])
        trials.append({"id": f"t{len(trials) + 1}", "item": g.get("item") or g["item_sha256"], "variant": g["label"],
                       "a": a, "b": b, "x": "a" if rng.random() < 0.5 else "b"})  # fmt: skip
    return trials


def _jnd(run: _Run, folder: Path, shas: list[str], rng: np.random.Generator, levels: int, n_trials: int,
         catch: int, log) -> list[dict]:  # fmt: skip
    from jndqa.datasets.listener import PSYCHOMETRIC, ladder, perturb, physical_parameter

    families = list(PSYCHOMETRIC)
    trials = []
    for k, sha in enumerate(shas):
        ref = run.reference(sha)
        family = families[k % len(families)]
        log(f"  {run.items[sha]['path']}: {family}, {levels} levels")
        mono = ref.samples.mean(axis=1) if ref.samples.ndim == 2 else ref.samples
        reference = _write_flac(folder, mono, ref.rate)
        ladder_ = []
        for severity in ladder(levels):
            y = perturb(mono, ref.rate, family, severity, key=run.items[sha]["path"])
            name, value = physical_parameter(family, severity)
            ladder_.append({"severity": severity, "file": _write_flac(folder, y.astype(np.float32), ref.rate),
                            "condition": f"{family}:{severity:g}", "parameter": f"{name} {value:g}"})  # fmt: skip
        total = n_trials + catch
        positions = sorted(int(i) for i in rng.choice(np.arange(1, total), size=catch, replace=False))
        trials.append({"id": f"s{k + 1}", "item": run.items[sha]["path"], "family": family, "reference": reference,
                       "levels": ladder_, "trials": n_trials, "catch": positions})  # fmt: skip
    return trials


def _record(db: str | Path, run: _Run, row: dict, log: Callable[[str], None]) -> None:
    """Record the test in the store and render the run's report again, so its page links the test."""
    from jndqa.reports import render_report
    from jndqa.store import Store, StoreError

    try:
        store = Store(db)
        store.add_listen_test(row)
    except StoreError as exc:
        log(f"note: the test is not recorded in the store ({exc}); the run page will not link it")
        return
    report = run.summary.get("report")
    if report and Path(report).is_file():
        try:
            render_report(store, Path(report).parents[2], run.run_id)
        except Exception as exc:  # the test stands; say why the page does not link it
            log(f"note: the run's report was not updated ({type(exc).__name__}: {exc})")


def make_test(db: str | Path, *, run_id: str | None = None, kind: str = "mushra", items: int = 4,
              out: str | Path | None = None, seed: int = 0, levels: int = 8, trials: int = 12, catch: int = 3,
              log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Make a ``kind`` test of ``items`` items of run ``run_id`` (default: the latest) in ``out`` (default:
    ``<db folder>/listen/<test id>``; an existing non-empty folder is refused). Returns ``{"page", "kind",
    "trials", "stimuli", "test_id", "run_id", "folder"}`` (``trials``: trials in the test; for jnd, the
    trials of all staircases, catch trials included). Raises :class:`ListenError` (what to do)."""
    from jndqa.store import Store

    if kind not in KINDS:
        raise ListenError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    if items < 1:
        raise ListenError(f"--items must be at least 1, not {items}")
    store = Store(db, read_only=True)
    run = _Run(store, run_id)
    test_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{uuid.uuid4().hex[:6]}"
    folder = Path(out) if out else Path(db).parent / "listen" / test_id
    if folder.exists() and any(folder.iterdir()):
        raise ListenError(f"{folder} exists and is not empty: choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    log(f"{kind} test of run {run.run_id} in {folder}")
    try:
        if kind == "abx":
            body = _abx(run, folder, items, rng, log)
            n_trials = len(body)
        else:
            shas = run.worst_items(items)
            if not shas:
                raise ListenError(f"run {run.run_id} has no scores to choose items from")
            if kind == "mushra":
                body = _mushra(run, folder, shas, rng, log)
                n_trials = len(body)
            else:
                body = _jnd(run, folder, shas, rng, levels, trials, catch, log)
                n_trials = sum(t["trials"] + len(t["catch"]) for t in body)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    stimuli = sorted(f"audio/{p.name}" for p in (folder / "audio").glob("*.flac"))
    test = {"format": FORMAT, "test_id": test_id, "kind": kind, "run_id": run.run_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "stimuli": stimuli, "trials": body}  # fmt: skip
    from jndqa.reports.pages import write_listen_page

    write_listen_page(folder, test)
    variants = sorted({t["variant"] for t in body} if kind == "abx" else
                      {s["key"] for t in body for s in t.get("stimuli", []) if s["key"] in run.labels})  # fmt: skip
    _record(db, run, {"test_id": test_id, "run_id": run.run_id, "kind": kind, "folder": str(folder.resolve()),
                      "trials": n_trials, "stimuli": len(stimuli), "variants": variants}, log)  # fmt: skip
    return {"page": str(folder / "index.html"), "kind": kind, "trials": n_trials, "stimuli": len(stimuli),
            "test_id": test_id, "run_id": run.run_id, "folder": str(folder)}  # fmt: skip
