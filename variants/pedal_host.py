"""The child process that runs pedalboard elements of a plugin chain (see :mod:`.plugins`).

Plugins run here, never in the bench's process: a plugin that crashes (a segfault), raises or
hangs takes only this process down, and the parent turns that into a :class:`VariantError`
with the exit signal, the plugin's message or the timeout. The parent starts it by file path
with ``python -P`` (so that ``jndqa.variants`` and its scipy imports are not loaded, and the
folder of this file, whose ``codecs.py`` would shadow the standard library's, is not put on
``sys.path``); ``python -m jndqa.variants.pedal_host`` works the same.

Protocol:

- ``pedal_host.py --info``: prints JSON ``{"pedalboard": VERSION, "builtins": {Class: [parameter,
  …]}}``, the built-in effects and their parameter names;
- ``pedal_host.py --rate R --channels C --chain JSON``: reads interleaved float32 little-endian
  samples on stdin, runs the chain (a JSON list of ``{"pedalboard": NAME_OR_ABSOLUTE_PATH,
  "parameters": {...}, "name": PLUGIN}``) and writes a float32 WAV file on stdout.

On an error it writes one line ``jndqa-pedalboard: element N (NAME): Type: message`` last on
stderr and exits with status 3. Standard library, numpy and pedalboard only.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

ERROR_PREFIX = "jndqa-pedalboard: "
ERROR_STATUS = 3
# Classes of pedalboard that are not effects one can name in a chain.
_NOT_EFFECTS = {"Plugin", "ExternalPlugin", "VST3Plugin", "AudioUnitPlugin", "PluginContainer", "Pedalboard",
                "Chain", "Mix"}  # fmt: skip


def builtins() -> dict[str, list[str]]:
    """Built-in effect classes of pedalboard and their parameter names (properties)."""
    import pedalboard

    out = {}
    for name in dir(pedalboard):
        cls = getattr(pedalboard, name)
        if not isinstance(cls, type) or name in _NOT_EFFECTS or name.startswith("_"):
            continue
        if not issubclass(cls, pedalboard.Plugin):
            continue
        params = [p for p in dir(cls) if isinstance(getattr(cls, p, None), property) and not p.startswith("_")]
        out[name] = sorted(set(params) - {"is_effect", "is_instrument"})
    return out


def _fail(message: str) -> None:
    sys.stderr.write("\n" + ERROR_PREFIX + " ".join(message.split()).rstrip(".") + "\n")
    sys.stderr.flush()
    raise SystemExit(ERROR_STATUS)


def _load(index: int, element: dict):
    import pedalboard

    target = element["pedalboard"]
    params = element.get("parameters") or {}
    where = f"element {index + 1} ({target})"
    if element.get("file"):
        try:
            kwargs = {"plugin_name": element["name"]} if element.get("name") else {}
            return pedalboard.load_plugin(target, parameter_values=params, **kwargs)
        except Exception as exc:
            _fail(f"{where}: {type(exc).__name__}: {exc}")
    known = builtins()
    if target not in known:
        _fail(f"{where}: pedalboard has no built-in effect {target!r}; it has: {', '.join(sorted(known))}")
    unknown = sorted(set(params) - set(known[target]))
    if unknown:
        _fail(
            f"{where}: {target} has no parameter {', '.join(unknown)}; its parameters are: {', '.join(known[target])}"
        )
    try:
        return getattr(pedalboard, target)(**params)
    except Exception as exc:
        _fail(f"{where}: {type(exc).__name__}: {exc}")


def wav_header(frames: int, channels: int, rate: int) -> bytes:
    """A 44-byte WAVE_FORMAT_IEEE_FLOAT header for ``frames`` × ``channels`` float32 samples."""
    data = frames * channels * 4
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    head = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    return head + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data)


def run_chain(rate: int, channels: int, chain: list[dict]) -> None:
    import numpy as np
    import pedalboard

    raw = sys.stdin.buffer.read()
    x = np.frombuffer(raw, dtype="<f4").reshape(-1, channels).T.astype(np.float32)  # [C, L]
    plugins = [_load(i, e) for i, e in enumerate(chain)]
    try:
        y = pedalboard.Pedalboard(plugins)(np.ascontiguousarray(x), float(rate), reset=True)
    except Exception as exc:
        _fail(f"processing: {type(exc).__name__}: {exc}")
    y = np.asarray(y, dtype="<f4")
    if y.ndim == 1:
        y = y[None, :]
    out = np.ascontiguousarray(y.T)
    sys.stdout.buffer.write(wav_header(out.shape[0], out.shape[1], rate))
    sys.stdout.buffer.write(out.tobytes())
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run pedalboard effects on float32 samples (stdin -> WAV stdout).")
    parser.add_argument("--info", action="store_true", help="print pedalboard's version and built-in effects")
    parser.add_argument("--rate", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--chain", help="JSON list of pedalboard elements")
    args = parser.parse_args(argv)
    try:
        import pedalboard
    except ImportError as exc:
        _fail(f"pedalboard is not installed: {exc}")
    if args.info:
        print(json.dumps({"pedalboard": pedalboard.__version__, "builtins": builtins()}))
        return
    if not (args.rate and args.channels and args.chain):
        parser.error("--rate, --channels and --chain are required (or --info)")
    run_chain(args.rate, args.channels, json.loads(args.chain))


if __name__ == "__main__":
    main()
