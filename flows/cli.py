"""The ``jndqa`` command line (docs/cli.md; a user-facing contract).

Exit status: 0 ok; 1 a regression was found and the config fails on regressions;
2 bad usage, config or input that stops the whole command; 3 the command finished
but some items failed (they are reported, with reasons). ``jndqa run``'s status is
:class:`jndqa.flows.verdict.Verdict`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .verdict import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_REGRESSION, Verdict

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_PARTIAL", "EXIT_REGRESSION", "build_parser", "main", "score_files"]

_EPILOG = """\
examples:
  jndqa setup                                  fetch the official DPAM release (once)
  jndqa score ref.wav coded.wav                distance and p_jnd of one pair
  jndqa score ref.wav coded.wav --model finetune --json
  jndqa score --pairs pairs.tsv --json         one 'ref<TAB>test' per line, paths relative to the file
  jndqa demo                                   baseline night, broken encoder, candidate night, verdict
  jndqa run nightly.yaml                       one night of the regression bench
  jndqa runs --db out/jndqa.duckdb             the stored runs
  jndqa report --db out/jndqa.duckdb           HTML pages of the newest run, its items and all runs
  jndqa retrain judgments.csv --db out/jndqa.duckdb   train a candidate metric; promote it if better
  jndqa models --db out/jndqa.duckdb           the model registry
  jndqa agree ratings.csv --metrics dpam,zimtohrli --out out   agreement of metrics with listeners
  jndqa listen make --db out/jndqa.duckdb --kind abx   a listening test of the latest run's changes
  jndqa listen serve out/listen/<test id> --db out/jndqa.duckdb   serve it; results go to the store
