"""``segstream sink sql`` write path: changes/s into PostgreSQL (and MariaDB) vs a plain COPY.

N synthetic segment changes (fixed seed; ``--customers`` customers, so most batches hold several
changes of one customer) go through exactly what the sink does per batch after decoding:
:func:`sinks.sql.plan.plan_batch` and the database's ``write`` -- delete tombstoned customers,
COPY into the staging table, one upsert into ``customer_segment``, one insert into
``segment_history``, the offsets, one commit per batch. The baselines, in the same run on the
same server, one commit per batch of the same size -- "just write the rows":

- the target's yardstick: the rows the sink stores, to the same places -- every change COPYed
  into a ``segment_history``-shaped table and each batch's latest row per customer into a
  ``customer_segment``-shaped one (see :data:`PLAIN_TABLES`), in one transaction;
- for comparison with the first version of this benchmark: the changes into the history-shaped
  table only (about half the rows the sink writes).

Sink and baselines alternate within each run (sink, both tables, history only), each from empty
tables; medians of ``--runs``, the ratios as medians of the per-run ratios. Decoding (JSON ->
rows) is measured apart, on one core.

Both servers are private (tests/support/databases.py: free ports, temporary directories, as
the tests start them), with the test settings (PostgreSQL ``fsync=off``,
``synchronous_commit=off``; MariaDB ``innodb_flush_log_at_trx_commit=2``): the same for the sink
and the baselines, and PostgreSQL's are read back from the server and printed. The sink itself
sets none of them.

    .venv/bin/python benchmarks/bench_sink.py --changes 500000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import pymysql

from schemas import SegmentChange, encode
from sinks.sql.changes import ROW_COLUMNS, Change, Decoded, Position, decode_record
from sinks.sql.connect import open_database
from sinks.sql.mysql import connect_args
from sinks.sql.plan import BatchPlan, plan_batch
from sinks.sql.postgres import STAGING_TYPES
from tests.support.databases import private_mariadb, private_postgres

SEGMENTS = ("champions", "loyal", "big_spenders", "new", "at_risk", "lost", "window_shoppers")
REASONS: tuple[Any, ...] = ("order", "return", "clicks", "recency_decay", "model_update")
START = datetime(2026, 6, 1, tzinfo=UTC)


def synthetic(n: int, customers: int, seed: int) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, segment_seq)`` records as the worker publishes them (ordered per customer)."""
    rng = random.Random(seed)
    seqs = [0] * customers
    segs: list[str | None] = [None] * customers
    out = []
    for i in range(n):
        c = rng.randrange(customers)
        seqs[c] += 1
        new = rng.choice([s for s in SEGMENTS if s != segs[c]])
        when = START + timedelta(seconds=i * 30)
        ev = SegmentChange(
            customer_id=f"cust-{c:07d}", old_segment=segs[c], new_segment=new,
            reason=rng.choice(REASONS), model_version="km-20261127T0102-3f2a",
            features={"recency_days": rng.uniform(0, 400), "frequency": float(rng.randint(0, 40)),
                      "aov": rng.uniform(5, 300), "sessions": float(rng.randint(0, 200))},
            event_time=when, processing_time=when + timedelta(milliseconds=80),
            old_distance=rng.random() if segs[c] else None, new_distance=rng.random(),
        )  # fmt: skip
        segs[c] = new
        out.append((ev.customer_id.encode(), encode(ev), seqs[c]))
    return out


def decode_all(records: Sequence[tuple[bytes, bytes, int]]) -> list[Decoded]:
    return [
        decode_record(Position("segment-changes", 0, i), k, v, [("segment_seq", str(s).encode())])
        for i, (k, v, s) in enumerate(records)
    ]


