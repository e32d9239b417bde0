"""A fault campaign: random bytes, a Redis out of memory, wrong-typed keys; nothing half-applied.

What this proves, against the real broker and Redis with ``segstream worker`` as a subprocess
(scoring on, as deployed), each test ending with the Redis state equal to the oracle customer by
customer, the counters adding up, and the very process that was started still running (same
pid, ``/health`` ok, no traceback in its log):

1. Seeded random records (0-5000 random bytes or a null value, keys missing, empty, binary or
   long, random headers) mixed into ``orders``, ``clicks`` *and the control topic* between
   valid events: every random record of orders/clicks gets exactly one dead letter, every
   control record that is not a control message gets exactly one (``source_topic`` = the
   control topic, counted in ``process.control_dead_lettered``), a valid control message gets
   none, and every valid event is applied exactly once.
2. Redis refusing writes (``maxmemory`` reached, ``noeviction``) is an outage, not poison: the
   worker says so on ``/health`` (degraded, ``blocked``, ``batch_failure.kind`` outage, advice
   naming maxmemory), applies, counts, commits and dead-letters nothing while it lasts (the
   committed offsets stay at what was applied), and resumes by itself once memory is freed.
   A direct test covers the batch shape Redis used to let through past maxmemory (a first write
   that is a ZREM of the sweep index: not a deny-oom command, after which Redis lets a script
   write on); the script now writes a deny-oom command first.
3. A customer hash of the wrong type makes the state script refuse every batch holding that
   customer (WRONGTYPE): after ``poison_retries`` attempts each such batch, and only such a
   batch, is applied in pieces; exactly that customer's records are dead-lettered with the
   reason, everyone else is applied exactly, the planted key is left alone.
4. A shared key of the wrong type (``{prefix}:counters`` a string) is an outage: blocked,
   nothing applied or dead-lettered; once the key is deleted the worker resumes and ends exact.
5. Without a worker: a batch refused because of a wrong-typed key of a customer in the middle
   of it (or of a shared key) leaves Redis exactly as it was (no other
   customer written, fences, counters, stamp and unscored untouched), and the same batch
   applies exactly once the key is fixed. This is what makes retrying and isolating safe.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from schemas import ClickEvent, LineItem, OrderEvent
from segstream.settings import Settings
from tests.support import synthetic
from tests.support.kafka_reads import Letter, committed_offsets, read_dead_letters
from tests.support.producing import (
    Kind,
    Outgoing,
    Sent,
    interleave,
    next_offsets,
    send_all,
    valid_records,
)
from tests.support.redis_servers import DedicatedRedis
from tests.support.state_checks import (
    AS_OF,
    assert_same_state,
    counters,
    oracle_rows,
    redis_rows,
    wait_drained,
)
from tests.support.synthetic import Event, dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess, assert_same_worker_healthy, start
from worker.core import Batch, InMemoryStateStore, Record, features
from worker.scoring import control as control_message
from worker.scoring.errors import ControlMessageInvalid
from worker.state import StateReader, StateStore, keys
from worker.state.errors import StoreRejected

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[DedicatedRedis]:
    """A redis-server only this test uses (its memory settings are the test's to change)."""
    server = DedicatedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# -- helpers -------------------------------------------------------------------------------------
def input_partitions(settings: Settings, partitions: int = 4) -> list[tuple[str, int]]:
    return [(t, p) for t in settings.kafka.input_topics for p in range(partitions)]


def dead_letter_topic_is_empty(settings: Settings) -> bool:
    """Whether nothing was ever dead-lettered (the topic's one partition ends at offset 0).

    (tansu reports a non-empty partition's end offset as its last record batch's base offset
    plus one, so this is exact for "empty" only.)
    """
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    try:
        tp = TopicPartition(settings.kafka.dead_letter_topic, 0)
        return int(consumer.end_offsets([tp])[tp]) == 0
    finally:
        consumer.close()


def health(worker: WorkerProcess) -> dict[str, Any]:
    assert worker.alive, f"{worker.name} exited:\n{worker.tail(60)}"
    got = worker.health()
    assert got is not None, f"{worker.name} does not answer /health:\n{worker.tail(60)}"
    return got


def wait_blocked(worker: WorkerProcess, timeout: float = 60.0) -> dict[str, Any]:
    """Until ``/health`` reports ingestion blocked by a failing batch."""

    def blocked() -> dict[str, Any] | None:
        h = health(worker)
        return h if h["state"] == "blocked" and h["batch_failure"] else None

    got: dict[str, Any] = wait_for(blocked, timeout, f"{worker.name} to report blocked", 0.2)
    return got


def wait_recovered(worker: WorkerProcess, timeout: float = 60.0) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        h = health(worker)
        return h if h["status"] == "ok" and h["batch_failure"] is None else None

    got: dict[str, Any] = wait_for(ok, timeout, f"{worker.name} to report ok again", 0.2)
    return got


def observe(seconds: float, sample: Callable[[], Any], every: float = 0.5) -> list[Any]:
    """``sample()`` every ``every`` seconds for ``seconds``: what a blocked worker looks like.

    (Holding still is the property under test here, so this waits out a fixed time.)
    """
    samples = [sample()]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every)
        samples.append(sample())
    return samples


