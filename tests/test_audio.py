"""Preprocessing (docs/metric.md §2): mono, 22,050 Hz, int16 scale, explicit conversions."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from jndqa.metric import AudioLoadError, equalize_lengths, load_audio, prepare_samples


def test_16bit_22050_file_is_exactly_its_int16_values(tmp_path):
    values = np.array([0, 1, -1, 32767, -32768, 12345, -2], dtype=np.int16)
    path = tmp_path / "x.wav"
    sf.write(path, values, 22050, subtype="PCM_16")
    a = load_audio(path)
    assert a.samples.dtype == np.float32
    np.testing.assert_array_equal(a.samples, values.astype(np.float32))
    assert (a.source_rate, a.source_channels, a.resampler) == (22050, 1, None)


def test_release_sample_is_int16(sample, release):
    raw, rate = sf.read(release / "sample_audio" / "ref.wav", dtype="int16")
    assert rate == 22050
    np.testing.assert_array_equal(sample["ref"], raw.astype(np.float32))


def test_stereo_44100_is_mixed_and_resampled_with_a_named_resampler(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_24")
    a = load_audio(path)
    assert (a.source_rate, a.source_channels, a.resampler) == (44100, 2, "soxr-hq")
    assert len(a.samples) == 22050
    # Mono mix of 0.5 and 0.25 amplitude: 0.375 · 32768 = 12288 peak, away from the edges.
    assert np.abs(a.samples[1000:-1000]).max() == pytest.approx(12288, rel=2e-3)
    assert a.samples.dtype == np.float32 and np.array_equal(a.samples, np.round(a.samples))


def test_prepare_samples_rounds_half_to_even():
    a = prepare_samples(np.array([0.5, 1.5, 2.5, -0.5]) / 32768, 22050, scale="unit")
    np.testing.assert_array_equal(a.samples, [0, 2, 2, 0])
    b = prepare_samples(np.array([100.4, -7.6]), 22050, scale="int16")
    np.testing.assert_array_equal(b.samples, [100, -8])
    with pytest.raises(ValueError, match="scale"):
        prepare_samples(np.zeros(3), 22050, scale="auto")


def test_equalize_lengths_pads_start():
    a, b = equalize_lengths(np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(a, [0, 0, 1, 2])
    np.testing.assert_array_equal(b, [3, 4, 5, 6])
    _, a2 = equalize_lengths(np.array([3.0, 4.0, 5.0]), np.array([1.0]))
    np.testing.assert_array_equal(a2, [0, 0, 1])


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AudioLoadError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_not_audio_names_it_and_the_fix(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio")
    with pytest.raises(AudioLoadError, match=r"notes\.wav: not readable as audio.*ffmpeg") as info:
        load_audio(p)
    assert info.value.path == str(p)


def test_empty_audio_file(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.int16), 22050)
    with pytest.raises(AudioLoadError, match="no samples"):
        load_audio(p)
