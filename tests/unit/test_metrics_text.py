"""``/metrics`` is Prometheus text that Prometheus' own parser reads; the probes say live/ready.

Built from real metrics objects (ingestion's counters after a batch with every kind of reject,
a scoring service with a K-means model whose online centroids drifted), rendered by the page
code and read back with ``prometheus_client.parser``: names, types, units, labels and values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from schemas import SchemaError, encode
from segstream.settings import Settings
from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
from tests.support.records import Raw
from tests.support.synthetic import orders
from worker.core.batch import ApplyResult
from worker.exposition import Exposition
from worker.ingest.applier import Applied, ApplierMetrics, FailureReport
from worker.ingest.batch import assemble
from worker.ingest.listener import NullListener
from worker.ingest.metrics import REASON_CLASSES, IngestMetrics, expose_ingest, reason_class
from worker.ingest.service import IngestService
from worker.pages import ingest_pages, metrics_text
from worker.scoring.service import ScoringService
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import OnlineModel
from worker.state.errors import StoreRejected

#: Two valid order events, as their producers write them.
ORDERS = [encode(event) for event in orders(3, 2, seed=1)[:2]]


def parse(text: str) -> dict[str, Any]:
    """Family name -> family, as Prometheus' parser reads the text (counters lose ``_total``)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family: Any, **labels: str) -> float:
    found = [s.value for s in family.samples if s.labels == labels]
    assert len(found) == 1, (family.name, labels, family.samples)
    return float(found[0])


class Store:
    """The state store as the pages use it: counters, or an error Redis replied with."""

    def __init__(self, counters: Mapping[str, int] | None = None, error: str = "") -> None:
        self._counters = dict(counters or {})
        self.error = error

    async def counters(self) -> dict[str, int]:
        if self.error:
            raise StoreRejected("redis said no") from Exception(self.error)
        return self._counters


class View:
    """faust's view as the pages use it: the response is ``(status, body)``."""

    def json(self, value: Any, *, status: int = 200) -> tuple[int, Any]:
        return status, value

    def text(
        self, value: str, *, content_type: str | None = None, status: int = 200
    ) -> tuple[int, Any]:
        assert content_type == "text/plain; version=0.0.4"
        return status, value


def two_segment_model() -> SegmentModel:
    return SegmentModel(
        version="km-test", created_at="2026-06-01T00:00:00+00:00", feature_names=("frequency",),
        scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.log1p(np.array([[1.0], [20.0]])), names=("low", "high"), seed=0,
        training_size=10, as_of="2026-06-01T00:00:00+00:00", hysteresis_margin=0.0,
    )  # fmt: skip


def busy_ingest(store: Store) -> IngestService:
    """Ingestion after one batch: 2 valid orders, 1 malformed, 1 invalid, 1 null, 1 quarantined."""
    ingest = IngestService(Settings(), store=store, listener=NullListener())  # type: ignore[arg-type]
    records = [
        Raw("orders", 0, 10, b"C1", ORDERS[0]),
        Raw("orders", 0, 11, b"C1", b"{not json"),
        Raw("orders", 0, 12, b"C1", b'{"event_id":"e2"}'),
        Raw("orders", 0, 13, b"C1", ORDERS[1]),
        Raw("clicks", 1, 5, b"C2", None),
    ]
    assembled = assemble([records[:4], records[4:]], "orders", "clicks")
    result = ApplyResult(applied=1, duplicates=0, changed=["C1"])
    ingest.metrics.count_batch(assembled, Applied([(assembled.batch, result)], 1), 0.25)
    ingest.metrics.count_set_aside(2)
    ingest.metrics.control_dead_lettered = 1
    ingest.metrics.state = "running"
    ingest.metrics.assigned = ["orders[0]", "clicks[1]"]
    return ingest


