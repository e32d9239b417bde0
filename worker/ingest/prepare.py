"""Building the state script's arguments for a fetched batch, record by record if need be.

``StateStore.prepare`` is pure and never expected to fail for a record the schemas accepted;
this module is what happens if it does (docs/state.md, "When a batch fails"): each record is
tried alone and the ones that raise are dead-lettered with the exception in their reason, so no
record can stop the batch loop at this step.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.core.batch import Batch, Record, SnapshotSpec
from worker.ingest.applier import StateStoreLike
from worker.ingest.batch import Assembled
from worker.ingest.quarantine import without

log = logging.getLogger(__name__)


def prepare(
    store: StateStoreLike, assembled: Assembled, spec: SnapshotSpec | None
) -> tuple[Assembled, Any]:
    """The state script's arguments; records that make building them raise are dead-lettered.

    1. the whole batch at once (the only step taken while all is well);
    2. if that raises, each record alone: the ones that raise go to the rejects
       (:func:`.quarantine.without`);
    3. the batch without them at once; ``None`` (the store prepares again at apply) when it
       fails only whole.
    """
    try:
        return assembled, store.prepare(assembled.batch, spec)
    except Exception as exc:
        log.error(
            "preparing %d event(s) for the state store failed (%s: %s); trying them one by one",
            len(assembled.batch.records),
            type(exc).__name__,
            exc,
        )
    bad: dict[int, str] = {}
    for i, rec in enumerate(assembled.batch.records):
        try:
            store.prepare(_alone(rec), spec)
        except Exception as exc:
            bad[i] = f"could not be prepared for the state store: {type(exc).__name__}: {exc}"
    assembled = without(assembled, bad)
    try:
        return assembled, store.prepare(assembled.batch, spec)
    except Exception:
        return assembled, None


def _alone(rec: Record) -> Batch:
    return Batch([rec], {(rec.topic, rec.partition): rec.offset})
