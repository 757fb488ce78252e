"""Facts about ffmpeg encoders and containers that the renderer relies on.

Priming delays (:data:`PRIMING`) are the number of leading samples, at the decoded stream's
rate, by which ffmpeg's decoded output lags the input when the stream goes through a pipe in
the default container. They are a prior only: the cross-correlation of :mod:`.align` verifies
and corrects them, and the result records both. Measured on 2026-11-29 with Debian's ffmpeg
5.1.9 and the static ffmpeg 9.0.2 of imageio-ffmpeg 0.8.1 (the same values in both, except
where noted), by encoding band-limited noise with clicks at known positions through pipes and
locating the clicks in the decoded output, at 16, 32, 44.1 and 48 kHz:

==========================  ===========  ==================================================
encoder                     delay        note
==========================  ===========  ==================================================
libmp3lame (mp3, mkv)       1105         576 encoder + 529 decoder; a pipe gets no LAME tag.
                                         Written to a seekable .mp3 file it is 0 (LAME tag).
aac (adts, mkv)             1024         0 in mp4/m4a/mov files (edit list)
mp2, libtwolame             481
ac3, eac3                   256          at the codec's rate (16 kHz input is coded at 32k)
g722 (wav)                  22           QMF delay; 0 in Matroska with ffmpeg 9
wmav1, wmav2 (asf)          -2048        the decoder drops more than the encoder primes
nellymoser (flv)            128
libopus, opus (ogg)         0            pre-skip honoured; decoded at 48 kHz whatever the input
libvorbis, vorbis (ogg)     0            pre-skip honoured
flac, alac, pcm_*           0
==========================  ===========  ==================================================
"""

from __future__ import annotations

__all__ = [
    "CODEC_DEFAULTS",
    "CONTAINER_ALIASES",
    "DEFAULT_CONTAINER",
    "FILE_ONLY_CONTAINERS",
    "RAW_CONTAINERS",
    "container_extension",
    "default_container",
    "demuxer_for",
    "friendly_codec",
    "priming",
]

#: Container (ffmpeg muxer name) used when a spec gives none.
DEFAULT_CONTAINER: dict[str, str] = {
    "libmp3lame": "mp3",
    "libshine": "mp3",
    "mp2": "mp2",
    "mp2fixed": "mp2",
    "libtwolame": "mp2",
    "libopus": "ogg",
    "opus": "ogg",
    "libvorbis": "ogg",
    "vorbis": "ogg",
    "libspeex": "ogg",
    "flac": "flac",
    "aac": "adts",
    "libfdk_aac": "adts",
    "ac3": "ac3",
    "ac3_fixed": "ac3",
    "eac3": "eac3",
    "g722": "wav",
    "alac": "ipod",
    "wmav1": "asf",
    "wmav2": "asf",
    "nellymoser": "flv",
}

#: Everything else goes into Matroska, which takes nearly any audio codec and streams to a pipe;
#: ``pcm_*`` and ``adpcm_*`` codecs go into WAV.
FALLBACK_CONTAINER = "matroska"

#: Muxers that need a seekable output (and demuxers a seekable input): rendered through files.
#: Others that turn out to need one (ffmpeg says so, e.g. ALAC in CAF) are retried through files.
FILE_ONLY_CONTAINERS = frozenset({"mp4", "mov", "ipod", "3gp", "3g2", "ismv", "psp", "f4v"})

#: Names people write for a container -> ffmpeg's muxer name.
CONTAINER_ALIASES = {"m4a": "ipod", "mka": "matroska", "mkv": "matroska", "aac": "adts"}

#: Muxer name -> demuxer name, where they differ (ffmpeg probes the rest).
_DEMUXER = {"adts": "aac", "mp2": "mp3", "webm": "matroska", "ipod": "mov", "mp4": "mov", "m4a": "mov"}

#: Headerless containers: the decoder must be told the rate and channel count.
RAW_CONTAINERS = frozenset({"g722", "mulaw", "alaw", "sbc", "aptx", "aptx_hd", "dfpwm"})

#: Muxer name -> file extension, where they differ.
_EXTENSION = {"matroska": "mka", "ipod": "m4a", "adts": "aac"}

#: Defaults a codec implies when the spec does not say (G.722 is a 16 kHz mono codec by definition).
CODEC_DEFAULTS: dict[str, dict[str, int]] = {"g722": {"sample_rate": 16000, "channels": 1}}

#: Priming delay in decoded-rate samples per encoder, through a pipe (see the module docstring).
_PRIMING = {
    "libmp3lame": 1105,
    "aac": 1024,
    "mp2": 481,
    "mp2fixed": 481,
    "libtwolame": 481,
    "ac3": 256,
    "ac3_fixed": 256,
    "eac3": 256,
    "g722": 22,
    "wmav1": -2048,
    "wmav2": -2048,
    "nellymoser": 128,
}

#: Human names for labels.
_FRIENDLY = {
    "libmp3lame": "mp3",
    "libshine": "mp3 (shine)",
    "libopus": "opus",
    "libvorbis": "vorbis",
    "libtwolame": "mp2",
    "mp2fixed": "mp2",
    "libfdk_aac": "aac (fdk)",
    "pcm_mulaw": "mu-law",
    "pcm_alaw": "a-law",
    "eac3": "e-ac3",
    "ac3_fixed": "ac3",
    "libspeex": "speex",
    "libgsm": "gsm",
    "libcodec2": "codec2",
}


def default_container(codec: str) -> str:
    """The muxer a codec is written with when the spec names none."""
    if codec in DEFAULT_CONTAINER:
        return DEFAULT_CONTAINER[codec]
    if codec.startswith(("pcm_", "adpcm_")):
        return "wav"
    return FALLBACK_CONTAINER


def demuxer_for(container: str) -> str:
    return _DEMUXER.get(container, container)


def container_extension(container: str) -> str:
    return _EXTENSION.get(container, container)


def priming(codec: str, container: str, through_files: bool) -> int:
    """Known leading delay of ``codec`` in ``container`` (decoded-rate samples); 0 when unknown.

    Containers written to files that carry an edit list or a gapless tag (mp4 family, and an
    mp3 written to a seekable file) let the decoder drop the priming itself.
    """
    if through_files and (container in FILE_ONLY_CONTAINERS or container == "mp3"):
        return 0
    if codec == "g722" and container != "wav":
        return 0  # container-dependent (0 in Matroska with ffmpeg 9); left to the cross-correlation
    return _PRIMING.get(codec, 0)


def friendly_codec(codec: str) -> str:
    if codec in _FRIENDLY:
        return _FRIENDLY[codec]
    return codec[3:] if codec.startswith("lib") else codec
