"""Corpora and judgment files: manifests, validation, the demo corpus builder, the simulated listener."""

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
from .listener import SimulationSummary, simulate_judgments

__all__ = [
    "AUDIO_EXTENSIONS",
    "QUARANTINE_KINDS",
    "CorpusFailure",
    "CorpusItem",
    "Judgment",
    "JudgmentFile",
    "JudgmentFileError",
    "QuarantinedRow",
    "SimulationSummary",
    "data_hash",
    "judgment_id",
    "load_item_audio",
    "read_judgments",
    "scan_corpus",
    "simulate_judgments",
]
