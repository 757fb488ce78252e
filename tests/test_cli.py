"""`jndqa score`, `jndqa setup`, `jndqa demo` through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

JNDQA = str(Path(sys.executable).parent / "jndqa")


def run(*args, cwd=None, env=None):
    return subprocess.run([JNDQA, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def close_to_official(d, official):
    return abs(d - official) <= 1e-3 * abs(official) + 2e-4  # docs/metric.md §8


def test_score_json(release):
    audio = release / "sample_audio"
    r = run("score", audio / "ref.wav", audio / "2.wav", "--protocol", "official", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # stdout holds one JSON object and nothing else
    assert out["model"] == "dpam-scratch-official" and out["protocol"] == "official"
    (res,) = out["results"]
    assert res["ref"].endswith("ref.wav") and res["test"].endswith("2.wav")
    assert close_to_official(res["distance"], 0.192909)
    assert 0.0 < res["p_jnd"] < 1.0


def test_score_model_option_and_text_output(release):
    audio = release / "sample_audio"
    r = run("score", audio / "ref.wav", audio / "2.wav", "--model", "linear_layer", "--protocol", "official")
    assert r.returncode == 0, r.stderr
    assert "dpam-linear_layer-official" in r.stdout
    d = float(r.stdout.splitlines()[1].split()[0])
    assert close_to_official(d, 0.047843)


def test_score_pairs_file_with_relative_paths(release, tmp_path):
    for name in ("ref.wav", "2.wav", "4.wav"):
        shutil.copy(release / "sample_audio" / name, tmp_path / name)
    (tmp_path / "sub").mkdir()
    pairs = tmp_path / "sub" / "pairs.tsv"
    pairs.write_text("# ref\ttest\n../ref.wav\t../2.wav\n../ref.wav\t../4.wav\n../2.wav\t../4.wav\n")
    r = run("score", "--pairs", pairs, "--protocol", "official", "--json", cwd="/")
    assert r.returncode == 0, r.stderr
    got = [x["distance"] for x in json.loads(r.stdout)["results"]]
    for d, official in zip(got, [0.192909, 0.888547, 1.035840], strict=True):
        assert close_to_official(d, official)


def test_missing_file_exits_2_naming_it(release, tmp_path):
    r = run("score", release / "sample_audio" / "ref.wav", tmp_path / "missing.wav", "--json")
    assert r.returncode == 2
    assert "missing.wav" in r.stderr and r.stdout == ""


def test_unreadable_file_exits_2_naming_it(release, tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"RIFF....garbage")
    r = run("score", release / "sample_audio" / "ref.wav", bad)
    assert r.returncode == 2
    assert "garbage.wav" in r.stderr and "not readable as audio" in r.stderr


def test_pairs_with_a_bad_row_scores_the_rest_and_exits_3(release, tmp_path):
    shutil.copy(release / "sample_audio" / "ref.wav", tmp_path / "ref.wav")
    shutil.copy(release / "sample_audio" / "2.wav", tmp_path / "2.wav")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("ref.wav\t2.wav\nref.wav\tgone.wav\n")
    r = run("score", "--pairs", pairs, "--protocol", "official", "--json")
    assert r.returncode == 3
    out = json.loads(r.stdout)
    assert len(out["results"]) == 1 and close_to_official(out["results"][0]["distance"], 0.192909)
    assert out["failures"][0]["test"].endswith("gone.wav") and "not found" in out["failures"][0]["reason"]


def test_bad_usage_exits_2():
    assert run("score").returncode == 2
    assert run("score", "a.wav", "b.wav", "--model", "nonsense").returncode == 2
    assert run("no-such-command").returncode == 2


def test_help_has_examples():
    r = run("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "jndqa score" in r.stdout


def test_missing_weights_say_how_to_fetch(tmp_path):
    env = {**os.environ, "JNDQA_CACHE": str(tmp_path / "cache"), "JNDQA_DPAM_DIR": str(tmp_path / "none")}
    wav = tmp_path / "x.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(100, dtype=np.int16), 22050)
    r = run("score", wav, wav, env=env)
    assert r.returncode == 2 and "jndqa setup" in r.stderr


def test_setup_rejects_a_foreign_sdist(tmp_path):
    fake = tmp_path / "dpam-0.0.4.tar.gz"
    fake.write_bytes(b"not the release")
    r = run("setup", "--dir", tmp_path / "rel", "--sdist", fake)
    assert r.returncode == 2 and "sha256" in r.stderr and not (tmp_path / "rel").exists()


def test_score_defaults_to_dense_with_windows(release):
    audio = release / "sample_audio"
    r = run("score", audio / "ref.wav", audio / "4.wav", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["protocol"] == "dense"
    (res,) = out["results"]
    assert res["p_jnd_calibrated"] is False
    assert res["windows"] == [{"start": 0.0, "end": 2.5, "distance": pytest.approx(res["distance"])}]
    assert res["distance"] == pytest.approx(1.2867295, rel=1e-4)  # tests/test_dense.py golden value


def test_mono_against_stereo_needs_downmix(release, tmp_path):
    import soundfile as sf

    mono, rate = sf.read(release / "sample_audio" / "ref.wav")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([mono, mono], 1), rate, subtype="PCM_16")
    r = run("score", release / "sample_audio" / "ref.wav", stereo)
    assert r.returncode == 2 and "--downmix" in r.stderr and "stereo.wav" in r.stderr
    r = run("score", release / "sample_audio" / "ref.wav", stereo, "--downmix", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["distance"] == 0.0


def test_stereo_pair_reports_channels(release, tmp_path):
    import soundfile as sf

    a, rate = sf.read(release / "sample_audio" / "ref.wav")
    b, _ = sf.read(release / "sample_audio" / "4.wav")
    sf.write(tmp_path / "r.wav", np.stack([a, a], 1), rate, subtype="PCM_16")
    sf.write(tmp_path / "t.wav", np.stack([a, b], 1), rate, subtype="PCM_16")
    r = run("score", tmp_path / "r.wav", tmp_path / "t.wav", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["worst_channel"] == 1 and res["channels"][0] == 0.0
    assert res["distance"] == pytest.approx(1.2867295, rel=1e-4)


def test_misaligned_lengths_exit_2(release, tmp_path):
    import soundfile as sf

    a, rate = sf.read(release / "sample_audio" / "ref.wav")
    sf.write(tmp_path / "short.wav", a[:-5000], rate, subtype="PCM_16")
    r = run("score", release / "sample_audio" / "ref.wav", tmp_path / "short.wav")
    assert r.returncode == 2 and "align" in r.stderr and "short.wav" in r.stderr


def test_score_aligns_a_codec_delay_by_default(release, tmp_path):
    """A test delayed by 1,500 samples (as AAC and MP3 decoders prepend priming samples): aligned by
    default (the offset is reported), it scores as the undelayed copy does; --no-align scores the files
    as they are (here with a tolerance that lets the lengths through), which the delay ruins."""
    import soundfile as sf

    a, rate = sf.read(release / "sample_audio" / "ref.wav")
    noisy = a + np.random.default_rng(0).normal(0, 0.003, a.shape)
    sf.write(tmp_path / "noisy.wav", noisy, rate, subtype="PCM_16")
    sf.write(tmp_path / "late.wav", np.concatenate([np.zeros(1500), noisy]), rate, subtype="PCM_16")
    ref = release / "sample_audio" / "ref.wav"
    plain = json.loads(run("score", ref, tmp_path / "noisy.wav", "--json").stdout)["results"][0]
    late = json.loads(run("score", ref, tmp_path / "late.wav", "--json").stdout)["results"][0]
    args = ("--json", "--no-align", "--length-tolerance", "2000")
    raw = json.loads(run("score", ref, tmp_path / "late.wav", *args).stdout)["results"][0]
    assert rate == 22050 and late["offset_samples"] == 1500 and late["alignment"] == "samples"
    assert plain["offset_samples"] == 0 and "offset_samples" not in raw
    assert late["distance"] == pytest.approx(plain["distance"], rel=1e-6)
    assert raw["distance"] > 3 * late["distance"]
    unaligned = run("score", ref, tmp_path / "late.wav", "--no-align")  # 1,500 > the default tolerance
    assert unaligned.returncode == 2 and "1500 samples" in unaligned.stderr