def drifted_scoring() -> ScoringService:
    scoring = ScoringService(Settings(), FakeScoringStore(), FakePublisher(), clock=FakeClock())
    model = two_segment_model()
    scoring.holder.model = model
    scoring.holder.online = online = OnlineModel(model)
    online.kmeans.centers[1]["frequency"] += 0.75  # 'high' moved 0.75 (uncalibrated: std units)
    m = scoring.metrics
    m.rounds, m.scored, m.changes, m.published, m.round_seconds_sum = 4, 120, 9, 7, 0.5
    m.note("publish 2 change(s) failed: KafkaTimeoutError: no ack")
    m.note("scoring round failed: StoreUnavailable: Redis at redis://u:hunter2@h:1 is down")
    scoring.enqueue(["C1", "C2", "C3"], "order")
    scoring.ready = True
    return scoring


def test_the_whole_exposition_parses_with_help_types_and_conventional_names() -> None:
    async def body() -> str:
        store = Store({"received": 1_234_567, "forgotten": 3})
        ingest, scoring = busy_ingest(store), drifted_scoring()
        return metrics_text(ingest, await store.counters(), scoring)

    text = asyncio.run(body())
    families = parse(text)
    assert all(name.startswith("segstream_") for name in families)
    for family in families.values():
        assert family.documentation, family.name
        assert family.type in ("counter", "gauge", "summary"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == family.name + "_total", sample
            if family.type == "summary":
                assert family.name.endswith("_seconds")
                assert sample.name in (family.name + "_sum", family.name + "_count")
    for line in text.splitlines():  # every sample line's family was declared before it
        assert line.startswith("# ") or line.split("{")[0].split(" ")[0].startswith("segstream_")

    dead = families["segstream_ingest_dead_letters"]
    assert {s.labels["reason"] for s in dead.samples} == set(REASON_CLASSES)
    want = {"malformed": 1, "invalid": 1, "null_value": 1, "quarantined": 1, "set_aside": 2,
            "control": 1, "oversize": 0, "unknown_topic": 0}  # fmt: skip
    assert {s.labels["reason"]: s.value for s in dead.samples} == want
    topics = families["segstream_ingest_topic_records"]
    assert value(topics, topic="orders", outcome="valid") == 2
    assert value(topics, topic="orders", outcome="rejected") == 2
    assert value(topics, topic="clicks", outcome="rejected") == 1
    assert value(families["segstream_ingest_records"], outcome="dead_lettered") == 6
    summary = {s.name: s.value for s in families["segstream_ingest_apply_seconds"].samples}
    assert summary == {"segstream_ingest_apply_seconds_sum": 0.25,
                       "segstream_ingest_apply_seconds_count": 1}  # fmt: skip
    assert value(families["segstream_ingest_assigned_partitions"]) == 2
    assert value(families["segstream_ingest_state"], state="running") == 1
    assert value(families["segstream_up"]) == 1 and value(families["segstream_redis_up"]) == 1
    counters = families["segstream_state_counter"]
    assert value(counters, name="received") == 1_234_567  # exact, not 1.23457e+06
    assert value(counters, name="forgotten") == 3

    assert value(families["segstream_scoring_rounds"]) == 4
    assert value(families["segstream_scoring_customers_scored"]) == 120
    assert value(families["segstream_scoring_segment_changes"]) == 9
    assert value(families["segstream_scoring_changes_published"]) == 7
    assert value(families["segstream_scoring_publish_errors"]) == 1
    failures = families["segstream_scoring_failures"]
    assert value(failures, operation="publish") == 1 and value(failures, operation="round") == 1
    assert value(families["segstream_scoring_pending_customers"]) == 3
    assert value(families["segstream_scoring_outbox_rounds"]) == 0
    assert value(families["segstream_scoring_model_info"], version="km-test") == 1
    drift = families["segstream_scoring_segment_drift"]
    assert value(drift, segment="low") == 0.0
    assert value(drift, segment="high") == pytest.approx(0.75)
    assert "hunter2" not in text


def test_lag_is_a_gauge_per_topic_and_partition() -> None:
    out = Exposition()
    expose_ingest(out, IngestMetrics(), ApplierMetrics(), {"orders[0]": 5, "clicks[12]": 0}, None)
    families = parse(out.text())
    lag = families["segstream_ingest_lag_records"]
    assert lag.type == "gauge"
    assert value(lag, topic="orders", partition="0") == 5
    assert value(lag, topic="clicks", partition="12") == 0
    assert value(families["segstream_redis_up"]) == 0
    assert families["segstream_state_counter"].samples == []  # Redis did not answer
    assert value(families["segstream_up"]) == 0  # still starting


def test_values_and_labels_survive_the_round_trip_exactly() -> None:
    out = Exposition()
    tricky = 'a "quoted" back\\slash\nnewline'
    out.family(
        "segstream_x_total", "counter", "Help with a \\ and a\nnewline.",
        [({"what": tricky}, 2**53 - 1), ({"what": "float"}, 0.1)],
    )  # fmt: skip
    out.gauge("segstream_y", "Infinite.", float("inf"))
    out.gauge("segstream_z", "Not a number.", float("nan"))
    families = parse(out.text())
    x = families["segstream_x"]
    assert x.documentation == "Help with a \\ and a\nnewline."
    assert x.samples[0] == Sample("segstream_x_total", {"what": tricky}, float(2**53 - 1))
    assert x.samples[1].value == 0.1
    assert value(families["segstream_y"]) == float("inf")
    assert np.isnan(value(families["segstream_z"]))
    assert "9007199254740991" in out.text()


@pytest.mark.parametrize(
    ("name", "kind", "labels", "why"),
    [
        ("segstream_events", "counter", {}, "must end in _total"),
        ("segstream-bad", "gauge", {}, "not a Prometheus metric name"),
        ("segstream_ok", "gauge", {"bad-label": "x"}, "not a Prometheus label name"),
        ("segstream_ok", "histogram", {}, "unknown metric type"),
    ],
)
def test_the_exposition_refuses_what_prometheus_would_reject(
    name: str, kind: str, labels: dict[str, str], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        Exposition().family(name, kind, "help", [(labels, 1)])


def test_a_family_name_may_be_claimed_once_across_sources() -> None:
    out, other = Exposition(), Exposition()
    out.gauge("segstream_a", "A.", 1)
    with pytest.raises(ValueError, match="defined twice"):
        out.gauge("segstream_a", "A again.", 2)
    other.gauge("segstream_a", "A from another source.", 3)
    with pytest.raises(ValueError, match="defined twice"):
        out.extend(other)


def test_extra_sources_are_included_and_a_failing_one_is_left_out_and_counted() -> None:
    def forget_source(out: Exposition) -> None:
        out.counter("segstream_forget_customers_total", "Customers forgotten.", 4)

    def broken_source(out: Exposition) -> None:
        out.gauge("segstream_half_written", "Never shown.", 1)
        raise RuntimeError("boom")

    async def body() -> tuple[Any, Any]:
        ingest = busy_ingest(Store({}))
        page = ingest_pages(ingest, 0.0, extra_metrics=[forget_source, broken_source])["/metrics"]
        return await page(View(), None), await page(View(), None)

    (status, first), (_, second) = asyncio.run(body())
    assert status == 200
    families = parse(second)
    assert value(families["segstream_forget_customers"]) == 4
    assert "segstream_half_written" not in families
    assert value(families["segstream_metrics_source_errors"]) == 2
    assert "segstream_scoring_rounds" not in families  # no scoring service: no scoring families
    assert value(parse(first)["segstream_metrics_source_errors"]) == 1


def test_dead_letter_reasons_are_a_small_fixed_set() -> None:
    assert reason_class(SchemaError("$", "not JSON: invalid character")) == "malformed"
    assert reason_class(SchemaError("$", "oversize: 70000 bytes, the limit is 65536")) == "oversize"
    assert reason_class(SchemaError("$", "empty record: the value is null")) == "null_value"
    assert (
        reason_class(SchemaError("$", "topic 'x' is neither orders nor clicks")) == "unknown_topic"
    )
    assert reason_class(SchemaError("$.amount", "wrong type: expected str, got int")) == "invalid"
    assert reason_class(SchemaError("$", "wrong type: expected object, got array")) == "invalid"


def test_ready_waits_for_ingestion_its_group_redis_and_scoring_while_live_stays_200() -> None:
    async def body() -> list[tuple[int, Any]]:
        store = Store({"received": 1})
        ingest = IngestService(Settings(), store=store, listener=NullListener())  # type: ignore[arg-type]
        scoring = drifted_scoring()
        scoring.ready = False
        pages = ingest_pages(ingest, 0.0, scoring=scoring)
        view = View()
        answers = [await pages["/health/ready"](view, None)]  # starting
        ingest.metrics.state = "running"
        ingest.metrics.assigned = []  # joined the group, no partition for this worker
        answers.append(await pages["/health/ready"](view, None))  # scoring still starting
        scoring.ready = True
        answers.append(await pages["/health/ready"](view, None))  # ready
        store.error = "WRONGTYPE reply from redis://segstream:hunter2@redis:6379/0"
        answers.append(await pages["/health/ready"](view, None))  # Redis refuses
        store.error = ""
        ingest.metrics.state = "retrying-redis"  # an outage backoff
        answers.append(await pages["/health/ready"](view, None))
        answers.append(await pages["/health/live"](view, None))
        answers.append(await pages["/health"](view, None))
        return answers

    starting, scoring_starts, ready, refused, outage, live, health = asyncio.run(body())
    assert starting[0] == 503 and starting[1]["ready"] is False
    assert starting[1]["checks"]["ingest"] == "starting"
    assert starting[1]["checks"]["consumer_group"] == "not joined yet"
    assert scoring_starts[0] == 503 and scoring_starts[1]["checks"]["scoring"] == "starting"
    checks: dict[str, str] = ready[1]["checks"]
    assert ready == (200, {"ready": True, "checks": dict.fromkeys(checks, "ok")})
    assert set(checks) == {"ingest", "consumer_group", "redis", "batch", "topics", "scoring"}
    assert refused[0] == 503 and refused[1]["checks"]["redis"].startswith("error: WRONGTYPE")
    assert "hunter2" not in str(refused) and "segstream:***@redis" in str(refused)
    assert outage[0] == 503 and outage[1]["checks"]["ingest"] == "retrying-redis"
    assert live[0] == 200 and live[1]["live"] is True
    status, report = health
    assert status == 200  # /health itself never fails: backward compatible
    assert report["status"] == "degraded" and report["ready"] is False and report["live"] is True
    assert report["checks"]["ingest"] == "retrying-redis"


def test_a_failing_batch_makes_the_worker_unready_and_a_crashed_service_not_live() -> None:
    async def body() -> tuple[Any, Any]:
        ingest = busy_ingest(Store({}))

        class Applier:
            metrics = ApplierMetrics(
                failing=FailureReport("orders[0]@1-9", "poison", "boom", "fix it", 3, 0.0)
            )

        ingest.applier = Applier()  # type: ignore[assignment]
        pages = ingest_pages(ingest, 0.0)
        ready = await pages["/health/ready"](View(), None)
        await ingest.crash(RuntimeError("the service's task died"))
        return ready, await pages["/health/live"](View(), None)

    ready, live = asyncio.run(body())
    assert ready[0] == 503 and ready[1]["checks"]["batch"] == "failing (poison), see /health"
    assert (
        ready[1]["checks"]["scoring"] == "ok"
    )  # scoring off (a null listener): nothing to wait for
    assert live == (503, {"live": False, "crashed": ["ingest"], "uptime_s": live[1]["uptime_s"]})