def batches(rows: Sequence[Decoded], size: int) -> list[Sequence[Decoded]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def reset_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def reset_mysql(url: str) -> None:
    args = connect_args(url)
    conn = pymysql.connect(**{**args, "autocommit": True})
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {args['database']}")
        cur.execute(f"CREATE DATABASE {args['database']}")
    conn.close()


@dataclass(frozen=True)
class Spent:
    """One path's run: wall seconds, and the CPU seconds of this process and of the server's
    backend serving it (``None`` where /proc does not show it: not Linux, or not MariaDB's).

    The CPU figures hold still when other work on the machine moves the wall clock: they say
    what a path costs, the wall clock what it got.
    """

    seconds: float
    client_cpu: float
    server_cpu: float | None


def backend_cpu(conn: object) -> Callable[[], float | None]:
    """A reader of the CPU seconds spent so far by ``conn``'s PostgreSQL backend process."""
    if not isinstance(conn, psycopg.Connection):
        return lambda: None
    stat = Path(f"/proc/{conn.info.backend_pid}/stat")

    def read() -> float | None:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    return read


class Clock:
    """Wall time and both CPU times from :meth:`start` to :meth:`stop`."""

    def __init__(self, conn: object) -> None:
        self._server = backend_cpu(conn)

    def start(self) -> None:
        self._wall, self._cpu, self._srv = time.perf_counter(), time.process_time(), self._server()

    def stop(self) -> Spent:
        wall, cpu, srv = time.perf_counter(), time.process_time(), self._server()
        server = None if srv is None or self._srv is None else srv - self._srv
        return Spent(wall - self._wall, cpu - self._cpu, server)


def sink_path(url: str, parts: list[Sequence[Decoded]]) -> Spent:
    """Time to write every batch as the sink does (plan + one transaction per batch)."""
    db = open_database(url)
    db.connect()
    db.migrate()
    clock = Clock(getattr(db, "conn", None))
    clock.start()
    for part in parts:
        db.write(plan_batch(part), [])
    spent = clock.stop()
    db.close()
    return spent


#: ``customer_segment``'s columns, and where each comes from in a change row.
CURRENT_COLUMNS = (
    "customer_id", "segment", "model_version", "segment_seq", "updated_at", "event_time",
    "recency_days", "frequency", "monetary", "aov", "sessions", "features",
)  # fmt: skip
CURRENT_FROM = (0, 3, 5, 1, 7, 6, 8, 9, 10, 11, 12, 13)
CURRENT_TYPES = [STAGING_TYPES[i] for i in CURRENT_FROM]

COPY_HISTORY = f"COPY plain_history ({', '.join(ROW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_CURRENT = f"COPY plain_current ({', '.join(CURRENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

#: The baselines' tables: the sink's v-latest tables copied with everything (generated
#: ``event_date``, primary key, the date index, defaults, storage), plus ``fillfactor``, which
#: LIKE does not copy. ``plain_current`` keys on ``(customer_id, segment_seq)``, not
#: ``customer_id``: a plain COPY appends a customer's row again in every batch that changes
#: it, which ``customer_segment``'s key would refuse -- the same columns and a unique index of
#: the same width, without the upsert.
PLAIN_TABLES = (
    "CREATE TABLE plain_history (LIKE segment_history INCLUDING ALL)",
    "CREATE TABLE plain_current (LIKE customer_segment INCLUDING ALL EXCLUDING INDEXES "
    "EXCLUDING CONSTRAINTS, PRIMARY KEY (customer_id, segment_seq)) WITH (fillfactor = 80)",
)


def plain_copy(url: str, plans: list[BatchPlan], both: bool) -> Spent:
    """Time to COPY the rows the sink writes, same batches, one commit per batch.

    ``both``: every change into a ``segment_history``-shaped table AND each batch's latest
    row per customer into a ``customer_segment``-shaped table, in one transaction -- the same
    rows to the same places as the sink, without its upsert and its conflict check. Otherwise
    the history rows only (one table: what the first version of this benchmark compared with).
    The rows are picked before the clock starts (``plan_batch``, which the sink's figure pays).
    """
    db = open_database(url)
    db.connect()
    db.migrate()
    db.close()
    with psycopg.connect(url) as conn:
        for statement in PLAIN_TABLES:
            conn.execute(statement)
        conn.commit()
        clock = Clock(conn)
        clock.start()
        for plan in plans:
            with conn.cursor() as cur:
                with cur.copy(COPY_HISTORY) as copy:
                    copy.set_types(list(STAGING_TYPES))  # the same binary COPY as the sink's
                    for row in plan.history:
                        copy.write_row(row)
                if both:
                    with cur.copy(COPY_CURRENT) as copy:
                        copy.set_types(CURRENT_TYPES)
                        for row in plan.latest:
                            copy.write_row([row[i] for i in CURRENT_FROM])
            conn.commit()
        spent = clock.stop()
        h = conn.execute("SELECT count(*) FROM plain_history").fetchone()
        c = conn.execute("SELECT count(*) FROM plain_current").fetchone()
    assert h is not None and h[0] == sum(len(p.history) for p in plans)
    assert c is not None and c[0] == (sum(len(p.latest) for p in plans) if both else 0)
    return spent


#: The server settings that decide what a commit costs, printed with the figures: the sink and
#: both baselines run on the same server, one after the other, so they are the same for all.
SHOWN_SETTINGS = (
    "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "work_mem",
)  # fmt: skip


def server_settings(url: str) -> str:
    with psycopg.connect(url) as conn:
        got = [(name, conn.execute(f"SHOW {name}").fetchone()) for name in SHOWN_SETTINGS]
    return ", ".join(f"{name}={row[0] if row else '?'}" for name, row in got)


def check(url: str, n: int, customers_seen: int) -> None:
    with psycopg.connect(url) as conn:
        h = conn.execute("SELECT count(*) FROM segment_history").fetchone()
        c = conn.execute("SELECT count(*) FROM customer_segment").fetchone()
    assert h is not None and c is not None
    assert (h[0], c[0]) == (n, customers_seen), (h, c)


def cpu_per_change(spents: Sequence[Spent], n: int) -> tuple[float, float | None]:
    """Median client and server CPU microseconds per change over the runs."""
    client = statistics.median(s.client_cpu for s in spents) / n * 1e6
    servers = [s.server_cpu for s in spents if s.server_cpu is not None]
    server = statistics.median(servers) / n * 1e6 if len(servers) == len(spents) else None
    return client, server


def median_runs(what: str, runs: int, one: Callable[[], float], n: int) -> list[float]:
    rates = []
    for r in range(runs):
        seconds = one()
        rates.append(n / seconds)
        print(f"  {what} run {r + 1}: {seconds:.2f} s, {n / seconds:,.0f} changes/s", flush=True)
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=500_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000, help="records per transaction")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mysql-changes", type=int, default=200_000, help="0: no MariaDB")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), load {os.getloadavg()}")
    print(f"python {platform.python_version()}, psycopg {metadata.version('psycopg')} "
          f"({psycopg.pq.__impl__}), PyMySQL {metadata.version('pymysql')}")  # fmt: skip
    print(f"{args.changes:,} changes of {args.customers:,} customers, seed {args.seed}, "
          f"batches of {args.batch:,}, {args.runs} runs each")  # fmt: skip
    records = synthetic(args.changes, args.customers, args.seed)
    t0 = time.process_time()
    decoded = decode_all(records)
    decode_cpu = time.process_time() - t0
    assert all(isinstance(d, Change) for d in decoded)
    print(f"decode (JSON -> rows), one core: {args.changes / decode_cpu:,.0f} changes/s CPU")
    seen = len({k for k, _, _ in records})
    parts = batches(decoded, args.batch)
    plans = [plan_batch(part) for part in parts]  # the baselines' rows, picked off the clock
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        with private_postgres(Path(tmp) / "pg") as pg:
            with psycopg.connect(pg.url) as conn:
                version = conn.info.server_version
            print(
                f"PostgreSQL {version} (private, as the tests start it): {server_settings(pg.url)}"
            )
            rates: dict[str, list[float]] = {"sink": [], "copy2": [], "copy1": []}
            spents: dict[str, list[Spent]] = {what: [] for what in rates}
            for r in range(args.runs):  # alternate, so drift in load hits all three alike
                reset_postgres(pg.url)
                seconds = {"sink": sink_path(pg.url, parts)}
                check(pg.url, args.changes, seen)
                reset_postgres(pg.url)
                seconds["copy2"] = plain_copy(pg.url, plans, both=True)
                reset_postgres(pg.url)
                seconds["copy1"] = plain_copy(pg.url, plans, both=False)
                for what, spent in seconds.items():
                    rates[what].append(args.changes / spent.seconds)
                    spents[what].append(spent)
                print(
                    f"  run {r + 1}: sink {rates['sink'][-1]:,.0f}/s, plain COPY into both "
                    f"tables {rates['copy2'][-1]:,.0f}/s, into history only "
                    f"{rates['copy1'][-1]:,.0f}/s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            results["pg"] = {what: statistics.median(v) for what, v in rates.items()}
            for what in ("copy2", "copy1"):
                ratios = [s / c for s, c in zip(rates["sink"], rates[what], strict=True)]
                results["pg"][f"ratio_{what}"] = statistics.median(ratios)
            results["cpu"] = {what: cpu_per_change(v, args.changes) for what, v in spents.items()}
        if args.mysql_changes > 0:
            with private_mariadb(Path(tmp) / "my") as my:
                n = min(args.mysql_changes, args.changes)
                my_parts = batches(decoded[:n], args.batch)
                print(f"MariaDB (private, innodb_flush_log_at_trx_commit=2): {n:,} changes")

                def one() -> float:
                    reset_mysql(my.url)
                    return sink_path(my.url, my_parts).seconds

                results["my"] = statistics.median(median_runs("MariaDB sink", args.runs, one, n))
    pg_results = results["pg"]
    sink, ratio = pg_results["sink"], pg_results["ratio_copy2"]
    print(f"\nPostgreSQL sink path: median {sink:,.0f} changes/s (target >= 50,000: "
          f"{'met' if sink >= 50_000 else 'MISSED'})")  # fmt: skip
    print(
        f"plain COPY of the same rows into both tables (history + each batch's latest row per "
        f"customer), one transaction per batch: median {pg_results['copy2']:,.0f} changes/s"
    )
    print(f"sink / plain COPY into both tables: median {ratio:.3f} (target >= 0.70: "
          f"{'met' if ratio >= 0.7 else 'MISSED'})")  # fmt: skip
    print(
        f"plain COPY into the history table only: median {pg_results['copy1']:,.0f} changes/s; "
        f"sink / that: median {pg_results['ratio_copy1']:.3f} (not the target's yardstick)"
    )
    names = {"sink": "sink", "copy2": "COPY into both tables", "copy1": "COPY into history only"}
    print("CPU per change, medians (this process + its server backend; load moves these far")
    print("less than the wall clock):")
    for what, (client, server) in results["cpu"].items():
        total = f", sum {client + server:.2f} us" if server is not None else ""
        shown = f"{server:.2f} us" if server is not None else "not readable"
        print(f"  {names[what]}: client {client:.2f} us, server {shown}{total}")
    if "my" in results:
        print(f"MariaDB sink path: median {results['my']:,.0f} changes/s")


if __name__ == "__main__":
    main()
