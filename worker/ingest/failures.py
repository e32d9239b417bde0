"""What a failed batch operation means: wait for an outage to end, or isolate the batch.

Two kinds of failure look alike from the batch loop and need opposite answers:

- an **outage** (Redis or the broker unreachable, timing out, loading, read-only, out of memory,
  misconfigured): every batch would fail the same way, and none is to blame. The batch is retried
  with backoff for as long as it takes, nothing is committed, and ``/health`` says what is wrong;
  dead-lettering would throw good events away.
- anything else (**poison**: an error reply the state script raises for this batch's data, or an
  exception nobody foresaw in this process): after a bounded number of attempts the batch is
  isolated (:mod:`.quarantine`), so that no input can block a partition forever.

Pure: looks at exception types and messages only.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import redis.exceptions as rex
from aiokafka.errors import KafkaError

from segstream.redact import redact
from worker.state.errors import StoreRejected, StoreUnavailable


class Kind(enum.Enum):
    OUTAGE = "outage"
    POISON = "poison"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, classified; ``text`` is the one line operators see."""

    kind: Kind
    text: str
    #: For outages: what an operator can do about it (empty when waiting is all there is).
    advice: str = ""


#: Redis error codes (the first word of an error reply) that mean "Redis cannot take writes
#: now", whatever the batch holds, with what to do about each.
_REDIS_OUTAGES: dict[str, str] = {
    "OOM": "Redis reached maxmemory: free memory or raise maxmemory; ingestion resumes by itself",
    "READONLY": "the Redis URL points at a read-only replica: point it at the primary",
    "MISCONF": "Redis cannot persist (see its log): fix its disk or save settings",
    "NOREPLICAS": "Redis has too few replicas for min-replicas-to-write",
    "MASTERDOWN": "the Redis replica lost its primary",
    "LOADING": "",
    "BUSY": "",
    "TRYAGAIN": "",
    "CLUSTERDOWN": "",
    "NOAUTH": "Redis wants credentials: set them in the Redis URL",
    "WRONGPASS": "Redis refused the credentials in the Redis URL",
    "NOPERM": "the Redis user lacks a permission the worker needs (docs/state.md)",
}
#: redis-py strips the code of the replies it maps to a class of its own: the class tells.
_REDIS_OUTAGE_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (rex.OutOfMemoryError, "OOM"),
    (rex.ReadOnlyError, "READONLY"),
    (rex.NoPermissionError, "NOPERM"),
    (rex.MasterDownError, "MASTERDOWN"),  # before its base class, ClusterDownError
    (rex.ClusterDownError, "CLUSTERDOWN"),
    (rex.TryAgainError, "TRYAGAIN"),
)
#: The state script's own refusal for a key every batch writes (not a record's fault).
_SHARED_KEY = "segstream state key "


def classify(exc: BaseException) -> Failure:
    """Outage or poison, with the line to log (the exception's type and message)."""
    text = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, StoreUnavailable | KafkaError | TimeoutError | asyncio.TimeoutError):
        return Failure(Kind.OUTAGE, text)
    if isinstance(exc, ConnectionError | OSError):
        return Failure(Kind.OUTAGE, text)
    if isinstance(exc, StoreRejected):
        cause = exc.__cause__
        for cls, code in _REDIS_OUTAGE_CLASSES:
            if isinstance(cause, cls):
                return Failure(Kind.OUTAGE, text, _REDIS_OUTAGES[code])
        reply = str(cause) if cause is not None else str(exc)
        code = reply.split(" ", 1)[0]
        if code in _REDIS_OUTAGES:
            return Failure(Kind.OUTAGE, text, _REDIS_OUTAGES[code])
        if _SHARED_KEY in reply:
            return Failure(Kind.OUTAGE, text, "delete or rename that key (docs/state.md)")
    return Failure(Kind.POISON, text)
