"""DPAM in PyTorch: network, weight import from the official release, batched scoring.

This package knows nothing of ffmpeg, DuckDB or Prefect. Nothing happens at
import time beyond defining names.
"""

from .audio import MODEL_RATE, AudioLoadError, PreparedAudio, equalize_lengths, load_audio, prepare_samples
from .checkpoint import CheckpointError, TFCheckpoint
from .functional import dpam_distance, dpam_p_jnd
from .network import DPAM, DPAMWeights, Features, layer_lengths, load_official_weights, same_padding
from .release import MODELS, ReleaseNotFoundError, SetupError, fetch_release, find_release
from .score import PROTOCOLS, DPAMScorer, PairScore, Reference, resolve_model

__all__ = [
    "DPAM",
    "MODELS",
    "MODEL_RATE",
    "PROTOCOLS",
    "AudioLoadError",
    "CheckpointError",
    "DPAMScorer",
    "DPAMWeights",
    "Features",
    "PairScore",
    "PreparedAudio",
    "Reference",
    "ReleaseNotFoundError",
    "SetupError",
    "TFCheckpoint",
    "dpam_distance",
    "dpam_p_jnd",
    "equalize_lengths",
    "fetch_release",
    "find_release",
    "layer_lengths",
    "load_audio",
    "load_official_weights",
    "prepare_samples",
    "resolve_model",
    "same_padding",
]
