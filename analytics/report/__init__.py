"""The analyst report: a self-contained HTML page (figures embedded) plus its tables as CSV.

:func:`build_report` is pure with respect to the outside world: it takes data frames and a model
dict and writes files into one directory. :mod:`analytics.report.sources` holds the thin adapters
that read those inputs from a state export, Redis, the model directory and the segment-changes
topic; :mod:`analytics.report.cli` is the ``segstream report`` command.
"""

from __future__ import annotations

from analytics.report.builder import REPORT_FILE, SECTIONS, TABLE_FILES, build_report
from analytics.report.errors import ReportError, ReportInputError

__all__ = [
    "REPORT_FILE",
    "SECTIONS",
    "TABLE_FILES",
    "ReportError",
    "ReportInputError",
    "build_report",
]