"""


class CLIError(Exception):
    """Bad usage or input that stops the whole command (exit 2)."""


def _err(msg: str) -> None:
    print(f"jndqa: error: {msg}", file=sys.stderr)


# --------------------------------------------------------------------- setup
def cmd_setup(args: argparse.Namespace) -> int:
    from jndqa.metric.release import SetupError, fetch_release

    try:
        path = fetch_release(args.dir, sdist=args.sdist, force=args.force)
    except SetupError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(f"official DPAM release (dpam 0.0.4) ready in {path}")
    return EXIT_OK


# --------------------------------------------------------------------- score
def _read_pairs_file(path: Path) -> list[tuple[Path, Path]]:
    if not path.is_file():
        raise CLIError(f"{path}: pairs file not found; give a file with one 'ref<TAB>test' per line")
    pairs = []
    base = path.parent
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise CLIError(f"{path}:{lineno}: expected 'ref<TAB>test', got {line!r}")
        pairs.append((base / cols[0].strip(), base / cols[1].strip()))
    if not pairs:
        raise CLIError(f"{path}: no pairs found")
    return pairs


def score_files(
    pairs: Sequence[tuple[Path, Path]],
    model: str,
    protocol: str,
    progress: bool = False,
    downmix: bool = False,
    scorer=None,
    length_tolerance: int = 1024,
    align: bool = True,
) -> tuple[dict, list[dict]]:
    """Score file pairs; returns (summary object, failures). Each reference is loaded once and
    reused against all of its tests. ``align``: each test is first aligned to its reference
    (:func:`jndqa.flows.pairing.align_pair`: a codec's delay removed, the length made the reference's) and the offset
    applied is reported. A bad file or pair is a failure with its reason; the other pairs are
    scored."""
    from jndqa.metric import MODEL_RATE, AudioLoadError, ModelRef, load_audio

    from .pairing import align_pair

    scorer = scorer or ModelRef.for_protocol(model, protocol, length_tolerance=length_tolerance).scorer()
    mono = scorer.rule.mono or downmix
    cache: dict[Path, object] = {}
    failures: list[dict] = []

    def load(p: Path):
        if p not in cache:
            try:
                cache[p] = load_audio(p, mono=mono)
            except AudioLoadError as exc:
                cache[p] = exc
        return cache[p]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), unit="pair", file=sys.stderr, desc="scoring")
    results: list[dict | None] = [None] * len(pairs)
    by_ref: dict[Path, list[int]] = {}
    for i, (ref, _test) in enumerate(pairs):
        by_ref.setdefault(ref, []).append(i)
    for ref_path, idx in by_ref.items():
        ref = load(ref_path)
        good, tests, offsets = [], {}, {}
        for i in idx:
            test = load(pairs[i][1])
            reason = next((str(x) for x in (ref, test) if isinstance(x, AudioLoadError)), None)
            if reason is None:
                samples = test.samples
                try:
                    length = len(samples)  # what the test holds once its offset is removed
                    if align:
                        samples, offset, method = align_pair(ref.samples, samples, MODEL_RATE,
                                                             samples_only=scorer.rule.windowed)  # fmt: skip
                        offsets[i] = (offset, method)
                        length -= offset
                    channels = 1 if samples.ndim == 1 else samples.shape[1]
                    scorer.check_pair(len(ref.samples), ref.channels, length, channels)
                    tests[i] = samples
                except ValueError as exc:
                    reason = f"{pairs[i][1]}: {exc}"
            if reason is not None:
                failures.append({"ref": str(pairs[i][0]), "test": str(pairs[i][1]), "reason": reason})
                if bar:
                    bar.update(1)
            else:
                good.append(i)
        if not good:
            continue
        reference = scorer.reference(ref.samples)
        scores = scorer.score_reference(reference, [tests[i] for i in good], progress=bar.update if bar else None)
        for i, s in zip(good, scores, strict=True):
            test = load(pairs[i][1])
            row = {
                "ref": str(pairs[i][0]),
                "test": str(pairs[i][1]),
                "distance": s.distance,
                "p_jnd": s.p_jnd,
                "p_jnd_calibrated": s.p_jnd_calibrated,
                "resampler": ref.resampler or test.resampler,
            }
            if i in offsets:
                row["offset_samples"], row["alignment"] = offsets[i]
            if s.channels is not None:
                row["channels"] = s.channels
                row["worst_channel"] = s.worst_channel
            if s.windows is not None:
                row["windows"] = [{"start": w.start, "end": w.end, "distance": w.distance} for w in s.windows]
            results[i] = row
    if bar:
        bar.close()
    summary = {
        "model": scorer.model_id,
        "protocol": scorer.protocol,
        "results": [r for r in results if r is not None],
    }
    return summary, failures


def cmd_score(args: argparse.Namespace) -> int:
    from jndqa.metric import ReleaseNotFoundError, official_name

    try:
        official_name(args.model)
        if args.pairs:
            if args.ref or args.test:
                raise CLIError("give either REF TEST or --pairs FILE, not both")
            pairs = _read_pairs_file(Path(args.pairs))
        else:
            if not (args.ref and args.test):
                raise CLIError("give REF and TEST audio files, or --pairs FILE (see `jndqa score --help`)")
            pairs = [(Path(args.ref), Path(args.test))]
            for p in pairs[0]:
                if not p.is_file():
                    raise CLIError(f"{p}: file not found")
    except (CLIError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    t0 = time.perf_counter()
    try:
        summary, failures = score_files(
            pairs,
            args.model,
            args.protocol,
            progress=not args.json and len(pairs) > 1 and sys.stderr.isatty(),
            downmix=args.downmix,
            length_tolerance=args.length_tolerance,
            align=not args.no_align,
        )
    except ReleaseNotFoundError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if failures and len(pairs) == 1:
        _err(failures[0]["reason"])
        return EXIT_BAD_INPUT
    if failures:
        summary["failures"] = failures
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"model {summary['model']}  protocol {summary['protocol']}")
        for r in summary["results"]:
            p = "   n/a" if r["p_jnd"] is None else f"{r['p_jnd']:.3f}"
            extra = ""
            if "channels" in r:
                extra += "  channels " + " ".join(f"{c:.4f}" for c in r["channels"])
            if len(r.get("windows", [])) > 1:
                worst = max(r["windows"], key=lambda w: w["distance"])
                extra += f"  worst window {worst['start']:.1f}-{worst['end']:.1f} s ({worst['distance']:.4f})"
            if r.get("offset_samples"):
                extra += f"  aligned by {r['offset_samples']} samples ({r['alignment']})"
            print(f"{r['distance']:10.6f}  p_jnd {p}  {r['ref']}  {r['test']}{extra}")
        if summary["results"] and not summary["results"][0]["p_jnd_calibrated"]:
            print("(p_jnd: the release's head, not calibrated for this protocol)", file=sys.stderr)
        for f in failures:
            print(f"FAILED  {f['ref']}  {f['test']}: {f['reason']}", file=sys.stderr)
        dt = time.perf_counter() - t0
        print(f"{len(summary['results'])} scored, {len(failures)} failed in {dt:.2f} s", file=sys.stderr)
    return EXIT_PARTIAL if failures else EXIT_OK


# ----------------------------------------------------------------- run, runs
def _prefect_env() -> None:
    """Quiet, local defaults for Prefect's ephemeral API when the user has set none."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _exit_for(summary: dict) -> int:
    """The exit status of a night's summary: its :class:`Verdict`'s."""
    return Verdict(summary["status"]).exit_status


