"""``segstream sink sql`` against real PostgreSQL and MariaDB (private servers of this session).

Each test runs the command as ops do (a subprocess) and reads back the tables: they must equal
what Redis holds and what the segment-changes topic carried, exactly once, across kill -9,
tombstones, undecodable records and a schema upgrade.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pymysql
import pytest
from kafka import KafkaConsumer, KafkaProducer

from schemas import SegmentChange, encode
from segstream.settings import Settings
from sinks.sql.changes import Change, Decoded, Position, decode_record
from sinks.sql.connect import open_database
from sinks.sql.mysql import connect_args
from sinks.sql.plan import plan_batch
from sinks.sql.schema import dialect_of, latest
from tests.support.kafka_reads import read_dead_letters
from tests.support.producing import produce, records_for
from tests.support.state_checks import AS_OF
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------------------------
def query(url: str, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one query on the test's database (PostgreSQL or MariaDB)."""
    if dialect_of(url) == "postgresql":
        with psycopg.connect(url) as conn:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    conn = pymysql.connect(**{**connect_args(url), "autocommit": True})
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def count_or_zero(url: str, sql: str) -> int:
    try:
        return int(query(url, sql)[0][0])
    except (psycopg.Error, pymysql.err.Error):
        return 0  # the sink has not created the table yet


def sink_env(settings: Settings, url: str, batch: int = 20000) -> dict[str, str]:
    return settings.with_(sink_sql_url=url, sink_sql_batch_records=batch).to_env()


def run_once(settings: Settings, url: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "sink", "sql", "--once"],
        env=sink_env(settings, url), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


class SinkProcess:
    """``segstream sink sql`` running in the background, its output in a log file."""

    def __init__(self, settings: Settings, url: str, log: Path, batch: int) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segstream", "sink", "sql"],
            env=sink_env(settings, url, batch), cwd=REPO, stdout=self._out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return int(self.proc.returncode)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def sinks(
    settings: Settings, url: str, tmp_path: Path, batch: int
) -> Iterator[Callable[[], SinkProcess]]:
    started: list[SinkProcess] = []

    def start() -> SinkProcess:
        p = SinkProcess(settings, url, tmp_path / f"sink-{len(started)}.log", batch)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()


def change(
    cid: str, seq: int, new: str, old: str | None, version: str = "rules-v1", **features: float
) -> SegmentChange:
    return SegmentChange(
        customer_id=cid, old_segment=old, new_segment=new,
        reason="order" if version == "rules-v1" else "model_update", model_version=version,
        features=features or {"recency_days": 3.0, "frequency": 2.0, "monetary": 80.0},
        event_time=WHEN + timedelta(days=seq), processing_time=WHEN + timedelta(days=seq),
    )  # fmt: skip


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def record(ev: SegmentChange, seq: int) -> Record:
    return ev.customer_id.encode(), encode(ev), [("segment_seq", str(seq).encode())]


