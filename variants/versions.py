"""Versions: of the encoder behind a spec (part of every result's key), and of the tools.

:func:`encoder_version` needs no rendering, so a runner can build a result's key and skip
work already in the store before anything is encoded.
"""

from __future__ import annotations

import os
from importlib import metadata

from .errors import EncoderUnavailable, VariantError
from .external import external_version
from .ffmpeg import FFmpegInfo, encoder_library_version, ffmpeg_info, resolve_ffmpeg
from .plugin_spec import PedalboardElement
from .plugins import plugins_version
from .specs import VariantSpec

__all__ = ["encoder_version", "spec_ffmpeg", "tool_versions", "uses_ffmpeg"]


def uses_ffmpeg(spec: VariantSpec) -> bool:
    """Whether rendering ``spec`` runs ffmpeg (always, except an external encoder and decoder
    with no effects, no LV2, LADSPA or ffmpeg plugin elements and no change of rate or channels)."""
    if spec.kind != "external":
        return True
    chain = any(not isinstance(e, PedalboardElement) for e in spec.plugins or ())
    return bool(spec.effects or spec.post_effects or chain or not spec.decode or spec.sample_rate or spec.channels)


def spec_ffmpeg(spec: VariantSpec, ffmpeg: str | os.PathLike | None = None) -> FFmpegInfo:
    """The ffmpeg a spec renders with: its own, else ``ffmpeg``, else the default resolution."""
    if spec.ffmpeg:
        return ffmpeg_info(resolve_ffmpeg(spec.ffmpeg, base_dir=spec.base_dir))
    return ffmpeg_info(resolve_ffmpeg(ffmpeg))


def encoder_version(spec: VariantSpec, ffmpeg: str | os.PathLike | None = None, *, timeout: float = 30.0) -> str:
    """The version string recorded with every variant rendered from ``spec``.

    - ffmpeg codec: ``ffmpeg 5.1.9-0+deb12u1 (libavcodec 59.37.100); libmp3lame 3.100``
      (the library part when it can be found);
    - effects only: ``ffmpeg 5.1.9-0+deb12u1 (libavcodec …); libavfilter 8.44.100``;
    - external coder: its ``version`` output, or ``sha256 my-enc:<hex>, …``; followed by the
      ffmpeg line when ffmpeg takes part;
    - with ``plugins``, followed by ``plugins: `` and, per element in chain order, the plugin
      binary's sha256 (12 hex digits) and its Debian package (``swh-lv2=1.0.16…``) when dpkg
      knows it, or pedalboard's version (``libavfilter`` is added when ffmpeg runs elements):
      ``…; plugins: lv2 <http://plugin.org.uk/swh-plugins/sc4> sc4-swh.lv2/plugin-linux.so
      sha256:<12 hex> ttl:<12 hex> swh-lv2=<version>, pedalboard 0.9.26 Compressor``
      (``ttl:``: the LV2 bundle's Turtle files, which hold the port defaults). Controls and
      parameters are not in it: they are in the spec's id.

    Raises :class:`EncoderUnavailable` when the tools are missing, or a plugin is not found
    (naming it, the folders searched and the package to install).
    """
    try:
        info = None
        if spec.kind == "external":
            text = external_version(spec, timeout=timeout)
            if uses_ffmpeg(spec):
                info = spec_ffmpeg(spec, ffmpeg)
                text += "; " + info.line
        else:
            info = spec_ffmpeg(spec, ffmpeg)
            if spec.kind == "effects":
                lavfi = info.libraries.get("libavfilter")
                text = info.line + (f"; libavfilter {lavfi}" if lavfi else "")
            else:
                assert spec.codec is not None
                lib = encoder_library_version(info, spec.codec, timeout=timeout)
                text = info.line + (f"; {lib}" if lib else "")
        if spec.plugins:
            text += "; " + plugins_version(spec, info, timeout=timeout, libavfilter="libavfilter" not in text)
        return text
    except VariantError as exc:
        exc.spec_label, exc.spec_id = spec.label, spec.id
        raise


def tool_versions(ffmpeg: str | os.PathLike | None = None) -> dict[str, str | None]:
    """Versions of everything variants uses: ffmpeg (path, version, libraries) and the Python
    packages. A missing ffmpeg is reported as None with the reason, not raised."""
    out: dict[str, str | None] = {}
    try:
        info = ffmpeg_info(resolve_ffmpeg(ffmpeg))
        out["ffmpeg"] = info.version
        out["ffmpeg_path"] = info.path
        out.update(info.libraries)
    except EncoderUnavailable as exc:
        out["ffmpeg"] = None
        out["ffmpeg_error"] = exc.reason
    for dist in ("numpy", "scipy", "soxr", "pyloudnorm", "soundfile", "pydantic", "imageio-ffmpeg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import soundfile

        out["libsndfile"] = soundfile.__libsndfile_version__
    except (ImportError, OSError, AttributeError):
        out["libsndfile"] = None
    return out
