"""Corpora, judgment and rating files: manifests, validation, the demo corpus builder, the simulated listener."""

from .corpus import AUDIO_EXTENSIONS, CorpusFailure, CorpusItem, load_item_audio, scan_corpus
from .judgments import (
    QUARANTINE_KINDS,
    Judgment,
    JudgmentFile,
    JudgmentFileError,
    QuarantinedRow,
    data_hash,
    judgment_id,
    read_judgments,
)
from .listener import MushraSummary, SimulationSummary, simulate_judgments, simulate_mushra
from .ratings import (
    HIGHER_IS_BETTER,
    SCALES,
    Rating,
    RatingFile,
    RatingFileError,
    StimulusMean,
    rating_id,
    read_ratings,
    stimulus_means,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "HIGHER_IS_BETTER",
    "QUARANTINE_KINDS",
    "SCALES",
    "CorpusFailure",
    "CorpusItem",
    "Judgment",
    "JudgmentFile",
    "JudgmentFileError",
    "MushraSummary",
    "QuarantinedRow",
    "Rating",
    "RatingFile",
    "RatingFileError",
    "SimulationSummary",
    "StimulusMean",
    "data_hash",
    "judgment_id",
    "load_item_audio",
    "rating_id",
    "read_judgments",
    "read_ratings",
    "scan_corpus",
    "simulate_judgments",
    "simulate_mushra",
    "stimulus_means",
]