def send(settings: Settings, records: list[Record]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for key, value, headers in records:
        producer.send(settings.kafka.segment_changes_topic, key=key, value=value, headers=headers)
    producer.flush(60)
    producer.close()


def current(url: str) -> dict[str, tuple[str, str, int]]:
    rows = query(
        url, "SELECT customer_id, segment, model_version, segment_seq FROM customer_segment"
    )
    return {r[0]: (r[1], r[2], int(r[3])) for r in rows}


def history(url: str) -> list[tuple[str, int]]:
    rows = query(url, "SELECT customer_id, segment_seq FROM segment_history")
    return sorted((r[0], int(r[1])) for r in rows)


def export(settings: Settings, tmp_path: Path) -> dict[str, tuple[str, str, int]]:
    """customer id -> (segment, model_version, segment_seq), as ``segstream export`` gives them."""
    out = tmp_path / "export.jsonl"
    subprocess.run(
        [sys.executable, "-m", "segstream", "export", "--format", "jsonl", "--out", str(out)],
        env=settings.to_env(), cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {
        r["customer_id"]: (r["segment"], r["model_version"], int(r["segment_seq"]))
        for r in rows
        if r.get("segment")
    }


def topic_changes(settings: Settings, idle_s: float = 3.0) -> list[tuple[str, int, str]]:
    """Every change record on the topic: (customer id, segment_seq, new segment)."""
    consumer = KafkaConsumer(
        settings.kafka.segment_changes_topic, bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=int(idle_s * 1000),
    )  # fmt: skip
    out = []
    for message in consumer:
        if message.value is None:
            continue
        seq = int(dict(message.headers)["segment_seq"])
        ev = msgspec.json.decode(message.value, type=SegmentChange)
        out.append((ev.customer_id, seq, ev.new_segment))
    consumer.close()
    return out


# -- tests ---------------------------------------------------------------------------------------
def test_tombstones_delete_rows_a_lower_seq_never_overwrites_and_bad_records_are_dead_lettered(
    settings: Settings, sql_url: str
) -> None:
    send(settings, [
        record(change("c1", 1, "new", None), 1),
        record(change("c1", 2, "loyal", "new"), 2),
        record(change("c2", 1, "new", None), 1),
        record(change("c3", 1, "new", None), 1),
        record(change("c3", 2, "lost", "new", "km-gone"), 2),  # no artifact: written anyway
        record(change("c1", 2, "loyal", "new"), 2),  # the worker's outbox republished it
        record(change("c1", 1, "new", None), 1),  # late: lower seq than the row's
        (b"c4", b"{not json", [("segment_seq", b"1")]),
        (b"c5", encode(change("c5", 1, "new", None)), []),  # no segment_seq header
        (b"c3", None, []),  # tombstone: c3 forgotten
    ])  # fmt: skip
    done = run_once(settings, sql_url)
    assert "2 dead letter(s)" in done.stderr and "3 tombstone" not in done.stderr

    assert current(sql_url) == {
        "c1": ("loyal", "rules-v1", 2),
        "c2": ("new", "rules-v1", 1),
    }
    assert history(sql_url) == [("c1", 1), ("c1", 2), ("c2", 1)]
    letters = read_dead_letters(settings, at_least=2)
    reasons = sorted(x.letter.error for x in letters)
    assert len(letters) == 2 and reasons[0].startswith("$") and "segment_seq" in reasons[1]
    assert {x.letter.source_topic for x in letters} == {settings.kafka.segment_changes_topic}
    profiles = query(sql_url, "SELECT DISTINCT model_version FROM segment_profile")
    assert profiles == [("rules-v1",)]

    # c1 forgotten; c3 comes back after its forget (segment_seq starts again at 1).
    send(settings, [(b"c1", None, []), record(change("c3", 1, "promising", None), 1)])
    run_once(settings, sql_url)
    assert current(sql_url) == {"c2": ("new", "rules-v1", 1), "c3": ("promising", "rules-v1", 1)}
    assert history(sql_url) == [("c2", 1), ("c3", 1)]

    # Nothing new: a third run reads nothing (the offsets are in the database) and adds nothing.
    done = run_once(settings, sql_url)
    assert "0 change(s), 0 tombstone(s)" in done.stderr
    assert history(sql_url) == [("c2", 1), ("c3", 1)]
    assert "postgres@" in done.stderr or "root@" in done.stderr  # the URL shown, redacted


def test_a_v1_database_is_upgraded_to_the_latest_schema_with_its_rows_kept(
    settings: Settings, sql_url: str
) -> None:
    db = open_database(sql_url)
    db.connect()
    assert db.migrate(target=1) == (0, 1)
    old = [change(f"old{i}", 1, "new", None) for i in range(5)]
    decoded = [
        decode_record(Position("elsewhere", 0, i), ev.customer_id.encode(), encode(ev),
                      [("segment_seq", b"1")])
        for i, ev in enumerate(old)
    ]  # fmt: skip
    assert all(isinstance(d, Change) for d in decoded)
    db.write(plan_batch(decoded), [])
    db.close()
    assert query(sql_url, "SELECT version FROM schema_version") == [(1,)]

    later = [record(change("new1", 1, "new", None), 1), record(change("old0", 2, "lost", "new"), 2)]
    send(settings, later)
    done = run_once(settings, sql_url)
    assert f"schema v{latest(dialect_of(sql_url))} (upgraded from v1)" in done.stderr

    versions = [int(r[0]) for r in query(sql_url, "SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, latest(dialect_of(sql_url)) + 1))
    assert len(history(sql_url)) == 7  # 5 written at v1 + 2 after the upgrade
    assert current(sql_url)["old0"] == ("lost", "rules-v1", 2)
    # v2's event_date was filled for the rows written at v1 too.
    dates = query(sql_url, "SELECT DISTINCT event_date FROM segment_history WHERE segment_seq = 1")
    assert dates == [(date(2026, 11, 21),)]
    sizes = query(
        sql_url,
        "SELECT segment, customers FROM daily_segment_size WHERE day = '2026-11-22' "
        "ORDER BY segment",
    )
    assert [(s, int(n)) for s, n in sizes] == [("lost", 1), ("new", 5)]
    # Running again with the latest schema changes nothing.
    assert "(upgraded from" not in run_once(settings, sql_url).stderr


def scoring_report(worker: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.settings.web_port}/scoring"
    with urllib.request.urlopen(url, timeout=2) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def wait_scored(
    settings: Settings, worker: WorkerProcess, customers: set[str], version: str, tmp_path: Path
) -> dict[str, tuple[str, str, int]]:
    def done() -> dict[str, tuple[str, str, int]] | None:
        assert worker.alive, worker.tail()
        if scoring_report(worker)["pending"]:
            return None
        got = export(settings, tmp_path)
        if set(got) != customers or any(v[1] != version for v in got.values()):
            return None
        return got

    result: dict[str, tuple[str, str, int]] = wait_for(done, 180, f"all on {version}", every=1)
    return result


@pytest.mark.slow
def test_tables_equal_redis_and_every_change_once_after_replay_train_rescore_and_two_kills(
    settings: Settings,
    sql_url: str,
    workers: Callable[..., WorkerProcess],
    redis_client: object,
    tmp_path: Path,
) -> None:
    s = settings.with_(
        model_poll_s=0.5, dirty_repair_s=2.0, scoring_as_of=AS_OF.isoformat(),
        hysteresis_margin=0.0,
    )  # fmt: skip
    events = dataset(150, 900, 300, seed=21)
    customers = {e.customer_id for e in events if e.customer_id}
    worker = workers(s)
    worker.wait_assigned()
    with sinks(s, sql_url, tmp_path, batch=40) as start_sink:
        sink = start_sink()
        produce(s.kafka.bootstrap, records_for(s, events))
        history_rows = "SELECT COUNT(*) FROM segment_history"
        wait_for(lambda: count_or_zero(sql_url, history_rows) > 0, 90, "first rows")
        sink.kill()  # 1st kill -9, mid-stream
        sink = start_sink()
        wait_scored(s, worker, customers, "rules-v1", tmp_path)

        trained = subprocess.run(
            [sys.executable, "-m", "segstream", "train", "--from", "redis", "--seed", "1",
             "--k", "4", "--as-of", AS_OF.isoformat()],
            env=s.to_env(), cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        rescored = subprocess.run(
            [sys.executable, "-m", "segstream", "rescore"],
            env=s.to_env(), cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert rescored.returncode == 0, rescored.stderr[-3000:]
        km = "SELECT COUNT(*) FROM segment_history WHERE model_version LIKE 'km-%'"
        wait_for(lambda: count_or_zero(sql_url, km) > 0, 120, "model_update rows")
        sink.kill()  # 2nd kill -9, while the model's changes flow
        sink = start_sink()

        state = wait_scored(s, worker, customers, _current_model(s), tmp_path)
        on_topic = topic_changes(s)
        distinct = {(cid, seq) for cid, seq, _ in on_topic}
        assert len(distinct) == sum(v[2] for v in state.values())

        # The topic carries real changes only: a new model that keeps a customer's segment name
        # moves Redis's model_version without a change event, so customer_segment's
        # model_version is the one of the customer's last change; segment and seq are Redis's.
        state = {cid: (seg, "", seq) for cid, (seg, _, seq) in state.items()}
        seen: dict[str, Any] = {}

        def exact() -> bool:
            got = {cid: (seg, "", seq) for cid, (seg, _, seq) in current(sql_url).items()}
            seen["current"], seen["history"] = got, history(sql_url)
            return bool(seen["current"] == state and seen["history"] == sorted(distinct))

        try:
            wait_for(exact, 120, "the tables to equal Redis and the topic", every=1)
        except AssertionError:
            got = seen["current"]
            wrong = [(k, state.get(k), got.get(k)) for k in set(state) | set(got)
                     if state.get(k) != got.get(k)]  # fmt: skip
            odd = sorted(set(seen["history"]) ^ distinct)
            raise AssertionError(
                f"customer_segment differs for {len(wrong)}: {wrong[:8]}; history differs by "
                f"{len(odd)}: {odd[:8]}\n{sink.text()[-3000:]}"
            ) from None
        assert sink.stop() == 0
        assert "Traceback" not in sink.text(), sink.text()[-3000:]

    # the history holds what the topic said, segment included; the profile of the model is there
    rows = query(sql_url, "SELECT customer_id, segment_seq, new_segment FROM segment_history")
    assert sorted((r[0], int(r[1]), r[2]) for r in rows) == sorted(set(on_topic))
    version = _current_model(s)
    profile = query(
        sql_url, "SELECT segment, size, centroid FROM segment_profile WHERE model_version = %s",
        (version,),
    )  # fmt: skip
    assert len(profile) == 4 and sum(int(r[1]) for r in profile) == len(customers)
    assert {r[0] for r in profile} == {v[0] for v in state.values()} | {r[0] for r in profile}
    assert os.path.exists(tmp_path / "sink-2.log")


def _current_model(settings: Settings) -> str:
    from worker.segmentation.artifacts_redis import RedisModelStore

    store = RedisModelStore.from_settings(settings.redis)
    try:
        version = store.current_version()
    finally:
        store.close()
    assert version is not None and version.startswith("km-")
    return version


def test_a_batch_repeating_changes_already_written_appends_only_the_new_ones(
    sql_url: str,
) -> None:
    """The history append's fallback: a batch holding changes the sink already wrote (the
    worker republished them) keeps each change once and still appends the new ones."""

    def decoded(offset: int, cid: str, seq: int, new: str) -> Decoded:
        at = Position("segment-changes", 0, offset)
        return decode_record(at, *record(change(cid, seq, new, None), seq))

    db = open_database(sql_url)
    db.connect()
    db.migrate()
    db.write(plan_batch([decoded(0, "c1", 1, "new"), decoded(1, "c1", 2, "loyal")]), [])
    again = [decoded(2, "c1", 1, "new"), decoded(3, "c1", 2, "loyal"), decoded(4, "c2", 1, "lost")]
    db.write(plan_batch(again), [])
    db.close()
    assert history(sql_url) == [("c1", 1), ("c1", 2), ("c2", 1)]
    assert current(sql_url) == {"c1": ("loyal", "rules-v1", 2), "c2": ("lost", "rules-v1", 1)}
