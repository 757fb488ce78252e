"""DPAM in PyTorch: network, weight import from the official release, batched scoring,
fine-tuning on judgments, evaluation and calibration of p(different); the metric plugin interface
(:mod:`jndqa.metric.plugin`) and DPAM as its built-in plugin.

This package knows nothing of ffmpeg, DuckDB or Prefect. Nothing happens at
import time beyond defining names. The names of the modules that need torch (the network,
scoring, training, model files) are imported on first use, so that
``jndqa.metric.plugin``, the model identity and the peers (:mod:`jndqa.peers`) work without torch.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .audio import MODEL_RATE, AudioLoadError, PreparedAudio, equalize_lengths, load_audio, prepare_samples
from .calibration import (
    CALIBRATION_METHODS,
    CalibrationError,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    calibrator_from_dict,
    fit_calibrator,
)
from .checkpoint import CheckpointError, TFCheckpoint
from .dpam_plugin import DPAMMetric
from .evaluate import Comparison, Estimate, Evaluation, EvaluationError, Reliability, compare, evaluate
from .model import OFFICIAL_MODEL_VERSION, ModelRef, Protocol, official_name, protocol_rule
from .plugin import (
    Metric,
    MetricError,
    MetricScore,
    MetricUnavailable,
    PairMetric,
    available_metrics,
    load_metric,
)
from .release import MODELS, ReleaseNotFoundError, SetupError, fetch_release, find_release

# Imported on first use, by module (these modules import torch).
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "functional": ("dpam_distance", "dpam_p_jnd"),
    "modelfile": (
        "ModelFileError",
        "load_calibration",
        "load_calibrations",
        "load_model",
        "parameter_digest",
        "read_metadata",
        "save_model",
    ),
    "network": ("DPAM", "DPAMWeights", "Features", "layer_lengths", "load_official_weights", "same_padding"),
    "score": ("PROTOCOLS", "DPAMScorer", "PairScore", "Reference"),
    "train": (
        "MODES",
        "CheckpointMismatchError",
        "EpochRecord",
        "Prediction",
        "RankingData",
        "TrainConfig",
        "TrainingError",
        "TrainResult",
        "load_pair",
        "pair_terms",
        "predict",
        "predict_from_terms",
        "RankingData",
        "ranking_pairs",
        "split_by_group",
        "train",
    ),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}

if TYPE_CHECKING:  # for type checkers and editors; at run time these come from __getattr__
    from .functional import dpam_distance, dpam_p_jnd
    from .modelfile import (
        ModelFileError,
        load_calibration,
        load_calibrations,
        load_model,
        parameter_digest,
        read_metadata,
        save_model,
    )
    from .network import DPAM, DPAMWeights, Features, layer_lengths, load_official_weights, same_padding
    from .score import PROTOCOLS, DPAMScorer, PairScore, Reference
    from .train import (
        MODES,
        CheckpointMismatchError,
        EpochRecord,
        Prediction,
        RankingData,
        TrainConfig,
        TrainingError,
        TrainResult,
        load_pair,
        pair_terms,
        predict,
        predict_from_terms,
        ranking_pairs,
        split_by_group,
        train,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """``jndqa.metric.train`` is the function ``train``, also once the module ``train`` is imported (the
    import system sets a package attribute for each submodule it loads)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CALIBRATION_METHODS",
    "DPAM",
    "MODELS",
    "MODEL_RATE",
    "MODES",
    "OFFICIAL_MODEL_VERSION",
    "PROTOCOLS",
    "AudioLoadError",
    "CalibrationError",
    "Calibrator",
    "CheckpointError",
    "CheckpointMismatchError",
    "Comparison",
    "DPAMMetric",
    "DPAMScorer",
    "DPAMWeights",
    "EpochRecord",
    "Estimate",
    "Evaluation",
    "EvaluationError",
    "Features",
    "IsotonicCalibrator",
    "Metric",
    "MetricError",
    "MetricScore",
    "MetricUnavailable",
    "ModelFileError",
    "ModelRef",
    "PairMetric",
    "PairScore",
    "PlattCalibrator",
    "Prediction",
    "PreparedAudio",
    "Protocol",
    "RankingData",
    "Reference",
    "ReleaseNotFoundError",
    "Reliability",
    "SetupError",
    "TFCheckpoint",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "available_metrics",
    "calibrator_from_dict",
    "compare",
    "dpam_distance",
    "dpam_p_jnd",
    "equalize_lengths",
    "evaluate",
    "fetch_release",
    "find_release",
    "fit_calibrator",
    "layer_lengths",
    "load_audio",
    "load_calibration",
    "load_calibrations",
    "load_metric",
    "load_model",
    "load_official_weights",
    "load_pair",
    "official_name",
    "pair_terms",
    "parameter_digest",
    "predict",
    "predict_from_terms",
    "prepare_samples",
    "protocol_rule",
    "ranking_pairs",
    "read_metadata",
    "same_padding",
    "save_model",
    "split_by_group",
    "train",
]
