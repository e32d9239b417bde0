"""Errors of the ingestion service (each names the topic or partition involved)."""

from __future__ import annotations

from segstream.errors import SegstreamError


class IngestError(SegstreamError):
    """The batched consumer could not fetch, apply or commit a batch."""


class DeadLetterError(IngestError):
    """Rejected records could not be written to the dead-letter topic (the batch waits)."""
