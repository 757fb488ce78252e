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


def test_metrics_default_to_dpam_and_name_each_metric_once(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD)
    assert load_config(tmp_path / "c.yaml").metrics == ["dpam"]
    (tmp_path / "c.yaml").write_text(GOOD + "metrics: [zimtohrli, dpam]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.metrics == ["zimtohrli", "dpam"] and cfg.regression.threshold_for("zimtohrli") == 0.05
    (tmp_path / "c.yaml").write_text(GOOD + "metrics: [dpam, pesq, dpam]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:11: metrics: Value error, listed more than once: dpam"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(GOOD + "metrics: []\n")
    with pytest.raises(ConfigError, match=r"metrics: List should have at least 1 item"):
        load_config(tmp_path / "c.yaml")


def test_per_metric_thresholds_name_listed_metrics(tmp_path):
    text = GOOD.replace("  threshold: 0.05", "  threshold: 0.05\n  thresholds: {zimtohrli: 0.2}")
    (tmp_path / "c.yaml").write_text(text + "metrics: [dpam, zimtohrli]\n")
    reg = load_config(tmp_path / "c.yaml").regression
    assert reg.threshold_for("zimtohrli") == 0.2 and reg.threshold_for("dpam") == 0.05
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"regression\.thresholds names zimtohrli, not in metrics \(dpam\)"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(text.replace("0.2}", "-1}") + "metrics: [dpam, zimtohrli]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:11: regression\.thresholds: Value error, thresholds must be >= 0"):
        load_config(tmp_path / "c.yaml")