def _print_summary(summary: dict) -> None:
    print(f"run {summary['run_id']}: {summary['status'].upper()}  ({summary['items']} items x "
          f"{summary['variants']} variants, {summary['scores']} scores, {summary['reused']} reused, "
          f"{summary['seconds']:.1f} s)")  # fmt: skip
    print(f"model {summary['model']} {summary['model_version']}, protocol {summary['protocol']}; "
          f"{summary['baseline_note']}")  # fmt: skip
    comp = {c["spec_id"]: c for c in summary.get("comparisons", [])}
    primary = summary.get("primary_metric", "dpam")
    head = "mean d" if primary == "dpam" else f"{primary[:8]}"
    print(f"  {'variant':32s} {'items':>5s} {head:>8s} {'change':>8s} {'95% CI':>19s} {'p':>7s}")
    for v in summary["per_variant"]:
        c = comp.get(v["id"])
        m = (v.get("metrics") or {}).get(primary, {}).get("mean", v["mean_distance"])
        mean = "-" if m is None else f"{m:.4f}"
        line = f"  {v['label'][:32]:32s} {v['items']:5d} {mean:>8s}"
        if c:
            flag = "  REGRESSED" if c["regressed"] else ""
            line += f" {c['mean_change']:+8.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] {c['p_value']:7.3g}{flag}"
        print(line)
    for m in summary.get("metrics", []):
        if not m["primary"]:
            regressed = ", ".join(m["regressions"]) or "none"
            print(
                f"  {m['metric']}: {m['scores']} scores, {m['failures']} failures; regressed: {regressed} ({m['note']})"
            )
    for d in summary.get("disagreements", []):
        print(f"  DISAGREE {d['variant']}: regressed by {', '.join(d['regressed'])}, "
              f"not by {', '.join(d['not_regressed'])}")  # fmt: skip
    for f in summary["failures"]:
        print(f"  FAILED {f['item'] or '(all items)'} / {f['variant'] or '(all variants)'}: {f['reason']}")
    if summary.get("report"):
        print(f"report: {summary['report']}")
    elif summary.get("report_error"):
        print(f"no report: {summary['report_error']}")


def cmd_run(args: argparse.Namespace) -> int:
    from jndqa.flows.config import ConfigError, load_config
    from jndqa.store import StoreError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    _prefect_env()
    from jndqa.flows.nightly import run_nightly

    try:
        summary = run_nightly(cfg, config_dir=Path(args.config).parent, db=args.db, out=args.out,
                              baseline=args.baseline, progress=not args.json and sys.stderr.isatty())  # fmt: skip
    except (StoreError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return _exit_for(summary)


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else Path("out") / "jndqa.duckdb"


def cmd_runs(args: argparse.Namespace) -> int:
    from jndqa.store import Store, StoreError

    try:
        runs = Store(_db_path(args), read_only=True).runs()
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"runs": runs}, default=str))
        return EXIT_OK
    for r in runs:
        mark = " (accepted)" if r["accepted"] else ""
        print(f"{r['run_id']}  {r['status']:12s} {str(r['started'])[:19]}  {r['scores']:5d} scores "
              f"{r['failures']:3d} failures  {r['model_id']} / {r['protocol']}{mark}")  # fmt: skip
    if not runs:
        print("no runs yet")
    return EXIT_OK


