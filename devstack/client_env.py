"""What a client needs to reach the local services, as settings and as shell lines.

``segstream services env`` prints :func:`env_lines` of :func:`client_settings`; the demo builds
its :class:`~segstream.settings.Settings` from the same values, so the demo, the tests and a
user's ``eval "$(segstream services env)"`` reach the services in exactly the same way. Pure:
no file is read and no process asked (docs/security.md, "Local secured services").
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from segstream.settings import ENV

__all__ = [
    "CLEARED",
    "SEGSTREAM_USER",
    "STOREFRONT_USER",
    "SecureAccess",
    "client_settings",
    "env_lines",
]

#: The user segstream's own processes connect as (Kafka SCRAM user and Redis ACL user).
SEGSTREAM_USER = "segstream"
#: The read-only Redis ACL user a storefront connects as (``services env --user storefront``).
STOREFRONT_USER = "storefront"

#: Settings a client may have from an earlier ``eval``; the lines unset those the services now
#: running do not need, so one shell can go from secure services to plain ones, or from a
#: Redis Cluster to a single Redis (and a stale ``SEGSTREAM_KAFKA_SASL_PASSWORD`` cannot shadow
#: the password file).
CLEARED: tuple[str, ...] = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_sasl_password_file",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "redis_password_file",
    "redis_ssl_ca_certs",
    "redis_cluster",
    "redis_ssl_certfile",
    "redis_ssl_keyfile",
)


@dataclass(frozen=True)
class SecureAccess:
    """Names and file paths (never a secret itself) of what ``services up --secure`` made."""

    #: The key prefix the Redis ACL users are confined to.
    prefix: str
    ca_file: str
    #: Password file of each user (Kafka: segstream only; Redis: segstream and storefront).
    kafka_password_file: str
    redis_password_file: str
    storefront_password_file: str
    kafka_mechanism: str = "SCRAM-SHA-512"


def client_settings(
    kafka_bootstrap: str,
    redis_port: int,
    access: SecureAccess | None,
    user: str = SEGSTREAM_USER,
    host: str = "127.0.0.1",
    *,
    cluster: bool = False,
) -> dict[str, str]:
    """Flat setting name -> value for a client of the services (see :data:`ENV`).

    ``user``: :data:`SEGSTREAM_USER` (Kafka and Redis) or :data:`STOREFRONT_USER` (Redis
    only: the storefront has no Kafka account). Plain services have one user only.
    ``cluster``: ``redis_port`` is one node of a Redis Cluster (plain services only for now);
    a cluster client finds the other nodes from any one.
    """
    if user not in (SEGSTREAM_USER, STOREFRONT_USER):
        raise ValueError(f"unknown user {user!r}")
    if access is None:
        if user != SEGSTREAM_USER:
            raise ValueError("the plain local services have no storefront user")
        plain = {
            "kafka_bootstrap": kafka_bootstrap,
            "kafka_security_protocol": "PLAINTEXT",
            "redis_url": f"redis://{host}:{redis_port}/0",
        }
        return plain | ({"redis_cluster": "1"} if cluster else {})
    if cluster:
        raise ValueError("the secured local services have no Redis Cluster yet")
    password_file = (
        access.redis_password_file if user == SEGSTREAM_USER else access.storefront_password_file
    )
    redis = {
        "redis_url": f"rediss://{user}@{host}:{redis_port}/0",
        "redis_prefix": access.prefix,
        "redis_password_file": password_file,
        "redis_ssl_ca_certs": access.ca_file,
    }
    if user == STOREFRONT_USER:
        return redis
    kafka = {
        "kafka_bootstrap": kafka_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": access.kafka_mechanism,
        "kafka_sasl_username": SEGSTREAM_USER,
        "kafka_sasl_password_file": access.kafka_password_file,
        "kafka_ssl_cafile": access.ca_file,
    }
    return kafka | redis


def env_lines(values: Mapping[str, str]) -> list[str]:
    """``export SEGSTREAM_...=...`` lines (shell-quoted), then one ``unset`` of stale settings.

    Only settings of the groups given are unset: Redis-only lines leave Kafka's alone.
    """
    lines = [f"export {ENV[name]}={shlex.quote(value)}" for name, value in values.items()]
    groups = {name.split("_", 1)[0] for name in values}
    stale = [
        ENV[name] for name in CLEARED if name not in values and name.split("_", 1)[0] in groups
    ]
    if stale:
        lines.append("unset " + " ".join(stale))
    return lines
