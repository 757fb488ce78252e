"""Pairs of files as a user hands them over (``jndqa score``, ``jndqa agree``): the test aligned to
its reference as the nightly aligns variants (:mod:`jndqa.variants.align`)."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_LAG_SECONDS", "align_pair"]

MAX_LAG_SECONDS = 1.0  # the offset search reaches this far either side


def align_pair(ref: np.ndarray, test: np.ndarray, rate: int, *, samples_only: bool) -> tuple[np.ndarray, int, str]:
    """``test`` aligned to ``ref`` (both at ``rate``, ``[L]`` or ``[L, C]`` with the same channels):
    returns (the test shifted by the offset found and cut or zero-padded to the reference's length,
    the offset in samples (positive: the test starts later), the method). The offset is searched
    within ±:data:`MAX_LAG_SECONDS` by cross-correlation of the samples (method ``samples``), else of
    the log-energy envelopes (``envelope``: a resynthesising codec). Raises ValueError saying why when
    neither aligns, or when only the envelopes do and ``samples_only`` (a metric comparing
    sample-aligned signals). Signals with different channel counts are returned as they are
    (``none``): the caller's channel check says what to do."""
    from jndqa.variants import AlignmentFailed
    from jndqa.variants.align import apply_offset, find_envelope_offset, find_offset

    r = ref.reshape(len(ref), -1).astype(np.float32, copy=False)
    t = test.reshape(len(test), -1).astype(np.float32, copy=False)
    if r.shape[1] != t.shape[1]:
        return test, 0, "none"
    try:
        a = find_offset(r, t, rate, max_lag=round(MAX_LAG_SECONDS * rate), min_correlation=0.5)
    except AlignmentFailed as exc:
        try:
            a = find_envelope_offset(r, t, rate, max_lag_seconds=MAX_LAG_SECONDS)
        except AlignmentFailed as env_exc:
            raise ValueError(f"cannot align the test to its reference ({exc.reason}; by envelope: "
                             f"{env_exc.reason}); --no-align uses the files as they are") from None  # fmt: skip
        if samples_only:
            raise ValueError(
                f"the test follows its reference only in its envelope (correlation {a.correlation:.3f}, a "
                "resynthesising codec?), not sample for sample as this metric needs; use --protocol official, "
                "a metric that does not need alignment, or --no-align"
            ) from None
    aligned = apply_offset(t, a.offset, len(r))
    return (aligned[:, 0] if test.ndim == 1 else aligned), a.offset, a.method