def cmd_accept(args: argparse.Namespace) -> int:
    from jndqa.store import Store, StoreError

    try:
        store = Store(_db_path(args))
        store.accept(args.run)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(f"run {args.run} accepted: it is the baseline for `--baseline auto`")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from jndqa.store import Store, StoreError

    from .golden import collect_garbage

    try:
        result = collect_garbage(Store(_db_path(args)), dry_run=args.dry_run)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {result['removed']} kept outputs ({result['removed_bytes'] / 1e6:.2f} MB) no accepted run "
          f"refers to; {result['kept']} kept ({result['kept_bytes'] / 1e6:.2f} MB)")  # fmt: skip
    return EXIT_OK


def cmd_listen_make(args: argparse.Namespace) -> int:
    from jndqa.store import StoreError

    from .listen import ListenError, make_test

    try:
        log = (lambda m: print(m, file=sys.stderr)) if args.json else print
        result = make_test(_db_path(args), run_id=args.run, kind=args.kind, items=args.items, out=args.out,
                           seed=args.seed, log=log)  # fmt: skip
    except (ListenError, StoreError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({k: result[k] for k in ("page", "kind", "trials", "stimuli", "test_id", "run_id")}))
    else:
        print(f"{result['kind']} test: {result['trials']} trials, {result['stimuli']} stimuli: {result['page']}")
        print(f"open it in a browser, or serve it: jndqa listen serve {result['folder']} --db {_db_path(args)}")
    return EXIT_OK


