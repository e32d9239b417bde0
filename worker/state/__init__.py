"""The Redis state store: per-customer RFM and behaviour state, written once per event.

``store`` holds the async writer (one Lua call per batch), ``reader`` the sync reader, ``staged``
the writer with the stages that run with each batch; ``keys`` names every Redis key. The rules
themselves live in the pure :mod:`worker.core`.
"""

from worker.state.errors import CustomerNotFound, StoreRejected, StoreUnavailable
from worker.state.reader import StateReader
from worker.state.store import ApplyResult, Batch, Record, StateStore

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
