"""Redis clients for every segstream process, built from :class:`RedisSettings`.

Whoever needs Redis asks here, so the URL, the password file and the TLS files given in
``SEGSTREAM_REDIS_*`` reach every client the same way (:func:`segstream.security.redis_options`):
redis-py's sync and asyncio clients, and the worker's own script connections
(:class:`worker.redis_io.ScriptClient`). A bare URL is accepted where a caller has nothing more
(tests, tools): it means no password file and no TLS files.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

from segstream.security import read_secret, redis_options, redis_ssl_context
from segstream.settings import RedisSettings
from worker.cluster_scripts import ClusterScriptClient
from worker.redis_io import Endpoint, ScriptClient

if TYPE_CHECKING:
    from worker.state.keys import Keyspace

__all__ = [
    "RedisTarget",
    "async_redis",
    "keyspace",
    "redis_settings",
    "script_client",
    "sync_redis",
]

#: What a Redis client is built from: the settings, or a URL alone.
RedisTarget = RedisSettings | str


def redis_settings(target: RedisTarget) -> RedisSettings:
    return RedisSettings(url=target) if isinstance(target, str) else target


def keyspace(target: RedisTarget, prefix: str) -> Keyspace:
    """Where customers' keys are under ``prefix``, for the mode the settings say."""
    from worker.state.keys import Keyspace  # worker.state imports this module

    settings = redis_settings(target)
    return Keyspace(prefix, settings.cluster, settings.shards)


def sync_redis(target: RedisTarget, **kwargs: Any) -> redis.Redis:
    """A blocking client (CLI commands, training, the report); a cluster client on a cluster.

    (redis-py's cluster client takes the same commands, routes each by its key's slot and runs
    a ``pipeline(transaction=False)`` per node.)
    """
    settings = redis_settings(target)
    options = redis_options(settings) | kwargs
    if settings.cluster:
        return redis.cluster.RedisCluster.from_url(settings.url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(settings.url, **options)


def async_redis(target: RedisTarget, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client (the worker's services); a cluster client on a cluster."""
    settings = redis_settings(target)
    options = redis_options(settings) | kwargs
    if settings.cluster:
        return aiocluster.RedisCluster.from_url(settings.url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(settings.url, **options)


def script_client(target: RedisTarget) -> ScriptClient | ClusterScriptClient:
    """The worker's script connections, as whom and how the settings say."""
    settings = redis_settings(target)
    endpoint = Endpoint.from_url(settings.url)
    if endpoint.password is None and settings.password_file:
        secret = read_secret(settings.password_file, "SEGSTREAM_REDIS_PASSWORD_FILE")
        endpoint = replace(endpoint, password=secret)
    context = redis_ssl_context(settings) if endpoint.tls else None
    wait = {"wait_replicas": settings.wait_replicas, "wait_timeout_ms": settings.wait_timeout_ms}
    if settings.cluster:
        return ClusterScriptClient(endpoint, ssl_context=context, **wait)
    return ScriptClient(endpoint, ssl_context=context, **wait)
