"""Segmentation against the session's real Redis: model artifacts, and training from state.

State is written through the real state store (one Lua call per batch), from events drawn for
seeded feature-level personas, and `segstream train --from redis` reads it back by SCAN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from analytics.sources import state_from_redis
from analytics.synthetic import AS_OF, synthetic_state
from analytics.training import train
from schemas import ClickEvent, LineItem, OrderEvent
from segstream.settings import Settings
from worker.core import Batch, Record
from worker.segmentation.artifacts import FileModelStore
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.errors import ArtifactNotFound
from worker.state import StateStore

pytestmark = pytest.mark.integration


def test_redis_artifacts_round_trip_keep_versions_and_move_current(
    redis_url: str, redis_prefix: str, redis_client
) -> None:
    store = RedisModelStore.from_url(redis_url, redis_prefix)
    with pytest.raises(ArtifactNotFound, match="segstream train"):
        store.load()
    first = train(synthetic_state(2_000, seed=1), k=5, now=datetime(2026, 11, 1, tzinfo=UTC))
    second = train(synthetic_state(2_000, seed=2), k=4, now=datetime(2026, 11, 2, tzinfo=UTC))
    store.save(first.model)
    assert store.load().version == first.model.version
    store.save(second.model)
    assert store.current_version() == second.model.version
    assert store.versions() == [first.model.version, second.model.version]
    old = store.load(first.model.version)
    assert old.to_json() == first.model.to_json()
    assert np.array_equal(old.centroids, first.model.centroids)
    assert store.load().names == second.model.names
    with pytest.raises(ArtifactNotFound, match="km-missing"):
        store.load("km-missing")
    keys = {k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}:*")}
    assert keys == {
        f"{redis_prefix}:model:{first.model.version}",
        f"{redis_prefix}:model:{second.model.version}",
        f"{redis_prefix}:model:current",
        f"{redis_prefix}:models",
        f"{redis_prefix}:models:history",
    }
    # A second client (the worker, later) sees the same current model.
    other = RedisModelStore.from_url(redis_url, redis_prefix)
    assert other.load().to_json() == second.model.to_json()


def _events(state: pd.DataFrame) -> Iterator[OrderEvent | ClickEvent]:
    """Orders and clicks reproducing each synthetic customer's frequency, AOV, dates, sessions."""
    for row in state.itertuples():
        cid = row.customer_id
        if row.frequency > 0:
            first = AS_OF - timedelta(days=float(row.tenure_days))
            last = AS_OF - timedelta(days=float(row.recency_days))
            times = [first + (last - first) * (i / max(row.frequency - 1, 1))
                     for i in range(row.frequency)]  # fmt: skip
            times[-1] = last
            price = round(float(row.aov), 2)
            for i, when in enumerate(times):
                yield OrderEvent(
                    event_id=f"{cid}-o{i}", schema_version=1, customer_id=cid,
                    order_id=f"{cid}-o{i}", event_time=when, status="placed",
                    items=[LineItem(sku="SKU-1", quantity=1, unit_price=price)], total=price,
                )  # fmt: skip
        for j in range(int(row.sessions)):
            yield ClickEvent(
                event_id=f"{cid}-c{j}", schema_version=1, session_id=f"{cid}-s{j}",
                event_time=AS_OF - timedelta(days=1 + j % 50), type="page_view", customer_id=cid,
            )  # fmt: skip


def _write_state(redis_url: str, prefix: str, events: list[OrderEvent | ClickEvent]) -> None:
    async def run() -> None:
        store = StateStore(redis_url, prefix)
        try:
            for start in range(0, len(events), 2_000):
                part = events[start : start + 2_000]
                recs = [Record("t", 0, start + i, ev) for i, ev in enumerate(part)]
                await store.apply(Batch(recs))
        finally:
            await store.close()

    asyncio.run(run())


def test_train_from_redis_reads_the_state_and_publishes_the_model(
    settings: Settings, redis_client, tmp_path: Path
) -> None:
    truth = synthetic_state(700, seed=21)
    _write_state(settings.redis.url, settings.redis.prefix, list(_events(truth)))

    state = state_from_redis(settings.redis.url, settings.redis.prefix, AS_OF)
    assert len(state) == len(truth)
    got = state.set_index("customer_id").loc[truth["customer_id"]]
    assert np.array_equal(got["frequency"].to_numpy(), truth["frequency"].to_numpy())
    buyers = truth["frequency"].to_numpy() > 0
    assert np.allclose(got["recency_days"].to_numpy()[buyers],
                       truth["recency_days"].to_numpy()[buyers], atol=1e-3)  # fmt: skip

    env = {"SEGSTREAM_REDIS_URL": settings.redis.url,
           "SEGSTREAM_REDIS_PREFIX": settings.redis.prefix,
           "SEGSTREAM_MODEL_DIR": settings.model_dir}  # fmt: skip
    from segstream.cli import main

    result = CliRunner().invoke(
        main,
        ["train", "--from", "redis", "--as-of", AS_OF.isoformat(), "--k-range", "5-8",
         "--out", str(tmp_path / "plots")],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    in_redis = RedisModelStore(redis_client, settings.redis.prefix).load()
    on_disk = FileModelStore(settings.model_dir).load()
    assert in_redis.to_json() == on_disk.to_json()
    assert in_redis.training_size == len(truth)
    assert f"published to Redis {settings.redis.prefix}:model:{in_redis.version}" in result.output
    # The model trained on Redis state recovers the personas.
    x = state.set_index("customer_id").loc[truth["customer_id"]].reset_index()
    from analytics.frames import real_matrix
    from worker.segmentation.assign import assign

    labels = assign(in_redis, real_matrix(x, in_redis.feature_names, AS_OF), margin=0.0)
    assert adjusted_rand_score(truth["persona"], labels.segment_ids) >= 0.8
    shown = CliRunner().invoke(main, ["segments", "--from-redis"], env=env)
    assert shown.exit_code == 0 and in_redis.version in shown.output
