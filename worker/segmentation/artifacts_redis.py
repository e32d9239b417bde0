"""Model artifacts in Redis, where a running worker loads them from.

Keys (all under the deployment's prefix):

- ``{prefix}:model:<version>``: the artifact JSON (a string; versions are never deleted here);
- ``{prefix}:model:current``: the version the worker should use;
- ``{prefix}:models``: sorted set version -> creation time (epoch seconds), for listing.

The artifact is written before the pointer, so a reader that follows ``current`` always finds
the artifact. This module and :mod:`.sources` are the only Redis users of the package.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis

from worker.segmentation.errors import ArtifactNotFound
from worker.segmentation.model import SegmentModel


class RedisModelStore:
    """Versioned model artifacts in Redis under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, redis_url: str, prefix: str) -> RedisModelStore:
        return cls(redis.Redis.from_url(redis_url), prefix)

    def key(self, version: str) -> str:
        return f"{self.prefix}:model:{version}"

    @property
    def current_key(self) -> str:
        return f"{self.prefix}:model:current"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:models"

    def save(self, model: SegmentModel, make_current: bool = True) -> None:
        created = datetime.fromisoformat(model.created_at).timestamp()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(model.version), model.to_json())
        pipe.zadd(self.index_key, {model.version: created})
        pipe.execute()
        if make_current:
            self.client.set(self.current_key, model.version)

    def current_version(self) -> str | None:
        raw: Any = self.client.get(self.current_key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def versions(self) -> list[str]:
        """Stored versions, oldest first."""
        return [v.decode() for v in self.client.zrange(self.index_key, 0, -1)]  # type: ignore[union-attr]

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
