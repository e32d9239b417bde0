"""Errors of segstream's Redis stores; all are :class:`~segstream.errors.StateError`.

:func:`redis_errors` is the one translation of redis-py's exceptions every store uses, so that
"retry later" and "this call was refused" mean the same in ingestion, scoring, profiles,
identity, recommendations and forget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis import exceptions as rex

from segstream.errors import StateError
from segstream.redact import redact

#: redis-py's exceptions for "Redis did not answer" (as opposed to an error reply).
UNAVAILABLE = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, OSError)


class StoreUnavailable(StateError):
    """Redis did not answer (down, restarting, loading, timed out): retry the same batch later.

    Retrying is always safe: a batch whose write did land is skipped by the offset fence.
    """


class StoreRejected(StateError):
    """Redis answered with an error (script failure, wrong type, out of memory): do not retry."""


class CustomerNotFound(StateError):
    """No state is stored for the customer asked about."""


@contextlib.contextmanager
def redis_errors(where: str, refused: str = "") -> Iterator[None]:
    """redis-py's exceptions as a store's: unavailable (retry later) or rejected.

    ``where`` names the Redis; ``refused`` says what was refused. Messages are redacted (a URL
    with a password may appear in either part).
    """
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(redact(f"{where} is unavailable: {exc}")) from exc
    except rex.RedisError as exc:
        said = f"{where} {refused}" if refused else where
        raise StoreRejected(redact(f"{said}: {exc}")) from exc
