"""The elements of a variant's ``plugins:`` chain (docs/config.md "plugins"): parsing and naming.

A chain is a list applied in order, before the spec's ``effects``, its codec and its
``post_effects``. Each element is exactly one of:

- ``{lv2: URI, controls: {symbol: number}}``: an LV2 plugin, through ffmpeg's ``lv2`` filter;
- ``{ladspa: FILE, name: LABEL, controls: {c0: number}}``: a LADSPA plugin, through ffmpeg's
  ``ladspa`` filter. ``FILE`` is a library name (``sc4_1882``, looked up in ``LADSPA_PATH``) or a
  path; ``name`` is the plugin's label in it; controls are by index (``c0``, ``c1``, … or ``0``,
  ``1``, …), as ffmpeg's ``ladspa`` filter takes them;
- ``{pedalboard: NAME_OR_PATH, parameters: {name: value}, name: PLUGIN}``: Spotify's pedalboard,
  a built-in effect by class name (``Compressor``) or a plugin file (``.vst3``); ``name`` picks one
  plugin of a multi-plugin file;
- ``{ffmpeg: FILTERGRAPH}``: ffmpeg effects between plugins (a linear chain: no ``;``).

Parsing normalises (numbers become floats, ``controls: {}`` is no controls, ``sc4_1882.so`` is
``sc4_1882``, LADSPA control ``3`` is ``c3``) so that equal chains give equal spec ids; bad
elements raise ``ValueError`` naming the element and the key, with a did-you-mean for unknown
keys. Nothing here touches the file system: finding plugins is :mod:`.plugins`' job.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "KINDS",
    "PLUGIN_SUFFIXES",
    "FFmpegElement",
    "LADSPAElement",
    "LV2Element",
    "PedalboardElement",
    "PluginElement",
    "describe",
    "element_kind",
    "element_name",
    "is_plugin_file",
    "parse_element",
    "parse_plugins",
]

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an LV2 port symbol, a Python identifier
_LADSPA_CONTROL = re.compile(r"^c?(\d+)$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
_BUILTIN = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# Files pedalboard may be asked to load (it loads VST3 on Linux; Audio Units on macOS only).
PLUGIN_SUFFIXES = (".vst3", ".component", ".so", ".dll", ".dylib", ".lv2", ".vst")


class _Element(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LV2Element(_Element):
    """``{lv2: URI, controls: {symbol: number}}``."""

    lv2: str
    controls: dict[str, float] | None = None


class LADSPAElement(_Element):
    """``{ladspa: FILE, name: LABEL, controls: {cN: number}}``."""

    ladspa: str
    name: str
    controls: dict[str, float] | None = None


class PedalboardElement(_Element):
    """``{pedalboard: NAME_OR_PATH, parameters: {name: value}, name: PLUGIN}``."""

    pedalboard: str
    parameters: dict[str, float | bool | str] | None = None
    name: str | None = None


class FFmpegElement(_Element):
    """``{ffmpeg: FILTERGRAPH}``."""

    ffmpeg: str


PluginElement = LV2Element | LADSPAElement | PedalboardElement | FFmpegElement

#: kind key -> (model, its keys, the element's syntax for messages)
KINDS: dict[str, tuple[type[_Element], tuple[str, ...], str]] = {
    "lv2": (LV2Element, ("lv2", "controls"), "{lv2: URI, controls: {symbol: number}}"),
    "ladspa": (LADSPAElement, ("ladspa", "name", "controls"), "{ladspa: FILE, name: LABEL, controls: {c0: number}}"),
    "pedalboard": (
        PedalboardElement,
        ("pedalboard", "parameters", "name"),
        "{pedalboard: NAME_OR_PATH, parameters: {name: value}}",
    ),
    "ffmpeg": (FFmpegElement, ("ffmpeg",), "{ffmpeg: FILTERGRAPH}"),
}
_SYNTAX = "; ".join(syntax for _, _, syntax in KINDS.values())


def is_plugin_file(name: str) -> bool:
    """Whether a pedalboard element names a file (a path or a plugin file name) rather than a
    built-in effect class."""
    return "/" in name or name.lower().endswith(PLUGIN_SUFFIXES)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be {what}, not {value!r}")
    return value.strip()


def _mapping(value: Any, where: str) -> Mapping | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of names to values, not {value!r}")
    return value


def _unknown_key(key: str, kind: str, where: str) -> str:
    own = KINDS[kind][1]
    close = difflib.get_close_matches(key, own, n=1)
    if close:
        hint = f" (did you mean {close[0]!r}?)"
    else:
        owners = [k for k, (_, keys, _) in KINDS.items() if key in keys and k != kind]
        hint = f" ({key!r} belongs to {owners[0]} elements)" if owners else ""
    article = "an" if kind in ("lv2", "ladspa", "ffmpeg") else "a"
    return f"{where}: unknown key {key!r}{hint}; {article} {kind} element's keys are: {', '.join(own)}"


def _lv2(e: Mapping, where: str) -> dict:
    uri = _text(e["lv2"], f"{where}.lv2", "the plugin's URI (e.g. http://plugin.org.uk/swh-plugins/sc4)")
    if not _URI.match(uri):
        raise ValueError(f"{where}.lv2: {uri!r} is not a URI; an LV2 plugin is named by its URI (lv2ls lists them)")
    controls = {}
    for k, v in (_mapping(e.get("controls"), f"{where}.controls") or {}).items():
        if not isinstance(k, str) or not _SYMBOL.match(k):
            raise ValueError(f"{where}.controls: {k!r} is not an LV2 port symbol (letters, digits, _)")
        controls[k] = _number(v, f"{where}.controls.{k}")
    return {"lv2": uri, "controls": controls or None}


def _ladspa(e: Mapping, where: str) -> dict:
    file = _text(e["ladspa"], f"{where}.ladspa", "a LADSPA library name (sc4_1882) or a path")
    if "/" not in file:
        file = file.removesuffix(".so")
    if "name" not in e or e["name"] is None:
        raise ValueError(
            f"{where}: a ladspa element needs name: the plugin's label in {file!r} "
            "(listplugins or analyseplugin from ladspa-sdk list them)"
        )
    label = _text(e["name"], f"{where}.name", "the plugin's label")
    controls = {}
    for k, v in (_mapping(e.get("controls"), f"{where}.controls") or {}).items():
        m = _LADSPA_CONTROL.match(str(k)) if not isinstance(k, bool) else None
        if not m:
            raise ValueError(
                f"{where}.controls: {k!r} is not a LADSPA control index; write c0, c1, … "
                "(the order analyseplugin or ffmpeg's ladspa=…:c=help print)"
            )
        controls[f"c{int(m.group(1))}"] = _number(v, f"{where}.controls.{k}")
    return {"ladspa": file, "name": label, "controls": controls or None}


def _pedalboard(e: Mapping, where: str) -> dict:
    target = _text(e["pedalboard"], f"{where}.pedalboard", "a built-in effect's class name or a plugin file")
    if not is_plugin_file(target) and not _BUILTIN.match(target):
        raise ValueError(
            f"{where}.pedalboard: {target!r} is neither a built-in effect's class name (Compressor, Reverb, Gain, …) "
            f"nor a plugin file (a path, or a name ending in {', '.join(PLUGIN_SUFFIXES[:2])})"
        )
    params: dict[str, float | bool | str] = {}
    for k, v in (_mapping(e.get("parameters"), f"{where}.parameters") or {}).items():
        if not isinstance(k, str) or not _SYMBOL.match(k):
            raise ValueError(
                f"{where}.parameters: {k!r} is not a parameter name (pedalboard's names: letters, digits, _)"
            )
        if isinstance(v, bool):
            params[k] = v
        elif isinstance(v, str):
            params[k] = _text(v, f"{where}.parameters.{k}", "a number, a boolean or a non-empty string")
        else:
            params[k] = _number(v, f"{where}.parameters.{k}")
    name = e.get("name")
    if name is not None:
        name = _text(name, f"{where}.name", "the name of one plugin in a multi-plugin file")
        if not is_plugin_file(target):
            raise ValueError(f"{where}.name picks a plugin in a plugin file; {target!r} is a built-in effect")
    return {"pedalboard": target, "parameters": params or None, "name": name}


def _ffmpeg(e: Mapping, where: str) -> dict:
    graph = _text(e["ffmpeg"], f"{where}.ffmpeg", "an ffmpeg filter graph (e.g. volume=-6dB)")
    from .specs import _split_top

    if len(_split_top(graph, ";")) > 1:
        raise ValueError(f"{where}.ffmpeg: a chain element is a linear filter chain (filters joined by ','), not ';'")
    return {"ffmpeg": graph}


_PARSERS = {"lv2": _lv2, "ladspa": _ladspa, "pedalboard": _pedalboard, "ffmpeg": _ffmpeg}


def parse_element(entry: Any, where: str) -> PluginElement:
    """One element of a chain, normalised; ``ValueError`` naming ``where`` when it is bad."""
    if isinstance(entry, _Element):
        return entry  # type: ignore[return-value]
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping, one of: {_SYNTAX}; not {entry!r}")
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) > 1:
        raise ValueError(f"{where} has {' and '.join(map(repr, kinds))}; each element is exactly one of: {_SYNTAX}")
    if not kinds:
        for key in entry:
            close = difflib.get_close_matches(str(key), list(KINDS), n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
                raise ValueError(f"{where}: unknown key {key!r} ({hint}); an element is one of: {_SYNTAX}")
        raise ValueError(f"{where} names no plugin; an element is one of: {_SYNTAX}")
    kind = kinds[0]
    model, keys, _ = KINDS[kind]
    for key in entry:
        if key not in keys:
            raise ValueError(_unknown_key(str(key), kind, where))
    return model(**_PARSERS[kind](entry, where))


def parse_plugins(value: Any) -> tuple[PluginElement, ...] | None:
    """The ``plugins:`` value of a spec, normalised; None when unset. Raises ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, Mapping) or isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"plugins must be a list (a chain applied in order) of elements, each one of: {_SYNTAX}")
    if not value:
        raise ValueError("plugins is empty; give at least one element, or leave plugins out")
    return tuple(parse_element(e, f"plugins[{i}]") for i, e in enumerate(value))


