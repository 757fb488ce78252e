"""Variant specs: the entries of the run config's ``variants:`` list (docs/config.md "variants").

A spec is one of three kinds:

- an ffmpeg codec (``codec``: an ffmpeg encoder name such as ``libmp3lame``, ``libopus``,
  ``aac``), with ``bitrate`` or ``quality``, ``options``, ``container``;
- an external coder (``encode``/``decode`` argument lists, optional ``version``);
- effects only (``effects``: an ffmpeg filter graph, and/or ``plugins``, no codec).

Any kind takes ``plugins`` (a chain of LV2, LADSPA, pedalboard and ffmpeg elements applied in
order before everything else: :mod:`.plugin_spec`), ``effects`` (applied before the codec),
``post_effects`` (after decoding),
``sample_rate`` and ``channels`` (the coded stream's; the result is always brought back to
the reference's) and ``ffmpeg`` (another ffmpeg binary for this spec).

Values are normalised on parsing (``bitrate: 128k`` becomes ``128000``; a codec's default
container is filled in), so that two specs that render the same have the same :attr:`id`:
the first 16 hex digits of the sha256 of the sorted-key JSON of the normalised fields, the
label excluded. A field left unset is left out of that JSON, so adding optional fields to this
model later does not change existing ids.

Placeholders in ``encode``/``decode``: ``{input}``, ``{output}``, ``{bitrate}`` (bits per
second, e.g. ``48000``), ``{kbps}`` (kilobits per second, e.g. ``48``), ``{rate}`` and
``{channels}`` (of the WAV file handed to the encoder). Arguments are lists and never go
through a shell.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from .codecs import CODEC_DEFAULTS, CONTAINER_ALIASES, default_container, friendly_codec
from .errors import SpecError
from .plugin_spec import PluginElement, element_name, parse_plugins

__all__ = ["PLACEHOLDERS", "VariantSpec", "filter_names", "format_bitrate", "parse_variants"]

PLACEHOLDERS = frozenset({"input", "output", "bitrate", "kbps", "rate", "channels"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_:.\-]*$")
_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmM]?)(?:bps|b/s)?$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kK]?)(?:Hz)?$")
# ffmpeg arguments that dedicated fields set; ``options`` may not override them.
_RESERVED_OPTIONS = {
    "b": "bitrate",
    "b:a": "bitrate",
    "q": "quality",
    "q:a": "quality",
    "qscale:a": "quality",
    "ar": "sample_rate",
    "ac": "channels",
    "c": "codec",
    "c:a": "codec",
    "acodec": "codec",
    "codec:a": "codec",
    "f": "container",
    "af": "effects",
    "filter:a": "effects",
    "i": None,
    "y": None,
    "map": None,
}


def format_bitrate(bps: int) -> str:
    """``128000`` -> ``"128k"``; ``64500`` -> ``"64.5k"``."""
    k = bps / 1000
    return f"{k:g}k"


def _parse_bitrate(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"bitrate must be a number or a string such as '128k', not {value!r}")
    if isinstance(value, int | float):
        bps = float(value)
    elif isinstance(value, str):
        m = _BITRATE.match(value.strip())
        if not m:
            raise ValueError(f"bitrate {value!r} is not understood; write it as e.g. '128k', '1.5M' or 128000")
        bps = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    else:
        raise ValueError(f"bitrate must be a number or a string such as '128k', not {value!r}")
    if bps != round(bps) or bps < 1000:
        raise ValueError(f"bitrate {value!r} is {bps:g} bits/s; write kilobits with a k suffix, e.g. '128k'")
    return round(bps)


def _parse_rate(value: Any) -> Any:
    """``"44.1k"``, ``"16 kHz"``, ``"48000"`` -> an int in Hz; anything else is left to pydantic."""
    if isinstance(value, str):
        m = _RATE.match(value.strip())
        if not m:
            raise ValueError(f"sample_rate {value!r} is not understood; write it in Hz (48000) or kHz ('44.1k')")
        hz = float(m.group(1)) * (1000 if m.group(2) else 1)
        if hz != round(hz):
            raise ValueError(f"sample_rate {value!r} is not a whole number of Hz")
        return round(hz)
    return value


def _format_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _option_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return _format_number(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"options.{key} must be a string, number or boolean, not {value!r}")


def _split_top(graph: str, seps: str) -> list[str]:
    """Split a filter graph on ``seps`` outside quotes, brackets and backslash escapes."""
    out, cur, quote, depth, i = [], [], False, 0, 0
    while i < len(graph):
        c = graph[i]
        if c == "\\" and i + 1 < len(graph):
            cur.append(graph[i : i + 2])
            i += 2
            continue
        if c == "'":
            quote = not quote
        elif not quote and c == "[":
            depth += 1
        elif not quote and c == "]":
            depth = max(depth - 1, 0)
        if c in seps and not quote and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def filter_names(graph: str) -> list[str]:
    """The filter names of an ffmpeg filter graph, in order: ``"highpass=f=120,volume=-6dB"`` ->
    ``["highpass", "volume"]``."""
    names = []
    for part in _split_top(graph, ",;"):
        part = re.sub(r"^\s*(\[[^\]]*\]\s*)*", "", part)
        name = re.split(r"[=@\[\s]", part.strip(), maxsplit=1)[0]
        if name:
            names.append(name)
    return names


def _clean_str(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _argv(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(
            f"{field} must be a list of arguments, e.g. ['./bin/enc', '{{input}}', '{{output}}'], "
            "not a string (nothing goes through a shell)"
        )
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"{field} must be a non-empty list of arguments")
    args = []
    for a in value:
        if isinstance(a, bool) or not isinstance(a, str | int | float):
            raise ValueError(f"{field}: argument {a!r} is not a string")
        args.append(a if isinstance(a, str) else _format_number(a))
    return tuple(args)


class VariantSpec(BaseModel):
    """One variant: a codec and/or effects applied to every corpus item. See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = None
    codec: str | None = None
    bitrate: int | None = None  # bits per second
    quality: float | None = None  # ffmpeg -q:a (libmp3lame 0..9, libvorbis -1..10, aac 0.1..2)
    sample_rate: int | None = None  # of the coded stream
    channels: int | None = None  # of the coded stream
    options: dict[str, str] | None = None  # extra encoder options: {"compression_level": "10"} -> -compression_level 10
    container: str | None = None  # an ffmpeg muxer name; a file extension for external encoders
    effects: str | None = None  # ffmpeg filter graph before the codec
    post_effects: str | None = None  # ffmpeg filter graph after decoding
    ffmpeg: str | None = None  # another ffmpeg binary for this spec
    encode: tuple[str, ...] | None = None
    decode: tuple[str, ...] | None = None
    version: tuple[str, ...] | None = None
    wav_format: Literal["pcm16", "pcm24", "float"] | None = None  # WAV handed to an external encoder
    plugins: tuple[PluginElement, ...] | None = None  # a chain applied before effects (see .plugin_spec)

    _base_dir: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        d = {k: _clean_str(v) for k, v in data.items()}
        for key in ("codec", "container"):
            if d.get(key) is not None:
                if not isinstance(d[key], str) or not _NAME.match(d[key]):
                    raise ValueError(f"{key} {d[key]!r} is not an ffmpeg name (letters, digits, _ . -)")
        if d.get("container") is not None:
            d["container"] = CONTAINER_ALIASES.get(d["container"].lower(), d["container"])
        if d.get("bitrate") is not None:
            d["bitrate"] = _parse_bitrate(d["bitrate"])
        if d.get("sample_rate") is not None:
            d["sample_rate"] = _parse_rate(d["sample_rate"])
        for key in ("encode", "decode", "version"):
            d[key] = _argv(d.get(key), key)
        if "plugins" in d:
            d["plugins"] = parse_plugins(d["plugins"])
        if d.get("options") is not None:
            opts = d["options"]
            if not isinstance(opts, Mapping):
                raise ValueError("options must be a mapping of encoder option names to values")
            clean = {}
            for k, v in opts.items():
                k = str(k).lstrip("-")
                if not _OPTION_KEY.match(k):
                    raise ValueError(f"options: {k!r} is not an ffmpeg option name")
                if k in _RESERVED_OPTIONS:
                    field = _RESERVED_OPTIONS[k]
                    raise ValueError(
                        f"options: -{k} is set by the pipeline" + (f"; use the spec's {field!r} field" if field else "")
                    )
                clean[k] = _option_value(k, v)
            d["options"] = clean or None
        codec = d.get("codec")
        if d.get("label") is None:
            d["label"] = _derive_label(d)
        if isinstance(codec, str):
            d.setdefault("container", None)
            if d["container"] is None:
                d["container"] = default_container(codec)
            for key, value in CODEC_DEFAULTS.get(codec, {}).items():
                if d.get(key) is None:
                    d[key] = value
        if d.get("encode") is not None and d.get("wav_format") is None:
            d["wav_format"] = "pcm16"
        return d

    @model_validator(mode="after")
    def _check(self) -> VariantSpec:
        if self.codec and self.encode:
            raise ValueError("codec and encode are exclusive: a spec uses an ffmpeg encoder or an external one")
        if self.decode and not self.encode:
            raise ValueError("decode needs encode (an external decoder reads the external encoder's output)")
        if self.version and not self.encode:
            raise ValueError("version is the version command of an external encoder; it needs encode")
        if self.bitrate is not None and self.quality is not None:
            raise ValueError("bitrate and quality are exclusive; give one")
        if not (self.codec or self.encode or self.effects or self.post_effects or self.plugins):
            raise ValueError(
                "a variant needs a codec, an external encode command, effects or plugins "
                "(for an identity anchor, write effects: anull)"
            )
        if not (self.codec or self.encode):
            for key in ("bitrate", "quality", "options", "container"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} needs a codec (or an external encoder); this spec has only effects")
        if self.encode:
            if self.options is not None:
                raise ValueError("options are ffmpeg encoder options; put an external encoder's options in encode")
            if self.quality is not None:
                raise ValueError("quality applies to ffmpeg encoders; put an external encoder's quality in encode")
        elif self.wav_format is not None:
            raise ValueError("wav_format is the WAV format handed to an external encoder; this spec has none")
        if self.sample_rate is not None and not 1000 <= self.sample_rate <= 768000:
            raise ValueError(f"sample_rate {self.sample_rate} is out of range (1000..768000 Hz)")
        if self.channels is not None and not 1 <= self.channels <= 8:
            raise ValueError(f"channels {self.channels} is out of range (1..8)")
        for key in ("encode", "decode"):
            args = getattr(self, key)
            if args is None:
                continue
            used = {name for a in args for name in _PLACEHOLDER.findall(a)}
            unknown = used - PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"{key}: unknown placeholder(s) {sorted(unknown)}; the placeholders are {sorted(PLACEHOLDERS)}"
                )
            missing = {"input", "output"} - used
            if missing:
                raise ValueError(f"{key} must contain {{input}} and {{output}}; missing {sorted(missing)}")
            if used & {"bitrate", "kbps"} and self.bitrate is None:
                raise ValueError(f"{key} uses {{bitrate}}/{{kbps}} but the spec has no bitrate")
        if self.version is not None and any(_PLACEHOLDER.search(a) for a in self.version):
            raise ValueError("version takes no placeholders")
        return self

    # --- identity -----------------------------------------------------------------------------

    def canonical(self) -> str:
        """The sorted-key JSON of the normalised fields, label excluded: what :attr:`id` hashes."""
        fields = self.model_dump(mode="json", exclude={"label"}, exclude_none=True)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def id(self) -> str:
        """Stable identity: 16 hex digits of the sha256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    @property
    def kind(self) -> Literal["ffmpeg", "external", "effects"]:
        if self.codec:
            return "ffmpeg"
        if self.encode:
            return "external"
        return "effects"

    @property
    def base_dir(self) -> str | None:
        """The folder external commands run in and relative paths resolve against (the config's
        folder, when parsed with :func:`parse_variants`); None: the current directory."""
        return self._base_dir

    def with_base_dir(self, base_dir: str | Path | None) -> VariantSpec:
        spec = self.model_copy()
        spec._base_dir = None if base_dir is None else str(base_dir)
        return spec

    def ffmpeg_args(self) -> list[str]:
        """The encoder arguments of an ffmpeg-codec spec: ``-c:a``, bitrate or quality, options."""
        if not self.codec:
            return []
        args = ["-c:a", self.codec]
        if self.bitrate is not None:
            args += ["-b:a", str(self.bitrate)]
        if self.quality is not None:
            args += ["-q:a", _format_number(self.quality)]
        for k, v in (self.options or {}).items():
            args += [f"-{k}", v]
        return args


def _derive_label(d: Mapping[str, Any]) -> str:
    parts = []
    if isinstance(d.get("codec"), str):
        parts.append(friendly_codec(d["codec"]))
    elif d.get("encode"):
        name = Path(d["encode"][0]).name
        parts.append(re.sub(r"\.(py|sh|exe)$", "", name))
    if d.get("bitrate") is not None:
        parts.append(format_bitrate(d["bitrate"]))
    if d.get("quality") is not None:
        try:
            parts.append(f"q{_format_number(float(d['quality']))}")
        except (TypeError, ValueError):
            pass
    if isinstance(d.get("sample_rate"), int):
        parts.append(f"{d['sample_rate'] / 1000:g}kHz")
    if d.get("channels") == 1:
        parts.append("mono")
    label = " ".join(parts)
    before = [element_name(e) for e in d.get("plugins") or ()]
    if isinstance(d.get("effects"), str):
        before += filter_names(d["effects"])
    if before:
        names = " + ".join(before)
        label = f"{label} + {names}" if label else names
    if isinstance(d.get("post_effects"), str):
        names = " + ".join(filter_names(d["post_effects"]))
        label = f"{label}, then {names}" if label else names
    return label or "variant"


def _describe(exc: ValidationError, where: str) -> str:
    allowed = [f for f in VariantSpec.model_fields if not f.startswith("_")]
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{where}: unknown key {key!r}{hint}; the keys are: {', '.join(allowed)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}{'.' + loc if loc else ''}: {msg}")
    return "; ".join(lines)


def parse_variants(entries: Any, *, base_dir: str | Path | None = None) -> list[VariantSpec]:
    """Parse the run config's ``variants:`` list into specs.

    ``base_dir`` (the config file's folder) is where external commands run and relative paths
    such as ``./bin/my-enc`` resolve; it is not part of the id. Raises :class:`SpecError`
    naming the entry and the key: an unknown key, a bad value, contradictory fields, the same
    variant twice, or the same explicit label on two different variants. Two derived labels
    that collide get the id's first digits appended.
    """
    if isinstance(entries, Mapping) or isinstance(entries, str) or not isinstance(entries, Sequence):
        raise SpecError("variants must be a list of mappings (see docs/config.md, 'variants')")
    specs: list[VariantSpec] = []
    explicit: list[bool] = []
    for i, entry in enumerate(entries):
        where = f"variants[{i}]"
        if not isinstance(entry, Mapping):
            raise SpecError(f"{where}: each variant must be a mapping of keys to values, not {entry!r}")
        try:
            spec = VariantSpec.model_validate(entry)
        except ValidationError as exc:
            raise SpecError(_describe(exc, where)) from None
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{where}: {exc}") from None
        specs.append(spec.with_base_dir(base_dir))
        explicit.append(_clean_str(entry.get("label")) is not None)
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.id in seen:
            first = seen[spec.id]
            raise SpecError(f"variants[{first}] and variants[{i}] are the same variant (id {spec.id}); remove one")
        seen[spec.id] = i
    by_label: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_label.setdefault(spec.label or "", []).append(i)
    for label, idx in by_label.items():
        if len(idx) < 2:
            continue
        if sum(explicit[i] for i in idx) > 1:
            a, b = [i for i in idx if explicit[i]][:2]
            raise SpecError(f"variants[{a}] and variants[{b}] are different variants with the same label {label!r}")
        for i in idx:
            if not explicit[i]:
                specs[i] = specs[i].model_copy(update={"label": f"{label} ({specs[i].id[:6]})"})
    return specs
