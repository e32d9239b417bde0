"""Before a segstream process starts work: may it log in to Kafka and Redis, and do its job there?

A wrong password, a certificate the client does not trust or a permission the Redis user lacks
never heals by waiting, so at start-up each is one :class:`AccessError` line naming what to fix,
and the command exits with status 1 within seconds. (Once running, the worker treats the same
replies as outages and waits: credentials rotated under a running worker come back without a
restart, and nothing is dead-lettered meanwhile — docs/security.md.)

A broker or Redis that does not answer at all is not checked here: that is an outage, which the
worker waits out and ``/health`` reports.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions as rex
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn

from segstream.errors import AccessError
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import KafkaSettings, RedisSettings, Settings
from worker.connect import sync_redis

__all__ = ["check_kafka", "check_redis", "checks_access", "preflight"]

F = TypeVar("F", bound=Callable[..., Any])

#: How long one login attempt may take before the broker counts as not answering (an outage).
LOGIN_TIMEOUT_S = 10.0

#: Every data command segstream's processes use, run once by one script on a scratch key under
#: the prefix: a user that lacks one of them (or the prefix) fails here, not mid-stream.
PROBE_SCRIPT = """
local k = KEYS[1]
redis.call('SET', k .. ':s', '1'); redis.call('GET', k .. ':s'); redis.call('INCR', k .. ':s')
redis.call('MGET', k .. ':s'); redis.call('EXISTS', k .. ':s'); redis.call('TYPE', k .. ':s')
redis.call('EXPIRE', k .. ':s', 60); redis.call('PEXPIRE', k .. ':s', 60000)
redis.call('TTL', k .. ':s')
redis.call('HSET', k .. ':h', 'f', '1'); redis.call('HGET', k .. ':h', 'f')
redis.call('HMGET', k .. ':h', 'f'); redis.call('HGETALL', k .. ':h')
redis.call('HINCRBY', k .. ':h', 'f', 1); redis.call('HLEN', k .. ':h')
redis.call('HSCAN', k .. ':h', 0); redis.call('HDEL', k .. ':h', 'f')
redis.call('ZADD', k .. ':z', 1, 'm'); redis.call('ZRANGE', k .. ':z', 0, -1)
redis.call('ZRANGEBYSCORE', k .. ':z', 0, 2); redis.call('ZSCORE', k .. ':z', 'm')
redis.call('ZMSCORE', k .. ':z', 'm')
redis.call('ZCARD', k .. ':z'); redis.call('ZREM', k .. ':z', 'm')
redis.call('SADD', k .. ':t', 'm'); redis.call('SISMEMBER', k .. ':t', 'm')
redis.call('SMEMBERS', k .. ':t'); redis.call('SCARD', k .. ':t')
redis.call('SREM', k .. ':t', 'm')
redis.call('RPUSH', k .. ':l', 'm'); redis.call('LTRIM', k .. ':l', -5, -1)
redis.call('LRANGE', k .. ':l', 0, -1)
redis.call('UNLINK', k .. ':h'); redis.call('DEL', k .. ':s', k .. ':z', k .. ':t', k .. ':l')
return 1
"""


def preflight(kafka: KafkaSettings | None, redis: RedisSettings | None) -> None:
    """Check whichever of the two the command uses; the first refusal raises AccessError."""
    if kafka is not None:
        asyncio.run(check_kafka(kafka))
    if redis is not None:
        check_redis(redis)


async def check_kafka(kafka: KafkaSettings) -> None:
    """Log in to the first bootstrap broker that answers, as every client will."""
    options = kafka_options(kafka)
    for server in kafka.bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host or "localhost",
                    int(port or 9092),
                    request_timeout_ms=int(LOGIN_TIMEOUT_S * 1000),
                    **options,
                ),
                LOGIN_TIMEOUT_S,
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise AccessError(_kafka_tls_text(server, kafka, exc)) from exc
        except (
            kafka_errors.SaslAuthenticationFailed,
            kafka_errors.UnsupportedSaslMechanismError,
            kafka_errors.IllegalSaslStateError,
        ) as exc:
            raise AccessError(
                f"Kafka at {server} refused the {options.get('sasl_mechanism')} login of user "
                f"{kafka.sasl_username!r}: {redact(str(exc))} (check "
                "SEGSTREAM_KAFKA_SASL_USERNAME / _PASSWORD / _MECHANISM)"
            ) from exc
        except (OSError, TimeoutError, kafka_errors.KafkaError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLError | ssl.CertificateError):
                raise AccessError(_kafka_tls_text(server, kafka, cause)) from exc
            continue  # not answering: an outage, waited out by the clients themselves
        conn.close()
        return


def check_redis(redis: RedisSettings) -> None:
    """Log in, then run every command segstream uses on a scratch key under the prefix."""
    where = redact(redis.url)
    # the scratch keys share one hash tag, so the probe also runs on a Redis Cluster
    scratch = f"{redis.prefix}:preflight:{{{uuid.uuid4().hex[:8]}}}"
    client = sync_redis(redis, socket_connect_timeout=LOGIN_TIMEOUT_S)
    try:
        client.ping()
        probe = client.script_load(PROBE_SCRIPT)
        client.evalsha(probe, 1, scratch)
        client.scan(0, match=f"{redis.prefix}:preflight:*", count=10)
        client.execute_command("WAIT", 0, 0)  # type: ignore[no-untyped-call]
    except rex.AuthenticationError as exc:
        raise AccessError(
            f"Redis at {where} refused the login: {redact(str(exc))} (check the user and password "
            "in SEGSTREAM_REDIS_URL or SEGSTREAM_REDIS_PASSWORD_FILE)"
        ) from exc
    except rex.NoPermissionError as exc:
        raise AccessError(
            f"the Redis user at {where} lacks a permission segstream needs: {redact(str(exc))} "
            "(docs/security.md lists the ACL)"
        ) from exc
    except rex.ResponseError as exc:
        if "can't run this command" not in str(exc):
            raise
        raise AccessError(
            f"the Redis user at {where} may not run {_probe_commands(str(exc))}, which "
            "segstream needs (docs/security.md lists the ACL)"
        ) from exc
    except rex.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLError | ssl.CertificateError) or "SSL" in str(exc):
            raise AccessError(
                f"TLS to Redis at {where} failed: {redact(str(exc))} (check "
                "SEGSTREAM_REDIS_SSL_CA_CERTS, or the rediss:// host name)"
            ) from exc
        # not answering: an outage, which the worker waits out
    finally:
        client.close()


def _probe_commands(message: str) -> str:
    """The commands on the probe script's line a refusal names (``@user_script:9``)."""
    found = re.search(r"@user_script:(\d+)", message)
    lines = PROBE_SCRIPT.splitlines()
    if found is None or not 0 < int(found.group(1)) <= len(lines):
        return "a command"
    return " or ".join(re.findall(r"redis\.call\('(\w+)'", lines[int(found.group(1)) - 1]))


def _kafka_tls_text(server: str, kafka: KafkaSettings, exc: BaseException) -> str:
    ca = kafka.ssl_cafile or "the system's CA bundle"
    return (
        f"TLS to Kafka at {server} failed: {redact(str(exc))} (the broker's certificate is "
        f"checked against {ca}: check SEGSTREAM_KAFKA_SSL_CAFILE and the bootstrap host name)"
    )


def checks_access(*, kafka: bool = False, redis: bool = False) -> Callable[[F], F]:
    """A click command decorator: :func:`preflight` of what the command uses, before it runs.

    The command must take the ``settings`` argument :func:`segstream.options.settings_options`
    gives it (apply this decorator below that one).
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            settings: Settings = kwargs["settings"]
            preflight(settings.kafka if kafka else None, settings.redis if redis else None)
            return command(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate
