"""Rendering: reference + spec -> decoded variant, comparable sample for sample with the reference.

Steps, each timed (``RenderedVariant.timings``, seconds):

0. ``plugins`` (only for a spec with a ``plugins`` chain): the reference through the chain, stage
   by stage in order (ffmpeg's ``lv2``/``ladspa`` filters; pedalboard in a child process, see
   :mod:`.plugins`); what comes out is what the next steps encode.
1. ``encode``: ffmpeg reads the reference as raw float32 from stdin, applies ``effects`` and
   the encoder, and writes the stream to a pipe (to a file in a private temporary folder for
   containers that need seeking, such as mp4/m4a; external encoders always get WAV files).
2. ``decode``: ffmpeg decodes the stream from the pipe (or file), applies ``post_effects``
   and writes float32 WAV to stdout; an external decoder writes a WAV file.
3. ``resample``: the decoded rate is brought back to the reference's with soxr (VHQ) and the
   channels to the reference's layout (mono copied to every channel, several averaged to one).
4. ``align``: the codec's known priming delay is removed and the residual offset verified and
   corrected by cross-correlation (:mod:`.align`); the end is trimmed or zero-padded to the
   reference's length.
5. ``loudness``: integrated loudness of reference and variant and their difference (LU);
   with ``match_loudness`` the variant is scaled to the reference's loudness.

A failure of any step is a typed :class:`VariantError` naming the item, the variant and the
reason; :func:`render_all` returns it in place of the result and renders the other variants.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .align import ENVELOPE_HOP_SECONDS, apply_offset, find_envelope_offset, find_offset, match_channels, spectrum_cache
from .coders import Decoded, effects_only, external_coder, ffmpeg_codec
from .errors import AlignmentFailed, DecoderEmpty, InputError, InvalidSamples, VariantError, VariantTooShort
from .loudness import db_to_gain, integrated_loudness
from .plugins import apply_plugins
from .reference import Reference, load_reference
from .specs import VariantSpec
from .versions import encoder_version, spec_ffmpeg, uses_ffmpeg

__all__ = [
    "DEFAULT_ANALYSIS_SECONDS",
    "DEFAULT_MAX_LAG",
    "DEFAULT_MIN_CORRELATION",
    "RESAMPLER",
    "RenderedVariant",
    "render",
    "render_all",
]

DEFAULT_MAX_LAG = 2048  # samples at the reference's rate, either side of the known priming delay
DEFAULT_MIN_CORRELATION = 0.5
DEFAULT_ANALYSIS_SECONDS = 5.0  # of the reference, for the lag search (its most energetic stretch)
RESAMPLE_QUALITY = "VHQ"
RESAMPLER = f"soxr {RESAMPLE_QUALITY}"


@dataclass(frozen=True, eq=False)
class RenderedVariant:
    """A decoded variant, aligned to its reference.

        ``samples``: float32 ``[L, C]`` at ``rate``, with the reference's length, rate and channels.
        ``offset``: samples (at ``rate``) dropped from the start of the decoded signal to align it
        (negative: zeros prepended); ``priming`` is the codec's known delay the search started from,
        so ``offset - priming`` is what the cross-correlation corrected. ``correlation``: normalised
        correlation at ``offset`` (None when the reference is silent), of the samples or, when
    ``alignment`` is "envelope", of the log-energy envelopes (a resynthesising codec). Loudness in LUFS
        (None when undefined); ``loudness_delta`` = variant − reference in LU, measured before
        ``loudness_gain`` (dB, applied by ``match_loudness``). ``reference_gain``: dB applied to the
        reference before encoding (:func:`normalize_loudness`). ``coded_rate``/``coded_channels``:
        of the decoded stream before resampling. ``transport``: ``pipe`` or ``files``.
    """

    item: str
    spec: VariantSpec
    samples: np.ndarray
    rate: int
    offset: int
    priming: int
    correlation: float | None
    alignment: str  # how it was aligned: "samples" (cross-correlation) or "envelope" (see .align)
    loudness_reference: float | None
    loudness_variant: float | None
    loudness_delta: float | None
    loudness_gain: float
    reference_gain: float
    encoder_version: str
    ffmpeg_version: str | None
    resampler: str | None
    coded_rate: int
    coded_channels: int
    encoded_bytes: int | None
    transport: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def spec_id(self) -> str:
        return self.spec.id

    @property
    def label(self) -> str:
        return self.spec.label or self.spec.id

    @property
    def bitrate(self) -> float | None:
        """The stream's actual average bitrate (bits/s, container included), when there is one."""
        if self.encoded_bytes is None:
            return None
        return self.encoded_bytes * 8 * self.rate / max(self.samples.shape[0], 1)

    def to_record(self) -> dict:
        """Everything but the samples, JSON-able (for the store and reports)."""
        return {
            "item": self.item,
            "spec_id": self.spec_id,
            "label": self.label,
            "spec": self.spec.model_dump(mode="json", exclude_none=True),
            "rate": self.rate,
            "frames": int(self.samples.shape[0]),
            "channels": int(self.samples.shape[1]),
            "offset": self.offset,
            "priming": self.priming,
            "correlation": self.correlation,
            "loudness_reference": self.loudness_reference,
            "loudness_variant": self.loudness_variant,
            "loudness_delta": self.loudness_delta,
            "loudness_gain": self.loudness_gain,
            "reference_gain": self.reference_gain,
            "encoder_version": self.encoder_version,
            "ffmpeg_version": self.ffmpeg_version,
            "resampler": self.resampler,
            "coded_rate": self.coded_rate,
            "coded_channels": self.coded_channels,
            "encoded_bytes": self.encoded_bytes,
            "bitrate": self.bitrate,
            "transport": self.transport,
            "timings": dict(self.timings),
        }


