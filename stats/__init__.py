"""Statistics shared by the other folders: the percentile bootstrap, agreement with listeners.

numpy and scipy only (and the standard library); knows nothing of audio, the metric or the store.
"""

from .agreement import STATISTICS, Agreement, agreement, within_item_spearman
from .bootstrap import bootstrap, bootstrap_mean, percentile_interval, resample_indices

__all__ = [
    "STATISTICS",
    "Agreement",
    "agreement",
    "bootstrap",
    "bootstrap_mean",
    "percentile_interval",
    "resample_indices",
    "within_item_spearman",
]
