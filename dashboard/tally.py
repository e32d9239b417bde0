"""The dashboard's picture of the segments, kept from the segment-changes topic: pure, no I/O.

It starts from every customer's current segment (read once from Redis by :mod:`dashboard.feed`)
and then follows the changes: sizes, changes per minute by reason, the transition matrix, and
the sizes sampled over time. Two rules keep the sizes exact:

- a customer's changes carry a counter (``segment_seq``); a change whose counter is not above
  the one already known is a redelivery (publication is at-least-once) or is already in the
  starting state, and is skipped: counted as a repeat, not as a change;
- a tombstone (an erased customer) removes the customer, and so their counter: if they come
  back, their counter starts again at 1.

Sizes move from the segment the dashboard knows for the customer, not from the change's
``old_segment``, so they stay a partition of the known customers whatever the topic holds.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from dashboard.records import Change, Record, Tombstone, Undecodable

__all__ = ["ERASED", "NEW", "ChangeTally"]

#: The transition matrix's row for a customer's first segment, and its column for an erasure.
NEW = "(new)"
ERASED = "(erased)"
MINUTE_MS = 60_000


class ChangeTally:
    """Segment sizes, changes per minute by reason, transitions, sizes over time.

    ``minutes``: how many minutes of changes-per-minute are kept; ``samples``: how many size
    samples (one per :meth:`sample` call, every second from the server) are kept.
    """

    def __init__(self, minutes: int = 30, samples: int = 600) -> None:
        self.minutes = minutes
        #: customer -> (segment_seq or None, segment)
        self._current: dict[str, tuple[int | None, str]] = {}
        self.sizes: Counter[str] = Counter()
        self._per_minute: dict[int, Counter[str]] = {}
        self.by_reason: Counter[str] = Counter()
        self.transitions: Counter[tuple[str, str]] = Counter()
        self._history: deque[tuple[int, dict[str, int]]] = deque(maxlen=samples)
        self._names: dict[str, str] = {}  # one string object per segment name
        #: The starting state has been read: sizes mean something from now on.
        self.started = False
        self.seeded = 0
        self.records = 0
        self.changes = 0
        self.repeats = 0
        self.erased = 0
        self.undecodable = 0
        self.last_undecodable: str | None = None

    # -- input -----------------------------------------------------------------------------------
    def seed(self, customers: Iterable[tuple[str, int | None, str]]) -> None:
        """The starting state: ``(customer_id, segment_seq, segment)`` of each segmented
        customer. A customer already known keeps whichever of the two has the higher counter."""
        self.started = True
        for customer_id, seq, segment in customers:
            known = self._current.get(customer_id)
            if known is not None and _not_newer(seq, known[0]):
                continue
            self._move(customer_id, seq, segment)
            self.seeded += 1

    def apply(self, record: Record) -> None:
        """One record of the topic, in the topic's order within its partition."""
        self.records += 1
        if isinstance(record, Change):
            self._change(record)
        elif isinstance(record, Tombstone):
            self._erase(record.customer_id)
        elif isinstance(record, Undecodable):
            self.undecodable += 1
            self.last_undecodable = record.why

    def sample(self, now_ms: int) -> None:
        """Remember the sizes now (a point of the sizes-over-time chart); nothing before the
        starting state is read, when the sizes would be a false zero."""
        if not self.started:
            return
        self._history.append((now_ms, {k: v for k, v in self.sizes.items() if v > 0}))

    def _change(self, change: Change) -> None:
        known = self._current.get(change.customer_id)
        if known is not None and _not_newer(change.seq, known[0]):
            self.repeats += 1
            return
        self._move(change.customer_id, change.seq, change.new_segment)
        self.changes += 1
        self.by_reason[change.reason] += 1
        minute = change.at_ms // MINUTE_MS
        self._per_minute.setdefault(minute, Counter())[change.reason] += 1
        self._prune(minute)
        self.transitions[(change.old_segment or NEW, change.new_segment)] += 1

    def _erase(self, customer_id: str) -> None:
        self.erased += 1
        known = self._current.pop(customer_id, None)
        if known is not None:
            self.sizes[known[1]] -= 1
            self.transitions[(known[1], ERASED)] += 1

    def _move(self, customer_id: str, seq: int | None, segment: str) -> None:
        segment = self._names.setdefault(segment, segment)
        known = self._current.get(customer_id)
        if known is not None:
            self.sizes[known[1]] -= 1
        self._current[customer_id] = (seq, segment)
        self.sizes[segment] += 1

    def _prune(self, newest: int) -> None:
        if len(self._per_minute) <= self.minutes:
            return
        latest = max(newest, *self._per_minute)
        for minute in [m for m in self._per_minute if m <= latest - self.minutes]:
            del self._per_minute[minute]

    # -- output ----------------------------------------------------------------------------------
    def view(self, now_ms: int) -> dict[str, Any]:
        """Everything the page draws from the changes, as plain JSON-ready values."""
        current = {k: v for k, v in self.sizes.items() if v > 0}
        return {
            "sizes": {
                "current": current,
                "total": sum(current.values()),
                "started": self.started,
                "history": self._history_view(),
            },
            "changes": {
                "total": self.changes,
                "by_reason": dict(self.by_reason),
                "per_minute": self._minutes_view(now_ms),
                "last_60s": self._last_minute_count(now_ms),
            },
            "transitions": self._matrix_view(),
            "feed": {
                "seeded": self.seeded,
                "records": self.records,
                "repeats": self.repeats,
                "erased": self.erased,
                "undecodable": self.undecodable,
                "last_undecodable": self.last_undecodable,
            },
        }

    def _history_view(self) -> dict[str, Any]:
        names = sorted({name for _, sizes in self._history for name in sizes})
        return {
            "t": [t for t, _ in self._history],
            "series": {n: [sizes.get(n, 0) for _, sizes in self._history] for n in names},
        }

    def _minutes_view(self, now_ms: int) -> list[dict[str, Any]]:
        """The last ``minutes`` whole minutes up to now's, oldest first (empty minutes too)."""
        now_minute = now_ms // MINUTE_MS
        newest = max([now_minute, *self._per_minute])
        return [
            {"t": m * MINUTE_MS, "counts": dict(self._per_minute.get(m, {}))}
            for m in range(newest - self.minutes + 1, newest + 1)
        ]

    def _last_minute_count(self, now_ms: int) -> int:
        """Changes decided in the current minute and the previous one, weighted to 60 s."""
        minute = now_ms // MINUTE_MS
        into = (now_ms % MINUTE_MS) / MINUTE_MS
        current = sum(self._per_minute.get(minute, {}).values())
        previous = sum(self._per_minute.get(minute - 1, {}).values())
        return round(current + previous * (1 - into))

    def _matrix_view(self) -> dict[str, Any]:
        segments = sorted({s for pair in self.transitions for s in pair} - {NEW, ERASED})
        rows = ([NEW] if any(a == NEW for a, _ in self.transitions) else []) + segments
        cols = segments + ([ERASED] if any(b == ERASED for _, b in self.transitions) else [])
        return {
            "from": rows,
            "to": cols,
            "counts": [[self.transitions.get((a, b), 0) for b in cols] for a in rows],
            "total": sum(self.transitions.values()),
        }


def _not_newer(seq: int | None, known: int | None) -> bool:
    """A counter that is not above the known one (unknown counters are never a repeat)."""
    return seq is not None and known is not None and seq <= known
