"""A model with a categorical feature, scored by the worker's path on a real Redis, both modes.

Customer hashes are written as the state script and the profile/summary writers leave them
(counters, times, ``pc``, ``ks``: the contract of ``worker.core.attributes``). The offline side
reads them as ``segstream train --from redis`` does (export rows) and assigns with
``worker.segmentation.assign``; the worker side reads them with the scoring store's state read
and attribute read (one read-script call per space each) and decides with
``worker.scoring.decide``. Both must give every customer the same segment.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pandas as pd
import pytest

from analytics.frames import categorical_values, real_matrix
from analytics.sources import state_from_redis
from analytics.synthetic import AS_OF, categorical_personas
from analytics.training import train
from segstream.settings import Settings
from tests.support.modes import MODES, on_redis
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import keyspace, sync_redis
from worker.core.attributes import PROFILE_FIELDS, SUMMARY_FIELDS
from worker.scoring.decide import attribute_fields, decide
from worker.scoring.store import ScoringStore
from worker.scoring.vectors import Round, fields_for
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.assign import assign
from worker.segmentation.model import SegmentModel

pytestmark = pytest.mark.integration

FEATURES = ("recency_days", "frequency", "aov", "sessions", "favourite_category", "country")
AS_OF_MS = int(AS_OF.timestamp() * 1000)
DAY_MS = 86_400_000


@pytest.fixture(params=MODES)
def mode_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_redis(request, settings)


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def hash_of(row: pd.Series) -> dict[str, str]:
    """The customer hash that exports as ``row`` (as of ``AS_OF``)."""
    out = {"ts": str(AS_OF_MS - DAY_MS), "s": str(int(row["sessions"]))}
    if row["frequency"] > 0:
        out |= {
            "f": str(int(row["frequency"])),
            "m": str(round(row["monetary"] * 100)),
            "t1": str(AS_OF_MS - round(row["recency_days"] * DAY_MS)),
            "t0": str(AS_OF_MS - round(row["tenure_days"] * DAY_MS)),
        }
    country, favourite = _text(row["country"]), _text(row["favourite_category"])
    if country is not None:
        out[PROFILE_FIELDS["country"]] = country
    if favourite is not None:
        out[SUMMARY_FIELDS["spend_by_category"]] = f"{favourite}=4200,toys=300"
    return out


@pytest.fixture
def stored(mode_settings: Settings) -> Iterator[pd.DataFrame]:
    """Persona customers written to Redis under this test's prefix (deleted afterwards)."""
    personas = categorical_personas(800, seed=8)
    keys = write_personas(mode_settings, personas)
    yield personas
    client = sync_redis(mode_settings.redis)
    for key in keys:
        client.delete(key)
    client.close()


def write_personas(settings: Settings, personas: pd.DataFrame) -> list[str]:
    """Each persona row as its customer hash; returns the keys written."""
    space = keyspace(settings.redis, settings.redis.prefix)
    client = sync_redis(settings.redis)
    keys = [space.customer(cid) for cid in personas["customer_id"]]
    try:
        for key, (_, row) in zip(keys, personas.iterrows(), strict=True):
            client.hset(key, mapping=hash_of(row))
    finally:
        client.close()
    return keys


def offline_segments(settings: Settings, model: SegmentModel) -> dict[str, str]:
    """What ``train --from redis`` reads, assigned offline (nearest centroid)."""
    rows = state_from_redis(settings.redis, settings.redis.prefix, AS_OF)
    offline = assign(
        model,
        real_matrix(rows, model.feature_names),
        margin=0.0,
        categories=categorical_values(rows, model.categorical_names),
    )
    names = [model.names[i] for i in offline.segment_ids]
    return dict(zip(rows["customer_id"], names, strict=True))


