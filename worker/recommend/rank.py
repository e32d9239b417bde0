"""The ranking rule, its reasons, and the recently-bought field (docs/recommendations.md).

A customer's list, best first:

1. their segment's merged top list (``{space}:rtop:<segment>``), each score multiplied by
   ``1 + boost`` (:data:`BOOST` = 3: times four) when the sku is in the customer's favourite
   category (the largest of their spend by category, :mod:`worker.core.attributes`), sorted
   by that score (ties: sku), skipping skus the customer bought recently;
2. while the list is shorter than ``n``: the shop's top list ranked the same way, skipping what
   is bought or already listed. A cold customer (no segment yet, or a segment with no counts
   yet) gets the shop's list alone; a customer with a segment and no history gets the segment's.

``worker/recommend/read.lua`` applies the same rule in Redis for the one-round-trip read;
:func:`rank` is the reference (unit tests, the offline evaluation).

Members of the counts and lists are ``"<category>,<sku>"`` (a category never holds a comma;
empty for a line without one), so a list carries each sku's category with it. The customer's
recently bought skus live in their hash, field ``rb``: the first :data:`HASH_BYTES` bytes of
each sku's SHA-1 (raw, not hex: the bits of its first 6 hex digits), newest last, at most
:data:`BOUGHT_KEPT` of them (24 bytes). A field whose length is not a multiple of
:data:`HASH_BYTES` is not of this layout and counts as empty (apply.lua and read.lua agree).
No I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: A favourite-category sku's score is multiplied by 1 + BOOST.
BOOST = 3.0
#: Recently bought skus kept per customer, and the bytes kept of each one's SHA-1 (24 bits:
#: a sku wrongly taken for a bought one about once in 2 million candidates).
BOUGHT_KEPT = 8
HASH_BYTES = 3
#: The customer hash field of the recently bought skus.
BOUGHT_FIELD = "rb"

__all__ = [
    "BOOST",
    "BOUGHT_FIELD",
    "BOUGHT_KEPT",
    "HASH_BYTES",
    "Pick",
    "bought_after",
    "bought_hashes",
    "member",
    "rank",
    "sku_hash",
    "split_member",
]


def sku_hash(sku: str) -> bytes:
    """The first :data:`HASH_BYTES` bytes of the SHA-1 of ``sku`` (read.lua computes the same
    from ``redis.sha1hex``)."""
    return hashlib.sha1(sku.encode()).digest()[:HASH_BYTES]


def member(category: str | None, sku: str) -> str:
    return f"{category or ''},{sku}"


def split_member(text: str) -> tuple[str | None, str]:
    """``"<category>,<sku>"`` -> (category or None, sku)."""
    category, _, sku = text.partition(",")
    return (category or None), sku


def bought_hashes(field: bytes | None) -> list[bytes]:
    """The ``rb`` field as its hashes, oldest first (none if its length is not a multiple of
    :data:`HASH_BYTES`: not this layout)."""
    if not field or len(field) % HASH_BYTES:
        return []
    return [field[i : i + HASH_BYTES] for i in range(0, len(field), HASH_BYTES)]


def bought_after(field: bytes | None, skus: Iterable[str]) -> bytes:
    """``rb`` after buying ``skus`` (in order): each moves to the end, the oldest drop out."""
    kept = bought_hashes(field)
    for sku in skus:
        h = sku_hash(sku)
        if h in kept:
            kept.remove(h)
        kept.append(h)
    return b"".join(kept[-BOUGHT_KEPT:])


@dataclass(frozen=True, slots=True)
class Pick:
    """One recommended sku and why."""

    sku: str
    category: str | None
    #: The list's score (decayed purchases as of the latest order), boosted when favourite.
    score: float
    #: "segment" or "shop": whose list it came from.
    source: str
    favourite: bool

    def reason(self, segment: str | None) -> str:
        said = f"popular in {segment}" if self.source == "segment" else "popular in the shop"
        if self.favourite:
            said += f", in your favourite category {self.category}"
        return said


def rank(
    segment_list: Sequence[tuple[str, float]],
    shop_list: Sequence[tuple[str, float]],
    bought: Iterable[bytes],
    favourite: str | None,
    n: int,
    boost: float = BOOST,
) -> list[Pick]:
    """The customer's top ``n`` (module docstring). Lists hold (member, score); ``bought``
    holds :func:`sku_hash` values."""
    held = set(bought)
    picks: list[Pick] = []
    taken: set[str] = set()
    for source, items in (("segment", segment_list), ("shop", shop_list)):
        scored = []
        for text, score in items:
            category, sku = split_member(text)
            fav = favourite is not None and category == favourite
            scored.append((score * (1.0 + boost) if fav else score, sku, category, fav))
        scored.sort(key=lambda s: (-s[0], s[1].encode()))
        for score, sku, category, fav in scored:
            if len(picks) >= n:
                return picks
            if sku in taken or sku_hash(sku) in held:
                continue
            taken.add(sku)
            picks.append(Pick(sku, category, score, source, fav))
    return picks
