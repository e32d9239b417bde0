"""The model a worker scores with, reloaded without restart, and the online model beside it.

Until ``{prefix}:model:current`` names a K-means model, scoring uses the rules-v1 RFM quintile
rules (fixed documented edges). :meth:`ModelHolder.refresh` follows the pointer: a new version is
loaded and swapped in between two scoring rounds, and its online model is resumed from
``{prefix}:online:<version>`` (or seeded from the batch centroids the first time).

"New" means *other than the one in use*, never "newer": versions are not compared, so a
``segstream models rollback`` to an older version (or a promotion of one) is followed exactly
like a freshly trained model, and an older model's online state resumes where it stopped.

Batch and online (docs/segmentation.md "What assigns"): the batch centroids *assign* (so every
assignment can be reproduced and explained from the artifact, and agrees 100 % with the model's
prediction on the exported state); the online :class:`OnlineModel` (a river pipeline seeded with
the batch centroids, river's centre ``i`` = segment ``i``) learns from the event-scored
customers and only *watches*: drift, the segment mix, emerging groups.
"""

from __future__ import annotations

import logging
import time

import orjson

from worker.scoring.ports import ModelSource
from worker.segmentation.errors import ArtifactInvalid
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import LEARNING_RATE, DriftReport, OnlineModel
from worker.segmentation.rules import RulesModel

log = logging.getLogger(__name__)

#: Weight of one customer's vector in the online update of its centre.
ONLINE_LEARNING_RATE = LEARNING_RATE


class ModelHolder:
    """Current model (+ online model for K-means); swapped atomically by :meth:`refresh`."""

    def __init__(self, store: ModelSource, learning_rate: float = ONLINE_LEARNING_RATE) -> None:
        self.store = store
        self.learning_rate = learning_rate
        self.model: SegmentModel | RulesModel = RulesModel()
        self.online: OnlineModel | None = None
        self.loaded_at = time.time()
        self.reloads = 0
        self._refused: set[str] = set()

    @property
    def version(self) -> str:
        return self.model.version

    async def refresh(self) -> bool:
        """Load the current version if it is not the one in use (older or newer: a rollback
        counts); True when the model changed."""
        version = await self.store.current_version()
        if version is None or version == self.model.version or version in self._refused:
            return False
        raw = await self.store.model_json(version)
        if raw is None:
            log.warning("model %s is current but %s:model:%s is missing; keeping %s",
                        version, self.store.prefix, version, self.model.version)  # fmt: skip
            return False
        try:
            model = SegmentModel.from_json(raw, source=f"redis {self.store.prefix}:model:{version}")
        except ArtifactInvalid as exc:
            self._refused.add(version)
            log.error("refusing model %s: %s; keeping %s", version, exc, self.model.version)
            return False
        online = await self._online_for(model)
        old = self.model.version
        self.model, self.online = model, online
        self.loaded_at = time.time()
        self.reloads += 1
        log.info("scoring with model %s (k=%d, was %s)", model.version, model.k, old)
        return True

    async def _online_for(self, model: SegmentModel) -> OnlineModel:
        """Resumed from ``{prefix}:online:<version>`` (a format-1 state is migrated), else
        seeded from the batch centroids."""
        raw = await self.store.online_state(model.version)
        if raw is not None:
            try:
                return OnlineModel.from_dict(orjson.loads(raw), model, self.learning_rate)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("online state of %s unreadable (%s); re-seeding", model.version, exc)
        return OnlineModel(model, self.learning_rate)

    def drift(self, bound: float) -> DriftReport | None:
        return None if self.online is None else self.online.drift(bound)

    def online_json(self) -> bytes | None:
        return None if self.online is None else orjson.dumps(self.online.to_dict())
