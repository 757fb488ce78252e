"""The night's verdict: one pure function, tested as a table of every case, and what follows from it
(the summary's status, ``jndqa run``'s exit status, the deployment's Prefect state)."""

from __future__ import annotations

import pytest

from jndqa.flows.verdict import Verdict, night_verdict

# (regressions, failed items, fail_on_regression) -> (verdict, exit status, flow run Failed)
CASES = [
    (0, 0, True, Verdict.PASSED, 0, False),
    (0, 0, False, Verdict.PASSED, 0, False),
    (0, 2, True, Verdict.FAILED_ITEMS, 3, False),
    (0, 2, False, Verdict.FAILED_ITEMS, 3, False),
    (1, 0, True, Verdict.REGRESSED, 1, True),
    (1, 0, False, Verdict.REGRESSED_OK, 0, False),
    (1, 2, True, Verdict.REGRESSED, 1, True),
    (1, 2, False, Verdict.FAILED_ITEMS, 3, False),
]


@pytest.mark.parametrize(("regressions", "failures", "fail", "verdict", "exit_status", "fails_flow"), CASES)
def test_verdict_table(regressions, failures, fail, verdict, exit_status, fails_flow):
    got = night_verdict(regressions=regressions, failures=failures, fail_on_regression=fail)
    assert got is verdict
    assert got.exit_status == exit_status
    assert got.fails_flow is fails_flow
    assert got.regressed is (verdict in (Verdict.REGRESSED, Verdict.REGRESSED_OK))


def test_the_cli_exit_status_reads_the_verdict():
    from jndqa.flows.cli import _exit_for

    for _, _, _, verdict, exit_status, _ in CASES:
        assert _exit_for({"status": str(verdict)}) == exit_status
    with pytest.raises(ValueError):
        _exit_for({"status": "no such status"})
