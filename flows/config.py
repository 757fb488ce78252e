"""The run config (docs/config.md; a user-facing contract: extend, don't rename).

Validated with pydantic; an error names the key and its line in the YAML file:

    config.yaml:7: variants.1.bitrate: Input should be a valid string
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ConfigError", "RunConfig", "load_config"]


class ConfigError(ValueError):
    """The run config is missing, not YAML, or invalid; the message names the key and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(_Strict):
    root: Path | None = None
    manifest: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CorpusConfig:
        if self.root is None and self.manifest is None:
            raise ValueError("give corpus.root (a folder) or corpus.manifest (a CSV with a 'path' column)")
        return self


class MetricConfig(_Strict):
    model: str = "production"
    protocol: Literal["dense", "official", "student"] = "dense"
    window_seconds: float = Field(8.0, gt=0)
    hop_seconds: float = Field(4.0, gt=0)
    length_tolerance: int = Field(1024, ge=0)

    @model_validator(mode="after")
    def _windows(self) -> MetricConfig:
        if self.hop_seconds > self.window_seconds:
            raise ValueError(f"metric.hop_seconds ({self.hop_seconds:g}) must not exceed metric.window_seconds "
                             f"({self.window_seconds:g})")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _student(self) -> MetricConfig:
        """``model: dpam-dense-student-v3`` (the committed student, ``STUDENT_VERSION``) runs the
        student protocol; a retired student version is an error that names the current one."""
        if self.model.startswith("dpam-dense-student-"):
            from jndqa.metric.student import RETIRED_STUDENTS, STUDENT_VERSION

            if self.model in RETIRED_STUDENTS:
                raise ValueError(
                    f"metric.model: {self.model} is retired ({RETIRED_STUDENTS[self.model]}); write "
                    f"`model: {STUDENT_VERSION}` or `protocol: student` (the committed student)"
                )
            if self.model != STUDENT_VERSION:
                raise ValueError(f"metric.model: no student {self.model!r}; the committed one is {STUDENT_VERSION}")
            self.protocol = "student"
        return self


class RegressionConfig(_Strict):
    threshold: float = Field(0.05, ge=0)
    thresholds: dict[str, float] = Field(default_factory=dict)  # per metric name, in that metric's units
    fail_on_regression: bool = True
    bootstrap: int = Field(10_000, ge=100)
    seed: int = 0

    @field_validator("thresholds")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not x >= 0}
        if bad:
            raise ValueError(f"thresholds must be >= 0: {bad}")
        return v

    def threshold_for(self, metric: str) -> float:
        """The regression threshold of ``metric``: ``thresholds[metric]``, else ``threshold``."""
        return self.thresholds.get(metric, self.threshold)


class RunnerConfig(_Strict):
    kind: Literal["threads", "dask"] = "threads"
    address: str | None = None
    workers: int = Field(2, ge=1)
    retries: int = Field(1, ge=0)
    timeout: float = Field(120.0, gt=0, description="seconds per encoder/decoder call")


class LoudnessConfig(_Strict):
    match: bool = False  # match each variant's loudness to its reference before scoring
    normalize_corpus: float | None = None  # LUFS target for references before encoding


class GoldenConfig(_Strict):
    """Golden outputs (flows/golden.py): keep every variant's output, compare each with the accepted run's."""

    keep: bool = False  # keep every variant's decoded output (24-bit FLAC by content hash, shared between runs)
    compare: bool = False  # compare each output with the latest accepted run's output of the same item and variant
    audible: float = Field(0.5, gt=0, lt=1, description="calibrated p_jnd at or above which a change is audible")
    audible_distance: float | None = Field(
        None, gt=0, description="distance at or above which a change is audible when the model has no calibration"
    )
    fail_on_audible_change: bool = True  # the night is `changed` (exit 1) when any output changed audibly


class RunConfig(_Strict):
    corpus: CorpusConfig
    variants: list[dict[str, Any]] = Field(min_length=1)
    metrics: list[str] = Field(default_factory=lambda: ["dpam"], min_length=1)
    metric: MetricConfig = MetricConfig()
    baseline: str | None = "auto"
    regression: RegressionConfig = RegressionConfig()
    runner: RunnerConfig = RunnerConfig()
    loudness: LoudnessConfig = LoudnessConfig()
    golden: GoldenConfig = GoldenConfig()
    ffmpeg: Path | None = None
    output: Path = Path("out/")
    keep_audio: int = Field(3, ge=0, description="worst items per variant whose decoded audio the report keeps")
    keep_flagged: int = Field(
        10, ge=0, description="most-worsened items per regressed variant whose decoded audio the report keeps"
    )

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, v: list[str]) -> list[str]:
        """Names of registered metrics (checked when the night is planned: one that cannot run there is a
        recorded failure), each once; the first is primary."""
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        if any(not m.strip() for m in v):
            raise ValueError("a metric name is empty")
        return v

    @model_validator(mode="after")
    def _thresholds_name_metrics(self) -> RunConfig:
        unknown = sorted(set(self.regression.thresholds) - set(self.metrics))
        if unknown:
            raise ValueError(f"regression.thresholds names {', '.join(unknown)}, not in metrics "
                             f"({', '.join(self.metrics)})")  # fmt: skip
        return self

    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline(cls, v: Any) -> Any:
        return None if v in (None, "", "none", "null") else str(v)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest ancestor that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; relative paths are resolved from the config's folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; see examples/demo.yaml for the format")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the config must be a mapping with 'corpus' and 'variants' keys")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(x) for x in loc) or "(top level)"
            line = _line_of(node, tuple(x for x in loc if not isinstance(x, str) or not x.startswith("function-")))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling against the documented config)"
            lines.append(f"{p}:{line}: {where}: {msg}" if line else f"{p}: {where}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    base = p.parent
    if cfg.corpus.root is not None and not cfg.corpus.root.is_absolute():
        cfg.corpus.root = base / cfg.corpus.root
    if cfg.corpus.manifest is not None and not cfg.corpus.manifest.is_absolute():
        cfg.corpus.manifest = base / cfg.corpus.manifest
    if not cfg.output.is_absolute():
        cfg.output = base / cfg.output
    return cfg