def log_text(worker: WorkerProcess) -> str:
    return worker.log_path.read_text(errors="replace")


def metric_value(worker: WorkerProcess, name: str) -> float:
    for line in worker.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name} in /metrics")


def customer_rows(settings: Settings, skip: set[str]) -> dict[str, dict[str, object]]:
    """Like ``redis_rows``, leaving out the customer keys in ``skip`` (planted, not hashes)."""
    client = redis.Redis.from_url(settings.redis.url)
    try:
        pattern = keys.customer_pattern(settings.redis.prefix)
        found = {k.decode() for k in client.scan_iter(match=pattern, count=1000)}
    finally:
        client.close()
    rows: dict[str, dict[str, object]] = {}
    with StateReader(settings.redis.url, settings.redis.prefix) as reader:
        for key in sorted(found - skip):
            cid = keys.customer_id_of(settings.redis.prefix, key)
            state = reader.get(cid)
            assert state is not None, key
            rows[cid] = features(state, AS_OF)
    return rows


# -- 1. random bytes into every input topic ------------------------------------------------------
def random_key(rng: random.Random) -> bytes | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.3:
        return b""
    if roll < 0.45:
        return f"C{rng.randrange(300):05d}".encode()  # a real customer's key: its partition
    if roll < 0.85:
        return rng.randbytes(rng.randint(1, 64))
    return rng.randbytes(rng.randint(1000, 8000))  # long


def random_headers(rng: random.Random) -> list[tuple[str, bytes]] | None:
    if rng.random() < 0.3:
        return None
    alphabet = [chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x400, 0x450)]]
    return [
        ("".join(rng.choices(alphabet, k=rng.randint(0, 24))), rng.randbytes(rng.randint(0, 300)))
        for _ in range(rng.randint(0, 6))
    ]


def random_records(rng: random.Random, topic: str, n: int, label: str) -> list[Outgoing]:
    """``n`` records of random bytes (0-5000 of them) or null, random keys and headers."""
    out = []
    for i in range(n):
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 5000))
        size = "null" if value is None else f"{len(value)} bytes"
        kind = Kind(f"random {label} #{i} ({size})", value, "$")
        key = random_key(rng)
        if value is None and key is None:  # a record needs one of the two
            key = rng.randbytes(rng.randint(0, 16))
        out.append(Outgoing(topic, key, value, headers=random_headers(rng), kind=kind))
    return out


def control_extras(topic: str) -> list[Outgoing]:
    """Hand-made control records random bytes never reach: near misses, and valid notices."""
    drift = {"version": "rules-v1", "max": 0.01, "mean": 0.005, "bound": 1.0,
             "at": "2026-06-01T00:00:00+00:00"}  # fmt: skip
    values = [
        b"{}", b"[]", b"null", b'"drift"', b'{"type":null}', b'{"type":"model_updat"}',
        b'{"type":["drift"]}', b'{"type":"drift"', b'[{"type":"drift"}]', b"\xef\xbb\xbf{}",
        msgspec.json.encode({"type": "drift", "pad": "x" * 70_000}),  # over the 64 KiB bound
        control_message.encode("drift", **drift),  # valid: workers ignore drift notices
        control_message.encode("drift", **{**drift, "max": 0.02}),
    ]  # fmt: skip
    return [
        Outgoing(topic, b"ops", v, kind=Kind(f"control extra #{i}", v, "$"))
        for i, v in enumerate(values)
    ]


