"""What the peers share: the install hint, the version of the installed library, the library's engine built
on first use."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from jndqa.metric.plugin import MetricError, MetricUnavailable, PairMetric, installed_version

__all__ = ["INSTALL", "PeerMetric"]

INSTALL = "pip install 'jndqa[peers]'"


class PeerMetric(PairMetric):
    """A peer: a :class:`jndqa.metric.PairMetric` backed by the library ``module`` of the PyPI distribution
    ``distribution``, whose installed version is the metric's ``version``. Building one without the library
    raises :class:`jndqa.metric.MetricUnavailable` with :data:`INSTALL`. The library is imported and its
    engine built on first use (:meth:`engine`); a pickled peer leaves its engine behind."""

    distribution: ClassVar[str]
    module: ClassVar[str]
    needs_alignment = False
    orientation = "quality"

    def __init__(self) -> None:
        self.version = installed_version(self.id, self.distribution, self.module, INSTALL)
        self._engine: Any = None

    @abstractmethod
    def make_engine(self) -> Any:
        """Import the library and build what scores pairs."""

    def engine(self) -> Any:
        if self._engine is None:
            try:
                self._engine = self.make_engine()
            except ImportError as exc:
                raise MetricUnavailable(self.id, f"{self.distribution} cannot be imported ({exc})",
                                        install=INSTALL) from exc  # fmt: skip
        return self._engine

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    def check_length(self, x: np.ndarray, what: str, min_seconds: float) -> None:
        """:class:`MetricError` when ``x`` (at :attr:`rate`) is shorter than ``min_seconds``."""
        if len(x) < round(min_seconds * self.rate):
            raise MetricError(self.id, f"{what} lasts {len(x) / self.rate:.3g} s; {self.id} needs at least "
                                       f"{min_seconds:g} s")  # fmt: skip

    def check_not_silent(self, x: np.ndarray, what: str) -> None:
        """:class:`MetricError` when ``x`` is digitally silent."""
        if not np.any(x):
            raise MetricError(self.id, f"{what} is digitally silent; {self.id} cannot score it")
