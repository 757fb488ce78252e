"""Plugin chains: finding the plugins of a spec's ``plugins:``, their build identity, and running them.

Finding (:func:`resolve_element`):

- LV2: the bundles of ``LV2_PATH`` (default :data:`DEFAULT_LV2_PATH`), in order; the first whose
  ``manifest.ttl`` (or, failing that, another ``.ttl`` file of the bundle) says that the URI has an
  ``lv2:binary`` is the plugin. ffmpeg's ``lv2`` filter (lilv) is run with the same ``LV2_PATH``.
- LADSPA: a path (relative to the config's folder), or a library name looked up as ``NAME.so`` in
  ``LADSPA_PATH`` (default :data:`DEFAULT_LADSPA_PATH`); ffmpeg is given the absolute path found.
- pedalboard: a built-in effect class (checked against the installed pedalboard's, with its
  parameter names), or a plugin file: a path, or a ``.vst3`` name looked up in the config's folder
  and the VST3 folders (:data:`VST3_PATH`).

A plugin that is not there raises :class:`EncoderUnavailable` naming it, the folders searched and
the package to install.

Build identity (:func:`plugins_version`): per element, in chain order, the plugin binary's sha256
(first 12 hex digits; of every file for a bundle folder; for LV2 also ``ttl:``, of the bundle's
``.ttl`` files, where port defaults and ranges live) and the Debian package that owns it
(``dpkg -S``) with its version when dpkg knows it; pedalboard's package version for pedalboard
elements. Controls and parameters are not in it: they are in the spec, hence in its id.

Running (:func:`apply_plugins`): consecutive LV2, LADSPA and ffmpeg elements make one ffmpeg
filter pass; consecutive pedalboard elements one child process (:mod:`.pedal_host`), fed and read
through pipes, with the render timeout. A crash, an exception or a hang of a plugin is a
:class:`VariantError` of that variant (:class:`EncoderFailed` with the exit signal or the plugin's
message, :class:`EncoderTimeout`); the bench's process is never at risk.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import numpy as np

from .errors import DecoderEmpty, EncoderFailed, EncoderTimeout, EncoderUnavailable, InvalidSamples, VariantError
from .external import _sha256
from .ffmpeg import FFmpegInfo, parse_wav
from .plugin_spec import (
    FFmpegElement,
    LADSPAElement,
    LV2Element,
    PedalboardElement,
    PluginElement,
    describe,
    element_name,
    is_plugin_file,
)
from .proc import run_tool
from .reference import Reference
from .specs import VariantSpec

__all__ = [
    "DEFAULT_LADSPA_PATH",
    "DEFAULT_LV2_PATH",
    "PEDAL_HOST",
    "VST3_PATH",
    "Resolved",
    "apply_plugins",
    "check_controls",
    "check_filters",
    "debian_package",
    "filter_graph",
    "filter_option",
    "find_ladspa",
    "find_lv2",
    "find_plugin_file",
    "ladspa_path",
    "lv2_path",
    "pedalboard_info",
    "pedalboard_version",
    "plugin_controls",
    "plugins_version",
    "resolve_element",
    "turtle_triples",
]

DEFAULT_LV2_PATH = "~/.lv2:/usr/local/lib/lv2:/usr/lib/lv2:/usr/lib/x86_64-linux-gnu/lv2"
DEFAULT_LADSPA_PATH = "~/.ladspa:/usr/local/lib/ladspa:/usr/lib/ladspa:/usr/lib/x86_64-linux-gnu/ladspa"
VST3_PATH = "~/.vst3:/usr/local/lib/vst3:/usr/lib/vst3"
PEDAL_HOST = str(Path(__file__).with_name("pedal_host.py"))
HASH_DIGITS = 12
_LOCK = threading.Lock()

# Debian packages of well-known plugin sets, for the "how to install it" of a missing plugin.
_LV2_PACKAGES = {
    "http://plugin.org.uk/swh-plugins/": "swh-lv2",
    "http://calf.sourceforge.net/plugins/": "calf-plugins",
    "http://lsp-plug.in/plugins/lv2/": "lsp-plugins-lv2",
    "http://gareus.org/oss/lv2/": "x42-plugins",
    "urn:zamaudio:": "zam-plugins",
    "http://drobilla.net/plugins/mda/": "mda-lv2",
}
_LADSPA_PACKAGES = [(re.compile(r"_\d{4}$"), "swh-plugins"), (re.compile(r"^tap_"), "tap-plugins"),
                    (re.compile(r"^cmt$"), "cmt"), (re.compile(r"^caps$"), "caps")]  # fmt: skip


def _search_path(variable: str, default: str) -> list[str]:
    return [os.path.expanduser(p) for p in (os.environ.get(variable) or default).split(os.pathsep) if p]


def lv2_path() -> list[str]:
    """The folders searched for LV2 bundles: ``LV2_PATH``, else :data:`DEFAULT_LV2_PATH`."""
    return _search_path("LV2_PATH", DEFAULT_LV2_PATH)


def ladspa_path() -> list[str]:
    """The folders searched for LADSPA libraries: ``LADSPA_PATH``, else :data:`DEFAULT_LADSPA_PATH`."""
    return _search_path("LADSPA_PATH", DEFAULT_LADSPA_PATH)


# --- a small Turtle reader: enough for LV2 manifests ------------------------------------------

_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_LV2_BINARY = "http://lv2plug.in/ns/lv2core#binary"
_LV2_PLUGIN = "http://lv2plug.in/ns/lv2core#Plugin"
_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
      | (?P<iri><[^>]*>)
      | (?P<str>\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<punct>[;,\[\]()])
      | (?P<word>[^\s;,\[\]()<>"']+)""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        value = m.group()
        if kind == "skip":
            continue
        if kind == "word" and value.endswith(".") and not re.fullmatch(r"[+-]?\d+\.?\d*([eE][+-]?\d+)?", value):
            if value[:-1]:
                out.append(("word", value[:-1]))
            out.append(("punct", "."))
            continue
        out.append((kind or "word", value))
    return out


def turtle_triples(text: str, base: str) -> list[tuple[str, str, str]]:
    """(subject, predicate, object) of the named subjects of a Turtle document whose objects are
    IRIs, all resolved to absolute IRIs (against ``base``, the document's own URI). Blank nodes,
    collections and literals are read past. Not a full Turtle parser: enough for LV2 manifests."""
    toks = _tokens(text)
    prefixes: dict[str, str] = {}
    triples: list[tuple[str, str, str]] = []
    pos = 0

    def peek() -> tuple[str, str]:
        return toks[pos] if pos < len(toks) else ("eof", "")

    def take() -> tuple[str, str]:
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def term(tok: tuple[str, str]) -> str | None:
        kind, value = tok
        if kind == "iri":
            return urljoin(base, value[1:-1])
        if kind == "word":
            if value == "a":
                return _RDF_TYPE
            if ":" in value and not value.startswith(("^^", "@")):
                prefix, _, local = value.partition(":")
                if prefix in prefixes:
                    return prefixes[prefix] + local
        return None

    def skip_object() -> str | None:
        kind, value = take()
        if kind == "punct" and value == "[":
            skip_until("]")
            return None
        if kind == "punct" and value == "(":
            skip_until(")")
            return None
        if kind == "str" and peek()[0] == "word" and peek()[1].startswith(("^^", "@")):
            take()
            return None
        return term((kind, value))

    def skip_until(close: str) -> None:
        depth = 1
        while pos < len(toks) and depth:
            _, value = take()
            if value in ("[", "("):
                depth += 1
            elif value in ("]", ")"):
                depth -= 1

    while pos < len(toks):
        kind, value = take()
        if kind == "word" and value.lower() in ("@prefix", "prefix"):
            name = take()[1]
            iri = take()[1]
            prefixes[name.rstrip(":")] = urljoin(base, iri[1:-1])
            if peek() == ("punct", "."):
                take()
            continue
        if kind == "word" and value.lower() in ("@base", "base"):
            base = urljoin(base, take()[1][1:-1])
            if peek() == ("punct", "."):
                take()
            continue
        if kind == "punct" and value in ("[", "("):
            skip_until("]" if value == "[" else ")")
            subject = None
        else:
            subject = term((kind, value))
        # predicate-object lists until "."
        while pos < len(toks) and peek() != ("punct", "."):
            if peek()[0] == "punct" and peek()[1] in ";,":
                take()
                continue
            predicate = term(take())
            while True:
                obj = skip_object()
                if subject and predicate and obj:
                    triples.append((subject, predicate, obj))
                if peek() == ("punct", ","):
                    take()
                    continue
                break
        take()  # the "."
    return triples


_MANIFESTS: dict[tuple, list[tuple[str, str, str]]] = {}


def _read_ttl(path: Path) -> list[tuple[str, str, str]]:
    try:
        st = path.stat()
    except OSError:
        return []
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _MANIFESTS:
            return _MANIFESTS[key]
    try:
        triples = turtle_triples(path.read_text(encoding="utf-8", errors="replace"), path.resolve().as_uri())
    except (OSError, IndexError, ValueError):
        triples = []
    with _LOCK:
        _MANIFESTS[key] = triples
    return triples


def _iri_path(iri: str) -> str | None:
    u = urlparse(iri)
    return unquote(u.path) if u.scheme == "file" else None


def find_lv2(uri: str, paths: list[str] | None = None) -> tuple[Path, Path]:
    """The bundle folder and binary of the LV2 plugin ``uri``: the first bundle of ``paths``
    (default :func:`lv2_path`) that names it. Raises :class:`EncoderUnavailable`."""
    paths = lv2_path() if paths is None else paths
    seen: set[str] = set()
    for folder in paths:
        root = Path(folder)
        if not root.is_dir():
            continue
        for bundle in sorted(root.iterdir()):
            manifest = bundle / "manifest.ttl"
            if not manifest.is_file():
                continue
            triples = _read_ttl(manifest)
            seen.update(s for s, p, o in triples if p == _RDF_TYPE and o == _LV2_PLUGIN)
            if not any(s == uri for s, _, _ in triples):
                continue
            binaries = [o for s, p, o in triples if s == uri and p == _LV2_BINARY]
            if not binaries:
                for ttl in sorted(bundle.glob("*.ttl")):
                    binaries += [o for s, p, o in _read_ttl(ttl) if s == uri and p == _LV2_BINARY]
            binary = _iri_path(binaries[0]) if binaries else None
            if not binary or not Path(binary).is_file():
                raise EncoderUnavailable(
                    f"LV2 plugin <{uri}>: its bundle {bundle} names "
                    + (f"the binary {binary}, which is not there" if binary else "no lv2:binary"),
                    hint="reinstall the package that ships the bundle (dpkg -S the bundle's folder names it)",
                )
            return bundle, Path(binary)
    close = difflib.get_close_matches(uri, sorted(seen), n=3, cutoff=0.92)
    raise EncoderUnavailable(
        f"LV2 plugin <{uri}> was not found: no bundle in LV2_PATH ({os.pathsep.join(paths)}) names it"
        + (f"; close URIs installed: {', '.join(close)}" if close else "")
        + f"; {_lv2_install(uri)}",  # in the reason too: a night's failure row keeps the reason only
        hint=f"{_lv2_install(uri)}, or put its bundle in a folder of LV2_PATH; `lv2ls` (Debian package lilv-utils) "
        "lists the URIs installed, `grep -l URI /usr/lib/lv2/*/manifest.ttl` finds a bundle",
    )


def _lv2_install(uri: str) -> str:
    package = next((pkg for prefix, pkg in _LV2_PACKAGES.items() if uri.startswith(prefix)), None)
    return f"install it: apt install {package}" if package else "install the package that ships it (Debian: *-lv2)"


def find_ladspa(file: str, base_dir: str | None = None, paths: list[str] | None = None) -> Path:
    """The LADSPA library ``file``: a path (relative to ``base_dir``), or ``NAME``/``NAME.so`` in
    the folders of ``paths`` (default :func:`ladspa_path`). Raises :class:`EncoderUnavailable`."""
    paths = ladspa_path() if paths is None else paths
    if "/" in file:
        p = Path(file) if os.path.isabs(file) or not base_dir else Path(base_dir, file)
        if p.is_file():
            return p.resolve()
        raise EncoderUnavailable(
            f"LADSPA library {str(p)!r} was not found" + (f" (relative to {base_dir})" if base_dir else ""),
            hint="correct the path in the spec, or give a library name (sc4_1882) to look it up in LADSPA_PATH",
        )
    for folder in paths:
        for name in (f"{file}.so", file):
            p = Path(folder, name)
            if p.is_file():
                return p.resolve()
    stem = file.removesuffix(".so")
    package = next((pkg for pattern, pkg in _LADSPA_PACKAGES if pattern.search(stem)), None)
    how = f"install it: apt install {package}" if package else f"find its package with `apt-file search {stem}.so`"
    raise EncoderUnavailable(
        f"LADSPA library {stem}.so was not found in LADSPA_PATH ({os.pathsep.join(paths)}); {how}",
        hint=f"{how}, or add its folder to LADSPA_PATH; `listplugins` (ladspa-sdk) lists the libraries installed",
    )


# --- Debian packages --------------------------------------------------------------------------

_PACKAGES: dict[tuple, str | None] = {}


def debian_package(path: str | os.PathLike, timeout: float = 30.0) -> str | None:
    """``swh-lv2=1.0.16+git20160519~repack0-3+b1``: the Debian package owning ``path`` and its
    version (``dpkg -S``, ``dpkg-query``), None when there is no dpkg or it does not know the file."""
    path = os.fspath(path)
    dpkg, query = shutil.which("dpkg"), shutil.which("dpkg-query")
    if not dpkg or not query:
        return None
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _PACKAGES:
            return _PACKAGES[key]
    found = None
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        try:
            out = run_tool([dpkg, "-S", candidate], what="dpkg -S", timeout=timeout).stdout.decode("utf-8", "replace")
        except VariantError:
            continue
        line = out.strip().splitlines()[0] if out.strip() else ""
        package = line.split(": ", 1)[0].split(",")[0].strip()
        if not package or "diversion" in line:
            continue
        try:
            version = run_tool([query, "-W", "-f=${Version}", package], what="dpkg-query", timeout=timeout).stdout
        except VariantError:
            version = b""
        found = f"{package.split(':')[0]}={version.decode().strip()}" if version.strip() else package
        break
    with _LOCK:
        _PACKAGES[key] = found
    return found


def _digest(path: Path) -> str:
    """sha256 of a file; of a folder (a plugin bundle), of its files' relative paths and sha256s."""
    if path.is_file():
        return _sha256(str(path))
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{_sha256(str(f))}\n".encode())
    return h.hexdigest()


# --- pedalboard -------------------------------------------------------------------------------

_PEDALBOARD: dict[tuple, dict] = {}


def pedalboard_version() -> str:
    """The installed pedalboard's version; :class:`EncoderUnavailable` when it is not installed."""
    try:
        return metadata.version("pedalboard")
    except metadata.PackageNotFoundError:
        raise EncoderUnavailable(
            f"pedalboard is not installed (in {sys.executable}'s environment)",
            hint="pip install 'jndqa[plugins]' (make installs it)",
        ) from None


def pedalboard_info(timeout: float = 30.0) -> dict:
    """``{"pedalboard": version, "builtins": {Class: [parameters]}}`` of the installed pedalboard,
    asked once per process from a child (:mod:`.pedal_host`), so pedalboard is never imported here."""
    version = pedalboard_version()
    key = (sys.executable, version)
    with _LOCK:
        if key in _PEDALBOARD:
            return _PEDALBOARD[key]
    try:
        out = run_tool([sys.executable, "-P", PEDAL_HOST, "--info"], what="pedalboard --info", timeout=timeout)
        info = json.loads(out.stdout)
    except (VariantError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, VariantError) else str(exc)
        raise EncoderUnavailable(
            f"pedalboard {version} does not load: {reason}",
            stderr=getattr(exc, "stderr", None),
            hint="reinstall it: pip install --force-reinstall 'jndqa[plugins]'",
        ) from None
    with _LOCK:
        _PEDALBOARD[key] = info
    return info


def find_plugin_file(target: str, base_dir: str | None = None) -> Path:
    """A pedalboard element's plugin file or bundle: a path (relative to ``base_dir``), or a bare
    ``NAME.vst3`` in ``base_dir`` then the folders of :data:`VST3_PATH`."""
    if "/" in target:
        candidates = [Path(target) if os.path.isabs(target) or not base_dir else Path(base_dir, target)]
    else:
        folders = ([base_dir] if base_dir else [os.getcwd()]) + _search_path("VST3_PATH", VST3_PATH)
        candidates = [Path(f, target) for f in folders]
    for p in candidates:
        if p.is_file() or p.is_dir():
            return p.resolve()
    raise EncoderUnavailable(
        f"pedalboard plugin {target!r} was not found (looked at {', '.join(str(p) for p in candidates)})",
        hint="install the plugin (Linux VST3 bundles go in ~/.vst3 or /usr/lib/vst3) or correct the path in the spec",
    )


# --- resolution and versions ------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """One chain element, found: ``target`` is what ffmpeg or pedalboard is given (the LV2 URI, the
    LADSPA library's absolute path, a built-in's class name, a plugin file's absolute path);
    ``binary`` the file hashed; ``version`` its part of the spec's version string."""

    element: PluginElement
    target: str
    binary: str | None
    version: str


def resolve_element(element: PluginElement, base_dir: str | None = None, *, timeout: float = 30.0) -> Resolved:
    """Find ``element``'s plugin and build its version (see the module docstring). Raises
    :class:`EncoderUnavailable` when it is not there."""
    if isinstance(element, LV2Element):
        bundle, binary = find_lv2(element.lv2)
        rel = binary.relative_to(bundle) if binary.is_relative_to(bundle) else binary
        ttl = hashlib.sha256()
        for f in sorted(bundle.glob("*.ttl")):
            ttl.update(f"{f.name}\0{_sha256(str(f))}\n".encode())
        text = f"lv2 <{element.lv2}> {bundle.name}/{rel} sha256:{_digest(binary)[:HASH_DIGITS]}"
        text += f" ttl:{ttl.hexdigest()[:HASH_DIGITS]}"
        package = debian_package(binary, timeout)
        return Resolved(element, element.lv2, str(binary), text + (f" {package}" if package else ""))
    if isinstance(element, LADSPAElement):
        lib = find_ladspa(element.ladspa, base_dir)
        text = f"ladspa {lib.name} {element.name} sha256:{_digest(lib)[:HASH_DIGITS]}"
        package = debian_package(lib, timeout)
        return Resolved(element, str(lib), str(lib), text + (f" {package}" if package else ""))
    if isinstance(element, PedalboardElement):
        info = pedalboard_info(timeout)
        head = f"pedalboard {info['pedalboard']}"
        if is_plugin_file(element.pedalboard):
            path = find_plugin_file(element.pedalboard, base_dir)
            text = f"{head} {path.name}" + (f" ({element.name})" if element.name else "")
            text += f" sha256:{_digest(path)[:HASH_DIGITS]}"
            package = debian_package(path, timeout) if path.is_file() else None
            return Resolved(element, str(path), str(path), text + (f" {package}" if package else ""))
        builtins = info["builtins"]
        if element.pedalboard not in builtins:
            close = difflib.get_close_matches(element.pedalboard, sorted(builtins), n=1)
            raise EncoderUnavailable(
                f"pedalboard {info['pedalboard']} has no built-in effect {element.pedalboard!r}"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"use one of: {', '.join(sorted(builtins))}; or give a plugin file (.vst3)",
            )
        known = builtins[element.pedalboard]
        for name in element.parameters or {}:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                raise EncoderUnavailable(
                    f"pedalboard's {element.pedalboard} has no parameter {name!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else ""),
                    hint=f"correct the spec; {element.pedalboard}'s parameters are: {', '.join(known)}",
                )
        return Resolved(element, element.pedalboard, None, f"{head} {element.pedalboard}")
    assert isinstance(element, FFmpegElement)
    return Resolved(element, element.ffmpeg, None, "")


def _filters(info: FFmpegInfo, timeout: float) -> frozenset[str]:
    key = "__filters__"
    with _LOCK:
        if key in info._lib_cache:
            return info._lib_cache[key]
    out = run_tool([info.path, "-hide_banner", "-filters"], what="ffmpeg -filters", timeout=timeout).stdout
    names = frozenset(m.group(1) for m in re.finditer(r"^\s*[A-Z.|]{2,3}\s+(\S+)\s+\S*->\S*", out.decode(), re.M))
    with _LOCK:
        info._lib_cache[key] = names
    return names


def _needs_ffmpeg(element: PluginElement) -> bool:
    return not isinstance(element, PedalboardElement)


def check_filters(spec: VariantSpec, info: FFmpegInfo, timeout: float = 30.0) -> None:
    """:class:`EncoderUnavailable` when the spec's ffmpeg lacks the ``lv2`` or ``ladspa`` filter
    its chain needs (imageio-ffmpeg's static 9.0.2 build has lv2 but no ladspa; Debian's has both)."""
    kinds = {"lv2" for e in spec.plugins or () if isinstance(e, LV2Element)}
    kinds |= {"ladspa" for e in spec.plugins or () if isinstance(e, LADSPAElement)}
    missing = sorted(kinds - _filters(info, timeout))
    if missing:
        raise EncoderUnavailable(
            f"{info.path} ({info.line}) has no {' or '.join(missing)} filter",
            hint="use an ffmpeg built with --enable-lv2 --enable-ladspa (Debian's ffmpeg package is); "
            "set it as the config's or the spec's 'ffmpeg'",
        )


_CONTROLS: dict[tuple, dict[str, tuple[float | None, float | None]]] = {}
_LV2_CONTROL = re.compile(r"^\[Parsed_lv2_\d+ @ [^\]]*\] (\S+)\s+<\w+> \(from (\S+) to (\S+)\)", re.M)
_LADSPA_CONTROL = re.compile(r"^\[Parsed_ladspa_\d+ @ [^\]]*\] (c\d+): .*$", re.M)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def plugin_controls(
    info: FFmpegInfo, r: Resolved, timeout: float = 30.0
) -> dict[str, tuple[float | None, float | None]]:
    """The input controls of an LV2 or LADSPA element's plugin as ffmpeg's filter lists them
    (``c=help``): LV2 symbol or LADSPA ``cN`` -> (minimum, maximum). Empty when the listing cannot
    be read (another ffmpeg's format): the controls are then left to ffmpeg."""
    e = r.element
    name = e.name if isinstance(e, LADSPAElement) else ""
    key = (info.path, type(e).__name__, r.target, name, _sha256(r.binary) if r.binary else None)
    with _LOCK:
        if key in _CONTROLS:
            return _CONTROLS[key]
    if isinstance(e, LV2Element):
        graph, env = f"lv2=p={filter_option(r.target)}:c=help", {"LV2_PATH": os.pathsep.join(lv2_path())}
    else:
        graph, env = f"ladspa=f={filter_option(r.target)}:p={filter_option(name)}:c=help", None
    argv = [info.path, "-hide_banner", "-nostdin", "-loglevel", "info", "-f", "lavfi",
            "-i", "anullsrc=r=48000:cl=stereo", "-t", "0.01", "-af", graph, "-f", "null", "-"]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
        text = done.stderr.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    controls: dict[str, tuple[float | None, float | None]] = {}
    for m in _LV2_CONTROL.finditer(text):
        controls[m.group(1)] = (_float(m.group(2)), _float(m.group(3)))
    for m in _LADSPA_CONTROL.finditer(text):
        lo, hi = re.search(r"min: ([-+\d.eE]+)", m.group()), re.search(r"max: ([-+\d.eE]+)", m.group())
        controls[m.group(1)] = (_float(lo.group(1)) if lo else None, _float(hi.group(1)) if hi else None)
    with _LOCK:
        _CONTROLS[key] = controls
    return controls


def check_controls(info: FFmpegInfo, r: Resolved, timeout: float = 30.0) -> None:
    """:class:`EncoderFailed` when an LV2 or LADSPA element sets a control its plugin does not
    have, or a value outside the control's range (ffmpeg's ``lv2`` filter would ignore the first
    and pass the second on)."""
    e = r.element
    given = getattr(e, "controls", None)
    if not given or not isinstance(e, LV2Element | LADSPAElement):
        return
    known = plugin_controls(info, r, timeout)
    if not known:
        return
    listing = ", ".join(f"{k} ({_number(lo) if lo is not None else '?'}..{_number(hi) if hi is not None else '?'})"
                        for k, (lo, hi) in known.items())  # fmt: skip
    for k, v in given.items():
        if k not in known:
            close = difflib.get_close_matches(k, list(known), n=1)
            raise EncoderFailed(
                f"{describe(e)} has no control {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"correct the spec; its controls are: {listing}",
            )
        lo, hi = known[k]
        if (lo is not None and v < lo - 1e-9) or (hi is not None and v > hi + 1e-9):
            raise EncoderFailed(
                f"{describe(e)}: control {k}={_number(v)} is out of its range {_number(lo or 0)}..{_number(hi or 0)}",
                hint=f"correct the spec; its controls are: {listing}",
            )


def plugins_version(
    spec: VariantSpec, info: FFmpegInfo | None = None, *, timeout: float = 30.0, libavfilter: bool = True
) -> str:
    """``plugins: <element version>, …`` for a spec with a chain (``""`` without one), preceded by
    ``libavfilter X; `` when ffmpeg runs elements and ``libavfilter`` is true. ``info``: the
    spec's ffmpeg (needed when the chain has LV2, LADSPA or ffmpeg elements)."""
    if not spec.plugins:
        return ""
    resolved = [resolve_element(e, spec.base_dir, timeout=timeout) for e in spec.plugins]
    parts = [r.version for r in resolved if r.version]
    text = "plugins: " + (", ".join(parts) if parts else "ffmpeg")
    if any(_needs_ffmpeg(e) for e in spec.plugins):
        assert info is not None
        check_filters(spec, info, timeout)
        for r in resolved:
            check_controls(info, r, timeout)
        lavfi = info.libraries.get("libavfilter")
        if libavfilter and lavfi:
            text = f"libavfilter {lavfi}; {text}"
    return text


# --- rendering --------------------------------------------------------------------------------

_GRAPH_SPECIALS = "\\'[],;"
_OPTION_SPECIALS = "\\':"


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials or c.isspace() else c for c in text)


