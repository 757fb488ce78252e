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

from .config import RunConfig, load_config
from .metrics import NightMetric
from .pipeline import ItemResult, ItemWork, Night, RenderSettings, default_db, process_item
from .verdict import Verdict


@task(name="render-and-score-item", retries=1, retry_delay_seconds=1)
def item_task(work: ItemWork, metrics: tuple[NightMetric, ...], render: RenderSettings) -> ItemResult:
    return process_item(work, metrics, render)


def _task_runner(cfg: RunConfig):
    if cfg.runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.runner.address:
            return DaskTaskRunner(address=cfg.runner.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.runner.workers, "threads_per_worker": 1,
                                              "processes": True})  # fmt: skip
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.runner.workers)


@flow(name="jndqa-nightly", log_prints=True)
def nightly_flow(config: RunConfig, config_dir: str | None = None, db: str | None = None, out: str | None = None,
                 baseline: str | None = None, progress: bool = False) -> dict:  # fmt: skip
    """Render, score, store and compare one night of ``config`` (a loaded run config; ``config_dir``:
    its folder, where external coders' relative commands run). See docs/architecture.md."""
    night = Night.open(config, db=Path(db) if db else default_db(config), out=Path(out) if out else None,
                       baseline=baseline, config_dir=config_dir)  # fmt: skip
    plan = night.plan
    try:
        print(f"run {night.run_id}: {len(plan.items)} items x {len(plan.specs)} variants, "
              f"{len(plan.reused)} scores reused, {len(plan.work)} items to process")  # fmt: skip
        bar = None
        if progress and plan.work:
            from tqdm import tqdm

            bar = tqdm(total=len(plan.work), unit="item", file=sys.stderr, desc="rendering+scoring")
        runner_task = item_task.with_options(retries=config.runner.retries)
        futures = runner_task.map(list(plan.work), unmapped(plan.metrics), unmapped(plan.render)) if plan.work else []
        by_future = {f.task_run_id: w for f, w in zip(futures, plan.work, strict=True)}
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


def run_nightly(config: str | Path | RunConfig, *, config_dir: str | Path | None = None, **kwargs) -> dict:
    """Run one night on the runner the config names. ``config``: a config file (loaded here, once) or
    a loaded :class:`RunConfig` (then ``config_dir`` is its folder). ``kwargs``: ``db``, ``out``,
    ``baseline``, ``progress`` of :func:`nightly_flow`."""
    if not isinstance(config, RunConfig):
        config_dir = Path(config).parent
        config = load_config(config)
    return nightly_flow.with_options(task_runner=_task_runner(config))(
        config, config_dir=str(config_dir) if config_dir is not None else None, **kwargs
    )


@flow(name="jndqa-nightly-scheduled")
def scheduled_nightly(config_path: str, db: str | None = None, baseline: str | None = None):
    """Deployment entry point (prefect.yaml): the night as a subflow on the runner its config names.

    The flow run ends Failed when the verdict fails the night (:attr:`Verdict.fails_flow`: a
    regression, with ``fail_on_regression``), so Prefect's state tells what the CLI's exit status does.
    """
    from prefect.states import Completed, Failed

    summary = run_nightly(config_path, db=db, baseline=baseline)
    verdict = Verdict(summary["status"])
    if verdict.fails_flow:
        names = ", ".join(r["variant"] for r in summary["regressions"])
        return Failed(message=f"run {summary['run_id']} regressed: {names}")  # a Failed state's data must be an error
    return Completed(message=f"run {summary['run_id']}: {summary['status']}", data=summary)
