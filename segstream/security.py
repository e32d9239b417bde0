"""How every client reaches a secured Kafka and Redis: built once from the settings, here.

The worker's aiokafka consumer and producers, the faust app, kafka-python's producers, consumers
and admin, and every redis-py client take their security options from the two functions below,
so a protocol, a CA or a password is given once (``SEGSTREAM_KAFKA_*``, ``SEGSTREAM_REDIS_*``)
and every client segstream creates uses it (docs/security.md).

A setting that cannot work (an unknown protocol, SASL without a user, a CA file that does not
exist) is a :class:`ConfigError` naming the variable, raised before any connection is tried.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from segstream.errors import ConfigError
from segstream.settings import KafkaSettings, RedisSettings

__all__ = [
    "kafka_options",
    "kafka_ssl_context",
    "kafka_uses_tls",
    "read_secret",
    "redis_options",
    "redis_ssl_context",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def kafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka or kafka-python client (both take the same names).

    PLAINTEXT gives ``{}``, so a plain deployment passes nothing new to its clients.
    """
    protocol = kafka.security_protocol.strip().upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"SEGSTREAM_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol!r}: "
            f"expected one of {', '.join(PROTOCOLS)}"
        )
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = kafka_ssl_context(kafka)
    if protocol.startswith("SASL"):
        mechanism = kafka.sasl_mechanism.strip().upper()
        if mechanism not in MECHANISMS:
            raise ConfigError(
                f"SEGSTREAM_KAFKA_SASL_MECHANISM={kafka.sasl_mechanism!r}: "
                f"expected one of {', '.join(MECHANISMS)}"
            )
        password = kafka.sasl_password or read_secret(
            kafka.sasl_password_file, "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE"
        )
        if not kafka.sasl_username or not password:
            raise ConfigError(
                f"security protocol {protocol} needs SEGSTREAM_KAFKA_SASL_USERNAME and "
                "SEGSTREAM_KAFKA_SASL_PASSWORD (or SEGSTREAM_KAFKA_SASL_PASSWORD_FILE)"
            )
        options |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": password,
        }
    return options


def kafka_uses_tls(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol.strip().upper() in ("SSL", "SASL_SSL")


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """TLS as a browser does it (certificate and host name checked), against ``ssl_cafile``."""
    return _tls_context(
        cafile=kafka.ssl_cafile,
        certfile=kafka.ssl_certfile,
        keyfile=kafka.ssl_keyfile,
        check_hostname=kafka.ssl_check_hostname,
        var="SEGSTREAM_KAFKA_SSL",
    )


def redis_options(redis: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url(redis.url, **options)`` (sync or asyncio).

    The password comes from the URL, else from ``password_file``; TLS options apply to a
    ``rediss://`` URL only (redis-py's plain connections refuse them).
    """
    options: dict[str, Any] = {}
    if redis.password_file and not _url_has_password(redis.url):
        options["password"] = read_secret(redis.password_file, "SEGSTREAM_REDIS_PASSWORD_FILE")
    if redis.url.lower().startswith("rediss://"):
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            path = getattr(redis, name)
            if path:
                _must_exist(path, f"SEGSTREAM_REDIS_{name.upper()}")
                options[name] = path
        options["ssl_check_hostname"] = redis.ssl_check_hostname
    return options


def redis_ssl_context(redis: RedisSettings) -> ssl.SSLContext:
    """The TLS context for a ``rediss://`` connection segstream opens itself (not redis-py's)."""
    return _tls_context(
        cafile=redis.ssl_ca_certs,
        certfile=redis.ssl_certfile,
        keyfile=redis.ssl_keyfile,
        check_hostname=redis.ssl_check_hostname,
        var="SEGSTREAM_REDIS_SSL",
    )


def read_secret(path: str, var: str) -> str:
    """The first line of a secret file ('' when no file is set); unreadable -> ConfigError."""
    if not path:
        return ""
    try:
        return Path(path).read_text().splitlines()[0].strip() if Path(path).stat().st_size else ""
    except OSError as exc:
        raise ConfigError(f"{var}={path}: cannot read it ({exc.strerror})") from exc


def _tls_context(
    *, cafile: str, certfile: str, keyfile: str, check_hostname: bool, var: str
) -> ssl.SSLContext:
    if cafile:
        _must_exist(cafile, f"{var}_CAFILE" if "KAFKA" in var else f"{var}_CA_CERTS")
    try:
        context = ssl.create_default_context(cafile=cafile or None)
        context.check_hostname = check_hostname
        if certfile:
            context.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{var}_*: cannot load the TLS files ({exc})") from exc
    return context


def _must_exist(path: str, var: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"{var}={path}: no such file")


def _url_has_password(url: str) -> bool:
    head = url.split("://", 1)[-1].split("/", 1)[0]
    return "@" in head and ":" in head.rsplit("@", 1)[0]
