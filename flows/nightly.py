"""The nightly regression flow: thin Prefect wiring over :mod:`jndqa.flows.pipeline`.

One task per corpus item renders and scores all of that item's variants;
``task.map`` runs them on the configured task runner (threads, or Dask through
prefect-dask); the flow process is the only writer and stores each item's rows
as its task completes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, task
from prefect.futures import as_completed
from prefect.utilities.annotations import unmapped

from .config import load_config
from .pipeline import ItemResult, Night, default_db, process_item


@task(name="render-and-score-item", retries=1, retry_delay_seconds=1)
def item_task(work: dict, settings: dict) -> ItemResult:
    return process_item(work, settings)


def _task_runner(cfg):
    if cfg.runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.runner.address:
            return DaskTaskRunner(address=cfg.runner.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.runner.workers, "threads_per_worker": 1,
                                              "processes": True})  # fmt: skip
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.runner.workers)


@flow(name="jndqa-nightly", log_prints=True)
def nightly_flow(config_path: str, db: str | None = None, out: str | None = None, baseline: str | None = None,
                 progress: bool = False) -> dict:  # fmt: skip
    """Render, score, store and compare one night (see docs/architecture.md "Data flow of one nightly run")."""
    cfg = load_config(config_path)
    night = Night(cfg, db=Path(db) if db else default_db(cfg), out=Path(out) if out else None,
                  baseline=baseline, config_path=Path(config_path))  # fmt: skip
    try:
        print(f"run {night.run_id}: {len(night.items)} items x {len(night.specs)} variants, "
              f"{len(night.reused)} scores reused, {len(night.work)} items to process")  # fmt: skip
        bar = None
        if progress and night.work:
            from tqdm import tqdm

            bar = tqdm(total=len(night.work), unit="item", file=sys.stderr, desc="rendering+scoring")
        runner_task = item_task.with_options(retries=cfg.runner.retries)
        futures = runner_task.map(night.work, unmapped(night.settings)) if night.work else []
        by_future = {f.task_run_id: w for f, w in zip(futures, night.work, strict=True)}
        for fut in as_completed(futures):
            try:
                night.record(fut.result())
            except Exception as exc:  # the task failed after its retries
                night.record_crash(by_future[fut.task_run_id], exc)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        summary = night.finish()
        summary = night.report(summary)
        if summary.get("report_error"):
            print(f"warning: no report for run {summary['run_id']}: {summary['report_error']}")
    finally:
        night.close()
    print(f"run {summary['run_id']}: {summary['status']}")
    return summary


def run_nightly(config_path: str | Path, **kwargs) -> dict:
    """Run the flow on the runner the config names."""
    cfg = load_config(config_path)
    return nightly_flow.with_options(task_runner=_task_runner(cfg))(str(config_path), **kwargs)


@flow(name="jndqa-nightly-scheduled")
def scheduled_nightly(config_path: str, db: str | None = None, baseline: str | None = None):
    """Deployment entry point (prefect.yaml): the night as a subflow on the runner its config names.

    The flow run ends Failed when the night regressed and the config fails on regressions, so
    Prefect's state tells the truth as the CLI's exit status does.
    """
    from prefect.states import Completed, Failed

    summary = run_nightly(config_path, db=db, baseline=baseline)
    names = ", ".join(r["variant"] for r in summary["regressions"])
    if summary["status"] == "regressed" and load_config(config_path).regression.fail_on_regression:
        return Failed(message=f"run {summary['run_id']} regressed: {names}", data=summary)
    return Completed(message=f"run {summary['run_id']}: {summary['status']}", data=summary)
