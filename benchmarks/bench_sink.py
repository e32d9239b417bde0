"""``segstream sink sql`` write path: changes/s into PostgreSQL (and MariaDB) vs a plain COPY.

N synthetic segment changes (fixed seed; ``--customers`` customers, so most batches hold several
changes of one customer) go through exactly what the sink does per batch after decoding:
:func:`sinks.sql.plan.plan_batch` and the database's ``write`` -- delete tombstoned customers,
COPY into the staging table, one upsert into ``customer_segment``, one insert into
``segment_history``, the offsets, one commit per batch. The baseline, in the same run on the
same server: the same rows, same batches, COPYed into a table shaped like ``segment_history``
(same primary key), one commit per batch -- "just write the rows". Each run starts from empty
tables; medians of ``--runs``. Decoding (JSON -> rows) is measured apart, on one core.

Both servers are private (tests/support/databases.py: free ports, temporary directories, as
the tests start them), with the test settings: ``fsync=off`` / ``innodb_flush_log_at_trx_commit
=2``; said in the output.

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
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import pymysql

from schemas import SegmentChange, encode
from sinks.sql.changes import ROW_COLUMNS, Change, Decoded, Position, decode_record
from sinks.sql.database import open_database
from sinks.sql.mysql import connect_args
from sinks.sql.plan import plan_batch
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


def sink_path(url: str, parts: list[Sequence[Decoded]]) -> float:
    """Seconds to write every batch as the sink does (plan + one transaction per batch)."""
    db = open_database(url)
    db.connect()
    db.migrate()
    start = time.perf_counter()
    for part in parts:
        db.write(plan_batch(part), [])
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


COPY_PLAIN = f"COPY plain_copy ({', '.join(ROW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def plain_copy(url: str, parts: list[Sequence[Decoded]]) -> float:
    """Seconds to COPY the same rows, same batches, into a segment_history-shaped table."""
    db = open_database(url)
    db.connect()
    db.migrate()
    db.close()
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE plain_copy (LIKE segment_history INCLUDING DEFAULTS INCLUDING "
            "CONSTRAINTS INCLUDING INDEXES)"
        )
        conn.commit()
        start = time.perf_counter()
        for part in parts:
            rows = [d.row for d in part if isinstance(d, Change)]
            with conn.cursor() as cur, cur.copy(COPY_PLAIN) as copy:
                copy.set_types(list(STAGING_TYPES))  # the same binary COPY as the sink's
                for row in rows:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - start
        count = conn.execute("SELECT count(*) FROM plain_copy").fetchone()
    assert count is not None and count[0] == sum(len(p) for p in parts)
    return elapsed


def check(url: str, n: int, customers_seen: int) -> None:
    with psycopg.connect(url) as conn:
        h = conn.execute("SELECT count(*) FROM segment_history").fetchone()
        c = conn.execute("SELECT count(*) FROM customer_segment").fetchone()
    assert h is not None and c is not None
    assert (h[0], c[0]) == (n, customers_seen), (h, c)


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
    parser.add_argument("--mysql-changes", type=int, default=200_000)
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
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        with private_postgres(Path(tmp) / "pg") as pg:
            version = psycopg.connect(pg.url).info.server_version
            print(f"PostgreSQL {version} (private, fsync=off, synchronous_commit=off)")
            sink_rates, copy_rates = [], []
            for r in range(args.runs):  # alternate, so drift in load hits both alike
                reset_postgres(pg.url)
                s = sink_path(pg.url, parts)
                check(pg.url, args.changes, seen)
                reset_postgres(pg.url)
                c = plain_copy(pg.url, parts)
                sink_rates.append(args.changes / s)
                copy_rates.append(args.changes / c)
                line = f"sink {args.changes / s:,.0f}/s ({s:.2f} s), plain COPY "
                line += f"{args.changes / c:,.0f}/s ({c:.2f} s), ratio {c / s:.3f}"
                print(f"  run {r + 1}: {line}", flush=True)
            ratios = [s / c for s, c in zip(sink_rates, copy_rates, strict=True)]
            results["pg"] = (statistics.median(sink_rates), statistics.median(copy_rates),
                             statistics.median(ratios))  # fmt: skip
        with private_mariadb(Path(tmp) / "my") as my:
            n = min(args.mysql_changes, args.changes)
            my_parts = batches(decoded[:n], args.batch)
            print(f"MariaDB (private, innodb_flush_log_at_trx_commit=2): {n:,} changes")

            def one() -> float:
                reset_mysql(my.url)
                return sink_path(my.url, my_parts)

            results["my"] = statistics.median(median_runs("MariaDB sink", args.runs, one, n))
    sink, copy, ratio = results["pg"]
    print(f"\nPostgreSQL sink path: median {sink:,.0f} changes/s (target >= 50,000: "
          f"{'met' if sink >= 50_000 else 'MISSED'})")  # fmt: skip
    print(f"plain COPY of the same rows: median {copy:,.0f} rows/s")
    print(f"sink / plain COPY: median {ratio:.3f} (target >= 0.70: "
          f"{'met' if ratio >= 0.7 else 'MISSED'})")  # fmt: skip
    print(f"MariaDB sink path: median {results['my']:,.0f} changes/s")


if __name__ == "__main__":
    main()
