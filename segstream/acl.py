"""The least-privilege Redis ACLs segstream documents, tests and gives its local services.

Two users: the one segstream's own processes connect as (worker, train, rescore, export,
report, forget, models), and a read-only one for the storefront. Each is a list of ACL rules,
to follow ``ACL SETUSER <name> on ><password>``; docs/security.md prints them for a prefix and
the tests run the worker under the first and prove the second cannot write.
"""

from __future__ import annotations

__all__ = ["SEGSTREAM_COMMANDS", "STOREFRONT_COMMANDS", "segstream_acl", "storefront_acl"]

#: Every command segstream's processes send, by what needs it. A command missing here fails
#: the worker's first batch with NOPERM (one clear error line; tests/integration/test_redis_acl).
SEGSTREAM_COMMANDS: tuple[str, ...] = (
    # connecting: redis-py authenticates and pings; SELECT for /N in the URL (CLIENT SETINFO,
    # which redis-py also sends, is left out: Redis < 7.2 has no such command, so no rule may
    # name it, and redis-py ignores its refusal)
    "auth", "hello", "ping", "select", "client|setname", "client|id",
    # the state, scoring and model scripts (one EVALSHA per batch; loaded on NOSCRIPT)
    "evalsha", "eval", "script|load", "script|exists",
    # reads and writes outside the scripts: models, claims, the sweep index, queues, export
    "get", "set", "del", "unlink", "exists", "type", "incr", "expire", "pexpire", "ttl",
    "mget",
    "hget", "hmget", "hgetall", "hset", "hdel", "hincrby", "hlen", "hscan",
    "zadd", "zrem", "zrange", "zrangebyscore", "zcard", "zscore", "zmscore",
    "sadd", "srem", "smembers", "sismember", "scard",
    "rpush", "lrange", "ltrim",
    "scan",
    # replica safety: commit offsets only once replicas have the batch (WAIT)
    "wait",
)  # fmt: skip

#: The storefront reads a customer's segment (``HMGET {prefix}:c:{id} segment model_version``)
#: and their recommendations: the read-only script (``EVALSHA_RO``, or ``EVAL_RO`` with its text
#: when Redis does not hold it yet; read-only variants refuse any write) and the commands it runs
#: (HMGET, ZRANGE: docs/recommendations.md).
STOREFRONT_COMMANDS: tuple[str, ...] = (
    "auth", "hello", "ping", "select", "client|setname",
    "hget", "hmget", "hgetall", "exists",
    "evalsha_ro", "eval_ro", "zrange",
)  # fmt: skip


def segstream_acl(prefix: str) -> list[str]:
    """Rules for segstream's own processes: its commands, on keys under ``prefix`` only."""
    return ["resetkeys", "resetchannels", "-@all", f"~{prefix}:*", *_allow(SEGSTREAM_COMMANDS)]


def storefront_acl(prefix: str) -> list[str]:
    """Rules for the storefront: read-only commands, read-only access to ``prefix`` keys."""
    return ["resetkeys", "resetchannels", "-@all", f"%R~{prefix}:*", *_allow(STOREFRONT_COMMANDS)]


def _allow(commands: tuple[str, ...]) -> list[str]:
    return [f"+{command}" for command in commands]
