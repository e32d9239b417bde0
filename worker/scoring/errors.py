"""Errors of the scoring package."""

from __future__ import annotations

from segstream.errors import ModelError, SegstreamError


class ScoringError(SegstreamError):
    """Segments could not be assigned, written or published."""


class ControlMessageInvalid(ScoringError):
    """A control-topic record is not a control message this worker understands."""


__all__ = ["ControlMessageInvalid", "ModelError", "ScoringError"]
