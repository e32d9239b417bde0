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


def unscored(prefix: str) -> str:
    """Hash customer -> stamp of the last state change segmentation has not scored yet.

    The state script writes it with the state (the stamp: ``INCR {prefix}:stamp`` once per
    script call); scoring deletes a customer's entry with its segment, only while the stamp is
    still the one its state was read at (worker/scoring/store.py). Whatever deletes a
    customer's hash must delete its entry here in the same call: an unchanged stamp is what
    tells scoring that the hash it read is still there.
    """
    return f"{prefix}:unscored"


def stamp(prefix: str) -> str:
    """Counter giving each state-changing script call its stamp (see :func:`unscored`)."""
    return f"{prefix}:stamp"


#: Width of one bucket of the recency sweep index (one hour, in ms).
LAST_ORDER_BUCKET_MS = 3_600_000


def last_order(prefix: str, last_order_ms: int) -> str:
    """Sorted set customer -> last order time (epoch ms) of the customers whose last order fell
    in the same hour: the recency sweep index, one small sorted set per hour.

    Hour buckets keep each set small (a sorted set of at most 128 members is a compact listpack,
    ~20 bytes a member, where one big skiplist costs ~110), and a sweep window of a few seconds
    reads one or two of them.
    """
    return f"{prefix}:lo:{last_order_ms // LAST_ORDER_BUCKET_MS}"


def last_order_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of the sweep index buckets (for maintenance and measurement only)."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
    return f"{escaped}:lo:*"


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
