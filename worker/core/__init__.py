"""The pure core: RFM arithmetic, customer features and the in-memory state oracle.

Nothing in this package imports Kafka, Redis or faust (a unit test checks it), so every rule
about what an event does to a customer's state can be tested without a broker, and the Redis
adapter in :mod:`worker.state` is a thin translation of the same rules into one Lua call.
"""

from worker.core.batch import ApplyResult, Batch, Record
from worker.core.memory import InMemoryStateStore
from worker.core.rfm import (
    EXPORT_COLUMNS,
    CustomerState,
    EventDelta,
    Kind,
    features,
    fingerprint,
    to_delta,
)

__all__ = [
    "EXPORT_COLUMNS",
    "ApplyResult",
    "Batch",
    "CustomerState",
    "EventDelta",
    "InMemoryStateStore",
    "Kind",
    "Record",
    "features",
    "fingerprint",
    "to_delta",
]