def _finish(
    ref: Reference,
    spec: VariantSpec,
    dec: Decoded,
    *,
    version: str,
    ffmpeg_line: str | None,
    max_lag: int,
    min_correlation: float,
    match_loudness: bool,
    analysis_seconds: float,
    envelope_fallback: bool,
    timings: dict,
) -> RenderedVariant:
    t0 = time.perf_counter()
    x = dec.samples
    if x.shape[0] == 0:
        raise DecoderEmpty("the decoder produced no samples")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        raise InvalidSamples(f"{bad} of {x.size} decoded samples are NaN or infinite")
    coded_channels = x.shape[1]
    resampler = None
    if x.shape[1] >= ref.channels:
        x = match_channels(x, ref.channels)
    if dec.rate != ref.rate:
        import soxr

        x = soxr.resample(np.ascontiguousarray(x), dec.rate, ref.rate, quality=RESAMPLE_QUALITY)
        resampler = RESAMPLER
    x = match_channels(x, ref.channels)
    t1 = time.perf_counter()
    timings["resample"] = t1 - t0
    prior = round(dec.prior * ref.rate / dec.rate)
    usable = x.shape[0] - max(prior, 0)
    if usable < ref.frames / 2:
        raise VariantTooShort(
            f"the decoded variant has {usable} samples ({usable / ref.rate:.3f} s) after the codec delay, "
            f"less than half the reference's {ref.frames} ({ref.duration:.3f} s)"
        )
    try:
        alignment = find_offset(ref.samples, x, ref.rate, prior=prior, max_lag=max_lag,
                                min_correlation=min_correlation, analysis_seconds=analysis_seconds,
                                cache=spectrum_cache(ref))  # fmt: skip
    except AlignmentFailed as exc:
        if not envelope_fallback or not x.any():
            raise
        try:  # a resynthesising codec keeps the timing, not the waveform
            alignment = find_envelope_offset(ref.samples, x, ref.rate, prior=prior)
        except AlignmentFailed as env_exc:
            raise AlignmentFailed(f"{exc.reason}; by envelope: {env_exc.reason}", hint=exc.hint) from None
        try:  # a waveform copy delayed beyond the lag window: the samples take over near the envelope's lag
            alignment = find_offset(ref.samples, x, ref.rate, prior=alignment.offset,
                                    max_lag=max(4 * round(ENVELOPE_HOP_SECONDS * ref.rate), 64),
                                    min_correlation=min_correlation, analysis_seconds=analysis_seconds,
                                    cache=spectrum_cache(ref))  # fmt: skip
        except AlignmentFailed:
            pass
    aligned = apply_offset(x, alignment.offset, ref.frames)
    t2 = time.perf_counter()
    timings["align"] = t2 - t1
    loud_ref = ref.loudness
    loud_var = integrated_loudness(aligned, ref.rate)
    delta = loud_var - loud_ref if loud_var is not None and loud_ref is not None else None
    gain = 0.0
    if match_loudness and delta is not None:
        gain = -delta
        aligned *= np.float32(db_to_gain(gain))
    timings["loudness"] = time.perf_counter() - t2
    return RenderedVariant(
        item=ref.name,
        spec=spec,
        samples=aligned,
        rate=ref.rate,
        offset=alignment.offset,
        priming=prior,
        correlation=alignment.correlation,
        alignment=alignment.method,
        loudness_reference=loud_ref,
        loudness_variant=loud_var,
        loudness_delta=delta,
        loudness_gain=gain,
        reference_gain=ref.gain_db,
        encoder_version=version,
        ffmpeg_version=ffmpeg_line,
        resampler=resampler,
        coded_rate=dec.rate,
        coded_channels=coded_channels,
        encoded_bytes=dec.encoded_bytes,
        transport=dec.transport,
        timings=timings,
    )


def _attach(exc: VariantError, item: str | None, spec: VariantSpec) -> VariantError:
    if exc.item is None:
        exc.item = item
    exc.spec_label, exc.spec_id = spec.label, spec.id
    return exc


