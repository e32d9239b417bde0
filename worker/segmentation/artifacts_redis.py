"""Model artifacts in Redis, where a running worker loads them from, and their promotion history.

Keys (all under the deployment's prefix; a handful of fixed keys, none per customer):

- ``{prefix}:model:<version>``: the artifact JSON (a string; versions are never deleted here);
- ``{prefix}:model:current``: the version the worker should use (the *live* model);
- ``{prefix}:models``: sorted set version -> creation time (epoch seconds), for listing;
- ``{prefix}:models:history``: list of :class:`~.lifecycle.Promotion` JSON records, one per
  move of ``model:current``, oldest first, the last :data:`HISTORY_MAX` kept (what ``segstream
  models rollback`` undoes);
- ``{prefix}:models:gate``: hash version -> the gate result JSON of a gated training
  (``segstream train --gate``), kept whether it passed or not, so a model stored but not
  promoted shows why.

The artifact is written before the pointer, so a reader that follows ``current`` always finds
the artifact. A promotion appends to the history, then moves the pointer: two keys in different
Redis Cluster slots, so not one atomic step. A crash between them leaves a history entry for a
move that did not happen; :func:`~.lifecycle.live_stack` reads the pointer as the truth (that
entry is ignored, so a rollback never goes to a version that was never live), and repeating the
command completes it. This module and ``analytics.sources`` are the only Redis users of the package.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import redis

from segstream.settings import RedisSettings
from worker.connect import sync_redis
from worker.segmentation.errors import ArtifactNotFound
from worker.segmentation.lifecycle import Promotion, live_stack, rollback_target
from worker.segmentation.model import SegmentModel

#: Promotion records kept (older ones are trimmed; a rollback cannot go further back than this).
HISTORY_MAX = 1000


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisModelStore:
    """Versioned model artifacts in Redis under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisModelStore:
        """A store on a client built by :func:`worker.connect.sync_redis` (TLS, password file)."""
        return cls(sync_redis(settings), settings.prefix)

    @classmethod
    def from_url(cls, redis_url: str, prefix: str) -> RedisModelStore:
        """Plain URL + prefix (tests, benchmarks); other Redis settings at their defaults."""
        return cls.from_settings(replace(RedisSettings(), url=redis_url, prefix=prefix))

    def close(self) -> None:
        self.client.close()

    def key(self, version: str) -> str:
        return f"{self.prefix}:model:{version}"

    @property
    def current_key(self) -> str:
        return f"{self.prefix}:model:current"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:models"

    @property
    def history_key(self) -> str:
        return f"{self.prefix}:models:history"

    @property
    def gate_key(self) -> str:
        return f"{self.prefix}:models:gate"

    def save(
        self,
        model: SegmentModel,
        make_current: bool = True,
        *,
        action: str = "train",
        gate: dict[str, Any] | None = None,
        note: str = "",
    ) -> None:
        """Store the artifact (and its gate result); with ``make_current``, promote it."""
        created = datetime.fromisoformat(model.created_at).timestamp()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(model.version), model.to_json())
        pipe.zadd(self.index_key, {model.version: created})
        if gate is not None:
            pipe.hset(self.gate_key, model.version, json.dumps(gate, sort_keys=True))
        pipe.execute()
        if make_current:
            self.promote(model.version, action=action, note=note)

    def exists(self, version: str) -> bool:
        return bool(self.client.exists(self.key(version)))

    def promote(self, version: str, *, action: str = "promote", note: str = "") -> Promotion:
        """Make ``version`` live: a history record, then the pointer (see module docstring)."""
        if not self.exists(version):
            raise ArtifactNotFound(f"no model {version} in Redis {self.prefix}:model:*")
        record = Promotion(
            version=version, previous=self.current_version(), action=action,
            at=datetime.now(UTC).isoformat(timespec="seconds"), note=note,
        )  # fmt: skip
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.history_key, record.to_json())
        pipe.ltrim(self.history_key, -HISTORY_MAX, -1)
        pipe.execute()
        self.client.set(self.current_key, version)
        return record

    def history(self) -> list[Promotion]:
        """The promotion records, oldest first (unreadable entries skipped)."""
        raw: Any = self.client.lrange(self.history_key, 0, -1)
        records = (Promotion.from_json(r) for r in raw)
        return [r for r in records if r is not None]

    def live_stack(self) -> list[str]:
        return live_stack(self.history(), self.current_version())

    def rollback_target(self) -> str | None:
        return rollback_target(self.history(), self.current_version())

    def gate_results(self) -> dict[str, dict[str, Any]]:
        """version -> the stored gate result of each gated training."""
        raw: Any = self.client.hgetall(self.gate_key)
        out: dict[str, dict[str, Any]] = {}
        for k, v in raw.items():
            try:
                out[_text(k)] = json.loads(v)
            except ValueError:
                continue
        return out

    def current_version(self) -> str | None:
        raw: Any = self.client.get(self.current_key)
        return None if raw is None else _text(raw)

    def versions(self) -> list[str]:
        """Stored versions, oldest first."""
        raw: Any = self.client.zrange(self.index_key, 0, -1)
        return [_text(v) for v in raw]

    def load(self, version: str | None = None) -> SegmentModel:
        where = f"Redis {self.prefix}:model:*"
        if version is None:
            version = self.current_version()
            if version is None:
                raise ArtifactNotFound(f"no {self.current_key} in Redis (run `segstream train`)")
        raw: Any = self.client.get(self.key(version))
        if raw is None:
            raise ArtifactNotFound(f"no model {version} in {where}")
        return SegmentModel.from_json(raw, source=f"redis key {self.key(version)}")
