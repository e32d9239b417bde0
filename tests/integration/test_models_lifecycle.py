"""Model lifecycle against the real broker and Redis, with ``segstream worker`` running.

``segstream models promote`` and ``rollback`` change the live assignment (segments and
``model_version`` read back from the customer hashes, equal to each model's prediction on the
exported state); a gated retrain that fails its gate, by hand or started by drift, is stored but
not promoted, and ``segstream models list`` says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analytics.frames import real_matrix
from schemas import LineItem, OrderEvent
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.state_checks import AS_OF, oracle_rows
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import sync_redis
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.assign import assign
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.state import keys

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


def lifecycle_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.with_(
        model_poll_s=0.5, dirty_repair_s=2.0, scoring_as_of=AS_OF.isoformat(),
        hysteresis_margin=0.0, **changes,
    )  # fmt: skip


def segstream(
    settings: Settings, *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segstream", *args], env={**settings.to_env(), **(env or {})},
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def store(settings: Settings) -> RedisModelStore:
    return RedisModelStore.from_settings(settings.redis)


def live(settings: Settings) -> str | None:
    s = store(settings)
    try:
        return s.current_version()
    finally:
        s.close()


def history(settings: Settings) -> list[tuple[str, str, str | None]]:
    s = store(settings)
    try:
        return [(p.action, p.version, p.previous) for p in s.history()]
    finally:
        s.close()


def gate_of(settings: Settings, version: str) -> dict[str, Any]:
    s = store(settings)
    try:
        return s.gate_results()[version]
    finally:
        s.close()


def train(settings: Settings, *args: str, env: dict[str, str] | None = None) -> str:
    """``segstream train --from redis`` (as of AS_OF); the version it stored."""
    before = set(versions(settings))
    out = segstream(settings, "train", "--from", "redis", "--as-of", AS_OF.isoformat(), *args,
                    env=env).stdout  # fmt: skip
    (new,) = set(versions(settings)) - before
    assert new in out
    return new


def versions(settings: Settings) -> list[str]:
    s = store(settings)
    try:
        return s.versions()
    finally:
        s.close()


def assignment(settings: Settings) -> dict[str, tuple[str, str]]:
    """customer id -> (segment, model_version), as the storefront reads them."""
    client = sync_redis(settings.redis, decode_responses=True)
    out: dict[str, tuple[str, str]] = {}
    try:
        pattern = keys.customer_pattern(settings.redis.prefix)
        for key in client.scan_iter(match=pattern, count=1000):
            segment, version = client.hmget(key, ["segment", "model_version"])
            out[keys.customer_id_of(settings.redis.prefix, key)] = (str(segment), str(version))
    finally:
        client.close()
    return out


def scoring_report(worker: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.settings.web_port}/scoring"
    with urllib.request.urlopen(url, timeout=2) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def wait_all_on(
    settings: Settings, worker: WorkerProcess, n_customers: int, version: str, timeout: float = 90
) -> dict[str, tuple[str, str]]:
    """Until every customer is scored with ``version`` and nothing is left queued."""

    seen: list[Any] = []

    def done() -> dict[str, tuple[str, str]] | None:
        assert worker.alive, worker.tail()
        got = assignment(settings)
        seen[:] = [len(got), sorted({v for _, v in got.values()})]
        if len(got) < n_customers or any(v != version for _, v in got.values()):
            return None
        return got if scoring_report(worker)["pending"] == 0 else None

    try:
        result: dict[str, tuple[str, str]] = wait_for(done, timeout, f"all on {version}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen[0]} of {n_customers} customers, on {seen[1]}") from None
    return result


def predicted(settings: Settings, version: str, tmp_path: Path) -> dict[str, str]:
    """What ``version`` assigns (nearest centroid) to every exported customer as of AS_OF."""
    out = tmp_path / f"export-{version}.jsonl"
    segstream(settings, "export", "--format", "jsonl", "--out", str(out),
              "--as-of", AS_OF.isoformat())  # fmt: skip
    rows = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
    s = store(settings)
    try:
        model = s.load(version)
    finally:
        s.close()
    ids = assign(model, real_matrix(rows, model.feature_names), margin=0.0).segment_ids
    return {c: model.names[i] for c, i in zip(rows["customer_id"], ids, strict=True)}


def list_line(listing: str, version: str) -> str:
    (line,) = [ln for ln in listing.splitlines() if version in ln and "│" in ln]
    return line


# -- tests ---------------------------------------------------------------------------------------
def test_promote_and_rollback_change_the_live_assignment(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    s = lifecycle_settings(settings)
    events = dataset(120, 700, 250, seed=21)
    n = len(oracle_rows(events))
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    worker.wait_assigned()
    wait_all_on(s, worker, n, "rules-v1")

    first = train(s, "--k", "3", "--seed", "1")
    second = train(s, "--k", "5", "--seed", "2")
    assert live(s) == second
    wait_for(lambda: scoring_report(worker)["model_version"] == second, 30, "the reload")
    listing = segstream(s, "models", "list").stdout
    assert "*" in list_line(listing, second) and "live" in list_line(listing, second)
    assert "was live" in list_line(listing, first)
    assert f"rollback would go to {first}" in listing

    # Promote the older model and re-score: every customer gets its segment from it.
    out = segstream(s, "models", "promote", first, "--rescore").stdout
    assert f"promoted {first} (was {second})" in out and "rescore" in out
    got = wait_all_on(s, worker, n, first)
    first_says = predicted(s, first, tmp_path)
    assert {c: seg for c, (seg, _) in got.items()} == first_says
    assert scoring_report(worker)["model_version"] == first

    # Roll back: the model live before the promotion, every customer re-scored with it.
    out = segstream(s, "models", "rollback", "--rescore").stdout
    assert f"rolled back {first} -> {second}" in out
    got = wait_all_on(s, worker, n, second)
    second_says = predicted(s, second, tmp_path)
    assert {c: seg for c, (seg, _) in got.items()} == second_says
    assert second_says != first_says  # k 5 vs k 3: the live assignment really changed

    # Again: one promotion further back, to the older version (followed without a rescore) ...
    assert f"rolled back {second} -> {first}" in segstream(s, "models", "rollback").stdout
    wait_for(lambda: scoring_report(worker)["model_version"] == first, 30, "the rollback")
    # ... and past the first promotion there is nothing to roll back to: one line, status 1.
    refused = segstream(s, "models", "rollback", ok=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"segstream: error: nothing to roll back to: {first} is the first live model in the "
        f"history of {s.redis.prefix}"
    ]
    assert live(s) == first
    assert history(s) == [
        ("train", first, None), ("train", second, first), ("promote", first, second),
        ("rollback", second, first), ("rollback", first, second),
    ]  # fmt: skip
    shown = segstream(s, "models", "show", second).stdout
    assert "centroids of" in shown and "recency_days" in shown
    assert all(name in shown for name in set(second_says.values()))


def test_a_gated_retrain_that_fails_the_gate_is_stored_not_promoted(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = lifecycle_settings(settings, rescore_all=1)
    events = dataset(100, 600, 200, seed=22)
    n = len(oracle_rows(events))
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    worker.wait_assigned()
    wait_all_on(s, worker, n, "rules-v1")
    current = train(s, "--k", "4", "--seed", "1")
    before = wait_all_on(s, worker, n, current)

    # Same data, same k: a stability of 101 % cannot be met.
    failing = {"SEGSTREAM_RETRAIN_GATE_MIN_STABILITY": "1.01"}
    candidate = train(s, "--k", "4", "--seed", "2", "--gate", env=failing)
    assert live(s) == current
    gate = gate_of(s, candidate)
    assert gate["passed"] is False and gate["reason"].startswith("label stability")
    assert gate["bounds"]["min_stability"] == 1.01 and gate["measures"]["stability"] <= 1.0
    assert "not promoted: gate failed: label stability" in list_line(
        segstream(s, "models", "list").stdout, candidate
    )
    # Workers keep the live model: nothing re-scored, nothing moved.
    time.sleep(4 * s.scoring.model_poll_s)
    assert scoring_report(worker)["model_version"] == current
    assert assignment(s) == before

    # The same retrain under bounds it meets is promoted, and the worker follows it.
    passing = {
        "SEGSTREAM_RETRAIN_GATE_MIN_STABILITY": "0",
        "SEGSTREAM_RETRAIN_GATE_SILHOUETTE_MARGIN": "2",
    }
    promoted = train(s, "--k", "4", "--seed", "2", "--gate", env=passing)
    assert live(s) == promoted and history(s)[-1] == ("retrain", promoted, current)
    wait_all_on(s, worker, n, promoted)


def _order(cid: str, n: int, total: float, when: datetime) -> OrderEvent:
    return OrderEvent(
        event_id=f"{cid}-e{n}", schema_version=1, customer_id=cid, order_id=f"{cid}-o{n}",
        event_time=when, status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=total)], total=total,
    )  # fmt: skip


def test_a_drift_triggered_retrain_that_fails_the_gate_leaves_the_live_model(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(
        model_poll_s=0.5, drift_bound=0.05, retrain_on_drift=1, retrain_cooldown_s=600,
        retrain_gate_min_stability=1.01,
    )  # fmt: skip
    first = SegmentModel(
        version="km-aov-test", created_at="2026-01-01T00:00:00+00:00", feature_names=("aov",),
        scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.log1p(np.array([[20.0], [200.0]])), names=("small_baskets", "big_baskets"),
        seed=0, training_size=2, as_of="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    models = store(s)
    models.save(first)
    worker = workers(s)
    worker.wait_assigned()
    now = datetime.now(UTC) - timedelta(days=2)
    # Baskets of 90-110 pull the 'big_baskets' centroid (200) down: drift, then the retrain.
    orders = [_order(f"D{i}", n, 90.0 + (i * 7 + n) % 20, now + timedelta(hours=n))
              for i in range(40) for n in range(3)]  # fmt: skip
    produce(s.kafka.bootstrap, records_for(s, orders))
    gates = wait_for(models.gate_results, 120, "the gated retrain's verdict")
    (candidate,) = gates
    assert gates[candidate]["passed"] is False
    assert "label stability" in gates[candidate]["reason"]
    assert models.current_version() == first.version and candidate in models.versions()
    assert scoring_report(worker)["retrains"] == 1
    assert scoring_report(worker)["model_version"] == first.version
    listing = segstream(s, "models", "list").stdout
    assert "not promoted: gate failed" in list_line(listing, candidate)
    models.close()
