"""Zimtohrli (Google; PyPI ``zimtohrli``) as the metric ``zimtohrli``.

Zimtohrli compares the two signals' auditory spectrograms (a 128-channel filterbank, 48 kHz input on the
unit scale), aligns them in time itself (dynamic time warping) and reports a distance in [0, 1]
(1 - NSIM); ``zimtohrli.mos_from_zimtohrli`` maps it to an approximate MOS in [1, 5] (5 at distance 0), as
``zimtohrli.mos_from_signals`` does. The metric's value is that MOS (orientation ``quality``); ``extra``
holds the raw ``distance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jndqa.metric.plugin import MetricScore

from .common import PeerMetric

__all__ = ["MIN_SECONDS", "Zimtohrli"]

# The library aborts the whole process (a double free) on signals shorter than about 3,950 samples at
# 48 kHz (measured with zimtohrli 0.2.1.post1); shorter pairs are refused before they reach it.
MIN_SECONDS = 0.1


class Zimtohrli(PeerMetric):
    """Zimtohrli's MOS of a pair (mono, 48 kHz); ``extra``: ``distance`` (Zimtohrli's raw distance).
    A signal shorter than :data:`MIN_SECONDS` is a :class:`jndqa.metric.MetricError`."""

    id = "zimtohrli"
    rate = 48000
    distribution = "zimtohrli"
    module = "zimtohrli"

    def make_engine(self) -> Any:
        """(``zimtohrli.Pyohrli()``, ``zimtohrli.mos_from_zimtohrli``)."""
        import zimtohrli

        engine = zimtohrli.Pyohrli()
        if int(engine.sample_rate) != self.rate:
            raise ImportError(f"zimtohrli expects {engine.sample_rate} Hz, not {self.rate}: an unsupported version")
        return engine, zimtohrli.mos_from_zimtohrli

    def score_pair(self, ref: np.ndarray, test: np.ndarray) -> MetricScore:
        self.check_length(ref, "reference", MIN_SECONDS)
        self.check_length(test, "test", MIN_SECONDS)
        engine, mos_from_distance = self.engine()
        distance = float(engine.distance(ref, test))
        return MetricScore(float(mos_from_distance(distance)), {"distance": distance})