def cmd_listen_serve(args: argparse.Namespace) -> int:
    from .listen_server import serve

    folder = Path(args.folder)
    if not (folder / "test.json").is_file():
        _err(f"{folder}: not a listening test (no test.json); make one with `jndqa listen make`")
        return EXIT_BAD_INPUT
    from jndqa.store import StoreError

    try:
        serve(folder, db=Path(args.db) if args.db else None, inbox=Path(args.inbox) if args.inbox else None,
              host=args.host, port=args.port)  # fmt: skip
    except (OSError, ValueError, StoreError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from jndqa.reports import ReportError, render_report
    from jndqa.store import SCHEMA_VERSION, Store, StoreError

    db = _db_path(args)
    out = Path(args.out) if args.out else db.parent / "report"
    try:
        store = Store(db, read_only=True)
        if store.schema_version() < SCHEMA_VERSION:  # an older store: bring its schema up first
            store = Store(db)
        result = render_report(store, out, args.run)
    except (StoreError, ReportError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    info = {"run_id": result.run_id, "report": str(result.run_page), "index": str(result.index),
            "pages": result.pages, "audio_files": result.audio_files, "bytes": result.bytes,
            "seconds": round(result.seconds, 3)}  # fmt: skip
    if args.json:
        print(json.dumps(info))
    else:
        print(f"report of run {result.run_id}: {result.run_page}")
        print(f"index of all runs: {result.index}  ({result.pages} pages, {result.audio_files} audio files, "
              f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s)")  # fmt: skip
    return EXIT_OK


# --------------------------------------------------------------------- agree
def cmd_agree(args: argparse.Namespace) -> int:
    from jndqa.store import Store, StoreError

    from .agree import AgreeError, agree

    missing = [p for p in args.ratings if not Path(p).is_file()]
    if missing:
        _err(f"no such ratings file: {', '.join(missing)}")
        return EXIT_BAD_INPUT
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    options: dict = {"dpam": {"protocol": args.protocol}}
    if args.model != "scratch":  # a registered model (production, a version) or another official one
        from .models import resolve_model

        try:
            if args.db is None and args.model == "production":
                raise ValueError("the production model is the registry's")
            store = Store(args.db) if args.db else None
            options = {"dpam": {"model": resolve_model(args.model, store, protocol=args.protocol)}}
        except (StoreError, ValueError) as exc:
            _err(f"--model {args.model}: {exc}" + ("" if args.db else " (a registered model needs --db)"))
            return EXIT_BAD_INPUT
    try:
        summary = agree(args.ratings, metrics=names, metric_options=options, db=args.db, out=args.out,
                        align=not args.no_align, scale=args.scale, config=args.config, n_boot=args.bootstrap,
                        log=(lambda _: None) if args.json else None)  # fmt: skip
    except (AgreeError, StoreError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['stimuli']} stimuli, {summary['items']} items, {summary['conditions']} conditions, "
              f"{summary['listeners']} listeners ({summary['scale']}); "
              f"{summary['quarantined']} ratings quarantined")  # fmt: skip
        head = f"{'n':>4s} {'stimulus':>9s} {'95% CI':>17s} {'within':>8s} {'system':>8s} {'s/stim':>8s}"
        print(f"  {'metric':30s} {head}")
        for m in summary["metrics"]:

            def f(x):
                return "     n/a" if x is None else f"{x:+8.3f}"

            ci = m.get("stimulus_spearman_ci") or [None, None]
            ci_text = "" if ci[0] is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
            name = m["metric"] + (f" ({m['protocol']})" if m.get("protocol") else "")
            within, system = f(m.get("within_item_spearman")), f(m.get("system_spearman"))
            print(f"  {name[:30]:30s} {m['scored']:4d} {f(m.get('stimulus_spearman')):>9s} {ci_text:>17s} {within} "
                  f"{system} {m['seconds_per_stimulus']:8.3f}")  # fmt: skip
        for f_ in summary["failures"]:
            print(f"  FAILED {f_.get('metric') or f_.get('file') or ''} {f_.get('test') or ''}: {f_['reason']}")
        if summary.get("page"):
            print(f"page: {summary['page']}")
    return EXIT_PARTIAL if summary["failures"] or summary["quarantined"] else EXIT_OK


# ------------------------------------------------------------------- retrain
def _have_release() -> bool:
    """Whether the official release is set up; says what to do when it is not."""
    from jndqa.metric import ReleaseNotFoundError, find_release

    try:
        find_release()
    except ReleaseNotFoundError as exc:
        _err(str(exc))
        return False
    return True


def cmd_retrain(args: argparse.Namespace) -> int:
    from jndqa.store import StoreError

    if not _have_release():
        return EXIT_BAD_INPUT
    missing = [p for p in args.judgments if not Path(p).exists()]
    if missing:
        _err(f"no such judgment or rating file: {', '.join(missing)}")
        return EXIT_BAD_INPUT
    _prefect_env()
    from jndqa.flows.retrain import RetrainSettings, retrain_flow

    settings = RetrainSettings(mode=args.mode, margin=args.margin, golden=args.golden, seed=args.seed,
                               epochs=args.epochs, protocol=args.protocol, rating_margin=args.rating_margin,
                               webmushra_config=args.config)  # fmt: skip
    try:
        summary = retrain_flow([str(p) for p in args.judgments], str(_db_path(args)), vars(settings))
    except (StoreError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(f"training {summary['training_id']}: {summary['status'].upper()}: {summary.get('reason', '')}")
        for f in summary["files"]:
            kinds = ", ".join(f"{k} {v}" for k, v in f["quarantine_kinds"].items())
            print(f"  {f['file']}: {f['rows']} good rows ({f['new']} new), {f['quarantined']} quarantined"
                  f"{' (' + kinds + ')' if kinds else ''}")  # fmt: skip
        for f in summary["file_failures"]:
            print(f"  {f['file']}: NOT READ: {f['reason']}")
        print(f"production model: {summary['production']}")
        if summary.get("report"):
            print(f"training report: {summary['report']}")
    if summary["status"] == "failed" and not summary["files"]:
        return EXIT_BAD_INPUT
    if summary["status"] == "failed" or summary["file_failures"] or any(f["quarantined"] for f in summary["files"]):
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from jndqa.store import Store, StoreError

    try:
        from jndqa.flows.models import seed_registry
        from jndqa.flows.student import register_student

        store = Store(_db_path(args))
        seed_registry(store)
        register_student(store)
        models = store.models()
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"models": models}, default=str))
        return EXIT_OK
    for m in models:
        acc = ((m.get("metrics") or {}).get("test") or {}).get("candidate", {}).get("accuracy", {}).get("value")
        extra = f"  held-out accuracy {acc:.3f}" if acc is not None else ""
        print(f"{m['version']:34s} {m['status']:10s} parent {m['parent'] or '—':34s}{extra}")
        if m.get("reason"):
            print(f"    {m['reason']}")
    return EXIT_OK


# ---------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    if not _have_release():
        return EXIT_BAD_INPUT
    _prefect_env()
    from jndqa.flows.demo import run_demo

    workdir = args.workdir or Path("demo-work")
    print(f"jndqa demo in {workdir}: build a corpus, run a baseline night, break 'our encoder', run again")
    return run_demo(workdir, print_summary=_print_summary)


