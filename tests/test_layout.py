"""The package layout of docs/architecture.md: folders import as jndqa.<folder>, nothing generic at the top
level, rooms and doors respected, no side effects at import time."""

from __future__ import annotations

import subprocess
import sys

FOLDERS = ["flows", "metric", "variants", "store", "reports", "datasets"]


def py(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_folders_import_as_subpackages_and_not_bare(tmp_path):
    code = (
        "import importlib, importlib.util\n"
        f"for f in {FOLDERS!r}:\n"
        "    importlib.import_module('jndqa.' + f)\n"
        "    assert importlib.util.find_spec(f) is None, f'bare {f} is importable'\n"
        "print('ok')"
    )
    r = py(code, tmp_path)  # from a folder outside the checkout
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_metric_knows_nothing_of_ffmpeg_duckdb_prefect(tmp_path):
    code = (
        "import sys, jndqa.metric\n"
        "bad = [m for m in ('prefect', 'duckdb', 'ffmpeg', 'plotly') if m in sys.modules]\n"
        "print(bad)"
    )
    r = py(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_import_is_silent(tmp_path):
    code = "import jndqa.metric, jndqa.flows.cli, jndqa.metric.score"
    r = py(code, tmp_path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
