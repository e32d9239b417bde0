"""The merge of every space's counts into one top list per segment (pure; docs/recommendations.md).

On a Redis Cluster each space counts the purchases of its own customers. The merge converts each
space's scores to "decayed units as of the newest event time of any space" (each space has its
own landmark), sums them per member, and keeps each segment's (and the shop's) best ``k``;
``worker/recommend/rtop.lua`` then writes that same list into every space, so a customer's read
touches their own space only. On a single Redis there is one space and the merge is a copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker.recommend.decay import as_of

__all__ = ["SpaceCounts", "merge"]


@dataclass(frozen=True)
class SpaceCounts:
    """One space's counts as collect.lua returns them."""

    landmark: int
    latest: int
    #: segment ('' = the shop) -> [(member, stored score)], best first.
    lists: Mapping[str, Sequence[tuple[str, float]]]


def merge(
    spaces: Sequence[SpaceCounts], half_life: int, k: int
) -> tuple[int | None, dict[str, list[tuple[str, float]]]]:
    """(the time the scores are as of, segment -> its best ``k`` (member, score), best first)."""
    if not spaces:
        return None, {}
    at = max(s.latest for s in spaces)
    summed: dict[str, dict[str, float]] = {}
    for space in spaces:
        for segment, items in space.lists.items():
            target = summed.setdefault(segment, {})
            for member, score in items:
                value = as_of(score, space.landmark, at, half_life)
                target[member] = target.get(member, 0.0) + value
    out = {
        segment: sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
        for segment, scores in summed.items()
    }
    return at, out
