"""Errors raised while gathering the report's inputs or building it."""

from __future__ import annotations

from segstream.errors import SegstreamError

__all__ = ["ReportError", "ReportInputError"]


class ReportError(SegstreamError):
    """The report could not be built or written."""


class ReportInputError(ReportError):
    """A report input (state file, Redis state, model artifact, changes topic) is unusable."""
