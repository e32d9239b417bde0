"""Redis clients for every segstream process, built from :class:`RedisSettings` alone.

Whoever needs redis-py asks here, so the URL, the password file and the TLS files given in
``SEGSTREAM_REDIS_*`` reach every client the same way (:func:`segstream.security.redis_options`).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from segstream.security import redis_options
from segstream.settings import RedisSettings

__all__ = ["async_redis", "sync_redis"]


def sync_redis(settings: RedisSettings, **kwargs: Any) -> redis.Redis:
    """A blocking client (CLI commands, training, the report)."""
    return redis.Redis.from_url(settings.url, **(redis_options(settings) | kwargs))


def async_redis(settings: RedisSettings, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client (the worker's services)."""
    return aioredis.Redis.from_url(settings.url, **(redis_options(settings) | kwargs))
