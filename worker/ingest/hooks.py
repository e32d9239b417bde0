"""The seam where segmentation plugs into ingestion: optional async callbacks.

The worker calls ``on_changed`` after every applied batch with the customers whose state changed
(and why, and, when ``snapshot_spec`` asks for it, their new state as the state script left it),
and ``on_recency_crossed`` with the customers the recency sweep found. A hook that
raises is logged and skipped: a segmentation bug must not stop state ingestion, whose offsets
are committed regardless (the state is exact; a missed re-score is repaired by the next event or
sweep). ``on_changed`` is a fast path, not the record of changes: when an ``apply`` is retried
after a first attempt that did reach Redis, the retry changes nothing and reports nothing. The
store's ``{prefix}:unscored`` hash, written in the same script as the state, is the complete
record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from worker.core.batch import PackedSnapshot, SnapshotSpec

#: ``on_changed(customer_ids, reason_by_customer, snapshot)``; reasons are "order", "return",
#: "clicks"; ``snapshot`` is the changed customers' new state (``None`` unless asked for), and
#: when there is one it carries the reasons instead (``reason_by_customer`` is then ``None``).
OnChanged = Callable[
    [Sequence[str], Mapping[str, str] | None, PackedSnapshot | None], Awaitable[None]
]
#: What each apply should return of the changed customers' state (read before every batch).
SnapshotSpecFn = Callable[[], SnapshotSpec | None]
#: ``on_recency_crossed(customer_ids)``.
OnRecencyCrossed = Callable[[Sequence[str]], Awaitable[None]]
#: ``on_control(raw_value)`` for each record of the control topic (model updates, drift notices).
OnControl = Callable[[bytes], Awaitable[None]]


@dataclass
class Hooks:
    """Callbacks the worker invokes; each is optional (``None`` = nobody listens)."""

    on_changed: OnChanged | None = None
    on_recency_crossed: OnRecencyCrossed | None = None
    on_control: OnControl | None = None
    snapshot_spec: SnapshotSpecFn | None = None