def worker_segments(settings: Settings, model: SegmentModel, ids: list[str]) -> dict[str, str]:
    """The worker's path: state read + attribute read, then ``decide``."""

    async def run() -> dict[str, str]:
        store = ScoringStore(settings.redis, settings.redis.prefix)
        try:
            reading = await store.send_read(ids, fields_for(model.feature_names))
            attrs = await store.send_attributes(ids, attribute_fields(model))
            rnd: Round = await reading.result()
            decision = decide(model, rnd, AS_OF_MS, 0.0, await attrs.result())
        finally:
            await store.close()
        assert not rnd.missing
        return dict(zip(rnd.customer_ids, decision.new_segments, strict=True))

    return asyncio.run(run())


def test_the_worker_assigns_a_categorical_model_as_the_offline_assignment_does(
    mode_settings: Settings, stored: pd.DataFrame
) -> None:
    model = train(
        stored, k=8, features=FEATURES, seed=0, now=datetime(2026, 11, 2, tzinfo=UTC)
    ).model
    assert model.categorical_names == ("favourite_category", "country")
    want = offline_segments(mode_settings, model)
    assert len(want) == len(stored)
    got = worker_segments(mode_settings, model, list(stored["customer_id"]))
    assert got == want
    # the category decides: the loyal twins, alike in everything else, split
    persona = stored.set_index("customer_id")["persona"]
    twins = pd.crosstab(persona, pd.Series(got)).idxmax(axis=1)
    assert twins["loyal_fashion"] != twins["loyal_electronics"]


def test_a_numeric_model_sends_no_attribute_read(mode_settings: Settings) -> None:
    async def run() -> object:
        store = ScoringStore(mode_settings.redis, mode_settings.redis.prefix)
        try:
            return await (await store.send_attributes(["C1", "C2"], ())).result()
        finally:
            await store.close()

    numeric = train(categorical_personas(300, seed=2), k=3, seed=0).model
    assert attribute_fields(numeric) == ()
    assert asyncio.run(run()) == {}


def test_a_running_worker_rescores_everyone_with_a_categorical_model_as_offline(
    settings: Settings, workers: Callable[..., WorkerProcess], redis_client: object
) -> None:
    """The whole worker (a ``segstream worker`` process): a categorical model published, every
    customer re-scored through the rounds (read + attribute read), ``--explain`` shows the
    categories."""
    s = settings.with_(
        model_poll_s=0.5, scoring_as_of=AS_OF.isoformat(), hysteresis_margin=0.0, rescore_all=1
    )
    personas = categorical_personas(400, seed=9)
    write_personas(s, personas)
    model = train(personas, k=8, features=FEATURES, seed=0, now=datetime(2026, 11, 3, tzinfo=UTC))
    worker = workers(s)
    worker.wait_assigned()
    RedisModelStore.from_url(s.redis.url, s.redis.prefix).save(model.model)
    version = model.model.version
    client = sync_redis(s.redis)
    space = keyspace(s.redis, s.redis.prefix)
    ids = list(personas["customer_id"])

    def scored() -> dict[str, str] | None:
        assert worker.alive, worker.tail()
        got = [client.hmget(space.customer(c), ["segment", "model_version"]) for c in ids]
        if any(v is None or v.decode() != version for _, v in got):
            return None
        return {c: seg.decode() for c, (seg, _) in zip(ids, got, strict=True)}

    try:
        segs = wait_for(scored, 90, f"every customer scored with {version}")
    finally:
        client.close()
    assert segs == offline_segments(s, model.model)
    cid = personas.loc[personas["persona"] == "loyal_fashion", "customer_id"].iloc[0]
    shown = subprocess.run(
        [sys.executable, "-m", "segstream", "customer", cid, "--explain", "--json"],
        env=s.to_env(), cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(shown.stdout)
    assert info["assigned"] == segs[cid]
    assert (
        info["categories"]["favourite_category"]
        == personas.set_index("customer_id").loc[cid, "favourite_category"]
    )
    share = info["contributions"]["favourite_category"]
    assert 0.0 <= share["assigned_share"] <= 1.0 and share["runner_up_share"] > 0.0
    text = subprocess.run(
        [sys.executable, "-m", "segstream", "customer", cid, "--explain"],
        env=s.to_env(), cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "favourite_category" in text and "runner-up" in text
    assert worker.alive