def render(
    reference: Reference,
    spec: VariantSpec,
    *,
    ffmpeg: str | os.PathLike | None = None,
    timeout: float = 60.0,
    max_lag: int = DEFAULT_MAX_LAG,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    match_loudness: bool = False,
    analysis_seconds: float = DEFAULT_ANALYSIS_SECONDS,
    envelope_fallback: bool = True,
) -> RenderedVariant:
    """Render one variant of ``reference`` (see the module docstring).

    ``ffmpeg``: the configured binary (a spec's own ``ffmpeg`` wins; else ``PATH``, else
    imageio-ffmpeg's). ``timeout``: seconds per tool call. ``max_lag``: the cross-correlation
    searches ``±max_lag`` samples (reference rate) around the codec's known delay.
    ``min_correlation``: below it the variant is :class:`AlignmentFailed`. ``match_loudness``:
    scale the variant to the reference's integrated loudness. ``analysis_seconds``: how much
    of the reference (its most energetic stretch) the cross-correlation looks at.
    ``envelope_fallback``: when the samples correlate too weakly, align the log-energy envelopes
    (``RenderedVariant.alignment`` says which method did).

    Raises a :class:`VariantError` subclass naming the item, the variant and the reason.
    """
    if not isinstance(reference, Reference):
        raise TypeError("render takes a Reference (see Reference.from_array and load_reference)")
    if not isinstance(spec, VariantSpec):
        raise TypeError("render takes a VariantSpec (see parse_variants)")
    timings = {"encode": 0.0, "decode": 0.0, "resample": 0.0, "align": 0.0, "loudness": 0.0}
    try:
        info = spec_ffmpeg(spec, ffmpeg) if uses_ffmpeg(spec) else None
        version = encoder_version(spec, ffmpeg, timeout=timeout)
        source = reference
        if spec.plugins:
            timings["plugins"] = 0.0
            source = apply_plugins(info, spec, reference, timeout, timings)
        if spec.kind == "ffmpeg":
            assert info is not None
            dec = ffmpeg_codec(info, spec, source, timeout, timings)
        elif spec.kind == "external":
            dec = external_coder(info, spec, source, timeout, timings)
        else:
            assert info is not None
            dec = effects_only(info, spec, source, timeout, timings)
        return _finish(
            reference,
            spec,
            dec,
            version=version,
            ffmpeg_line=info.line if info else None,
            max_lag=max_lag,
            min_correlation=min_correlation,
            match_loudness=match_loudness,
            analysis_seconds=analysis_seconds,
            envelope_fallback=envelope_fallback,
            timings=timings,
        )
    except VariantError as exc:
        _attach(exc, reference.name, spec)
        raise


def _for_spec(exc: VariantError, spec: VariantSpec) -> VariantError:
    """A copy of an item-level error, attributed to ``spec``."""
    new = type(exc)(exc.reason, item=exc.item, hint=exc.hint, stderr=exc.stderr)
    return _attach(new, exc.item, spec)


def render_all(
    reference: Reference | str | os.PathLike,
    specs: Sequence[VariantSpec],
    *,
    ffmpeg: str | os.PathLike | None = None,
    timeout: float = 60.0,
    max_lag: int = DEFAULT_MAX_LAG,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    match_loudness: bool = False,
    analysis_seconds: float = DEFAULT_ANALYSIS_SECONDS,
    envelope_fallback: bool = True,
    workers: int = 1,
) -> list[RenderedVariant | VariantError]:
    """Render every spec for one reference; a failure takes the place of its result, in order.

    ``reference`` may be a path, read with :func:`load_reference`; an unreadable or invalid
    file gives one :class:`InputError` per spec. ``workers`` > 1 renders that many variants
    at once (threads: the work is in ffmpeg processes, FFTs and soxr). An unexpected exception
    becomes a :class:`VariantError` whose reason says it is a bug (its cause is chained).
    Other options: see :func:`render`.
    """
    specs = list(specs)
    if not isinstance(reference, Reference):
        try:
            reference = load_reference(reference, ffmpeg=ffmpeg)
        except InputError as exc:
            return [_for_spec(exc, spec) for spec in specs]
    ref = reference
    _ = ref.loudness  # once, before any thread needs it

    def one(spec: VariantSpec) -> RenderedVariant | VariantError:
        try:
            return render(
                ref,
                spec,
                ffmpeg=ffmpeg,
                timeout=timeout,
                max_lag=max_lag,
                min_correlation=min_correlation,
                match_loudness=match_loudness,
                analysis_seconds=analysis_seconds,
                envelope_fallback=envelope_fallback,
            )
        except VariantError as exc:
            return exc
        except Exception as exc:
            err = VariantError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint="this is a bug in jndqa.variants; report it with the traceback of the chained cause",
            )
            err.__cause__ = exc
            return _attach(err, ref.name, spec)

    if workers <= 1 or len(specs) <= 1:
        return [one(spec) for spec in specs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jndqa-variant") as pool:
        return list(pool.map(one, specs))
