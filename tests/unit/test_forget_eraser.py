"""Forgetting, without Redis or a broker: the order of the steps, the counts, the failures.

The Redis script and the real topics are exercised by tests/integration/test_forget.py; here
the eraser runs on small fakes, and the pure helpers (ids from the command line, which failures
are outages, the counters' exposition) alone.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError

from segstream.errors import ConfigError
from worker.erase import failures
from worker.erase.cli import read_ids
from worker.erase.eraser import Eraser
from worker.erase.metrics import EraseMetrics
from worker.erase.store import Forgotten
from worker.exposition import Exposition
from worker.state.errors import StoreRejected, StoreUnavailable

CID = "CUST-4711"


class FakeStore:
    def __init__(self, stored: set[str], outbox: dict[str, int] | None = None) -> None:
        self.stored = set(stored)
        #: round -> how many waits it takes to be published (-1: never)
        self.outbox = dict(outbox or {})
        self.steps: list[str] = []

    async def forget(self, customer_id: str, now_ms: int | None = None) -> Forgotten:
        self.steps.append("forget")
        existed = customer_id in self.stored
        self.stored.discard(customer_id)
        rounds = tuple(self.outbox) if existed else ()
        return Forgotten(existed, rounds)

    async def wait_published(self, rounds: tuple[str, ...], timeout_s: float) -> bool:
        self.steps.append("wait")
        return all(self.outbox[r] >= 0 for r in rounds)

    async def forget_storefront(self, customer_id: str) -> None:
        self.steps.append("storefront")


class FakeTombstones:
    def __init__(self, steps: list[str], fail: int = 0) -> None:
        self.steps = steps
        self.fail = fail
        self.sent: list[str] = []

    async def publish(self, customer_id: str) -> None:
        self.steps.append("tombstone")
        if self.fail:
            self.fail -= 1
            raise KafkaConnectionError("broker gone")
        self.sent.append(customer_id)


def test_the_tombstone_follows_the_erasure_and_waits_for_the_outbox_rounds_that_held_them() -> None:
    store = FakeStore({CID}, outbox={"round-1": 1})
    tombstones = FakeTombstones(store.steps)
    metrics = EraseMetrics()
    done = asyncio.run(Eraser(store, tombstones, metrics).erase(CID))
    assert done.existed and done.rounds == ("round-1",)
    assert store.steps == ["forget", "wait", "storefront", "tombstone"]
    assert tombstones.sent == [CID]
    assert (metrics.forgotten, metrics.absent, metrics.tombstones) == (1, 0, 1)


def test_a_customer_with_nothing_stored_still_gets_a_tombstone_and_counts_as_absent() -> None:
    store = FakeStore(set())
    tombstones = FakeTombstones(store.steps)
    metrics = EraseMetrics()
    asyncio.run(Eraser(store, tombstones, metrics).erase(CID))
    assert store.steps == ["forget", "storefront", "tombstone"]
    assert (metrics.forgotten, metrics.absent, metrics.tombstones) == (0, 1, 1)


def test_a_retry_after_a_failed_tombstone_still_counts_the_customer_as_forgotten() -> None:
    store = FakeStore({CID})
    tombstones = FakeTombstones(store.steps, fail=1)
    metrics = EraseMetrics()
    eraser = Eraser(store, tombstones, metrics)
    with pytest.raises(KafkaConnectionError):
        asyncio.run(eraser.erase(CID))
    asyncio.run(eraser.erase(CID))  # the second forget finds nothing stored any more
    assert (metrics.forgotten, metrics.absent, metrics.tombstones) == (1, 0, 1)
    assert tombstones.sent == [CID]


def test_a_round_never_published_is_counted_and_the_tombstone_goes_out_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore({CID}, outbox={"stuck": -1})
    tombstones = FakeTombstones(store.steps)
    metrics = EraseMetrics()
    with caplog.at_level(logging.DEBUG, logger="worker.erase"):
        asyncio.run(Eraser(store, tombstones, metrics, outbox_wait_s=0.01).erase(CID))
    assert metrics.outbox_timeouts == 1 and tombstones.sent == [CID]
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud and not [m for m in loud if CID in m]  # warned, without the id
    assert [r for r in caplog.records if r.levelno == logging.DEBUG and CID in r.getMessage()]


def test_ids_come_from_arguments_then_the_file_each_once_skipping_blanks_and_comments() -> None:
    lines = ["  C2  ", "", "# a comment", "C3", "C1"]
    assert read_ids(["C1", "C2"], lines) == ["C1", "C2", "C3"]


@pytest.mark.parametrize(
    ("arguments", "lines", "where"),
    [(["C1", " "], [], "argument 2"), ([], ["C1", "X" * 129], "line 2 of --file")],
)
def test_an_impossible_id_is_refused_by_position_not_by_text(
    arguments: list[str], lines: list[str], where: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        read_ids(arguments, lines)
    assert str(refused.value).startswith(where) and "XXX" not in str(refused.value)


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (StoreUnavailable("Redis at redis://h is unavailable"), True),
        (KafkaConnectionError("gone"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (StoreRejected("WRONGTYPE"), False),
        (UnknownTopicOrPartitionError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_outages_are_told_apart_from_failures_that_retrying_cannot_fix(
    exc: BaseException, outage: bool
) -> None:
    assert failures.is_outage(exc) is outage


def test_the_reason_of_a_request_that_kept_failing_does_not_name_the_customer() -> None:
    text = failures.reason(StoreRejected(f"key ss:c:{{{CID}}} is a list"), CID, 5)
    assert text.startswith("could not be erased 5 times: StoreRejected: ")
    assert CID not in text and "<customer>" in text


def test_the_counters_are_exposed_as_prometheus_counters() -> None:
    metrics = EraseMetrics(requests=3, forgotten=2, absent=1, tombstones=3, dead_lettered=1)
    metrics.note_error("Redis at redis://u:secret@h:6379 is unavailable")
    out = Exposition()
    metrics.expose(out)
    text = out.text()
    assert "segstream_erase_requests_total 3" in text
    assert "segstream_erase_forgotten_total 2" in text
    assert "segstream_erase_dead_lettered_total 1" in text
    assert "segstream_erase_failures_total 1" in text
    assert "# TYPE segstream_erase_tombstones_total counter" in text
    assert metrics.last_error is not None and "secret" not in metrics.last_error