def is_control_message(value: bytes | None) -> bool:
    try:
        control_message.decode(value)
    except ControlMessageInvalid:
        return False
    return True


def wait_control_agent(settings: Settings, worker: WorkerProcess) -> list[Sent]:
    """Probe the control topic until the agent dead-letters a probe; the probes sent.

    The control agent of a new group starts at the topic's end (``latest``): a record produced
    before it has its partition is never read. A probe it dead-letters proves it reads.
    """
    probes: list[Sent] = []
    deadline = time.monotonic() + 90
    while True:
        value = f"probe {len(probes)}: not a control message".encode()
        probe = Outgoing(
            settings.kafka.control_topic, b"probe", value, kind=Kind("probe", value, "$")
        )
        probes += send_all(settings.kafka.bootstrap, [probe])
        until = time.monotonic() + 2
        while time.monotonic() < until:
            if health(worker)["process"]["control_dead_lettered"] > 0:
                return probes
            time.sleep(0.1)
        assert time.monotonic() < deadline, "the control agent read none of the probes in 90 s"


def test_random_bytes_on_every_input_topic_and_the_control_topic_are_dead_lettered_once_and_the_same_worker_applies_every_valid_event_once(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(batch_max_records=250)
    events = dataset(300, 1500, 400, seed=61)
    rng = random.Random(20261207)
    bad_input = [
        *random_records(rng, s.kafka.orders_topic, 70, "orders"),
        *random_records(rng, s.kafka.clicks_topic, 70, "clicks"),
    ]
    control = [
        *random_records(rng, s.kafka.control_topic, 70, "control"),
        *control_extras(s.kafka.control_topic),
    ]
    assert s.scoring.enabled  # the default: the control agent and scoring run as deployed
    worker = start(workers, s, "campaign")
    pid = worker.proc.pid
    probes = wait_control_agent(s, worker)

    mixed = interleave(valid_records(s, events), [*bad_input, *control], seed=62)
    sent = send_all(s.kafka.bootstrap, mixed)
    on_inputs = [x for x in sent if x.record.topic != s.kafka.control_topic]
    bad = [x for x in on_inputs if x.record.kind is not None]
    on_control = [x for x in sent if x.record.topic == s.kafka.control_topic]
    not_control = [x for x in on_control if not is_control_message(x.record.value)]
    assert len(on_control) - len(not_control) == 2  # the two valid drift notices
    assert len(bad) == 140 and len(on_inputs) == len(events) + len(bad)

    # orders and clicks: counters, state
    got = wait_drained(s, len(on_inputs), worker)
    assert got["valid"] == len(events) and got["dead_lettered"] == len(bad), got
    assert got["duplicates"] == 0 and got["applied"] + got["anonymous"] == len(events), got
    assert_same_state(redis_rows(s), oracle_rows(events))

    # the control topic: every non-message dead-lettered (the agent may have skipped early probes)
    def control_done() -> dict[str, Any] | None:
        h = health(worker)
        return h if h["process"]["control_dead_lettered"] >= 1 + len(not_control) else None

    h = wait_for(control_done, 60, f"{len(not_control)} control records dead-lettered", 0.2)
    n_control_letters = h["process"]["control_dead_lettered"]
    letters = read_dead_letters(s, at_least=len(bad) + n_control_letters)
    assert len(letters) == len(bad) + n_control_letters, (len(letters), len(bad), h["process"])

    by_where = Counter(
        (d.letter.source_topic, d.letter.partition, d.letter.offset) for d in letters
    )
    twice = {w: n for w, n in by_where.items() if n != 1}
    assert not twice, f"records with more than one dead letter: {twice}"
    expected: dict[tuple[str, int, int], Sent] = {x.where: x for x in [*bad, *not_control]}
    probe_where = {p.where: p for p in probes}
    strays = set(by_where) - set(expected) - set(probe_where)
    assert not strays, f"dead letters of records that are valid: {sorted(strays)[:5]}"
    missing = [x.what for w, x in expected.items() if w not in by_where]
    assert not missing, f"no dead letter for {missing[:10]} ({len(missing)} in all)"
    control_letters = [d for d in letters if d.letter.source_topic == s.kafka.control_topic]
    assert len(control_letters) == n_control_letters
    assert n_control_letters - len(not_control) == len(set(by_where) & set(probe_where)) >= 1
    for d in letters:
        x = expected.get(where_of(d)) or probe_where[where_of(d)]
        assert d.letter.original == (x.record.value or b""), x.what
        assert d.letter.error.startswith("$"), (x.what, d.letter.error)
        assert d.letter.key == x.record.key, f"{x.what}: key {d.letter.key!r} != {x.record.key!r}"
        assert d.message_key == x.record.key, f"{x.what}: message key {d.message_key!r}"
        if x.record.value is None:
            assert "empty record" in d.letter.error, (x.what, d.letter.error)

    health_now = assert_same_worker_healthy(worker, pid)
    p = health_now["process"]
    assert p["dead_lettered"] == len(bad) and p["valid"] == len(events), p
    assert p["quarantined"] == 0 and p["isolated_batches"] == 0, p
    assert p["apply_failures"] == {"outage": 0, "poison": 0}, p
    assert health_now["batch_failure"] is None
    assert log_text(worker).count("dead-lettered ") >= len(bad)


def where_of(d: Letter) -> tuple[str, int, int]:
    return (d.letter.source_topic, d.letter.partition, d.letter.offset)


# -- 2. Redis refusing writes --------------------------------------------------------------------
def test_redis_at_maxmemory_blocks_ingestion_as_an_outage_that_applies_commits_and_dead_letters_nothing_and_it_resumes_by_itself(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess], own_redis: DedicatedRedis
) -> None:
    s = settings.with_(redis_url=own_redis.url, batch_max_records=100)
    # The events produced while Redis is full are of new customers only; returning customers
    # past maxmemory are covered by the direct test below.
    first = dataset(80, 480, 160, seed=71)
    second = as_new_customers(dataset(80, 480, 160, seed=72), "N")
    events = [*first, *second]
    worker = start(workers, s, "oom")
    pid = worker.proc.pid
    sent1 = send_all(s.kafka.bootstrap, valid_records(s, first))
    wait_drained(s, len(first), worker)
    want1 = next_offsets(sent1)
    tps = input_partitions(s)
    wait_for(lambda: committed_offsets(s, tps) == want1, 30, f"committed offsets {want1}")

    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")

    def used_memory() -> int:
        return int(admin.info("memory")["used_memory"])

    used = used_memory()
    # Just above what is used: a big write no longer fits.
    admin.config_set("maxmemory", used + 64 * 1024)
    with (
        redis.Redis.from_url(own_redis.url) as other,
        pytest.raises(redis.exceptions.OutOfMemoryError),
    ):
        other.set("one-megabyte", b"x" * 2**20)
    # Then below it, as after a burst: Redis is past its limit and refuses every write. (Just
    # above, Redis refuses a script only when its start finds no room, which varies as client
    # buffers come and go: "nothing is applied while blocked" would be a race.) First the
    # refused megabyte's connection must be gone: Redis frees its buffer when it sees the close,
    # which can be after the next INFO.
    wait_for(lambda: used_memory() < used + 64 * 1024, 10, "the refused 1 MB request freed")
    limit = max(used_memory() - 512 * 1024, used // 2)
    admin.config_set("maxmemory", limit)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        admin.set("one-byte", b"x")
    assert used_memory() > limit

    sent2 = send_all(s.kafka.bootstrap, valid_records(s, second))
    blocked = wait_blocked(worker)
    failure = blocked["batch_failure"]
    assert blocked["status"] == "degraded", blocked
    assert failure["kind"] == "outage" and "maxmemory" in failure["advice"], failure
    assert "command not allowed when used memory > 'maxmemory'" in failure["error"], failure
    assert metric_value(worker, "segstream_ingest_batch_failing") == 1

    def sample() -> tuple[dict[str, Any], dict[str, int], dict[Any, int], dict[str, Any]]:
        with StateReader(s.redis.url, s.redis.prefix) as reader:
            fences = {t: reader.fences(t) for t in s.kafka.input_topics}
        return health(worker), counters(s), committed_offsets(s, tps), fences

    samples = observe(5.0, sample)
    assert used_memory() > limit
    for h, c, committed, fences in samples:
        assert h["state"] == "blocked" and h["status"] == "degraded", h
        assert h["batch_failure"]["kind"] == "outage", h
        assert c["received"] == c["valid"] == len(first) and c["dead_lettered"] == 0, c
        assert committed == want1, committed  # nothing committed past what was applied
        for (topic, partition), offset in committed.items():
            assert offset <= fences[topic][partition] + 1, (topic, partition, offset, fences)
    attempts = [h["batch_failure"]["attempts"] for h, *_ in samples]
    assert attempts == sorted(attempts) and attempts[-1] > attempts[0], attempts
    assert len({h["batch_failure"]["batch"] for h, *_ in samples}) == 1  # one batch, retried
    p = samples[-1][0]["process"]
    assert p["apply_failures"]["poison"] == 0 and p["apply_failures"]["outage"] > 0, p
    assert p["quarantined"] == 0 and p["isolated_batches"] == 0 and p["dead_lettered"] == 0, p
    assert dead_letter_topic_is_empty(s)
    assert "Redis reached maxmemory" in log_text(worker)

    admin.config_set("maxmemory", 0)
    got = wait_drained(s, len(events), worker)
    assert got["valid"] == len(events) and got["dead_lettered"] == 0, got
    assert got["duplicates"] == 0, got
    assert_same_state(redis_rows(s), oracle_rows(events))
    want = next_offsets([*sent1, *sent2])
    wait_for(lambda: committed_offsets(s, tps) == want, 30, f"committed offsets {want}")
    recovered = wait_recovered(worker)
    assert recovered["process"]["quarantined"] == 0, recovered
    assert metric_value(worker, "segstream_ingest_batch_failing") == 0
    assert dead_letter_topic_is_empty(s)
    assert_same_worker_healthy(worker, pid)
    admin.close()


def as_new_customers(events: Sequence[Event], prefix: str) -> list[Event]:
    """``events`` with every customer id prefixed: customers Redis has never seen."""
    return [
        msgspec.structs.replace(e, customer_id=f"{prefix}{e.customer_id}") if e.customer_id else e
        for e in events
    ]


def placed(customer_id: str, order_id: str, when: datetime) -> OrderEvent:
    return OrderEvent(
        event_id=f"E-{order_id}", schema_version=1, customer_id=customer_id, order_id=order_id,
        event_time=when, status="placed", items=[LineItem(sku="S", quantity=1, unit_price=5.0)],
        total=5.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "first_customer",
    [
        "new",
        # its first write used to be a ZREM of the old sweep-index bucket, which Redis does not
        # refuse past maxmemory; after it Redis let the whole script write
        "returning, last order moves to a later hour",
    ],
)
def test_a_batch_is_refused_whole_when_redis_is_past_maxmemory_whoever_its_first_customer_is(
    own_redis: DedicatedRedis, first_customer: str
) -> None:
    prefix, topic = "oom", "orders"
    t = datetime(2025, 3, 1, 10, tzinfo=UTC)
    history = Batch([Record(topic, 0, 0, placed("C-old", "O-1", t))], {(topic, 0): 0}, {})
    apply_batches(own_redis.url, prefix, [history])
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("one-byte", b"x")
    first = "C-old" if first_customer != "new" else "C-new-0"
    records = [
        Record(topic, 0, 1, placed(first, "O-2", t + timedelta(hours=3))),
        *(Record(topic, 0, 1 + i, placed(f"C-new-{i}", f"O-new-{i}", t)) for i in range(1, 20)),
    ]
    batch = Batch(records, {(topic, 0): len(records)}, {})
    before = everything(client, prefix)
    with pytest.raises(StoreRejected, match="used memory > 'maxmemory'"):
        apply_batches(own_redis.url, prefix, [batch])
    assert everything(client, prefix) == before
    client.close()


# -- 3. a customer key of the wrong type ---------------------------------------------------------
ISOLATING = re.compile(r"batch (?P<spans>.+?) \(\d+ events?\) failed (?P<n>\d+) times \(")
SPAN = re.compile(r"(?P<topic>[^\s,\[]+)\[(?P<p>\d+)\]@(?P<lo>\d+)(?:-(?P<hi>\d+))?")


def isolated_batches(log: str) -> list[list[tuple[str, int, int, int]]]:
    """The batches the worker logged it applied in pieces: (topic, partition, lo, hi) spans."""
    out = []
    for m in ISOLATING.finditer(log):
        spans = [
            (s["topic"], int(s["p"]), int(s["lo"]), int(s["hi"] or s["lo"]))
            for s in SPAN.finditer(m["spans"])
        ]
        out.append(spans)
    return out


def test_a_customer_key_of_the_wrong_type_dead_letters_exactly_that_customers_records_batch_by_batch_and_applies_everyone_else(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(batch_max_records=100, poison_retries=2)
    events = dataset(200, 1500, 500, seed=81)
    per_customer = Counter(e.customer_id for e in events if e.customer_id)
    both = {e.customer_id for e in events if isinstance(e, OrderEvent)} & {
        e.customer_id for e in events if isinstance(e, ClickEvent)
    }
    victim = max(sorted(c for c in both if c), key=lambda c: per_customer[c])
    planted = keys.customer(s.redis.prefix, victim)
    client = redis.Redis.from_url(s.redis.url)
    client.set(planted, b"garbage")

    sent = send_all(s.kafka.bootstrap, valid_records(s, events))  # all there: full batches
    victims = [x for x in sent if x.record.event and x.record.event.customer_id == victim]
    victim_at = {x.where for x in victims}
    others = [x.record.event for x in sent if x.where not in victim_at and x.record.event]
    assert len(victims) == per_customer[victim] >= 10
    worker = start(workers, s, "wrongtype")
    pid = worker.proc.pid
    got = wait_drained(s, len(sent), worker)
    assert got["dead_lettered"] == len(victims), got
    assert got["valid"] == len(sent) - len(victims), got
    assert got["duplicates"] == 0, got

    # everyone else exactly; the planted key untouched
    assert_same_state(customer_rows(s, skip={planted}), oracle_rows(others))
    assert client.type(planted) == b"string" and client.get(planted) == b"garbage"
    assert not client.exists(keys.fingerprints(s.redis.prefix, victim))

    letters = read_dead_letters(s, at_least=len(victims))
    assert sorted(where_of(d) for d in letters) == sorted(x.where for x in victims)
    by_where = {x.where: x for x in victims}
    for d in letters:
        x = by_where[where_of(d)]
        assert "refused this record" in d.letter.error and "WRONGTYPE" in d.letter.error, d
        assert d.letter.original == x.record.value and d.letter.key == victim.encode(), d

    # per failing batch: every batch applied in pieces held a record of the victim, and each
    # record of the victim lies in exactly one of them
    log = log_text(worker)
    pieces = isolated_batches(log)
    h = assert_same_worker_healthy(worker, pid)
    p = h["process"]
    assert p["isolated_batches"] == len(pieces) >= 2, (p, pieces)
    assert p["quarantined"] == len(victims) and p["dead_lettered"] == len(victims), p
    assert p["apply_failures"] == {"outage": 0, "poison": 2 * len(pieces)}, p
    for spans in pieces:
        held = [x for x in victims if any(
            t == x.record.topic and q == x.partition and lo <= x.offset <= hi
            for t, q, lo, hi in spans
        )]  # fmt: skip
        assert held, f"a batch without the victim's records was isolated: {spans}"
    for x in victims:
        homes = [spans for spans in pieces if any(
            t == x.record.topic and q == x.partition and lo <= x.offset <= hi
            for t, q, lo, hi in spans
        )]  # fmt: skip
        assert len(homes) == 1, (x.what, x.offset, homes)
    assert metric_value(worker, "segstream_ingest_quarantined_records_total") == len(victims)
    assert h["batch_failure"] is None
    client.close()


# -- 4. a shared key of the wrong type -----------------------------------------------------------
def test_a_shared_state_key_of_the_wrong_type_blocks_ingestion_as_an_outage_until_it_is_deleted_then_the_worker_ends_exact(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(batch_max_records=100)
    events = dataset(100, 600, 200, seed=91)
    client = redis.Redis.from_url(s.redis.url)
    shared = keys.counters(s.redis.prefix)
    client.set(shared, b"x")
    worker = start(workers, s, "shared-key")
    pid = worker.proc.pid
    sent = send_all(s.kafka.bootstrap, valid_records(s, events))
    tps = input_partitions(s)

    blocked = wait_blocked(worker)
    failure = blocked["batch_failure"]
    assert blocked["status"] == "degraded", blocked
    assert failure["kind"] == "outage", failure
    assert f"segstream state key {shared} holds a string" in failure["error"], failure
    assert "delete or rename that key" in failure["advice"], failure

    prefix = s.redis.prefix
    written = [
        keys.customer_pattern(prefix), f"{prefix}:f:*", f"{prefix}:lo:*", f"{prefix}:fence:*",
    ]  # fmt: skip

    def sample() -> tuple[dict[str, Any], list[Any], Any, dict[tuple[str, int], int]]:
        found = [k for pattern in written for k in client.scan_iter(match=pattern, count=1000)]
        found += [k for k in (keys.unscored(prefix), keys.stamp(prefix)) if client.exists(k)]
        return health(worker), found, client.get(shared), committed_offsets(s, tps)

    samples = observe(4.0, sample)
    for h, found, value, committed in samples:
        assert h["state"] == "blocked" and h["batch_failure"]["kind"] == "outage", h
        assert not found, f"written while blocked: {found[:5]}"
        assert value == b"x"
        assert committed == {}, committed
        assert h["process"]["received"] == 0 and h["process"]["quarantined"] == 0, h
        assert h["process"]["apply_failures"]["poison"] == 0, h
    assert dead_letter_topic_is_empty(s)
    assert f"segstream state key {shared}" in log_text(worker)

    client.delete(shared)
    got = wait_drained(s, len(events), worker)
    # nothing was counted before the key was deleted: the counters start from the first batch
    assert got["valid"] == len(events) and got["dead_lettered"] == 0, got
    assert got["duplicates"] == 0 and got["fenced"] == 0, got
    assert got["applied"] + got["anonymous"] == len(events), got
    assert_same_state(redis_rows(s), oracle_rows(events))
    want = next_offsets(sent)
    wait_for(lambda: committed_offsets(s, tps) == want, 30, f"committed offsets {want}")
    recovered = wait_recovered(worker)
    assert recovered["counters"]["received"] == len(events), recovered
    assert dead_letter_topic_is_empty(s)
    assert_same_worker_healthy(worker, pid)
    client.close()


# -- 5. never half-applied -----------------------------------------------------------------------
def renamed(events: Sequence[OrderEvent], tag: str) -> list[OrderEvent]:
    return [
        msgspec.structs.replace(e, event_id=f"{tag}{e.event_id}", order_id=f"{tag}{e.order_id}")
        for e in events
    ]


def apply_batches(url: str, prefix: str, batches: Sequence[Batch]) -> None:
    async def run() -> None:
        store = StateStore(url, prefix)
        try:
            for b in batches:
                await store.apply(b)
        finally:
            await store.close()

    asyncio.run(run())


def everything(client: redis.Redis, prefix: str) -> dict[Any, tuple[Any, bytes]]:
    """Every key under ``prefix`` with its type and serialized value."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
    out = {}
    for key in client.scan_iter(match=f"{escaped}:*", count=1000):
        dumped = client.dump(key)
        assert isinstance(dumped, bytes), key
        out[key] = (client.type(key), dumped)
    return out


MIDDLE = "C00003"
#: name -> (plant the fault, the phrase the refusal carries)
PLANTS: dict[str, tuple[Callable[[redis.Redis, str], object], str]] = {
    "customer hash is a string": (
        lambda r, p: r.set(keys.customer(p, MIDDLE), b"garbage"), "WRONGTYPE"),
    "customer hash is a list": (
        lambda r, p: (r.delete(keys.customer(p, MIDDLE)), r.rpush(keys.customer(p, MIDDLE), 1)),
        "WRONGTYPE"),
    "fingerprint key is a hash": (
        lambda r, p: (r.delete(keys.fingerprints(p, MIDDLE)),
                      r.hset(keys.fingerprints(p, MIDDLE), "a", "b")), "WRONGTYPE"),
    "counters key is a string": (
        lambda r, p: (r.delete(keys.counters(p)), r.set(keys.counters(p), b"x")),
        "segstream state key"),
    "unscored key is a string": (
        lambda r, p: (r.delete(keys.unscored(p)), r.set(keys.unscored(p), b"x")),
        "segstream state key"),
    "stamp key is a hash": (
        lambda r, p: (r.delete(keys.stamp(p)), r.hset(keys.stamp(p), "a", "1")),
        "segstream state key"),
}  # fmt: skip


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_batch_refused_for_a_wrong_typed_key_writes_nothing_at_all_and_applies_exactly_once_the_key_is_fixed(  # noqa: E501
    redis_url: str, redis_prefix: str, redis_client: redis.Redis, plant: str
) -> None:
    prefix, topic = redis_prefix, "campaign"
    # Six customers with history (more than 8 events each: fingerprints in their own keys)...
    before_events = synthetic.orders(6, 90, seed=5)
    (first,) = synthetic.batches(before_events, topic, size=10**6)
    # ...then one batch of the same six and four new ones, the planted customer in the middle.
    later = renamed(synthetic.orders(10, 80, seed=6), "later-")
    order = ["C00007", "C00000", "C00008", "C00001", MIDDLE, "C00009", "C00002", "C00006"]
    rank = {c: i for i, c in enumerate(order)}
    later.sort(key=lambda e: rank.get(e.customer_id or "", len(order)))
    (second,) = synthetic.batches(later, topic, size=10**6, first_offset=1000)
    groups = list(dict.fromkeys(r.event.customer_id for r in second.records))
    assert groups.index(MIDDLE) == 4 and len(groups) == 10
    new = {"C00006", "C00007", "C00008", "C00009"}
    assert new <= set(groups) and not new & {e.customer_id for e in before_events}

    apply_batches(redis_url, prefix, [first])
    client = redis_client
    for c in {e.customer_id for e in before_events}:
        assert c is not None and client.exists(keys.fingerprints(prefix, c)), c
    original = everything(client, prefix)
    plant_fault, phrase = PLANTS[plant]
    plant_fault(client, prefix)
    planted = everything(client, prefix)
    assert planted != original

    with pytest.raises(StoreRejected) as refused:
        apply_batches(redis_url, prefix, [second])
    assert phrase in str(refused.value), refused.value
    assert everything(client, prefix) == planted  # not one key written, moved or removed
    for c in new:
        assert not client.exists(keys.customer(prefix, c), keys.fingerprints(prefix, c)), c
    with StateReader(redis_url, prefix) as reader:
        assert reader.fences(topic) == {
            p: off for (t, p), off in first.partitions().items() if t == topic
        }

    # fixed (the keys put back as they were): the same batch applies, exactly once
    for key in set(planted) | set(original):
        client.delete(key)
        if key in original:
            client.restore(key, 0, original[key][1])
    assert everything(client, prefix) == original
    apply_batches(redis_url, prefix, [second, second])
    mem = InMemoryStateStore()
    mem.apply(first)
    mem.apply(second)
    mem.apply(second)
    with StateReader(redis_url, prefix) as reader:
        assert {s.customer_id: s for s in reader.customers()} == {
            s.customer_id: s for s in mem.customers()
        }
        assert reader.counters() == mem.counters()
        assert reader.fences(topic) == mem.fences(topic)


def test_the_campaigns_random_records_cover_nulls_empty_and_long_keys_and_headers() -> None:
    """The campaign's own tools: what test 1 sends really has the variety it claims."""
    recs = random_records(random.Random(20261207), "t", 300, "x")
    assert any(r.value is None for r in recs)
    assert not any(r.value is None and r.key is None for r in recs)
    assert any(r.key is None for r in recs) and any(r.key == b"" for r in recs)
    assert any(r.key is not None and len(r.key) >= 1000 for r in recs)
    assert any(r.headers for r in recs) and any(r.headers is None for r in recs)
    assert max(len(r.value or b"") for r in recs) <= 5000
    assert not any(is_control_message(r.value) for r in recs)
    assert [is_control_message(x.value) for x in control_extras("t")].count(True) == 2


def test_a_counter_overwritten_with_a_non_integer_is_started_again_from_the_batch_not_failed(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    prefix, topic = redis_prefix, "campaign"
    (first,) = synthetic.batches(synthetic.orders(6, 90, seed=5), topic, size=10**6)
    apply_batches(redis_url, prefix, [first])
    redis_client.hset(keys.customer(prefix, MIDDLE), "m", "9007199254740993.5")
    later = [e for e in synthetic.orders(6, 40, seed=6) if e.customer_id == MIDDLE]
    later = renamed(later, "later-")
    (second,) = synthetic.batches(later, topic, size=10**6, first_offset=1000)
    apply_batches(redis_url, prefix, [second])  # applied whole, nothing raised
    oracle = InMemoryStateStore()
    oracle.apply(second)
    (expected,) = [s for s in oracle.customers() if s.customer_id == MIDDLE]
    got = redis_client.hget(keys.customer(prefix, MIDDLE), "m")
    assert got is not None and int(got) == expected.monetary_cents
