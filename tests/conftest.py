"""Shared fixtures. The official release (weights + sample audio of the dpam 0.0.4 source
package) is fetched with pip into the jndqa cache by the set-up step; when it is absent
the fixture runs that step, and skips only when no package index is reachable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jndqa.metric.release import ReleaseNotFoundError, SetupError, fetch_release, find_release


def pytest_configure(config):
    """``JNDQA_TEST_THREADS=N`` runs torch with N threads, in this process and in the processes the
    tests start (OMP_NUM_THREADS), so the suite can be checked at 1 and 2 threads. Under
    pytest-xdist (``make test`` runs two workers) the default is 1 thread per worker, so that two
    workers do not oversubscribe two cores."""
    threads = os.environ.get("JNDQA_TEST_THREADS") or ("1" if os.environ.get("PYTEST_XDIST_WORKER") else None)
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


def pytest_report_header(config):
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"


@pytest.fixture(scope="session")
def release() -> Path:
    try:
        return find_release()
    except ReleaseNotFoundError:
        pass
    try:
        return fetch_release()
    except SetupError as exc:
        if exc.download_failed:
            pytest.skip(f"dpam==0.0.4 could not be downloaded (no package index reachable?): {exc}")
        raise


@pytest.fixture(scope="session")
def sample(release):
    """The release's sample clips, prepared for the model (mono, 22,050 Hz, int16 scale)."""
    from jndqa.metric import load_audio

    return {name: load_audio(release / "sample_audio" / f"{name}.wav").samples for name in ("ref", "2", "4")}


@pytest.fixture(scope="session")
def scratch(release):
    from jndqa.metric import DPAM

    return DPAM.official("scratch", release)


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory) -> dict:
    """Environment for processes that run flows: a private PREFECT_HOME, no telemetry."""
    home = tmp_path_factory.mktemp("prefect-home")
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


@pytest.fixture(scope="session")
def prefect_harness(prefect_env):
    """One temporary Prefect API for the whole session (starting one costs 7-14 s)."""
    keys = ["PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_LOGGING_LEVEL"]  # fmt: skip
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: prefect_env[k] for k in keys})
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=60):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium (Debian's `chromium`, installed by `make test` as root), driven
    over the DevTools protocol by tests/chromium.py."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("jndqa_test_chromium", Path(__file__).with_name("chromium.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    exe = mod.find_chromium()
    if exe is None:
        pytest.skip("no chromium on PATH: `make test` installs Debian's chromium when run as root")
    b = mod.Chromium(exe)
    try:
        yield b
    finally:
        b.close()
