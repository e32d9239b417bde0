"""Every Redis key segstream's state uses, in one place (documented in ``docs/state.md``).

Customer keys carry the customer id as a Redis Cluster hash tag (``{C42}``) so a cluster shards
customers; the storefront reads ``HMGET {prefix}:c:{<customer_id>} segment model_version``.
"""

from __future__ import annotations


def customer(prefix: str, customer_id: str) -> str:
    """Hash of one customer's state (and the segment fields the segmentation team writes)."""
    return f"{prefix}:c:{{{customer_id}}}"


def fingerprints(prefix: str, customer_id: str) -> str:
    """String of packed 8-byte event fingerprints, once a customer has more than 8."""
    return f"{prefix}:f:{{{customer_id}}}"


def fence(prefix: str, topic: str) -> str:
    """Hash partition -> last applied offset of ``topic``."""
    return f"{prefix}:fence:{topic}"


def counters(prefix: str) -> str:
    """Hash of ingestion counters (received, valid, dead_lettered, applied, duplicates, ...)."""
    return f"{prefix}:counters"


def dirty(prefix: str) -> str:
    """Set of customers whose state changed since the segmentation step last drained it."""
    return f"{prefix}:dirty"


def last_order(prefix: str) -> str:
    """Sorted set customer -> last order time (epoch ms): the recency sweep index."""
    return f"{prefix}:last_order"


def customer_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every customer hash under ``prefix`` (glob characters escaped)."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
    return f"{escaped}:c:{{*}}"


def customer_id_of(prefix: str, key: bytes | str) -> str:
    """The customer id inside a customer hash key."""
    text = key.decode() if isinstance(key, bytes) else key
    head = f"{prefix}:c:{{"
    if not (text.startswith(head) and text.endswith("}")):
        raise ValueError(f"{text!r} is not a customer key under prefix {prefix!r}")
    return text[len(head) : -1]
