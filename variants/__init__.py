"""Codecs and effects through ffmpeg: encode, decode, delay alignment, loudness, tool versions.

Turns a reference recording and a variant spec (an entry of the run config's ``variants:``
list) into decoded audio comparable sample for sample with the reference. Knows nothing of
the metric, the store or the flows. Nothing happens at import time beyond defining names.

>>> from jndqa.variants import parse_variants
>>> [spec] = parse_variants([{"codec": "libopus", "bitrate": "64k"}])
>>> spec.label, spec.bitrate, spec.container
('opus 64k', 64000, 'ogg')

Typical use::

    specs = parse_variants(config["variants"], base_dir=config_dir)
    reference = load_reference("corpus/speech.wav")
    for result in render_all(reference, specs):
        if isinstance(result, VariantError):
            record_failure(result.row())
        else:
            score(reference.samples, result.samples)   # same rate, channels and length
"""

from .align import Alignment, apply_offset, find_offset, match_channels
from .errors import (
    AlignmentFailed,
    DecoderEmpty,
    EncoderFailed,
    EncoderTimeout,
    EncoderUnavailable,
    InputError,
    InvalidSamples,
    SpecError,
    VariantError,
    VariantTooShort,
)
from .ffmpeg import FFmpegInfo, ffmpeg_info, resolve_ffmpeg
from .loudness import integrated_loudness, normalize_loudness
from .reference import Reference, load_reference
from .render import (
    DEFAULT_ANALYSIS_SECONDS,
    DEFAULT_MAX_LAG,
    DEFAULT_MIN_CORRELATION,
    RESAMPLER,
    RenderedVariant,
    render,
    render_all,
)
from .specs import PLACEHOLDERS, VariantSpec, parse_variants
from .versions import encoder_version, tool_versions

__all__ = [
    "DEFAULT_ANALYSIS_SECONDS",
    "DEFAULT_MAX_LAG",
    "DEFAULT_MIN_CORRELATION",
    "PLACEHOLDERS",
    "RESAMPLER",
    "Alignment",
    "AlignmentFailed",
    "DecoderEmpty",
    "EncoderFailed",
    "EncoderTimeout",
    "EncoderUnavailable",
    "FFmpegInfo",
    "InputError",
    "InvalidSamples",
    "Reference",
    "RenderedVariant",
    "SpecError",
    "VariantError",
    "VariantSpec",
    "VariantTooShort",
    "apply_offset",
    "encoder_version",
    "ffmpeg_info",
    "find_offset",
    "integrated_loudness",
    "load_reference",
    "match_channels",
    "normalize_loudness",
    "parse_variants",
    "render",
    "render_all",
    "resolve_ffmpeg",
    "tool_versions",
]
