"""HTML reports: Plotly figures, Jinja2 templates, run index, trends.

Reads the store (and the audio files a run kept) and writes a folder of static
pages that open from disk with no network.
"""

from .agree import render_agree_page
from .render import ReportError, ReportResult, render_report
from .training import render_training_report

__all__ = ["ReportError", "ReportResult", "render_agree_page", "render_report", "render_training_report"]