def filter_option(value: str) -> str:
    """``value`` escaped for an option of a filter inside a filter graph (two levels, as ffmpeg's
    docs 'Notes on filtergraph escaping' describe): ``http://x`` -> ``http\\\\://x``."""
    return _escape(_escape(value, _OPTION_SPECIALS), _GRAPH_SPECIALS)


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def filter_graph(resolved: list[Resolved]) -> str:
    """The ffmpeg filter chain of consecutive LV2, LADSPA and ffmpeg elements, in order."""
    parts = []
    for r in resolved:
        e = r.element
        if isinstance(e, LV2Element):
            f = f"lv2=p={filter_option(r.target)}"
        elif isinstance(e, LADSPAElement):
            f = f"ladspa=f={filter_option(r.target)}:p={filter_option(e.name)}"
        else:
            assert isinstance(e, FFmpegElement)
            parts.append(e.ffmpeg)
            continue
        controls = getattr(e, "controls", None)
        if controls:
            f += ":c=" + "|".join(f"{k}={_number(v)}" for k, v in controls.items())
        parts.append(f)
    return ",".join(parts)


def _groups(resolved: list[Resolved]) -> list[list[Resolved]]:
    groups: list[list[Resolved]] = []
    for r in resolved:
        if groups and _needs_ffmpeg(groups[-1][0].element) == _needs_ffmpeg(r.element):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def _names(group: list[Resolved]) -> str:
    return " > ".join(element_name(r.element) for r in group)


