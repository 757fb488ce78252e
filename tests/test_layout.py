"""The package layout of docs/architecture.md: folders import as jndqa.<folder>, nothing generic at the top
level, rooms and doors respected, no side effects at import time.

The rooms are checked twice: in the source (every import statement of every .py file of a folder,
at module level or inside a function, relative ones resolved), and at import time (what importing
the package pulls into ``sys.modules``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["flows", "metric", "variants", "store", "reports", "datasets", "stats", "peers"]
# What each folder's code must not import (a name, or anything under it).
ROOMS = {
    "metric": "prefect duckdb ffmpeg plotly jndqa.store jndqa.flows jndqa.variants jndqa.reports".split(),
    "variants": "jndqa.metric jndqa.store jndqa.flows jndqa.reports torch".split(),
    "store": "torch soundfile jndqa.metric jndqa.variants jndqa.flows".split(),
    "reports": "jndqa.flows prefect".split(),
    # the peer metrics know the plugin interface only: no torch, DPAM, store, flows or ffmpeg
    "peers": "torch prefect duckdb ffmpeg jndqa.store jndqa.flows jndqa.variants jndqa.reports jndqa.metric.score "
    "jndqa.metric.network jndqa.metric.dense".split(),
}
# jndqa.stats imports only these and the standard library.
STATS_MAY_IMPORT = ["numpy", "scipy", "jndqa.stats"]


def source_imports(folder: Path, package: str) -> list[tuple[str, int, str]]:
    """``(file, line, name)`` for every import in the .py files under ``folder`` (the subpackage
    ``package``), wherever it stands. ``import a.b`` names ``a.b``; ``from a import b, c`` names
    ``a.b`` and ``a.c`` (b may be a module); relative imports are resolved against ``package``."""
    out = []
    for path in sorted(folder.rglob("*.py")):
        where = [*package.split("."), *path.relative_to(folder).parent.parts]
        rel = path.relative_to(folder.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                out += [(rel, node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = where[: len(where) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                out += [(rel, node.lineno, f"{module}.{a.name}") for a in node.names]
    return out


def under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offences(found: list[tuple[str, int, str]], bad) -> str:
    return "\n".join(f"{f}:{line}: imports {name}" for f, line, name in found if bad(name))


def test_source_imports_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "metric" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(
        "from __future__ import annotations\n"
        "def f():\n"
        "    import prefect.flows\n"
        "    from ..store_like import thing\n"
        "    from ... import store\n"
        "    from . import y\n"
    )
    assert source_imports(tmp_path / "metric", "jndqa.metric") == [
        ("metric/sub/x.py", 1, "__future__.annotations"),
        ("metric/sub/x.py", 3, "prefect.flows"),
        ("metric/sub/x.py", 4, "jndqa.metric.store_like.thing"),
        ("metric/sub/x.py", 5, "jndqa.store"),
        ("metric/sub/x.py", 6, "jndqa.metric.sub.y"),
    ]


@pytest.mark.parametrize("folder", sorted(ROOMS))
def test_rooms_in_the_source(folder):
    found = source_imports(ROOT / folder, f"jndqa.{folder}")
    assert found, f"no imports found under {folder}/"
    bad = offences(found, lambda name: under(name, ROOMS[folder]))
    assert not bad, f"{folder} must import none of {', '.join(ROOMS[folder])}:\n{bad}"


def test_stats_imports_only_numpy_scipy_and_the_standard_library():
    found = source_imports(ROOT / "stats", "jndqa.stats")
    bad = offences(
        found, lambda name: not (under(name, STATS_MAY_IMPORT) or name.split(".")[0] in sys.stdlib_module_names)
    )
    assert not bad, f"jndqa.stats may import only numpy, scipy and the standard library:\n{bad}"


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
