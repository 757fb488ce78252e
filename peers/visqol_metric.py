"""ViSQOL v3 (Google's Virtual Speech Quality Objective Listener; the pure-Python port on PyPI,
``visqol-python``) as the metrics ``visqol`` (audio mode) and ``visqol-speech`` (speech mode).

- Audio mode: 48 kHz, 32 gammatone bands up to 15 kHz, an SVR maps the per-band similarities to MOS-LQO.
- Speech mode: 16 kHz, 21 bands up to 8 kHz, voice-activity patches, MOS-LQO from ViSQOL's exponential
  (polynomial) mapping scaled to 5. The port's default speech mapper is a TFLite lattice network when the
  optional ``ai-edge-litert`` runtime is installed and the polynomial otherwise; jndqa always asks for the
  polynomial (``use_lattice_model=False``), so the number does not depend on what else is installed.

ViSQOL aligns the pair itself (global cross-correlation, then per patch), so ``needs_alignment`` is False.
The value is MOS-LQO in [1, 5] (orientation ``quality``); ``extra``: ``vnsim`` (mean NSIM over patches),
``fvnsim`` (per band), ``mode`` and, in speech mode, ``mapper``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from jndqa.metric.plugin import MetricError, MetricScore

from .common import PeerMetric

__all__ = ["ViSQOL", "ViSQOLAudio", "ViSQOLSpeech"]

MODES = {"audio": ("visqol", 48000), "speech": ("visqol-speech", 16000)}


class ViSQOL(PeerMetric):
    """ViSQOL's MOS-LQO in ``mode`` ``audio`` (id ``visqol``, 48 kHz) or ``speech`` (id ``visqol-speech``,
    16 kHz; polynomial mapper). A pair the library refuses (too short to build its patches, a silent or
    unmatched signal) is a :class:`jndqa.metric.MetricError` with the library's reason."""

    distribution = "visqol-python"
    module = "visqol"

    def __init__(self, mode: Literal["audio", "speech"] = "audio"):
        if mode not in MODES:
            raise ValueError(f"ViSQOL mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.id, self.rate = MODES[mode]
        self.variant = "polynomial" if mode == "speech" else ""
        super().__init__()

    def make_engine(self) -> Any:
        from visqol import VisqolApi

        api = VisqolApi()
        if self.mode == "speech":
            api.create(mode="speech", use_lattice_model=False)
        else:
            api.create(mode="audio")
        return api

    def score_pair(self, ref: np.ndarray, test: np.ndarray) -> MetricScore:
        self.check_not_silent(ref, "reference")
        api = self.engine()
        try:
            result = api.measure_from_arrays(ref.astype(np.float64), test.astype(np.float64), self.rate)
        except ValueError as exc:
            raise MetricError(self.id, f"ViSQOL cannot score this pair: {exc}") from exc
        mos = float(result.moslqo)
        if not math.isfinite(mos):
            raise MetricError(self.id, f"ViSQOL gave no score ({mos}) for this pair")
        extra: dict[str, Any] = {
            "vnsim": float(result.vnsim),
            "fvnsim": [float(v) for v in np.asarray(result.fvnsim).ravel()],
            "mode": self.mode,
        }
        if self.mode == "speech":
            extra["mapper"] = "polynomial"
        return MetricScore(mos, extra)


class ViSQOLAudio(ViSQOL):
    """ViSQOL in audio mode: the registered ``visqol``."""

    def __init__(self) -> None:
        super().__init__("audio")


class ViSQOLSpeech(ViSQOL):
    """ViSQOL in speech mode: the registered ``visqol-speech``."""

    def __init__(self) -> None:
        super().__init__("speech")
