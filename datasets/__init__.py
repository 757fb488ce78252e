"""Corpora and judgment files: manifests, validation, the demo corpus builder."""

from .corpus import AUDIO_EXTENSIONS, CorpusFailure, CorpusItem, load_item_audio, scan_corpus

__all__ = ["AUDIO_EXTENSIONS", "CorpusFailure", "CorpusItem", "load_item_audio", "scan_corpus"]
