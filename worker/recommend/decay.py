"""Forward-decayed popularity: old counts never need rewriting (docs/recommendations.md).

A purchase of ``units`` at event time ``t`` adds ``units * 2 ** ((t - L) / H)`` to its sku's
score, where ``H`` is the half-life and ``L`` a *landmark* time fixed per space. Every score
then equals the sum of the purchases' weights "as of ``L``" scaled by the same factor, so
ranking needs no decay step at all; to read a score as "purchases as of time ``T``" multiply it
by ``2 ** ((L - T) / H)``. Weights grow with time, so once the newest event is more than
:data:`LANDMARK_SPAN` half-lives past ``L`` the landmark moves forward by whole half-lives and
every stored score is multiplied by the matching power of two (exact in binary floating point).

``worker/recommend/count.lua`` does exactly this in Redis; :class:`DecayedCounts` is the same rule
in Python (the offline evaluation uses it; the integration tests compare the two). No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Half-lives the newest event may lie past the landmark before it moves (2**32: far from any
#: overflow, and far above the precision a ranking needs).
LANDMARK_SPAN = 32
MS_PER_DAY = 86_400_000
#: The key of the shop-wide counts in :class:`DecayedCounts` (segments are named otherwise).
SHOP = ""


def half_life_ms(days: float) -> int:
    return max(1, round(days * MS_PER_DAY))


def first_landmark(t_ms: int, half_life: int) -> int:
    """The landmark a space starts with: its first batch's earliest event time, floored to H."""
    return half_life * math.floor(t_ms / half_life)


def moved_landmark(landmark: int, newest_ms: int, half_life: int) -> int:
    """The landmark after a batch whose newest event is ``newest_ms`` (unchanged if close)."""
    if newest_ms - landmark <= LANDMARK_SPAN * half_life:
        return landmark
    return landmark + half_life * math.floor((newest_ms - landmark) / half_life)


def weight(units: int, t_ms: int, landmark: int, half_life: int) -> float:
    return float(units) * float(2.0 ** ((t_ms - landmark) / half_life))


def as_of(score: float, landmark: int, t_ms: int, half_life: int) -> float:
    """A stored score as "decayed units at ``t_ms``"."""
    return score * float(2.0 ** ((landmark - t_ms) / half_life))


@dataclass
class DecayedCounts:
    """One space's counts: per segment (and :data:`SHOP`) member -> forward-decayed score.

    ``limit`` is the bound kept per segment (the lowest scores are dropped after each batch, as
    count.lua trims); ``None`` keeps everything.
    """

    half_life: int
    limit: int | None = None
    landmark: int | None = None
    latest: int | None = None
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_batch(
        self, purchases: Iterable[tuple[str | None, int, Iterable[tuple[str, int]]]]
    ) -> None:
        """``(segment or None, event time ms, [(member, units)...])`` per purchase, in order."""
        items = list(purchases)
        if not items:
            return
        times = [t for _, t, _ in items]
        if self.landmark is None:
            self.landmark = first_landmark(min(times), self.half_life)
        moved = moved_landmark(self.landmark, max(times), self.half_life)
        if moved != self.landmark:
            factor = 2.0 ** ((self.landmark - moved) / self.half_life)
            for scores in self.counts.values():
                for member in scores:
                    scores[member] *= factor
            self.landmark = moved
        self.latest = max(times) if self.latest is None else max(self.latest, max(times))
        touched: set[str] = set()
        for segment, t, lines in items:
            for member, units in lines:
                w = weight(units, t, self.landmark, self.half_life)
                for name in (SHOP, segment) if segment is not None else (SHOP,):
                    scores = self.counts.setdefault(name, {})
                    scores[member] = scores.get(member, 0.0) + w
                    touched.add(name)
        if self.limit is not None:
            for name in touched:
                self._trim(self.counts[name], self.limit)

    def top(self, segment: str, k: int, at_ms: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` best members of ``segment`` (:data:`SHOP`: the shop), scores as of
        ``at_ms`` (default: the newest event), best first, ties by member."""
        scores = self.counts.get(segment, {})
        at = at_ms if at_ms is not None else self.latest
        best = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
        if self.landmark is None or at is None:
            return best
        return [(m, as_of(s, self.landmark, at, self.half_life)) for m, s in best]

    @staticmethod
    def _trim(scores: dict[str, float], limit: int) -> None:
        if len(scores) <= limit:
            return
        # ZRANGE 0 n ascending removes the lowest, ties by member
        for member, _ in sorted(scores.items(), key=lambda p: (p[1], p[0]))[: len(scores) - limit]:
            del scores[member]