def _run_ffmpeg(info: FFmpegInfo, group: list[Resolved], x: np.ndarray, rate: int, timeout: float):
    from .coders import _filter_pass

    env = {"LV2_PATH": os.pathsep.join(lv2_path())} if any(isinstance(r.element, LV2Element) for r in group) else None
    try:
        return _filter_pass(info, x, rate, filter_graph(group), timeout=timeout,
                            what=f"ffmpeg plugins ({_names(group)})", env=env)  # fmt: skip
    except EncoderFailed as exc:
        exc.hint = (
            "read ffmpeg's stderr below: a bad filter graph in an ffmpeg element, a control out of range, or a "
            "plugin that does not take this channel count; list an LV2 plugin's controls with "
            "`grep -A5 symbol <bundle>/plugin.ttl` (or lv2info URI), a LADSPA plugin's with analyseplugin FILE"
        )
        raise


def _run_pedalboard(group: list[Resolved], x: np.ndarray, rate: int, timeout: float) -> tuple[np.ndarray, int, float]:
    chain = []
    for r in group:
        e = r.element
        assert isinstance(e, PedalboardElement)
        chain.append({"pedalboard": r.target, "parameters": e.parameters or {}, "name": e.name,
                      "file": is_plugin_file(e.pedalboard)})  # fmt: skip
    names = _names(group)
    argv = [sys.executable, "-P", PEDAL_HOST, "--rate", str(rate), "--channels", str(x.shape[1]),
            "--chain", json.dumps(chain)]  # fmt: skip
    what = f"the pedalboard process running {names}"
    raw = memoryview(np.ascontiguousarray(x, dtype="<f4")).cast("B")
    try:
        out = run_tool(argv, what=what, stdin=raw, timeout=timeout)
    except EncoderTimeout as exc:
        exc.hint = (
            "a plugin hangs, or the render timeout (runner.timeout) is too short for this chain and signal; "
            "the other variants were rendered"
        )
        raise
    except EncoderFailed as exc:
        from .pedal_host import ERROR_PREFIX

        lines = (exc.stderr or "").splitlines()
        message = next((ln[len(ERROR_PREFIX) :] for ln in reversed(lines) if ln.startswith(ERROR_PREFIX)), None)
        if message:
            exc.reason = f"pedalboard: {message}"
            if "Failed to load plugin" in message:
                exc.hint = (
                    "a plugin file must be a VST3 plugin built for this platform (pedalboard loads VST3 on Linux, "
                    "not LV2 or LADSPA: use lv2 or ladspa elements for those)"
                )
            else:
                exc.hint = "check the element's parameter names and values against the plugin's"
        elif "killed by signal" in exc.reason:
            exc.reason += ": a plugin crashed"
            exc.hint = (
                "the plugin crashed in its own process and the other variants were rendered; report it to its author"
            )
        raise
    samples, out_rate = parse_wav(out.stdout, what)
    return samples, out_rate, out.seconds


