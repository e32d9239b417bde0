"""Campaigns end to end, against the real broker and Redis, on a single Redis and a cluster.

A worker ingests the first half of a stream and segments everyone; ``segstream campaign create``
then targets the most common segment; the second half arrives and moves customers into it. In
the end: every customer in the segment at creation, and every one entering it afterwards, has
exactly the arm the pure function gives, in Redis and once on ``campaign-assignments``. A new
worker, in a new consumer group (so it re-reads every topic from the start: a replay), changes
nothing and publishes nothing. ``segstream forget`` removes the customer's assignments;
``segstream impact`` prints its table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.campaign import decode_assignment
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.state_checks import wait_received
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.campaigns.model import arm_of
from worker.campaigns.registry import CampaignRegistry
from worker.campaigns.store import AssignmentReader
from worker.connect import keyspace, sync_redis

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=["single", "cluster"])
def campaign_settings(
    request: pytest.FixtureRequest, settings: Settings, make_topic: Callable[..., str]
) -> Settings:
    s = settings
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        s = s.with_(redis_url=cluster.url, redis_cluster=1)
    return s


def segstream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segstream", *args],
        env=settings.to_env(), cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def topic_values(settings: Settings, topic: str) -> list[tuple[bytes, bytes | None]]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        out: list[tuple[bytes, bytes | None]] = []

        def drained() -> bool:
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend((m.key, m.value) for m in batch)
            return all(consumer.position(tp) >= end[tp] for tp in tps)

        wait_for(drained, 60, f"the whole of {topic}", 0)
        return out
    finally:
        consumer.close()


def wait_settled(settings: Settings) -> None:
    """Scoring owes nobody a segment and every change is published."""
    every = keyspace(settings.redis, settings.redis.prefix).spaces
    with sync_redis(settings.redis) as r:
        wait_for(
            lambda: all(r.hlen(f"{p}:unscored") == 0 and r.hlen(f"{p}:outbox") == 0 for p in every),
            90, "scoring to settle", 0.2,
        )  # fmt: skip


def wait_campaigns_caught_up(settings: Settings) -> None:
    """The campaign consumer group committed the end of segment-changes."""
    topic = settings.kafka.segment_changes_topic
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=f"{settings.kafka.group_id}-campaigns",
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]

        def caught_up() -> bool:
            end = consumer.end_offsets(tps)
            return all((consumer.committed(tp) or 0) >= end[tp] for tp in tps)

        wait_for(caught_up, 90, "the campaign consumer to reach the end of segment-changes", 0.3)
    finally:
        consumer.close()


def segments(settings: Settings) -> dict[str, str]:
    space = keyspace(settings.redis, settings.redis.prefix)
    out = {}
    with sync_redis(settings.redis) as r:
        for key in r.scan_iter(match=space.customer_pattern(), count=1000):
            value = r.hget(key, "segment")
            if value is not None:
                out[space.customer_id_of(key)] = value.decode()
    return out


def assignments(settings: Settings) -> dict[str, tuple[str, int, bool]]:
    with sync_redis(settings.redis) as r:
        reader = AssignmentReader(r, keyspace(settings.redis, settings.redis.prefix))
        return {a.customer_id: (a.arm, a.assigned_ms, a.published) for a in reader.all("spring")}


def entered_after(settings: Settings, segment: str, since_ms: int) -> set[str]:
    """Customers whose published change moved them into ``segment`` at or after ``since_ms``."""
    out = set()
    for _, value in topic_values(settings, settings.kafka.segment_changes_topic):
        if value is None:
            continue
        change: dict[str, Any] = json.loads(value)
        from datetime import datetime

        at = datetime.fromisoformat(change["processing_time"].replace("Z", "+00:00"))
        if change["new_segment"] == segment and at.timestamp() * 1000 >= since_ms:
            out.add(change["customer_id"])
    return out


def test_arms_are_deterministic_published_once_and_unchanged_by_a_restart_and_a_replay(
    campaign_settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    settings = campaign_settings
    events = dataset(150, 1500, 600, seed=29)
    half = len(events) // 2
    worker = workers(settings)
    produce(settings.kafka.bootstrap, records_for(settings, events[:half]))
    worker.wait_assigned()
    wait_received(settings, half)
    wait_settled(settings)
    target, members = Counter(segments(settings).values()).most_common(1)[0]

    created = segstream(settings, "campaign", "create", "spring", "--segment", target,
                        "--holdout", "0.3", "--description", "win-back mail")  # fmt: skip
    assert f"{members:,} customers in it now assigned" in created.stdout, created.stdout
    with sync_redis(settings.redis) as r:
        campaign = CampaignRegistry(r, settings.redis.prefix).get("spring")
    assert campaign is not None and campaign.segment == target
    at_creation = {c for c, s in segments(settings).items() if s == target}

    produce(settings.kafka.bootstrap, records_for(settings, events[half:]))
    wait_received(settings, len(events))
    wait_settled(settings)
    wait_campaigns_caught_up(settings)

    expected = at_creation | entered_after(settings, target, campaign.created_ms)
    assert expected - at_creation, "nobody entered the segment after the campaign's creation"
    stored = assignments(settings)
    assert set(stored) == expected
    assert all(stored[c][0] == arm_of("spring", c, 0.3) for c in stored)
    assert all(published for _, _, published in stored.values())
    assert {stored[c][1] for c in at_creation} == {campaign.created_ms}
    assert all(stored[c][1] >= campaign.created_ms for c in stored)
    published = [decode_assignment(v) for _, v in topic_values(
        settings, settings.kafka.campaign_assignments_topic)]  # fmt: skip
    assert sorted(p.customer_id for p in published) == sorted(stored)  # each member once
    assert all(p.arm == stored[p.customer_id][0] for p in published)
    assert 0 < sum(a == "holdout" for a, _, _ in stored.values()) < len(stored)

    # a restart in a new group: every topic re-read from the start (a replay), nothing changes
    worker.stop()
    again = workers(settings.with_(group_id=f"{settings.kafka.group_id}-again"))
    again.wait_assigned()
    replayed = settings.with_(group_id=f"{settings.kafka.group_id}-again")
    wait_campaigns_caught_up(replayed)
    produce(settings.kafka.bootstrap, records_for(settings, events))  # the whole file, again
    wait_received(settings, 2 * len(events))
    wait_settled(settings)
    wait_campaigns_caught_up(replayed)
    assert assignments(settings) == stored
    republished = topic_values(settings, settings.kafka.campaign_assignments_topic)
    assert len(republished) == len(published)

    listed = segstream(settings, "campaign", "list")
    assert "spring" in listed.stdout and "running" in listed.stdout
    impact = segstream(settings, "impact", "--campaign", "spring", "--window-days", "30")
    assert "campaign spring on segment" in impact.stdout and "Revenue per customer" in impact.stdout

    # forget removes the customer's assignments (the suppression entry alone names them)
    victim = sorted(stored)[0]
    segstream(settings, "forget", victim)
    space = keyspace(settings.redis, settings.redis.prefix).space_of(victim)
    with sync_redis(settings.redis) as r:
        named = [k.decode() for k in r.scan_iter(f"{settings.redis.prefix}:*", 1000)
                 if victim in k.decode()]  # fmt: skip
    assert named == [f"{space}:x:{{{victim}}}"], named
    assert victim not in assignments(settings)
    stopped = segstream(settings, "campaign", "stop", "spring")
    assert "stopped" in stopped.stdout
    assert again.alive
    log = again.log_path.read_text(errors="replace")
    assert "Traceback" not in log
