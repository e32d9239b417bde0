"""Segments assigned by ``segstream worker`` (a subprocess) against the real broker and Redis.

Each test reads back what a user sees: the customer hash's ``segment``/``model_version``/
``segment_seq``, the ``segment-changes`` topic, and ``segstream export`` / ``customer --explain``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import redis
from kafka import KafkaConsumer

from analytics.frames import real_matrix
from schemas import LineItem, OrderEvent, SegmentChange
from segstream.settings import Settings
from tests.support.kafka_reads import Change, read_changes
from tests.support.producing import PacedProducer, produce, records_for
from tests.support.state_checks import AS_OF, assert_same_state, oracle_rows, redis_rows
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.assign import assign
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.segmentation.rules import RULE_FEATURES, RulesModel
from worker.state import keys

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


def scoring_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.with_(model_poll_s=0.5, dirty_repair_s=2.0, **changes)


def scoring_report(worker: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.settings.web_port}/scoring"
    with urllib.request.urlopen(url, timeout=2) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def segments(settings: Settings) -> dict[str, dict[str, str]]:
    """customer id -> the segment fields of its hash (decoded)."""
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    out: dict[str, dict[str, Any]] = {}
    for key in client.scan_iter(match=keys.customer_pattern(settings.redis.prefix), count=1000):
        cid = keys.customer_id_of(settings.redis.prefix, key)
        seg = client.hmget(key, ["segment", "model_version", "segment_seq", "seg_as_of"])
        names = ["segment", "model_version", "segment_seq", "seg_as_of"]
        out[cid] = dict(zip(names, seg, strict=True))
    client.close()
    return out


def wait_all_scored(
    settings: Settings, worker: WorkerProcess, n_received: int, version: str, timeout: float = 90
) -> dict[str, dict[str, str]]:
    """Until every event is applied, nothing is dirty or queued, every customer has ``version``."""
    client = redis.Redis.from_url(settings.redis.url)

    def done() -> dict[str, dict[str, str]] | None:
        assert worker.alive, worker.tail()
        received = int(client.hget(keys.counters(settings.redis.prefix), "received") or 0)
        if received < n_received or client.hlen(keys.unscored(settings.redis.prefix)):
            return None
        if scoring_report(worker)["pending"]:
            return None
        segs = segments(settings)
        return segs if segs and all(s["model_version"] == version for s in segs.values()) else None

    try:
        got: dict[str, dict[str, str]] = wait_for(done, timeout, f"all customers on {version}")
        return got
    finally:
        client.close()


def assert_one_event_per_change(
    changes: list[Change], segs: dict[str, dict[str, str]]
) -> dict[str, list[Change]]:
    """Per customer: seq 1..N without gap or repeat, each event moves from the previous
    segment to a different one, and the last one is the segment stored in Redis."""
    by_customer: dict[str, list[Change]] = defaultdict(list)
    for seq, ev in changes:
        by_customer[ev.customer_id].append((seq, ev))
    assert set(by_customer) == set(segs)
    for cid, evs in by_customer.items():
        assert [s for s, _ in evs] == list(range(1, len(evs) + 1)), cid
        previous = None
        for _, ev in evs:
            assert ev.old_segment == previous and ev.new_segment != ev.old_segment, (cid, ev)
            previous = ev.new_segment
        assert previous == segs[cid]["segment"], cid
        assert len(evs) == int(segs[cid]["segment_seq"]), cid
    return by_customer


def export(settings: Settings, as_of: datetime, tmp_path: Path) -> pd.DataFrame:
    out = tmp_path / "export.jsonl"
    subprocess.run(
        [sys.executable, "-m", "segstream", "export", "--format", "jsonl", "--out", str(out),
         "--as-of", as_of.isoformat()],
        env=settings.to_env(), cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])


def train_from_redis(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "train", "--from", "redis", "--seed", "1", *args],
        env=settings.to_env(), cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    version = RedisModelStore.from_url(settings.redis.url, settings.redis.prefix).current_version()
    assert version is not None and version.startswith("km-")
    return version


# -- tests ---------------------------------------------------------------------------------------
def test_rules_then_model_agree_100_percent_with_one_event_per_real_change(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    s = scoring_settings(
        settings, scoring_as_of=AS_OF.isoformat(), hysteresis_margin=0.0, rescore_all=1
    )
    events = dataset(120, 700, 250, seed=8)
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    worker.wait_assigned()

    # Before any model: rules-v1, exactly as RulesModel scores the exported state.
    segs = wait_all_scored(s, worker, len(events), "rules-v1")
    rows = export(s, AS_OF, tmp_path)
    ruled = RulesModel().assign(real_matrix(rows, RULE_FEATURES)).segment_ids
    expected = dict(zip(rows["customer_id"], (RulesModel().names[i] for i in ruled), strict=True))
    assert {c: v["segment"] for c, v in segs.items()} == expected
    assert {v["seg_as_of"] for v in segs.values()} == {str(int(AS_OF.timestamp() * 1000))}

    # A model trained on that state is picked up without restart; every customer re-scored.
    version = train_from_redis(s, "--k", "4", "--as-of", AS_OF.isoformat())
    segs = wait_all_scored(s, worker, len(events), version)
    model = RedisModelStore.from_url(s.redis.url, s.redis.prefix).load(version)
    rows = export(s, AS_OF, tmp_path)
    predicted = assign(model, real_matrix(rows, model.feature_names), margin=0.0).segment_ids
    worker_says = [segs[c]["segment"] for c in rows["customer_id"]]
    agree = np.mean([model.names[p] == w for p, w in zip(predicted, worker_says, strict=True)])
    assert agree == 1.0, f"agreement {agree:.4f}"

    total = sum(int(v["segment_seq"]) for v in segs.values())
    changes = read_changes(s, total)
    assert len(changes) == total
    by_customer = assert_one_event_per_change(changes, segs)
    for evs in by_customer.values():
        first = evs[0][1]
        assert first.model_version == "rules-v1" and first.reason in ("order", "return", "clicks")
        for _, ev in evs[1:]:
            assert ev.model_version == version and ev.reason == "model_update"
            assert ev.new_distance is not None
            # A rules-v1 name the model does not have has no centroid, hence no distance.
            assert (ev.old_distance is None) == (ev.old_segment not in model.names)
            if ev.old_distance is not None:  # hysteresis 0: the nearest centroid wins
                assert ev.new_distance <= ev.old_distance + 1e-12
            assert set(ev.features) == set(model.feature_names)

    # --explain names the same segment and shows every centroid's distance.
    cid = rows["customer_id"].iloc[0]
    shown = subprocess.run(
        [sys.executable, "-m", "segstream", "customer", cid, "--explain", "--json"],
        env=s.with_(hysteresis_margin=0.0).to_env(), cwd=REPO, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(shown.stdout)
    assert info["assigned"] == segs[cid]["segment"] == info["nearest"]
    assert set(info["distances"]) == set(model.names) and info["model_version"] == version
    assert worker.alive


def _order(cid: str, n: int, total: float, when: datetime) -> OrderEvent:
    return OrderEvent(
        event_id=f"{cid}-e{n}", schema_version=1, customer_id=cid, order_id=f"{cid}-o{n}",
        event_time=when, status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=total)], total=total,
    )  # fmt: skip


def aov_model(prefix: str, redis_url: str) -> SegmentModel:
    """Two segments on AOV alone: 'small_baskets' at 20, 'big_baskets' at 200 (boundary ~64)."""
    model = SegmentModel(
        version="km-aov-test", created_at="2026-01-01T00:00:00+00:00", feature_names=("aov",),
        scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.log1p(np.array([[20.0], [200.0]])), names=("small_baskets", "big_baskets"),
        seed=0, training_size=2, as_of="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    RedisModelStore.from_url(redis_url, prefix).save(model)
    return model


def test_hysteresis_stops_noisy_updates_near_a_boundary_from_flapping(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = scoring_settings(settings, hysteresis_margin=0.1)
    model = aov_model(s.redis.prefix, s.redis.url)
    customers = [f"N{i}" for i in range(8)]
    # AOV after each order: alternately just above and just below the boundary (~64).
    targets = [[67.0 - 0.3 * i if k % 2 == 0 else 61.0 + 0.3 * i for k in range(8)]
               for i in range(len(customers))]  # fmt: skip
    worker = workers(s)
    worker.wait_assigned()
    now = datetime.now(UTC) - timedelta(days=1)
    sent = 0
    nearest_flips = 0
    previous_nearest = np.zeros(len(customers), np.int64)
    for step in range(8):
        batch = []
        for i, cid in enumerate(customers):
            spent_before = targets[i][step - 1] * step if step else 0.0
            total = round(targets[i][step] * (step + 1) - spent_before, 2)
            batch.append(_order(cid, step, total, now + timedelta(minutes=step)))
        produce(s.kafka.bootstrap, records_for(s, batch))
        sent += len(batch)
        segs = wait_all_scored(s, worker, sent, model.version)
        aovs = real_matrix(export(s, now, Path(worker.log_path.parent)), ("aov",))
        assert np.allclose(np.sort(aovs[:, 0]), np.sort([t[step] for t in targets]), atol=0.01)
        nearest = assign(model, aovs, margin=0.0).segment_ids
        if step:
            nearest_flips += int((nearest != previous_nearest).sum())
        previous_nearest = nearest
    assert nearest_flips >= 6 * len(customers)  # without hysteresis they would flap every step
    changes = read_changes(s, sum(int(v["segment_seq"]) for v in segs.values()))
    by_customer = assert_one_event_per_change(changes, segs)
    for cid, evs in by_customer.items():
        moves = [ev for _, ev in evs if ev.old_segment is not None]
        assert len(moves) <= 1, (cid, [(e.old_segment, e.new_segment) for e in moves])


def test_sweep_moves_a_silent_customer_to_hibernating_with_reason_recency_decay(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = scoring_settings(settings, sweep_interval_s=1.0, recency_thresholds_days=(60,))
    worker = workers(s)
    worker.wait_assigned()
    now = datetime.now(UTC)
    crossing = now + timedelta(seconds=20)
    silent = _order("silent", 0, 20.0, crossing - timedelta(days=60))
    steady = _order("steady", 0, 20.0, now - timedelta(days=10))
    produce(s.kafka.bootstrap, records_for(s, [silent, steady]))
    segs = wait_all_scored(s, worker, 2, "rules-v1")
    # rules-v1: 1 order of 20 EUR -> F=M=1; recency just under 60 days -> R=3.
    assert segs["silent"]["segment"] == "about_to_sleep"
    assert segs["steady"]["segment"] == "new"

    def moved() -> bool:
        return segments(s)["silent"]["segment"] == "hibernating"

    wait_for(moved, 90, "the sweep to move the silent customer")
    assert datetime.now(UTC) >= crossing
    segs = segments(s)
    changes = read_changes(s, 3)
    by_customer = assert_one_event_per_change(changes, segs)
    first, decay = (ev for _, ev in by_customer["silent"])
    assert first.reason == "order" and first.new_segment == "about_to_sleep"
    assert decay.reason == "recency_decay" and decay.new_segment == "hibernating"
    assert decay.model_version == "rules-v1" and decay.event_time >= crossing
    assert decay.features["recency_days"] >= 60.0
    assert len(by_customer["steady"]) == 1 and segs["steady"]["segment"] == "new"
    shown = subprocess.run(
        [sys.executable, "-m", "segstream", "customer", "silent", "--explain", "--json"],
        env=s.to_env(), cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(shown.stdout)
    assert info["model_version"] == "rules-v1" and info["assigned"] == "hibernating"
    assert info["scores"] == {"R": 2, "F": 1, "M": 1, "FM": 1}


def test_model_reload_during_a_live_stream_loses_no_event(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from analytics.training import train

    s = scoring_settings(settings, scoring_as_of=AS_OF.isoformat(), rescore_all=1)
    events = dataset(150, 1200, 400, seed=13)
    expected = oracle_rows(events)
    # Trained beforehand (on the final state) so that publishing it mid-stream is instant.
    model = train(pd.DataFrame(list(expected.values())), k=3, seed=1).model
    worker = workers(s)
    worker.wait_assigned()
    producer = PacedProducer(s.kafka.bootstrap, records_for(s, events), per_second=300)
    producer.start()
    wait_for(lambda: producer.sent > len(events) // 3, 60, "a third of the stream")
    RedisModelStore.from_url(s.redis.url, s.redis.prefix).save(model)
    wait_for(lambda: scoring_report(worker)["reloads"] == 1, 30, "the worker to reload")
    assert producer.is_alive(), "the stream ended before the worker reloaded"
    producer.finish()
    segs = wait_all_scored(s, worker, len(events), model.version)
    assert_same_state(redis_rows(s), expected)
    assert set(segs) == set(expected)
    total = sum(int(v["segment_seq"]) for v in segs.values())
    by_customer = assert_one_event_per_change(read_changes(s, total), segs)
    versions = {ev.model_version for evs in by_customer.values() for _, ev in evs}
    assert versions == {"rules-v1", model.version}
    report = scoring_report(worker)
    assert report["model_version"] == model.version and report["rescore_runs"] == 1


def test_online_path_reaches_the_batch_ari_on_streamed_personas(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    from sklearn.metrics import adjusted_rand_score

    from analytics.training import train
    from producers.synthetic import SyntheticConfig, default_start, generate
    from worker.core import Batch, InMemoryStateStore, Record, features
    from worker.segmentation.assign import distances
    from worker.segmentation.online import OnlineModel

    config = SyntheticConfig(customers=300, days=90, seed=5, start=default_start(90))
    data = generate(config)
    events = list(data.events())
    as_of = config.start + timedelta(days=config.days)
    oracle = InMemoryStateStore()
    records = [Record("oracle", 0, i, ev) for i, ev in enumerate(events)]
    oracle.apply(Batch(records, {("oracle", 0): len(records) - 1}, {}))
    truth = pd.DataFrame([features(st, as_of) for st in oracle.customers()])
    model = train(truth, seed=1).model  # batch training on the final state, k by the rule
    RedisModelStore.from_url(settings.redis.url, settings.redis.prefix).save(model)

    s = scoring_settings(settings, scoring_as_of=as_of.isoformat(), hysteresis_margin=0.0)
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    worker.wait_assigned()
    segs = wait_all_scored(s, worker, len(events), model.version, timeout=180)
    assert worker.stop() == 0  # the online state is saved on stop
    client = redis.Redis.from_url(s.redis.url)
    raw = client.get(f"{s.redis.prefix}:online:{model.version}")
    client.close()
    text = redis.Redis.from_url(s.redis.url, decode_responses=True)
    status: dict[str, str] = text.hgetall(f"{s.redis.prefix}:scoring")  # type: ignore[assignment]
    text.close()
    assert raw is not None
    online = OnlineModel.from_dict(json.loads(raw), model)
    assert online.seen >= len(segs)  # it saw every event-scored update (river: a sample)

    ids = list(truth["customer_id"])
    personas = [data.labels[c] for c in ids]
    batch_ari = adjusted_rand_score(personas, [segs[c]["segment"] for c in ids])
    z = model.transform(real_matrix(truth, model.feature_names))
    online_ari = adjusted_rand_score(personas, distances(z, online.centers_).argmin(axis=1))
    drift = online.drift(s.scoring.drift_bound)
    print(f"ARI batch {batch_ari:.3f} online {online_ari:.3f}; drift max {drift.max:.3f} "
          f"mean {drift.mean:.3f} ({len(events)} events, {len(ids)} customers, "
          f"k={model.k})")  # fmt: skip
    assert batch_ari >= 0.8
    assert online_ari >= batch_ari - 0.05
    assert float(status["drift_max"]) == pytest.approx(drift.max)
    assert status["model_version"] == model.version


def test_a_crash_between_state_and_segment_loses_no_change(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    """State written without scoring (as if the worker died right after the state script) is
    scored at the next start from ``{prefix}:unscored``; unacknowledged changes left in the
    outbox are published then too, except the changes whose compare-and-set was lost."""
    events = dataset(60, 300, 100, seed=3)
    state_only = workers(settings.with_(scoring=0), "state-only")
    produce(settings.kafka.bootstrap, records_for(settings, events))
    state_only.wait_assigned()
    client = redis.Redis.from_url(settings.redis.url)
    wait_for(
        lambda: (
            int(client.hget(keys.counters(settings.redis.prefix), "received") or 0) >= len(events)
        ),
        90,
        "state written",
    )
    assert state_only.stop() == 0
    customers = set(oracle_rows(events))
    unscored = {m.decode() for m in client.hkeys(keys.unscored(settings.redis.prefix))}  # type: ignore[union-attr]
    assert unscored == customers and not any(v["segment"] for v in segments(settings).values())
    ghost2 = SegmentChange(
        customer_id="ghost2", old_segment="new", new_segment="loyal", reason="clicks",
        model_version="rules-v1", features={}, event_time=AS_OF, processing_time=AS_OF,
    )  # fmt: skip
    outbox = f"{settings.redis.prefix}:outbox"
    # a round's events; "ghost3" lost its compare-and-set, so its event must not go out
    lost = msgspec.json.encode(msgspec.structs.replace(ghost2, customer_id="ghost3"))
    a_round = msgspec.msgpack.encode(["ghost2", 4, msgspec.json.encode(ghost2), "ghost3", 2, lost])
    client.hset(outbox, "00000000000000000001-1-0", a_round)
    client.hset(outbox, "00000000000000000001-1-0:skip", msgspec.msgpack.encode(["ghost3"]))

    s = scoring_settings(settings, group_id=f"{settings.kafka.group_id}-2")
    worker = workers(s, "restarted")
    segs = wait_all_scored(s, worker, len(events), "rules-v1")
    assert set(segs) == customers
    # a round's outbox entry is dropped once its publication is acknowledged, which can come a
    # moment after its segments are written: wait for it rather than race it
    wait_for(
        lambda: not client.exists(f"{settings.redis.prefix}:outbox"), 30, "the outbox to drain"
    )
    client.close()
    changes = read_changes(s, len(customers) + 1)
    assert [(seq, ev) for seq, ev in changes if ev.customer_id == "ghost2"] == [(4, ghost2)]
    assert not [ev for _, ev in changes if ev.customer_id == "ghost3"]
    rest = [(seq, ev) for seq, ev in changes if ev.customer_id != "ghost2"]
    by_customer = assert_one_event_per_change(rest, segs)
    assert all(ev.reason in ("order", "clicks") for evs in by_customer.values() for _, ev in evs)


def test_drift_above_the_bound_publishes_a_notice_and_retrains_once(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    # the retrain renames the segments (label stability 0): a gate that lets any model through
    s = scoring_settings(
        settings, drift_bound=0.05, retrain_on_drift=1, retrain_cooldown_s=600,
        retrain_gate_min_stability=0.0, retrain_gate_silhouette_margin=2.0,
        retrain_gate_min_segment_share=0.0,
    )  # fmt: skip
    first = aov_model(s.redis.prefix, s.redis.url)  # centroids at AOV 20 and 200
    worker = workers(s)
    worker.wait_assigned()
    now = datetime.now(UTC) - timedelta(days=2)
    # Baskets of 90-110 pull the 'big_baskets' centroid (200) down: drift.
    orders = [_order(f"D{i}", n, 90.0 + (i * 7 + n) % 20, now + timedelta(hours=n))
              for i in range(40) for n in range(3)]  # fmt: skip
    produce(s.kafka.bootstrap, records_for(s, orders))
    store = RedisModelStore.from_url(s.redis.url, s.redis.prefix)
    retrained = wait_for(
        lambda: (v := store.current_version()) != first.version and v, 120, "a retrained model"
    )
    wait_for(lambda: scoring_report(worker)["model_version"] == retrained, 30, "the reload")
    report = scoring_report(worker)
    assert report["retrains"] == 1 and report["drift_notices"] >= 1
    consumer = KafkaConsumer(
        s.kafka.control_topic, bootstrap_servers=s.kafka.bootstrap, auto_offset_reset="earliest",
        group_id=f"{s.kafka.group_id}-control-reader", session_timeout_ms=6000,
        consumer_timeout_ms=5000,
    )  # fmt: skip
    notices = [json.loads(m.value) for m in consumer]
    consumer.close()
    drift = [n for n in notices if n["type"] == "drift" and n["version"] == first.version]
    assert len(drift) == 1 and drift[0]["max"] > s.scoring.drift_bound == drift[0]["bound"]
    client = redis.Redis.from_url(s.redis.url)
    assert client.exists(f"{s.redis.prefix}:retrain:lock")  # no second retrain for 10 min
    client.close()
