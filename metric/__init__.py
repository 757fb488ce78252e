"""DPAM in PyTorch: network, weight import from the official release, batched scoring,
fine-tuning on judgments, evaluation and calibration of p(different).

This package knows nothing of ffmpeg, DuckDB or Prefect. Nothing happens at
import time beyond defining names.
"""

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
from .evaluate import Comparison, Estimate, Evaluation, EvaluationError, Reliability, compare, evaluate
from .functional import dpam_distance, dpam_p_jnd
from .model import OFFICIAL_MODEL_VERSION, ModelRef, Protocol, official_name, protocol_rule
from .modelfile import ModelFileError, load_calibration, load_model, parameter_digest, read_metadata, save_model
from .network import DPAM, DPAMWeights, Features, layer_lengths, load_official_weights, same_padding
from .release import MODELS, ReleaseNotFoundError, SetupError, fetch_release, find_release
from .score import PROTOCOLS, DPAMScorer, PairScore, Reference
from .train import (
    MODES,
    CheckpointMismatchError,
    EpochRecord,
    Prediction,
    TrainConfig,
    TrainingError,
    TrainResult,
    load_pair,
    pair_terms,
    predict,
    predict_from_terms,
    split_by_group,
    train,
)

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
    "DPAMScorer",
    "DPAMWeights",
    "EpochRecord",
    "Estimate",
    "Evaluation",
    "EvaluationError",
    "Features",
    "IsotonicCalibrator",
    "ModelFileError",
    "ModelRef",
    "PairScore",
    "PlattCalibrator",
    "Prediction",
    "PreparedAudio",
    "Protocol",
    "Reference",
    "ReleaseNotFoundError",
    "Reliability",
    "SetupError",
    "TFCheckpoint",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
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
    "read_metadata",
    "same_padding",
    "save_model",
    "split_by_group",
    "train",
]
