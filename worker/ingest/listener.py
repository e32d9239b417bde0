"""What ingestion tells segmentation: the :class:`ChangeListener` it is given at construction.

Ingestion does not know who listens. The worker's composition (:mod:`worker.wiring`) hands it
one listener: the scoring service, or a :class:`NullListener` when scoring is off.

The contract:

* ``snapshot_spec()`` is asked before every fetched batch is prepared: which state fields the
  apply should return for the changed customers (``None``: none). It is part of the batch path:
  if it raises, the batch is retried like any batch-path failure;
* ``on_changed(customer_ids, reasons, snapshot)`` runs after every applied batch with the
  customers whose state changed; ``reasons`` maps each to ``"order"``, ``"return"`` or
  ``"clicks"``, except when ``snapshot`` (their new state, as the state script left it) is
  given: the snapshot then carries the reasons and ``reasons`` is ``None``;
* ``on_recency_crossed(customer_ids)`` runs with the customers each recency sweep found;
* ``on_control(raw)`` runs for each record of the control topic that is a control message
  (model updates, rescore requests, drift notices).

A listener that raises is logged and skipped: a segmentation bug must not stop state ingestion,
whose offsets are committed regardless (the state is exact; a missed re-score is repaired by the
next event or sweep). ``on_changed`` is a fast path, not the record of changes: when an ``apply``
is retried after a first attempt that did reach Redis, the retry changes nothing and reports
nothing. The store's ``{prefix}:unscored`` hash, written in the same script as the state, is the
complete record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from worker.core.batch import PackedSnapshot, SnapshotSpec

__all__ = ["ChangeListener", "NullListener"]


class ChangeListener(Protocol):
    """Hears about changed customers, recency crossings and control messages (see above)."""

    def snapshot_spec(self) -> SnapshotSpec | None: ...

    async def on_changed(
        self,
        customer_ids: Sequence[str],
        reasons: Mapping[str, str] | None,
        snapshot: PackedSnapshot | None,
    ) -> None: ...

    async def on_recency_crossed(self, customer_ids: Sequence[str]) -> None: ...

    async def on_control(self, raw: bytes) -> None: ...


class NullListener:
    """Nobody listens (scoring off): asks for no snapshot, ignores everything.

    Ingestion recognises this exact class and does not even compute the change reasons of a
    batch for it (a subclass that overrides a method is a real listener).
    """

    def snapshot_spec(self) -> SnapshotSpec | None:
        return None

    async def on_changed(
        self,
        customer_ids: Sequence[str],
        reasons: Mapping[str, str] | None,
        snapshot: PackedSnapshot | None,
    ) -> None:
        return None

    async def on_recency_crossed(self, customer_ids: Sequence[str]) -> None:
        return None

    async def on_control(self, raw: bytes) -> None:
        return None
