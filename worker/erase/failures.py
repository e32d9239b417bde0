"""Which failures of an erasure are outages (wait, retry forever) and which are not (retry a
few times, then dead-letter the request): the same split as ingestion's (docs/state.md)."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError

from worker.state.errors import StoreUnavailable


def is_outage(exc: BaseException) -> bool:
    """Redis or the broker unreachable or timing out: nothing wrong with the request."""
    if isinstance(exc, StoreUnavailable | asyncio.TimeoutError | ConnectionError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
            "KafkaConnectionError",
            "NodeNotReadyError",
            "KafkaTimeoutError",
            "RequestTimedOutError",
        )
    return False


def reason(exc: BaseException, customer_id: str, attempts: int) -> str:
    """The dead letter's reason for a request that kept failing, without the customer id."""
    text = f"{type(exc).__name__}: {exc}".replace(customer_id, "<customer>")
    return f"could not be erased {attempts} times: {text}"[:300]
