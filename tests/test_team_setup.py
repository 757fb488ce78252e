"""The README's team set-up, run as written against a real Prefect server on 127.0.0.1.

`prefect server start` (on a free port), `prefect work-pool create jndqa --type process`,
`prefect deploy --all` (the repository's prefect.yaml, deployed from a project folder in tmp, as
a shell that has `cd`ed there would) and `prefect worker start --pool jndqa`, each a real process
with a private PREFECT_HOME and PREFECT_API_URL in its environment (what the README's `prefect
config set` line does for a profile). The deployments then run with their prefect.yaml
parameters, which resolve in that folder: ``examples/nightly.yaml`` (a tiny corpus: two generated
2 s clips, mp3 and an external encoder script), ``judgments/`` (empty) and ``out/jndqa.duckdb``
(the store of both). A first night ends Completed; the encoder is "rebuilt" band-limited to 4 kHz
(as `jndqa demo` cuts its encoder's bandwidth) and the next night ends Failed naming it; the
retrain deployment, with no judgment file, ends Completed saying it had nothing to do. The server
and worker are stopped in the fixture's teardown, whatever happened; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import yaml

from jndqa.flows.demo import write_encoder

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")

SERVER_START_TIMEOUT = 120.0  # s, until /api/health answers
CLI_TIMEOUT = 120.0  # s, per `prefect work-pool create` / `prefect deploy --all`
RUN_TIMEOUT = 300.0  # s, per flow run, from its creation to a final state
STOP_TIMEOUT = 20.0  # s, for a process to exit after SIGTERM (then SIGKILL)


# examples/nightly.yaml of the project folder: the nightly deployment's `config_path` parameter.
CONFIG = """\
corpus:
  root: ../corpus/
variants:
  - label: mp3 96k
    codec: libmp3lame
    bitrate: 96k
  - label: our encoder 32k
    encode: ["{enc}", "{{bitrate}}", "{{input}}", "{{output}}"]
    container: ogg
    bitrate: 32k
metric:
  model: production
  protocol: dense
baseline: auto
regression:
  threshold: 0.05
  bootstrap: 1000
  fail_on_regression: true
