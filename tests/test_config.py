"""Run config validation: errors name the key and its line."""

from __future__ import annotations

import pytest

from jndqa.flows.config import ConfigError, load_config

GOOD = """\
corpus:
  root: corpus/
variants:
  - label: mp3 128k
    codec: libmp3lame
    bitrate: 128k
metric:
  protocol: dense
regression:
  threshold: 0.05
"""


def test_good_config_with_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD)
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.corpus.root == tmp_path / "corpus"  # relative to the config's folder
    assert cfg.metric.model == "production" and cfg.baseline == "auto"
    assert cfg.regression.fail_on_regression is True and cfg.runner.kind == "threads"
    assert cfg.output == tmp_path / "out"
    assert len(cfg.config_hash()) == 16


def test_unknown_key_names_the_line(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD.replace("  threshold: 0.05", "  treshold: 0.05"))
    with pytest.raises(ConfigError, match=r"c\.yaml:10: regression\.treshold: unknown key"):
        load_config(tmp_path / "c.yaml")


def test_bad_value_names_the_line(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD.replace("protocol: dense", "protocol: fast"))
    msg = r"c\.yaml:8: metric\.protocol: Input should be 'dense', 'official' or 'student'"
    with pytest.raises(ConfigError, match=msg):
        load_config(tmp_path / "c.yaml")


def test_missing_corpus_and_bad_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("variants:\n  - codec: flac\n")
    with pytest.raises(ConfigError, match="corpus: Field required"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("corpus: {}\nvariants: [{codec: flac}]\n")
    with pytest.raises(ConfigError, match=r"corpus\.root"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "e.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_hop_longer_than_window_is_a_config_error(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD.replace("protocol: dense", "protocol: dense\n  hop_seconds: 9"))
    with pytest.raises(ConfigError, match=r"metric\.hop_seconds \(9\) must not exceed metric\.window_seconds \(8\)"):
        load_config(tmp_path / "c.yaml")
