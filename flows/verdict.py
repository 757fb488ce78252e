"""A night's verdict: one pure function of (regressions, failed items, config) and what follows from it.

The run summary's ``status``, ``jndqa run``'s exit status and the deployment's Prefect state all
read :func:`night_verdict`'s :class:`Verdict`; nothing else decides them.

=================  ============================================  ====  ============
verdict            when                                          exit  Prefect state
=================  ============================================  ====  ============
``regressed``      a regression, and the config fails on them     1    Failed
``changed``        an output changed audibly since the golden     1    Failed
                   run (``golden.fail_on_audible_change``), no
                   failing regression
``failed_items``   some items or variants failed (and no failing  3    Completed
                   regression)
``regressed_ok``   a regression the config does not fail on,      0    Completed
                   no failed item
``passed``         neither                                        0    Completed
=================  ============================================  ====  ============

A regression that does not fail the night is still listed under ``regressions`` in the summary,
the JSON and the report.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_PARTIAL", "EXIT_REGRESSION", "Verdict", "night_verdict"]

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3


class Verdict(StrEnum):
    """The status of a finished night (the summary's ``status``)."""

    PASSED = "passed"
    REGRESSED = "regressed"
    REGRESSED_OK = "regressed_ok"
    FAILED_ITEMS = "failed_items"
    CHANGED = "changed"

    @property
    def exit_status(self) -> int:
        """``jndqa run``'s exit status for this verdict."""
        return {Verdict.REGRESSED: EXIT_REGRESSION, Verdict.CHANGED: EXIT_REGRESSION,
                Verdict.FAILED_ITEMS: EXIT_PARTIAL}.get(self, EXIT_OK)  # fmt: skip

    @property
    def fails_flow(self) -> bool:
        """Whether the deployment's flow run ends Failed."""
        return self in (Verdict.REGRESSED, Verdict.CHANGED)

    @property
    def regressed(self) -> bool:
        """Whether a regression was found (failing the night or not)."""
        return self in (Verdict.REGRESSED, Verdict.REGRESSED_OK)


def night_verdict(*, regressions: int, failures: int, fail_on_regression: bool, audible: int = 0,
                  fail_on_audible_change: bool = False) -> Verdict:  # fmt: skip
    """The verdict of a night with ``regressions`` regressed variants, ``failures`` failed items or
    variants and ``audible`` outputs changed audibly since the golden run, under the config's
    ``regression.fail_on_regression`` and ``golden.fail_on_audible_change``."""
    if regressions and fail_on_regression:
        return Verdict.REGRESSED
    if audible and fail_on_audible_change:
        return Verdict.CHANGED
    if failures:
        return Verdict.FAILED_ITEMS
    return Verdict.REGRESSED_OK if regressions else Verdict.PASSED