output: ../out/
"""


def _write_corpus(root: Path, seconds: float = 2.0, rate: int = 44100) -> None:
    """Two harmonic tones (partials up to 16 kHz, a tremolo, a little noise): most of their
    detail lies above 4 kHz, so a 4 kHz band limit is a clear regression."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for k, f0 in enumerate((196.0, 277.2)):
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, int(16000 / f0)))
        x = x * (0.5 + 0.5 * np.sin(2 * np.pi * (1.5 + k) * t))
        x = 0.4 * x / np.max(np.abs(x)) + rng.normal(0, 0.01, len(t))
        sf.write(root / f"item{k}.wav", x.astype(np.float32), rate, subtype="PCM_16")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, [])
    return out


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process (a flow run it started gets it too), SIGKILL it after STOP_TIMEOUT, then
    SIGKILL whatever it started that is still alive."""
    kids = _descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for_health(api: str, server: subprocess.Popen, report) -> None:
    """Poll ``{api}/health`` (no proxy) until it answers 200; fail when the server exits or after
    SERVER_START_TIMEOUT."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        try:
            with direct.open(f"{api}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, f"prefect server start exited {server.returncode}\n{report()}"
        assert time.monotonic() < deadline, f"{api}/health: no answer in {SERVER_START_TIMEOUT:.0f} s\n{report()}"
        time.sleep(0.25)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def team(tmp_path_factory, release):
    """The README's four commands, run in a project folder in tmp; yields the API client and the
    folder. Stops the worker, then the server, however the test ends."""
    from prefect.client.orchestration import SyncPrefectClient

    tmp = tmp_path_factory.mktemp("team")
    project = tmp / "project"
    (project / "examples").mkdir(parents=True)
    (project / "judgments").mkdir()
    (project / "bin").mkdir()
    shutil.copy(ROOT / "prefect.yaml", project / "prefect.yaml")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PWD": str(project),  # what `cd project` sets in a shell; prefect.yaml's pull step reads it
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",  # every request stays on this machine
    })  # fmt: skip
    logs = {"server": tmp / "server.log", "worker": tmp / "worker.log"}
    procs: dict[str, subprocess.Popen] = {}

    def report() -> str:
        return "\n".join(f"--- {name}.log (tail) ---\n{_tail(path)}" for name, path in logs.items())

    def start(name: str, args: list[str], extra_env: dict) -> None:
        with open(logs[name], "wb") as log:
            procs[name] = subprocess.Popen([PREFECT, *args], cwd=project, env={**env, **extra_env}, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip

    def cli(*args: str) -> str:
        r = subprocess.run([PREFECT, *args], cwd=project, env=env, capture_output=True, text=True,
                           timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        assert r.returncode == 0, f"prefect {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}\n{report()}"
        return r.stdout

    started = time.monotonic()
    try:
        # The scheduler service stays off so that no cron run (02:00, 06:00 UTC) joins the test's runs.
        start("server", ["server", "start", "--host", "127.0.0.1", "--port", str(port)],
              {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"})  # fmt: skip
        _wait_for_health(api, procs["server"], report)
        server_s = time.monotonic() - started
        cli("work-pool", "create", "jndqa", "--type", "process")
        cli("deploy", "--all")
        start("worker", ["worker", "start", "--pool", "jndqa"], {"PREFECT_WORKER_QUERY_SECONDS": "1"})
        with SyncPrefectClient(api=api, httpx_settings={"trust_env": False}) as client:
            yield SimpleNamespace(client=client, project=project, report=report, procs=procs, started=started,
                                  server_s=server_s)  # fmt: skip
    finally:
        for name in ("worker", "server"):
            if name in procs:
                _stop(procs[name])


def _run(team, deployment: str, seconds: list[float]) -> object:
    """Create a flow run of ``deployment`` (its prefect.yaml parameters) and wait for its final state."""
    dep = team.client.read_deployment_by_name(deployment)
    run = team.client.create_flow_run_from_deployment(dep.id)
    t0 = time.monotonic()
    while True:
        run = team.client.read_flow_run(run.id)
        if run.state is not None and run.state.is_final():
            seconds.append(time.monotonic() - t0)
            return run.state
        worker = team.procs["worker"]
        assert worker.poll() is None, f"the worker exited {worker.returncode}\n{team.report()}"
        assert time.monotonic() - t0 < RUN_TIMEOUT, (
            f"{deployment}: flow run {run.name} still {run.state.type.value if run.state else None} "
            f"after {RUN_TIMEOUT:.0f} s\n{team.report()}"
        )
        time.sleep(0.5)


@pytest.mark.slow
def test_readme_team_setup_nightly_regression_and_retrain(team):
    from jndqa.store import Store

    project = team.project
    written = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    for name in ("nightly", "retrain"):  # deployed from prefect.yaml as written, working in the project folder
        dep = team.client.read_deployment_by_name(f"jndqa-{name}-scheduled/{name}")
        assert dep.work_pool_name == "jndqa" and dep.parameters == written[name]["parameters"]
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}]
        assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *" if name == "nightly" else "0 6 * * *"]
    _write_corpus(project / "corpus")
    enc = project / "bin" / "enc"
    write_encoder(enc, "build 1: fullband", [])
    (project / "examples" / "nightly.yaml").write_text(CONFIG.format(enc=enc))

    runs_s: list[float] = []
    first = _run(team, "jndqa-nightly-scheduled/nightly", runs_s)
    assert first.is_completed(), f"{first.type.value}: {first.message}\n{team.report()}"
    assert first.message.endswith(": passed")

    write_encoder(enc, "build 2: bandwidth cut to 4 kHz", ["-cutoff", "4000"])  # "rebuilt": a new sha256
    second = _run(team, "jndqa-nightly-scheduled/nightly", runs_s)
    assert second.is_failed(), f"{second.type.value}: {second.message}\n{team.report()}"
    assert "regressed: our encoder 32k" in second.message and "mp3" not in second.message

    retrain = _run(team, "jndqa-retrain-scheduled/retrain", runs_s)
    assert retrain.is_completed(), f"{retrain.type.value}: {retrain.message}\n{team.report()}"
    assert re.search(r"nothing to do|skipped", retrain.message), retrain.message

    # The runs worked in the project folder: the nightly store is out/jndqa.duckdb there.
    store = Store(project / "out" / "jndqa.duckdb", read_only=True)
    runs = store.runs()
    assert [r["status"] for r in runs] == ["regressed", "passed"]
    assert first.message == f"run {runs[1]['run_id']}: passed"
    assert second.message.startswith(f"run {runs[0]['run_id']} regressed")
    print(f"\nteam set-up: server up in {team.server_s:.1f} s; flow runs "
          f"{', '.join(f'{s:.1f}' for s in runs_s)} s; {time.monotonic() - team.started:.1f} s in all")  # fmt: skip