def element_name(element: PluginElement | Mapping) -> str:
    """A short name for labels and messages: ``sc4`` (LV2 URI's last segment, or the LADSPA
    label), ``Compressor`` (pedalboard built-in), ``MyComp`` (a plugin file's stem), or the
    filter names of an ffmpeg element (``volume + highpass``)."""
    e = element.model_dump() if isinstance(element, _Element) else dict(element)
    if isinstance(e.get("lv2"), str):
        tail = re.split(r"[/#:]", e["lv2"].rstrip("/#"))[-1]
        return tail or e["lv2"]
    if isinstance(e.get("ladspa"), str):
        return str(e.get("name") or PurePosixPath(e["ladspa"]).name)
    if isinstance(e.get("pedalboard"), str):
        target = e["pedalboard"]
        if e.get("name"):
            return str(e["name"])
        return PurePosixPath(target.rstrip("/")).stem if is_plugin_file(target) else target
    if isinstance(e.get("ffmpeg"), str):
        from .specs import filter_names

        return " + ".join(filter_names(e["ffmpeg"])) or "ffmpeg"
    return "plugin"


def element_kind(element: PluginElement) -> str:
    """``lv2``, ``ladspa``, ``pedalboard`` or ``ffmpeg``."""
    for kind, (model, _, _) in KINDS.items():
        if isinstance(element, model):
            return kind
    raise TypeError(f"not a plugin element: {element!r}")


def describe(element: PluginElement) -> str:
    """``lv2 <URI>``, ``ladspa sc4_1882 (sc4)``, ``pedalboard Compressor``, ``ffmpeg volume=-6dB``."""
    if isinstance(element, LV2Element):
        return f"lv2 <{element.lv2}>"
    if isinstance(element, LADSPAElement):
        return f"ladspa {element.ladspa} ({element.name})"
    if isinstance(element, PedalboardElement):
        return f"pedalboard {element.pedalboard}" + (f" ({element.name})" if element.name else "")
    return f"ffmpeg {element.ffmpeg}"