# ---------------------------------------------------------------------- main
_DB_HELP = "DuckDB file (default: out/jndqa.duckdb)"
_JSON_HELP = "print one JSON object on stdout"


def _command(sub, name: str, func, help: str, description: str | None = None, examples: Sequence[str] = ()):
    """A subcommand's parser: its one-line help, a description and examples under ``--help``."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.set_defaults(func=func)
    return p


def _store_flags(p, *, db: str | None = _DB_HELP, json_help: str | None = _JSON_HELP) -> None:
    """``--db`` and ``--json``, as most commands take them."""
    if db:
        p.add_argument("--db", help=db)
    if json_help:
        p.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jndqa",
        description="Codec regression bench scored with DPAM, a perceptual metric learned from "
        "just-noticeable-difference judgments.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(sub, "setup", cmd_setup, "fetch the official DPAM release (weights, sample audio, JND lists)")
    p.add_argument("--dir", type=Path, default=None, help="where to unpack (default: the jndqa cache)")
    p.add_argument("--sdist", type=Path, default=None, help="use a local dpam-0.0.4.tar.gz instead of pip")
    p.add_argument("--force", action="store_true", help="fetch again even when present")

    p = _command(
        sub,
        "score",
        cmd_score,
        "DPAM distance between audio files",
        "Score REF against TEST (any rate: resampled to 22,050 Hz with soxr HQ). Each TEST is "
        "first aligned to its REF (a codec's delay removed, searched within 1 s; the offset is reported). "
        "dense (default): channels scored one by one, the worst is the distance; signals must be "
        "aligned (lengths within 1024 samples); per-window distances under 'windows' in --json. "
        "official: mixed to mono, the shorter file zero-padded at its start, as in the release.",
        ["jndqa score ref.wav coded.wav", "jndqa score ref.wav coded.wav --protocol official",
         "jndqa score --pairs pairs.tsv --json"],
    )  # fmt: skip
    p.add_argument("ref", nargs="?", help="reference audio file")
    p.add_argument("test", nargs="?", help="test (degraded) audio file")
    p.add_argument("--pairs", metavar="FILE", help="file of 'ref<TAB>test' lines, paths relative to FILE")
    p.add_argument(
        "--model", default="scratch", help="scratch (default), finetune, linear_layer, pretrained, or a model id"
    )
    p.add_argument(
        "--protocol",
        default="dense",
        choices=["dense", "official", "student"],
        help="dense (default): undecimated, windowed, stable to shifts; official: parity with the release; "
        "student: the fast student of dense (dpam-dense-student-v3, about 130x real time; experimental: it "
        "does not yet meet its agreement goals, see benchmarks/bench_student.py)",
    )
    p.add_argument(
        "--downmix",
        action="store_true",
        help="dense: mix both files to mono (else channels are scored one by one and must match)",
    )
    p.add_argument(
        "--length-tolerance",
        type=int,
        default=1024,
        metavar="SAMPLES",
        help="dense: how many samples (at 22,050 Hz) the lengths may differ by; the longer is trimmed (default 1024)",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help="score the files as they are (default: each test is aligned to its reference first, a codec's "
        "delay removed; the offset is reported)",
    )
    _store_flags(p, db=None)

    p = _command(
        sub,
        "run",
        cmd_run,
        "run a night: render, score, store, compare with the baseline",
        "Render every variant of every corpus item, score it, store it, and compare with the "
        "baseline. Exit 0 passed, 1 regressed (when the config fails on regressions), 2 bad config, "
        "3 finished with failed items.",
        ["jndqa run nightly.yaml", "jndqa run nightly.yaml --baseline 20261129T010203Z-ab12cd --json"],
    )
    p.add_argument("config", help="run config (YAML; see docs/config.md)")
    p.add_argument("--out", help="output folder (default: the config's 'output')")
    p.add_argument("--baseline", help="a run id, or 'auto' (the latest accepted run); default: the config's")
    _store_flags(p, db="DuckDB file (default: <output>/jndqa.duckdb)",
                 json_help="print the run summary as one JSON object on stdout")  # fmt: skip

    _store_flags(_command(sub, "runs", cmd_runs, "list the stored runs, newest first"))

    p = _command(sub, "gc", cmd_gc, "remove kept outputs that no accepted run refers to",
                 description="Golden outputs (golden.keep) are FLAC files under <db folder>/outputs/, shared "
                 "between runs. gc removes those that no accepted run, nor the latest run, refers to.",
                 examples=["jndqa gc --db out/jndqa.duckdb --dry-run",
                           "jndqa gc --db out/jndqa.duckdb --json"])  # fmt: skip
    _store_flags(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    p = _command(sub, "listen", None, "listening tests from a stored run: make one, serve it",
                 description="Listening tests from the bench (docs/listen.md).")  # fmt: skip
    lsub = p.add_subparsers(dest="listen_command", metavar="ACTION")
    p = _command(lsub, "make", cmd_listen_make, "make a test folder from a stored run",
                 description="A self-contained test (index.html, audio/) of a run's worst items. jnd: same/different "
                 "staircases with catch trials; mushra: ITU-R BS.1534-3 with hidden reference and 3.5 kHz anchor; "
                 "abx: the accepted build's output against tonight's (needs golden outputs).",
                 examples=["jndqa listen make --db out/jndqa.duckdb --kind mushra --items 4",
                           "jndqa listen make --db out/jndqa.duckdb --kind abx --out abx-test --json"])  # fmt: skip
    _store_flags(p)
    p.add_argument("--run", default=None, help="the run (default: the latest)")
    p.add_argument("--kind", choices=("jnd", "mushra", "abx"), default="mushra", help="the test (default: mushra)")
    p.add_argument("--items", type=int, default=4, help="items (abx: changed outputs) in the test (default: 4)")
    p.add_argument("--out", default=None, help="the test folder (default: <db folder>/listen/<test id>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test's draws (order, X, catch trials)")
    p = _command(lsub, "serve", cmd_listen_serve, "serve a test; results go to the store and an inbox",
                 description="Serves a test folder over HTTP for a group of listeners; each submitted result set "
                 "is written as a ratings CSV into the inbox and, with --db, stored (quarantine as for files).",
                 examples=["jndqa listen serve out/listen/<test id> --db out/jndqa.duckdb",
                           "jndqa listen serve abx-test --db out/jndqa.duckdb --host 0.0.0.0 --port 8765"])  # fmt: skip
    p.add_argument("folder", help="a folder made by `jndqa listen make`")
    p.add_argument("--db", default=None, help="store the results in this DuckDB file")
    p.add_argument("--inbox", default=None, help="where result CSVs go (default: <folder>/inbox)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p = _command(sub, "accept", cmd_accept, "mark a run as the baseline for `--baseline auto`")
    p.add_argument("run", help="run id (see `jndqa runs`)")
    _store_flags(p, json_help=None)

    p = _command(
        sub,
        "report",
        cmd_report,
        "render a stored run as static HTML pages (run, items, index of all runs)",
        "Write a folder of HTML pages that open from disk with no network: the run's verdict, "
        "regressions, rate-quality curves, heatmap and failures; a page per item to listen and see where "
        "the artefact is; an index of all runs with trends. `jndqa run` writes one at the end of each night.",
        ["jndqa report --db out/jndqa.duckdb",
         "jndqa report --db out/jndqa.duckdb --run 20261129T010203Z-ab12cd --out /srv/www/jndqa"],
    )  # fmt: skip
    p.add_argument("--run", help="run id (default: the newest run; see `jndqa runs`)")
    p.add_argument("--out", help="report folder (default: <db folder>/report)")
    _store_flags(p)

    p = _command(
        sub,
        "retrain",
        cmd_retrain,
        "ingest judgments and listening-test ratings, train a candidate metric, promote it only if it is better",
        "Ingest judgment and rating files: the release's JND lists (ref<TAB>test<TAB>label), judgment CSVs "
        "(ref,test,label[,worker,timestamp,condition]), ratings CSVs (ref,test,score[,listener,item,condition,"
        "scale]: mushra, mos, jnd, preference) and webMUSHRA results (with --config); paths relative to the "
        "file. Bad rows (and listeners failing the BS.1534 post-screening) are quarantined with their reason. "
        "A candidate is fine-tuned from the production model under the nightly's protocol (same/different "
        "labels: cross-entropy; MUSHRA/MOS: a ranking loss on stimuli of one reference), its p_jnd calibrated "
        "per protocol, evaluated with production on held-out references and a fixed golden set, and promoted "
        "only when better. Per-pair terms are cached in the store: a second training on the same pairs is "
        "cheap. Nothing is trained when no rating is new. Exit 0 done (promoted, rejected or nothing new), "
        "2 bad usage, 3 done but some rows or files were set aside.",
        ["jndqa retrain judgments/*.csv --db out/jndqa.duckdb",
         "jndqa retrain listening-test.csv --golden golden-ratings.csv --json",
         "jndqa retrain results/test1/mushra.csv --config configs/test1.yaml",
         "jndqa retrain new.csv --golden golden.csv --mode all --protocol official"],
    )  # fmt: skip
    p.add_argument("judgments", nargs="+", help="judgment or rating files")
    p.add_argument("--mode", default="channels", choices=["head", "channels", "all"],
                   help="what is trained: the head, the per-channel weights and head (default), or all")  # fmt: skip
    p.add_argument("--golden", help="a judgment file: the fixed golden set (default: a fixed 1-in-5 reference bucket)")
    p.add_argument("--margin", type=float, default=0.02, help="held-out accuracy to gain over production (0.02)")
    p.add_argument("--rating-margin", type=float, default=0.05,
                   help="held-out within-item Spearman to gain over production, for ratings (0.05)")  # fmt: skip
    p.add_argument("--protocol", default="dense", choices=["dense", "official"],
                   help="train, calibrate and gate under this protocol (default: dense, the nightly's)")  # fmt: skip
    p.add_argument("--config", help="the webMUSHRA test's YAML config, for webMUSHRA results files")
    p.add_argument("--epochs", type=int, default=200, help="most epochs (early stopping decides; 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits and training (0)")
    _store_flags(p, json_help="print the training summary as one JSON object on stdout")

    p = _command(
        sub,
        "agree",
        cmd_agree,
        "how well each metric agrees with the listeners of a listening test",
        "Read rating files (the canonical CSV ref,test,score[,listener,item,condition,scale]; "
        "webMUSHRA results with --config; JND lists and judgment CSVs), quarantine bad rows and listeners who "
        "fail the ITU-R BS.1534-3 post-screening, average each stimulus over listeners, score every stimulus "
        "with every metric (each test aligned to its reference first), and report stimulus-level "
        "Spearman/Pearson/Kendall, within-item and system-level Spearman with bootstrap 95 %% intervals "
        "(resampling items), signed so that +1 means agreement. Exit 0 done, 2 bad usage or no usable "
        "ratings, 3 done but some rows, files or pairs failed.",
        ["jndqa agree ratings.csv --metrics dpam,zimtohrli,visqol,pesq --out out",
         "jndqa agree results/mushra.csv --config configs/test.yaml --json"],
    )  # fmt: skip
    p.add_argument("ratings", nargs="+", help="rating files")
    p.add_argument("--metrics", default="dpam", help="comma-separated metric names (default dpam; installed peers: "
                   "`pip install 'jndqa[peers]'`)")  # fmt: skip
    p.add_argument("--protocol", default="dense", choices=["dense", "official", "student"],
                   help="DPAM's protocol (default dense)")  # fmt: skip
    p.add_argument("--model", default="scratch",
                   help="DPAM's model: scratch (default), another official one, production or a registered version "
                        "(with --db: the registry's)")  # fmt: skip
    p.add_argument("--out", help="write the HTML page to OUT/agree/index.html")
    p.add_argument("--scale", choices=["mushra", "mos", "jnd", "preference"],
                   help="the scale of rating files without a scale column")  # fmt: skip
    p.add_argument("--config", help="the webMUSHRA test config (YAML) of a webMUSHRA results file")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--no-align", action="store_true", help="score the files as they are")
    _store_flags(p, db="also store the ratings in this DuckDB file")

    _store_flags(_command(sub, "models", cmd_models, "list the model registry (production, candidates, rejected)"))

    p = _command(sub, "demo", cmd_demo, "run the demo on the embedded default")
    p.add_argument("--workdir", type=Path, default=None, help="working folder (default: ./demo-work)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
