"""jndqa.variants with real ffmpeg encodes (no mocks).

The reference is synthetic: correlated stereo band-limited noise with two quiet tones, plus
band-limited pulses (a Hann-windowed sinc) at known sample positions, on the int16 grid so that
FLAC must round-trip it bit for bit. After alignment each pulse must be found, by a matched
filter, exactly where it is in the reference.

Golden codec delays (decoded-rate samples, through a pipe in the default container) were
measured on 2025-11-29 with Debian's ffmpeg 5.1.9 and imageio-ffmpeg's static ffmpeg 9.0.2,
by locating such pulses in the decoded output at 16, 32, 44.1 and 48 kHz (see
variants/codecs.py): libmp3lame 1105 (576 encoder + 529 decoder; no LAME tag on a pipe),
aac in ADTS 1024, libopus and libvorbis 0 (their pre-skip is honoured), flac and mu-law 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jndqa.variants import (
    AlignmentFailed,
    DecoderEmpty,
    EncoderFailed,
    EncoderTimeout,
    EncoderUnavailable,
    InputError,
    InvalidSamples,
    Reference,
    RenderedVariant,
    SpecError,
    VariantError,
    VariantSpec,
    VariantTooShort,
    encoder_version,
    integrated_loudness,
    normalize_loudness,
    parse_variants,
    render,
    render_all,
    resolve_ffmpeg,
    tool_versions,
)
from jndqa.variants.external import placeholder_values, substitute

RATES = [44100, 48000]
PULSES_S = (0.55, 1.3, 2.05)  # seconds
DURATION = 2.6

# codec name -> (spec, delay in decoded-rate samples: see the module docstring)
MATRIX = {
    "mp3": ({"codec": "libmp3lame", "bitrate": "128k"}, 1105),
    "opus": ({"codec": "libopus", "bitrate": "96k"}, 0),
    "aac": ({"codec": "aac", "bitrate": "128k"}, 1024),
    "vorbis": ({"codec": "libvorbis", "quality": 5}, 0),
    "flac": ({"codec": "flac"}, 0),
    "mu-law": ({"codec": "pcm_mulaw"}, 0),
}


def pulse(rate: int, cutoff: float = 3000.0, half: int = 64) -> np.ndarray:
    """A symmetric band-limited click: a Hann-windowed sinc, peak 1 at its centre."""
    n = np.arange(-half, half + 1)
    return (np.sinc(2 * cutoff / rate * n) * np.hanning(2 * half + 1)).astype(np.float64)


def synth(rate: int, seconds: float = DURATION, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    from scipy import signal

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    b, a = signal.butter(4, [150 / (rate / 2), 7000 / (rate / 2)], "band")
    common = signal.lfilter(b, a, rng.standard_normal(n))
    side = signal.lfilter(b, a, rng.standard_normal((n, 2)), axis=0)
    x = 0.06 * (common[:, None] + 0.3 * side)
    t = np.arange(n) / rate
    x += 0.01 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.006 * np.sin(2 * np.pi * 1000 * t)[:, None]
    positions = [int(s * rate) for s in PULSES_S if s < seconds - 0.05]
    p = pulse(rate)
    for pos in positions:
        x[pos - 64 : pos + 65] += 0.7 * p[:, None]
    return (np.round(x * 32768) / 32768).astype(np.float32), positions


def pulse_positions(samples: np.ndarray, rate: int, expected: list[int], search: int = 400) -> list[int]:
    """Where the pulses are in ``samples``: matched filter peak near each expected position."""
    mono = samples.mean(axis=1).astype(np.float64)
    p = pulse(rate)
    found = []
    for pos in expected:
        lo = pos - search
        seg = mono[lo - 64 : pos + search + 65]
        score = np.correlate(seg, p, mode="valid")
        found.append(lo + int(np.argmax(score)))
    return found


@pytest.fixture(scope="module", params=RATES, ids=lambda r: f"{r // 1000}k")
def reference(request) -> tuple[Reference, list[int]]:
    x, positions = synth(request.param)
    return Reference.from_array(x, request.param, name=f"synth-{request.param}.wav"), positions


@pytest.fixture(scope="module")
def matrix(reference) -> dict[str, RenderedVariant | VariantError]:
    ref, _ = reference
    specs = parse_variants([spec for spec, _ in MATRIX.values()])
    return dict(zip(MATRIX, render_all(ref, specs, workers=2), strict=True))


def write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


# --- codecs: alignment, lengths, rates --------------------------------------------------------


@pytest.mark.parametrize("codec", list(MATRIX))
def test_codec_matrix_aligned_to_the_sample(codec, reference, matrix):
    ref, positions = reference
    result = matrix[codec]
    assert isinstance(result, RenderedVariant), str(result)
    assert result.samples.shape == ref.samples.shape and result.samples.dtype == np.float32
    assert result.rate == ref.rate
    delay = MATRIX[codec][1]
    assert result.priming == round(delay * ref.rate / result.coded_rate)
    assert result.offset == result.priming, "the cross-correlation corrected the known delay"
    assert pulse_positions(result.samples, ref.rate, positions) == positions
    assert result.correlation is not None and result.correlation > 0.8
    assert result.transport == "pipe"
    assert result.encoded_bytes and result.encoded_bytes > 0
    assert result.encoder_version.startswith("ffmpeg ")
    assert set(result.timings) == {"encode", "decode", "resample", "align", "loudness"}
    if codec == "opus":  # Opus always decodes at 48 kHz
        assert result.coded_rate == 48000
        assert result.resampler == ("soxr VHQ" if ref.rate != 48000 else None)
    else:
        assert result.coded_rate == ref.rate and result.resampler is None


def test_flac_round_trips_bit_exactly(reference, matrix):
    ref, _ = reference
    assert np.array_equal(matrix["flac"].samples, ref.samples)
    assert matrix["flac"].correlation == pytest.approx(1.0)
    assert matrix["flac"].loudness_delta == pytest.approx(0.0, abs=1e-9)


def test_lossy_codecs_keep_loudness_close(matrix):
    for codec in ("mp3", "opus", "aac", "vorbis", "mu-law"):
        assert abs(matrix[codec].loudness_delta) < 1.0, codec


def test_mp4_container_goes_through_files_and_the_edit_list_removes_the_delay(reference):
    ref, positions = reference
    [spec] = parse_variants([{"codec": "aac", "bitrate": "128k", "container": "mp4"}])
    result = render(ref, spec)
    assert result.transport == "files"
    assert result.priming == 0 and result.offset == 0
    assert pulse_positions(result.samples, ref.rate, positions) == positions


def test_lower_coded_rate_and_mono_come_back_to_the_reference_layout():
    x, positions = synth(44100)
    ref = Reference.from_array(x, 44100, "synth")
    [spec] = parse_variants([{"codec": "libmp3lame", "bitrate": "64k", "sample_rate": 22050, "channels": 1}])
    result = render(ref, spec)
    assert result.coded_rate == 22050 and result.coded_channels == 1
    assert result.samples.shape == ref.samples.shape
    assert np.array_equal(result.samples[:, 0], result.samples[:, 1])
    assert result.resampler == "soxr VHQ"
    assert result.priming == 2 * 1105  # 1105 samples at 22.05 kHz
    assert result.offset == result.priming
    assert pulse_positions(result.samples, 44100, positions) == positions


def test_another_ffmpeg_binary_for_one_spec():
    import imageio_ffmpeg

    other = imageio_ffmpeg.get_ffmpeg_exe()
    x, _ = synth(48000, seconds=1.0)
    ref = Reference.from_array(x, 48000, "synth")
    default, own = parse_variants([{"codec": "flac"}, {"codec": "flac", "ffmpeg": other}])
    assert default.id != own.id
    result = render(ref, own)
    assert np.array_equal(result.samples, ref.samples)
    assert result.ffmpeg_version and result.encoder_version.startswith("ffmpeg ")
    if os.path.realpath(resolve_ffmpeg()) != os.path.realpath(other):
        assert encoder_version(default) != encoder_version(own)


# --- effects and loudness ---------------------------------------------------------------------


def test_minus_6_db_is_measured_as_minus_6_lu(reference):
    ref, _ = reference
    [spec] = parse_variants([{"effects": "volume=-6dB"}])
    result = render(ref, spec)
    assert result.loudness_delta == pytest.approx(-6.0, abs=0.1)
    assert result.offset == 0 and result.correlation == pytest.approx(1.0, abs=1e-6)
    assert result.loudness_reference == pytest.approx(integrated_loudness(ref.samples, ref.rate))
    matched = render(ref, spec, match_loudness=True)
    assert matched.loudness_gain == pytest.approx(6.0, abs=0.1)
    assert matched.loudness_delta == pytest.approx(-6.0, abs=0.1)  # measured before matching
    assert integrated_loudness(matched.samples, ref.rate) == pytest.approx(matched.loudness_reference, abs=0.01)


def test_effects_that_keep_the_signal_are_aligned():
    x, _ = synth(48000)
    ref = Reference.from_array(x, 48000, "synth")
    specs = parse_variants(
        [
            {"effects": "lowpass=f=3500"},
            {"effects": "highpass=f=120,acompressor=threshold=-20dB"},
            {"codec": "libopus", "bitrate": "96k", "effects": "highpass=f=120", "post_effects": "volume=-3dB"},
        ]
    )
    for result in render_all(ref, specs):
        assert isinstance(result, RenderedVariant), str(result)
        assert abs(result.offset) <= 8 and result.correlation > 0.8
    assert render_all(ref, specs)[2].loudness_delta == pytest.approx(-3.0, abs=0.5)


def test_variants_that_cannot_be_aligned_are_failures_not_scores():
    x, _ = synth(48000)
    ref = Reference.from_array(x, 48000, "synth")
    specs = parse_variants(
        [
            {"effects": "adelay=6000S|6000S"},  # beyond the ±2048 lag window
            {"effects": "volume=0"},  # silence
            {"effects": "aeval=exprs=0.05*(random(0)-0.5)|0.05*(random(1)-0.5)"},  # unrelated noise
            {"effects": "atrim=end=1"},  # 1 s of 2.6 s
            {"effects": "anull"},
        ]
    )
    delayed, silent, unrelated, short, same = render_all(ref, specs, envelope_fallback=False)
    assert isinstance(delayed, AlignmentFailed) and "max_lag" in str(delayed)
    assert isinstance(silent, AlignmentFailed) and "silent" in silent.reason
    assert isinstance(unrelated, AlignmentFailed) and "correlation" in unrelated.reason
    assert isinstance(short, VariantTooShort)
    assert isinstance(same, RenderedVariant) and np.array_equal(same.samples, ref.samples)
    wide = render(ref, specs[0], max_lag=8192)
    assert wide.offset == 6000 and wide.correlation > 0.99 and wide.alignment == "samples"
    # With the envelope fallback (the default): the envelopes find the delay beyond the lag window and
    # the samples take over near it; silence and unrelated noise still fail, saying both reasons.
    delayed, silent, unrelated, _, same = render_all(ref, specs)
    assert delayed.offset == 6000 and delayed.correlation > 0.99 and delayed.alignment == "samples"
    assert isinstance(silent, AlignmentFailed) and "silent" in silent.reason
    assert isinstance(unrelated, AlignmentFailed) and "by envelope: the envelopes correlate at" in unrelated.reason
    assert same.alignment == "samples"


def test_a_resynthesised_signal_aligns_by_its_envelope():
    """A signal with the reference's timing but not its waveform (the envelope of the reference
    imposed on fresh noise, as a vocoder would): the samples do not correlate, the envelopes do."""
    from scipy import signal

    from jndqa.variants.align import find_envelope_offset

    rate = 16000
    rng = np.random.default_rng(3)
    t = np.arange(3 * rate) / rate
    syllables = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 4 * (0.3 + 0.7 * (np.sin(2 * np.pi * 0.7 * t) > 0))
    ref = (syllables * signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(t.size)) * 0.05)[:, None]
    vocoded = (syllables * signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(t.size)) * 0.05)[:, None]
    delayed = np.concatenate([np.zeros((400, 1)), vocoded])[: t.size].astype(np.float32)  # 25 ms later
    a = find_envelope_offset(ref.astype(np.float32), delayed, rate)
    assert a.method == "envelope" and a.offset == 400 and a.correlation > 0.8
    with pytest.raises(AlignmentFailed, match="envelopes correlate"):
        find_envelope_offset(ref.astype(np.float32), rng.standard_normal((t.size, 1)).astype(np.float32), rate)
    # Through ffmpeg: every STFT bin's phase randomised (a crude resynthesis) keeps the timing only.
    scramble = "afftfilt=real='hypot(re,im)*cos(random(0)*2*PI)':imag='hypot(re,im)*sin(random(0)*2*PI)':win_size=512"
    resynth, plain = render_all(Reference.from_array(ref.astype(np.float32), rate, "syllables"),
                                parse_variants([{"effects": scramble}, {"effects": "anull"}]))  # fmt: skip
    assert resynth.alignment == "envelope" and resynth.correlation > 0.8 and 0 <= resynth.offset <= 512
    assert plain.alignment == "samples" and plain.correlation == pytest.approx(1.0, abs=1e-6)


def test_normalize_loudness_before_encoding():
    x, _ = synth(44100)
    ref = Reference.from_array(x, 44100, "synth")
    quiet = normalize_loudness(ref, -30.0)
    assert integrated_loudness(quiet.samples, 44100) == pytest.approx(-30.0, abs=0.01)
    assert quiet.gain_db == pytest.approx(-30.0 - ref.loudness)
    [spec] = parse_variants([{"codec": "flac"}])
    assert render(quiet, spec).reference_gain == pytest.approx(quiet.gain_db)


def test_too_short_for_loudness_records_none():
    x, _ = synth(44100, seconds=0.3)
    ref = Reference.from_array(x, 44100, "short")
    [spec] = parse_variants([{"effects": "volume=-6dB"}])
    result = render(ref, spec)
    assert result.loudness_reference is None and result.loudness_variant is None and result.loudness_delta is None
    assert normalize_loudness(ref, -23.0) is ref
    silence = Reference.from_array(np.zeros((44100, 2), np.float32), 44100, "silence")
    assert integrated_loudness(silence.samples, 44100) is None
    quiet = render(silence, parse_variants([{"codec": "flac"}])[0])
    assert quiet.correlation is None and quiet.offset == 0 and quiet.loudness_delta is None


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (16000, 5), (22050, 3)])
def test_loudness_matches_pyloudnorm(rate, channels):
    import pyloudnorm

    rng = np.random.default_rng(rate + channels)
    x = rng.standard_normal((int(2.3 * rate), channels)) * 0.1
    x[: rate // 2] *= 0.001  # a quiet start, so that the gates matter
    expected = pyloudnorm.Meter(rate).integrated_loudness(x)
    assert integrated_loudness(x, rate) == pytest.approx(expected, abs=1e-9)


def test_long_references_align_on_an_excerpt_and_judge_the_whole():
    x, positions = synth(48000, seconds=8.0)  # longer than the 5 s analysed for the lag
    ref = Reference.from_array(x, 48000, "long")
    specs = parse_variants(
        [
            {"codec": "libmp3lame", "bitrate": "128k"},
            {"effects": "volume=enable='gt(t,1)':volume=0"},  # right for 1 s of 8, then silent
        ]
    )
    mp3, broken = render_all(ref, specs)
    assert mp3.offset == 1105 and pulse_positions(mp3.samples, 48000, positions) == positions
    assert isinstance(broken, AlignmentFailed) and "correlation" in broken.reason


def test_a_container_that_turns_out_to_need_seeking_goes_through_files():
    x, _ = synth(44100, seconds=1.0)
    ref = Reference.from_array(x, 44100, "synth")
    [spec] = parse_variants([{"codec": "alac", "container": "caf"}])  # ffmpeg: "non seekable output"
    result = render(ref, spec)
    assert result.transport == "files" and result.offset == 0
    # Lossless; ffmpeg 9's CAF loses the last partial ALAC packet (up to 4096 samples), 5.1's does not.
    assert np.array_equal(result.samples[:-4096], ref.samples[:-4096])


# --- failures: typed, recorded, and the other variants still rendered --------------------------


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("coders")
    version = "import sys\nif sys.argv[1:] == ['--version']:\n    print('delay-enc 1.0')\n    sys.exit()\n"
    delay = (
        "import sys, wave\n"
        "with wave.open(sys.argv[1], 'rb') as r:\n"
        "    p = r.getparams(); data = r.readframes(r.getnframes())\n"
        "with wave.open(sys.argv[2], 'wb') as w:\n"
        "    w.setparams(p); w.writeframes(b'\\0' * (300 * p.sampwidth * p.nchannels) + data)\n"
    )
    return {
        "delay": write_script(d / "delay-enc", version + delay),
        "copy": write_script(d / "copy-dec", "import shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\n"),
        "crash": write_script(d / "crash-enc", "import sys\nprint('boom: bad frame', file=sys.stderr)\nsys.exit(1)\n"),
        "hang": write_script(
            d / "hang-enc",
            "import os, sys, time\nopen(sys.argv[3], 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
        ),
        "silent-enc": write_script(d / "lazy-enc", "pass\n"),
        "nan-dec": write_script(  # float WAV with NaNs, standard library only (fast to start)
            d / "nan-dec",
            "import array, struct, sys, wave\n"
            "with wave.open(sys.argv[1], 'rb') as r:\n"
            "    ch, rate, data = r.getnchannels(), r.getframerate(), array.array('h', r.readframes(r.getnframes()))\n"
            "f = array.array('f', (v / 32768 for v in data))\n"
            "f[100:200] = array.array('f', [float('nan')] * 100)\n"
            "body = f.tobytes()\n"
            "fmt = struct.pack('<HHIIHH', 3, ch, rate, rate * ch * 4, ch * 4, 32)\n"
            "head = b'RIFF' + struct.pack('<I', 28 + len(fmt) + len(body)) + b'WAVE'\n"
            "head += b'fmt ' + struct.pack('<I', len(fmt))\n"
            "open(sys.argv[2], 'wb').write(head + fmt + b'fact' + struct.pack('<II', 4, len(f) // ch)\n"
            "                              + b'data' + struct.pack('<I', len(body)) + body)\n",
        ),
        "empty-dec": write_script(d / "empty-dec", "import sys\nopen(sys.argv[2], 'wb').close()\n"),
        "junk-dec": write_script(d / "junk-dec", "import sys\nopen(sys.argv[2], 'w').write('not audio')\n"),
    }


def test_external_coder_through_wav_files(scripts):
    x, positions = synth(44100)
    ref = Reference.from_array(x, 44100, "synth")
    enc, dec = str(scripts["delay"]), str(scripts["copy"])
    specs = parse_variants(
        [
            {"encode": [enc, "{input}", "{output}"], "decode": [dec, "{input}", "{output}"], "container": "wav"},
            {"encode": [enc, "{input}", "{output}"], "container": "wav", "version": [enc, "--version"]},
        ]
    )
    own_decoder, ffmpeg_decoder = render_all(ref, specs)
    for result in (own_decoder, ffmpeg_decoder):
        assert isinstance(result, RenderedVariant), str(result)
        assert result.offset == 300 and result.priming == 0
        assert result.transport == "files"
        assert np.max(np.abs(result.samples - ref.samples)) <= 1 / 32768  # 16-bit WAV, on the grid already
        assert pulse_positions(result.samples, 44100, positions) == positions
    assert own_decoder.encoder_version.startswith("sha256 delay-enc:")
    assert own_decoder.ffmpeg_version is None  # ffmpeg took no part
    assert ffmpeg_decoder.encoder_version.startswith("delay-enc 1.0; ffmpeg ")


def test_external_version_changes_with_the_executable(tmp_path):
    enc = write_script(tmp_path / "my-enc", "import sys\nprint('v1')\n")
    entry = {"encode": ["./my-enc", "{input}", "{output}"], "decode": ["cp", "{input}", "{output}"]}
    [spec] = parse_variants([entry], base_dir=tmp_path)
    first = encoder_version(spec)
    digest = hashlib.sha256(enc.read_bytes()).hexdigest()
    assert first.startswith(f"sha256 my-enc:{digest}")
    assert encoder_version(spec) == first
    time.sleep(0.01)
    write_script(enc, "import sys\nprint('v2')\n")  # rebuilt at the same path
    second = encoder_version(spec)
    assert second != first and hashlib.sha256(enc.read_bytes()).hexdigest() in second
    assert spec.id == parse_variants([spec.model_dump(exclude={"label"})])[0].id  # the id does not change


def check_error(result: VariantError, spec: VariantSpec, item: str) -> None:
    """An error names the item, the variant (label and id) and the reason, says what to do,
    makes a failure row, and pickles (it may cross a process boundary)."""
    text = str(result)
    assert result.item == item and item in text
    assert result.spec_id == spec.id and spec.id in text and spec.label in text
    assert result.reason in text and "What to do:" in text
    assert result.row()["error"] == type(result).__name__ and result.row()["spec_id"] == spec.id
    copy = pickle.loads(pickle.dumps(result))
    assert type(copy) is type(result) and str(copy) == text


def test_failures_are_typed_and_do_not_stop_the_others(scripts):
    x, positions = synth(44100, seconds=1.0)
    ref = Reference.from_array(x, 44100, "item-1.wav")
    good_ext = {"encode": [str(scripts["delay"]), "{input}", "{output}"], "container": "wav", "label": "ext ok"}
    entries = [
        {"codec": "flac", "label": "flac ok"},
        {"codec": "libdoesnotexist", "bitrate": "64k"},
        {"encode": [str(scripts["crash"]), "{input}", "{output}"], "label": "crasher"},
        {"encode": [str(scripts["silent-enc"]), "{input}", "{output}"], "label": "writes nothing"},
        {**good_ext, "decode": [str(scripts["nan-dec"]), "{input}", "{output}"], "label": "nan decoder"},
        {**good_ext, "decode": [str(scripts["empty-dec"]), "{input}", "{output}"], "label": "empty decoder"},
        {**good_ext, "decode": [str(scripts["junk-dec"]), "{input}", "{output}"], "label": "junk decoder"},
        {"encode": ["/nonexistent/enc", "{input}", "{output}"], "label": "missing encoder"},
        {"codec": "libopus", "bitrate": "64k", "options": {"no_such_option": 1}},
        {"effects": "nosuchfilter=1"},
        good_ext,
    ]
    specs = parse_variants(entries)
    results = render_all(ref, specs)
    assert [type(r) for r in results] == [
        RenderedVariant,
        EncoderUnavailable,
        EncoderFailed,
        EncoderFailed,
        InvalidSamples,
        DecoderEmpty,
        DecoderEmpty,
        EncoderUnavailable,
        EncoderFailed,
        EncoderFailed,
        RenderedVariant,
    ]
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, VariantError):
            check_error(result, spec, "item-1.wav")
    assert "libdoesnotexist" in results[1].reason
    assert "boom: bad frame" in results[2].stderr
    assert "no_such_option" in results[8].stderr and "nosuchfilter" in results[9].stderr
    assert np.array_equal(results[0].samples, ref.samples)
    assert pulse_positions(results[-1].samples, 44100, positions) == positions


def test_a_hanging_encoder_is_killed_and_the_others_rendered(scripts, tmp_path):
    x, _ = synth(44100, seconds=1.0)
    ref = Reference.from_array(x, 44100, "item-2.wav")
    pid_file = tmp_path / "hang.pid"
    specs = parse_variants(
        [
            {"codec": "flac"},
            {"encode": [str(scripts["hang"]), "{input}", "{output}", str(pid_file)], "label": "hanger"},
            {"encode": [str(scripts["delay"]), "{input}", "{output}"], "container": "wav"},
        ]
    )
    start = time.perf_counter()
    flac, hung, external = render_all(ref, specs, timeout=1.5)
    assert time.perf_counter() - start < 30
    assert isinstance(flac, RenderedVariant) and isinstance(external, RenderedVariant)
    assert isinstance(hung, EncoderTimeout) and "1.5 s" in hung.reason
    check_error(hung, specs[1], "item-2.wav")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hanging encoder was killed, and reaped


def test_corrupt_inputs_are_input_errors_for_every_variant(tmp_path):
    x, _ = synth(44100, seconds=1.0)
    good = tmp_path / "good.wav"
    sf.write(good, x, 44100, subtype="FLOAT")
    nan = tmp_path / "nan.wav"
    bad = x.copy()
    bad[1000:1010] = np.nan
    sf.write(nan, bad, 44100, subtype="FLOAT")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    specs = parse_variants([{"codec": "flac"}, {"codec": "libopus", "bitrate": "64k"}])
    outcome = {p.name: render_all(p, specs) for p in (good, nan, empty, text, tmp_path / "missing.wav")}
    assert all(isinstance(r, RenderedVariant) for r in outcome["good.wav"])
    for name in ("nan.wav", "empty.wav", "notes.wav", "missing.wav"):
        assert [type(r) for r in outcome[name]] == [InputError, InputError], name
        assert [r.spec_id for r in outcome[name]] == [s.id for s in specs]
        assert name in str(outcome[name][0])
    assert "NaN" in outcome["nan.wav"][0].reason
    with pytest.raises(InputError, match="NaN"):
        Reference.from_array(bad, 44100, "bad")
    with pytest.raises(InputError, match="floating point"):
        Reference.from_array((x * 32767).astype(np.int16), 44100, "ints")
    with pytest.raises(InputError, match="empty"):
        Reference.from_array(np.zeros((0, 2), np.float32), 44100, "nothing")


def test_a_missing_ffmpeg_is_an_encoder_unavailable_error():
    x, _ = synth(44100, seconds=1.0)
    ref = Reference.from_array(x, 44100, "synth")
    [spec] = parse_variants([{"codec": "flac", "ffmpeg": "/nonexistent/ffmpeg"}])
    [result] = render_all(ref, [spec])
    assert isinstance(result, EncoderUnavailable) and "/nonexistent/ffmpeg" in str(result)
    with pytest.raises(EncoderUnavailable):
        resolve_ffmpeg("/nonexistent/ffmpeg")


# --- specs --------------------------------------------------------------------------------------


def test_spec_id_is_the_hash_of_the_canonical_form():
    [spec] = parse_variants([{"label": "mp3 128k", "codec": "libmp3lame", "bitrate": "128k"}])
    # Golden: the canonical form written out by hand, hashed with hashlib.
    canonical = '{"bitrate":128000,"codec":"libmp3lame","container":"mp3"}'
    assert spec.canonical() == canonical
    assert spec.id == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_spec_id_stability():
    def one(entry):
        return parse_variants([entry])[0]

    base = one({"codec": "libopus", "bitrate": "64k", "options": {"application": "audio", "compression_level": 10}})
    same = [
        {"options": {"compression_level": "10", "application": "audio"}, "bitrate": 64000, "codec": "libopus"},
        {"codec": "libopus", "bitrate": "64 kbps", "options": {"compression_level": 10.0, "application": "audio"}},
        {
            "codec": "libopus",
            "bitrate": "64k",
            "options": {"application": "audio", "compression_level": 10},
            "label": "a name",
            "container": "ogg",
        },
    ]
    assert all(one(e).id == base.id for e in same)
    assert one({**base.model_dump(exclude={"label"}), "bitrate": "96k"}).id != base.id
    plain = one({"codec": "libopus", "bitrate": "64k"})
    assert plain.id != base.id
    assert one({"codec": "libopus", "bitrate": "64k", "container": "webm"}).id != plain.id
    assert len(base.id) == 16 and int(base.id, 16) >= 0


@pytest.mark.parametrize(
    ("entry", "label"),
    [
        ({"codec": "libopus", "bitrate": "64k"}, "opus 64k"),
        ({"codec": "libmp3lame", "bitrate": 128000, "effects": "highpass=f=120"}, "mp3 128k + highpass"),
        ({"effects": "highpass=f=120,acompressor=threshold=-20dB"}, "highpass + acompressor"),
        ({"codec": "libvorbis", "quality": 5}, "vorbis q5"),
        ({"codec": "aac", "bitrate": "96k", "sample_rate": 22050, "channels": 1}, "aac 96k 22.05kHz mono"),
        ({"codec": "pcm_mulaw", "sample_rate": 8000}, "mu-law 8kHz"),
        ({"codec": "libopus", "bitrate": "24k", "sample_rate": "16k"}, "opus 24k 16kHz"),
        ({"codec": "flac", "post_effects": "volume=-3dB"}, "flac, then volume"),
        ({"encode": ["./bin/my-enc", "{input}", "{output}"], "bitrate": "48k"}, "my-enc 48k"),
        ({"codec": "libopus", "bitrate": "32k", "label": "opus 32k after high-pass"}, "opus 32k after high-pass"),
    ],
)
def test_label_derivation(entry, label):
    assert parse_variants([entry])[0].label == label


def test_design_md_example_parses():
    specs = parse_variants(
        [
            {"label": "mp3 128k", "codec": "libmp3lame", "bitrate": "128k"},
            {"label": "opus 32k after high-pass", "effects": "highpass=f=120", "codec": "libopus", "bitrate": "32k"},
            {
                "label": "our encoder 48k",
                "encode": ["./bin/my-enc", "--bitrate", "{bitrate}", "{input}", "{output}"],
                "decode": ["./bin/my-dec", "{input}", "{output}"],
                "version": ["./bin/my-enc", "--version"],
                "bitrate": "48k",
            },
        ],
        base_dir="/srv/bench",
    )
    assert [s.kind for s in specs] == ["ffmpeg", "ffmpeg", "external"]
    assert specs[2].base_dir == "/srv/bench" and "/srv/bench" not in specs[2].canonical()
    assert specs[0].ffmpeg_args() == ["-c:a", "libmp3lame", "-b:a", "128000"]
    values = placeholder_values(specs[2], "in.wav", "out.bin", 48000, 2)
    assert substitute(specs[2].encode, values) == ["./bin/my-enc", "--bitrate", "48000", "in.wav", "out.bin"]
    assert values["kbps"] == "48"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"codec": "libopus", "bitrat": "64k"}, "unknown key 'bitrat' (did you mean 'bitrate'?)"),
        ({"codec": "libopus", "bitrate": "64k", "samplerate": 16000}, "unknown key 'samplerate'"),
        ({}, "needs a codec"),
        ({"label": "nothing"}, "needs a codec"),
        ({"codec": "libopus", "encode": ["enc", "{input}", "{output}"]}, "exclusive"),
        ({"encode": "my-enc {input} {output}"}, "not a string"),
        ({"encode": ["enc", "{input}", "{out}"]}, "unknown placeholder"),
        ({"encode": ["enc", "{input}"]}, "must contain {input} and {output}"),
        ({"encode": ["enc", "{input}", "{output}", "{bitrate}"]}, "no bitrate"),
        ({"decode": ["dec", "{input}", "{output}"], "effects": "anull"}, "decode needs encode"),
        ({"codec": "libmp3lame", "bitrate": "128k", "quality": 2}, "exclusive"),
        ({"codec": "libmp3lame", "bitrate": "128"}, "k suffix"),
        ({"codec": "libmp3lame", "bitrate": "fast"}, "not understood"),
        ({"effects": "volume=-6dB", "bitrate": "64k"}, "needs a codec"),
        ({"codec": "libmp3lame", "options": {"b:a": "128k"}}, "'bitrate' field"),
        ({"codec": "flac", "channels": 12}, "out of range"),
        ({"codec": "flac; rm -rf /"}, "not an ffmpeg name"),
    ],
)
def test_spec_errors_name_the_problem(entry, message):
    with pytest.raises(SpecError) as info:
        parse_variants([{"codec": "flac"}, entry])
    assert "variants[1]" in str(info.value) and message in str(info.value)


def test_list_level_spec_errors():
    with pytest.raises(SpecError, match="list"):
        parse_variants({"codec": "flac"})
    with pytest.raises(SpecError, match="same variant"):
        parse_variants([{"codec": "flac"}, {"codec": "flac", "label": "again"}])
    with pytest.raises(SpecError, match="same label"):
        parse_variants([{"codec": "flac", "label": "x"}, {"codec": "libopus", "label": "x"}])
    a, b = parse_variants(
        [{"codec": "aac", "bitrate": "128k"}, {"codec": "aac", "bitrate": "128k", "container": "mp4"}]
    )
    assert a.label != b.label and a.label.startswith("aac 128k (")
    with pytest.raises(Exception, match="frozen"):
        a.bitrate = 1  # type: ignore[misc]
    assert VariantSpec(codec="flac").container == "flac"


# --- versions, records, rooms and doors ----------------------------------------------------------


def test_versions():
    [mp3, fx] = parse_variants([{"codec": "libmp3lame", "bitrate": "128k"}, {"effects": "volume=-6dB"}])
    version = encoder_version(mp3)
    assert version.startswith("ffmpeg ") and "libavcodec" in version
    assert "libavfilter" in encoder_version(fx)
    tools = tool_versions()
    assert tools["ffmpeg"] and tools["soxr"] and tools["pyloudnorm"]
    assert tool_versions("/nonexistent/ffmpeg")["ffmpeg"] is None


def test_record_is_json(matrix):
    record = matrix["mp3"].to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["spec"]["codec"] == "libmp3lame" and record["frames"] == matrix["mp3"].samples.shape[0]
    assert 100_000 < record["bitrate"] < 160_000


def test_docstring_example():
    import doctest

    import jndqa.variants

    assert doctest.testmod(jndqa.variants).failed == 0


def test_variants_know_nothing_of_metric_store_flows(tmp_path):
    code = (
        "import sys, jndqa.variants\n"
        "bad = [m for m in ('jndqa.metric', 'jndqa.store', 'jndqa.flows', 'torch', 'prefect', 'duckdb')"
        " if m in sys.modules]\n"
        "print(bad)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]" and r.stderr == "", r.stdout + r.stderr
