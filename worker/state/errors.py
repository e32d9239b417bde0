"""Errors of the Redis state store; both are :class:`~segstream.errors.StateError`."""

from __future__ import annotations

from segstream.errors import StateError


class StoreUnavailable(StateError):
    """Redis did not answer (down, restarting, loading, timed out): retry the same batch later.

    Retrying is always safe: a batch whose write did land is skipped by the offset fence.
    """


class StoreRejected(StateError):
    """Redis answered with an error (script failure, wrong type, out of memory): do not retry."""


class CustomerNotFound(StateError):
    """No state is stored for the customer asked about."""
