"""Corpus scanning: content hashes, metadata, and every kind of bad file recorded with its reason."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import soundfile as sf

from jndqa.datasets import scan_corpus


def tone(rate: int, seconds: float, channels: int = 1, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * 997 * t)
    return np.repeat(x[:, None], channels, axis=1)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "speech").mkdir(parents=True)
    sf.write(root / "speech" / "good.wav", tone(44100, 1.0), 44100, subtype="PCM_16")
    sf.write(root / "low.wav", tone(8000, 1.0), 8000, subtype="PCM_16")
    sf.write(root / "surround.flac", tone(96000, 0.6, channels=6), 96000, subtype="PCM_24")
    (root / "zero.wav").write_bytes(b"")
    good = (root / "speech" / "good.wav").read_bytes()
    (root / "corrupt.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEjunk" + good[44:200])
    sf.write(root / "one.wav", np.zeros((1, 1)), 44100, subtype="PCM_16")
    nan = tone(44100, 1.0)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 44100, subtype="FLOAT")
    outside = tmp_path / "outside.wav"
    sf.write(outside, tone(44100, 1.0, amp=0.2), 44100)
    os.symlink(outside, root / "link_out.wav")
    (root / "notes.txt").write_text("not scanned")
    return root


def test_folder_scan_records_each_bad_file(corpus):
    items, failures = scan_corpus(corpus)
    by_path = {i.path: i for i in items}
    assert set(by_path) == {"speech/good.wav", "low.wav", "surround.flac"}
    good = by_path["speech/good.wav"]
    assert good.sha256 == hashlib.sha256((corpus / "speech" / "good.wav").read_bytes()).hexdigest()
    assert (good.rate, good.channels, good.frames) == (44100, 1, 44100)
    # ITU-R BS.1770: a 997 Hz sine at 0 dBFS peak reads -3.01 LKFS; at amplitude 0.1 (-20 dB): -23.01.
    assert good.loudness == pytest.approx(-23.01, abs=0.05)
    assert (by_path["surround.flac"].rate, by_path["surround.flac"].channels) == (96000, 6)
    reasons = {f.path: f.reason for f in failures}
    assert set(reasons) == {"zero.wav", "corrupt.wav", "one.wav", "nan.wav", "link_out.wav"}
    assert "empty file" in reasons["zero.wav"]
    assert "not readable as audio" in reasons["corrupt.wav"]
    assert "too short (1 samples" in reasons["one.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert "outside the corpus root" in reasons["link_out.wav"]


def test_manifest_with_tags_and_an_escaping_path(corpus, tmp_path):
    manifest = corpus / "corpus.csv"
    manifest.write_text("path,tags\nspeech/good.wav,speech;female\n../outside.wav,music\nmissing.wav,\nlow.wav,\n")
    items, failures = scan_corpus(manifest=manifest)
    assert [(i.path, i.tags) for i in items] == [("speech/good.wav", ["speech", "female"]), ("low.wav", [])]
    reasons = {f.path: f.reason for f in failures}
    assert "escapes the corpus root" in reasons["../outside.wav"]
    assert reasons["missing.wav"] == "file not found"


def test_manifest_needs_a_path_column(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,tags\na.wav,\n")
    with pytest.raises(ValueError, match="'path' column"):
        scan_corpus(manifest=bad)


def test_duplicate_content_is_one_item(tmp_path):
    sf.write(tmp_path / "a.wav", tone(22050, 1.0), 22050, subtype="PCM_16")
    (tmp_path / "b.wav").write_bytes((tmp_path / "a.wav").read_bytes())
    items, failures = scan_corpus(tmp_path)
    assert len(items) == 1 and not failures
