"""Every Redis key segstream's state uses, in one place (documented in ``docs/state.md``).

The functions below take a *space*: the part before ``:c:``, ``:fence:``... On a single Redis
the space is the prefix itself (``ss:c:{C42}``). On a Redis Cluster the customers are spread
over a fixed number of shards, and shard ``k``'s space is ``{prefix}:{<tag>}``
(``ss:{3-5}:c:{C42}``): the tag is the key's hash tag, so every key of a shard (its customers,
fences, counters, indexes) lies in one slot, and one script call per shard applies a batch
atomically (:class:`Keyspace`). The tags are chosen so that the shards' slots are evenly spaced
(:func:`shard_tags`). The storefront reads ``HMGET {prefix}:c:{<customer_id>} segment
model_version`` in both modes: on a single Redis that is the state hash; on a cluster, a copy of
the segment fields the scoring service keeps beside it. Anonymous visitors' keys (their state,
links, identity fence and transfer outbox, in the visitor's space) and a customer's set of
merged visitors are built in :mod:`worker.identity.keys`.
"""

from __future__ import annotations

import binascii
import zlib
from dataclasses import dataclass
from functools import cache, cached_property


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
    return f"{_escape(prefix)}:lo:*"


def customer_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every customer hash under ``prefix`` (glob characters escaped)."""
    return f"{_escape(prefix)}:c:{{*}}"


def customer_id_of(prefix: str, key: bytes | str) -> str:
    """The customer id inside a customer hash key."""
    text = key.decode() if isinstance(key, bytes) else key
    head = f"{prefix}:c:{{"
    if not (text.startswith(head) and text.endswith("}")):
        raise ValueError(f"{text!r} is not a customer key under prefix {prefix!r}")
    return text[len(head) : -1]


@dataclass(frozen=True)
class Keyspace:
    """Where a customer's keys are: which shard, hence which space (see the module docstring).

    ``shards`` is used on a cluster only; a single Redis has one space, the prefix.
    """

    prefix: str
    cluster: bool = False
    shards: int = 16

    def __post_init__(self) -> None:
        if self.cluster and not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, got {self.shards}")

    @cached_property
    def spaces(self) -> tuple[str, ...]:
        """Every space, in shard order."""
        if not self.cluster:
            return (self.prefix,)
        return tuple(f"{self.prefix}:{{{tag}}}" for tag in shard_tags(self.shards))

    def shard_of(self, customer_id: str) -> int:
        """The customer's shard: CRC-32 of its id modulo the shard count (0 on a single Redis).

        Records without a customer (anonymous clicks, dead letters) count in shard 0.
        """
        if not self.cluster:
            return 0
        return zlib.crc32(customer_id.encode()) % self.shards

    def space_of(self, customer_id: str) -> str:
        return self.spaces[self.shard_of(customer_id)]

    def customer(self, customer_id: str) -> str:
        """The customer's state hash."""
        return customer(self.space_of(customer_id), customer_id)

    def storefront(self, customer_id: str) -> str:
        """The key the storefront reads the segment from, by customer id alone."""
        return customer(self.prefix, customer_id)

    @property
    def separate_storefront(self) -> bool:
        """Whether the storefront's key is a copy (cluster) rather than the state hash itself."""
        return self.cluster

    def customer_pattern(self) -> str:
        """SCAN MATCH pattern of every customer state hash (never the storefront copies)."""
        if not self.cluster:
            return customer_pattern(self.prefix)
        return _escape(self.prefix) + ":{*}:c:{*}"

    def customer_id_of(self, key: bytes | str) -> str:
        """The customer id inside a state hash key of any space."""
        text = key.decode() if isinstance(key, bytes) else key
        head = f"{self.prefix}:"
        if self.cluster and text.startswith(head + "{"):
            space, sep, _ = text.partition("}:c:")
            if sep:
                return customer_id_of(space + "}", text)
        return customer_id_of(self.prefix, text)


#: Redis Cluster's hash slots, and the most shards a keyspace may have (each shard then still
#: has a window of 16 slots to find its tag in).
SLOTS = 16384
MAX_SHARDS = 1024


@cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each shard: ``"<k>-<n>"`` with the smallest ``n`` whose slot lies in the
    ``k``-th of ``shards`` equal windows of the slot space.

    A cluster's primaries serve contiguous, near-equal slot ranges, so evenly spaced shards
    give each primary a near-equal share of the customers (tags ``{0}``..``{15}`` fell 6/6/4 on
    three primaries: one 25 % above the mean; spaced, 16 shards fall 5/6/5). Deterministic: the
    same shard count always gives the same tags.
    """
    width = SLOTS / shards
    tags = []
    for k in range(shards):
        low, high = int(k * width), int((k + 1) * width)
        n = 0
        while not low <= slot_of(f"{k}-{n}") < high:
            n += 1
        tags.append(f"{k}-{n}")
    return tuple(tags)


def slot_of(tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is ``tag`` (CRC-16/XMODEM mod 16384)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
