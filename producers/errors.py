"""Errors raised by the producers: a source that cannot be read, a sink that lost records.

Bad *rows* are not errors: they are counted and written to the rejects file, and the run goes on.
These exceptions are for things that stop a run (a missing file, an unknown column, a broker that
never confirmed what was sent).
"""

from __future__ import annotations

from schemas.errors import SegstreamError

__all__ = ["DeliveryError", "ProducerError", "SourceError"]


class ProducerError(SegstreamError):
    """A producer run could not start or finish."""


class SourceError(ProducerError):
    """An input file or topic cannot be read at all (missing, no header, unknown columns)."""


class DeliveryError(ProducerError):
    """Records were sent but the broker did not confirm them (after the client's retries)."""
