"""Established full-reference metrics beside DPAM, as plugins of :mod:`jndqa.metric.plugin`.

- ``zimtohrli``: :class:`Zimtohrli` (Google's Zimtohrli, PyPI ``zimtohrli``), its MOS, 48 kHz;
- ``visqol``: :class:`ViSQOLAudio` (ViSQOL v3 audio mode, PyPI ``visqol-python``), MOS-LQO, 48 kHz;
- ``visqol-speech``: :class:`ViSQOLSpeech` (ViSQOL v3 speech mode), MOS-LQO, 16 kHz;
- ``pesq``: :class:`PESQ` (ITU-T P.862.2 wide-band PESQ, PyPI ``pesq``), MOS-LQO, 16 kHz.

They are optional: ``pip install 'jndqa[peers]'`` (``make test`` installs them). Each is registered in the
``jndqa.metrics`` entry points and loaded with ``jndqa.metric.load_metric(name)``; building one without its
package raises :class:`jndqa.metric.MetricUnavailable` saying what to install. The peer libraries are
imported on first use, never at import time. This package imports numpy, soxr and those libraries: nothing
of torch, ffmpeg, DuckDB or Prefect.
"""

from .common import INSTALL, PeerMetric
from .pesq_metric import PESQ
from .visqol_metric import ViSQOL, ViSQOLAudio, ViSQOLSpeech
from .zimtohrli_metric import Zimtohrli

__all__ = ["INSTALL", "PESQ", "PeerMetric", "ViSQOL", "ViSQOLAudio", "ViSQOLSpeech", "Zimtohrli"]
