"""Statistics shared by the other folders: the percentile bootstrap.

Pure numpy (and the standard library); knows nothing of audio, the metric or the store.
"""

from .bootstrap import bootstrap, bootstrap_mean, percentile_interval, resample_indices

__all__ = ["bootstrap", "bootstrap_mean", "percentile_interval", "resample_indices"]
