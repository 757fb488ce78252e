"""What every report page shares: the Jinja2 environment, figure placement, safe JSON in
``<script>`` blocks, atomic page writes, the static files (one ``plotly.min.js`` per folder, from
the installed plotly package) and the version in the footer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

__all__ = ["Figures", "clean_json", "environment", "jndqa_version", "script_json", "write_listen_page", "write_page",
           "write_static"]  # fmt: skip


def clean_json(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON.parse rejects them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    return obj


def script_json(obj: Any) -> str:
    """JSON that cannot close its ``<script>`` element or open a comment, whatever strings it holds."""
    text = json.dumps(clean_json(obj), separators=(",", ":"), default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


class Figures:
    """Places figures: a ``div`` the page script draws into, with the figure's JSON beside it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: dict) -> Any:
        from markupsafe import Markup

        self.count += 1
        fid = f"fig{self.count}"
        return Markup(
            f'<div class="figure" id="{fid}" data-figure="{fid}-data"></div>\n'
            f'<script type="application/json" id="{fid}-data">{script_json(fig)}</script>'
        )


def environment():
    """The Jinja2 environment of the report templates (autoescaped, strict)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def write_page(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (a killed run leaves no half page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_static(root: Path) -> None:
    """plotly.min.js (from the installed plotly package, never a CDN), report.js, report.css."""
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = root / "plotly.min.js"
    if not target.exists() or target.stat().st_size != plotly_js.stat().st_size:
        shutil.copyfile(plotly_js, target)
    static = Path(__file__).parent / "static"
    for name in ("report.js", "report.css"):
        shutil.copyfile(static / name, root / name)


def write_listen_page(folder: Path, test: dict) -> None:
    """A listening test's page (docs/listen.md): ``index.html`` with the test embedded (a file:// page cannot
    fetch ``test.json``), ``test.json``, ``listen.js`` and ``listen.css``."""
    page = environment().get_template("listen.html.j2").render(test=test, test_json=script_json(test))
    write_page(folder / "index.html", page)
    write_page(folder / "test.json", json.dumps(test, indent=1, ensure_ascii=False))
    static = Path(__file__).parent / "static"
    for name in ("listen.js", "listen.css"):
        shutil.copyfile(static / name, folder / name)


def jndqa_version() -> str:
    """The installed jndqa version, for page footers."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jndqa")
    except PackageNotFoundError:
        return "(not installed)"
