"""Wide-band PESQ (ITU-T P.862.2; the C reference code wrapped by PyPI ``pesq``) as the metric ``pesq``.

PESQ is a speech metric defined at 16 kHz (wide band) and 8 kHz (narrow band); jndqa uses the wide band:
both signals are resampled to 16 kHz, so only their 0-8 kHz content counts. It aligns the pair itself
(P.862's delay estimation per utterance), so ``needs_alignment`` is False. The value is P.862.2's MOS-LQO,
from about 1.0 to 4.64 (orientation ``quality``).

It scores any pair the reference code accepts, music included, where its number says little; the code
refuses signals shorter than 0.25 s and pairs in which it finds no utterance, and a silent signal, which
it would divide by zero, is refused before: each is a :class:`jndqa.metric.MetricError` with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jndqa.metric.plugin import MetricError, MetricScore

from .common import PeerMetric

__all__ = ["PESQ"]


class PESQ(PeerMetric):
    """P.862.2 wide-band PESQ MOS-LQO of a pair (mono, 16 kHz)."""

    id = "pesq"
    rate = 16000
    distribution = "pesq"
    module = "pesq"
    variant = "wb"

    def make_engine(self) -> Any:
        import pesq

        return pesq

    def score_pair(self, ref: np.ndarray, test: np.ndarray) -> MetricScore:
        self.check_not_silent(ref, "reference")
        self.check_not_silent(test, "test")
        lib = self.engine()
        try:
            value = lib.pesq(self.rate, ref, test, "wb")
        except lib.PesqError as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise MetricError(self.id, f"PESQ cannot score this pair: {reason} ({type(exc).__name__})") from exc
        return MetricScore(float(value), {"mode": "wb"})