def apply_plugins(
    info: FFmpegInfo | None, spec: VariantSpec, ref: Reference, timeout: float, timings: dict
) -> Reference:
    """``ref`` through the spec's chain, stage by stage in order; the result as a :class:`Reference`
    (same name and gain) for the rest of the rendering. ``timings["plugins"]``: seconds."""
    assert spec.plugins
    resolved = [resolve_element(e, spec.base_dir, timeout=timeout) for e in spec.plugins]
    x, rate = ref.samples, ref.rate
    start = time.perf_counter()
    for group in _groups(resolved):
        if _needs_ffmpeg(group[0].element):
            if info is None:
                raise EncoderUnavailable("the plugin chain needs ffmpeg and none was resolved")
            x, rate, _ = _run_ffmpeg(info, group, x, rate, timeout)
        else:
            x, rate, _ = _run_pedalboard(group, x, rate, timeout)
        if x.shape[0] == 0:
            raise DecoderEmpty(f"the plugins {_names(group)} produced no samples")
        if not np.isfinite(x).all():
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise InvalidSamples(f"the plugins {_names(group)} produced {bad} NaN or infinite samples")
        if x.shape[1] > 8:
            raise EncoderFailed(f"the plugins {_names(group)} produced {x.shape[1]} channels (at most 8)")
    timings["plugins"] = time.perf_counter() - start
    return Reference(np.ascontiguousarray(x, dtype=np.float32), int(rate), ref.name, ref.gain_db)
