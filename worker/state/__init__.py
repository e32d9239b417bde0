"""The Redis state store: per-customer RFM and behaviour state, written once per event.

``store`` holds the async writer (one Lua call per batch) and the sync reader; ``keys`` names
every Redis key. The rules themselves live in the pure :mod:`worker.core`.
"""

from worker.state.errors import CustomerNotFound, StoreRejected, StoreUnavailable
from worker.state.store import ApplyResult, Batch, Record, StateReader, StateStore

__all__ = [
    "ApplyResult",
    "Batch",
    "CustomerNotFound",
    "Record",
    "StateReader",
    "StateStore",
    "StoreRejected",
    "StoreUnavailable",
]
