"""Producer throughput: replaying a 1M-row orders CSV to the local broker, against raw sends.

What is timed, per run, each on a fresh local broker (tansu, started here on free ports):

* **baseline**: kafka-python ``KafkaProducer.send`` of the *same* keys and encoded values that the
  replay produces, pre-encoded before the clock starts, then ``flush()`` (same producer settings:
  acks=all, compression, linger, batch size; kafka-python's own default partitioner, where the
  replay's sink remembers each key's partition — the same partitions, see
  ``producers/partitioning.py``);
* **replay**: ``segstream replay --format orders-csv`` as the CLI runs it: a child process reads
  and parses the CSV, validates, builds and encodes each event (``ParallelFileSource``), this
  process sends them keyed by customer (``pump_chunks`` -> ``KafkaSink``) and confirms every
  delivery at the end. ``--also-in-process`` also times ``--no-reader-process`` (``FileSource``
  -> ``pump`` in one process).

The file is generated from a fixed seed in a temporary directory (customer_id, order_id, ts,
amount, currency, status; ~3 % cancellations and returns). Each figure is the median of
``--runs`` runs (at least 3), baseline and replay alternating first; the ratio is replay over
baseline within the same run. Conditions (CPUs, load, versions, settings) are printed first,
because the machine is shared and the absolute numbers move with its load.

Targets (issue 3): at least 50,000 events/s and at least 70 % of the baseline.

    .venv/bin/python benchmarks/bench_producer.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from devstack.services import local_services
from producers.file_source import FileSource
from producers.parallel import ParallelFileSource
from producers.readers import Reject
from producers.run import RejectsWriter, pump, pump_chunks
from producers.sinks import KafkaSink, KafkaSinkConfig, best_compression
from schemas import encode

TARGET_EVENTS_PER_S = 50_000
TARGET_RATIO = 0.70
PARTITIONS = 4
#: Events per CPU-second (this process, its sender thread and the reader child), per path: less
#: sensitive to other load on the machine than wall-clock rates.
CPU_RATES: dict[str, list[float]] = {"baseline": [], "replay": [], "one process": []}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "MISSING"


def _cpu_now() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reader, once joined
    return time.process_time() + children.ru_utime + children.ru_stime


def make_orders_csv(path: Path, rows: int, seed: int = 42) -> None:
    """A realistic generic orders file: 50 orders per customer on average, in time order."""
    rng = np.random.default_rng(seed)
    customers = max(rows // 50, 1)
    start = np.datetime64("2024-01-01T00:00:00", "ms")
    offsets = np.sort(rng.integers(0, 365 * 86_400_000, rows))
    status = rng.choice(["placed", "cancelled", "returned"], size=rows, p=[0.97, 0.015, 0.015])
    frame = pd.DataFrame(
        {
            "customer_id": np.char.add("C", rng.integers(1, customers + 1, rows).astype(str)),
            "order_id": np.char.add("O", np.arange(1, rows + 1).astype(str)),
            "ts": np.datetime_as_string(start + offsets.astype("timedelta64[ms]"), unit="s") + "Z",
            "amount": np.round(rng.lognormal(3.5, 0.8, rows), 2),
            "currency": "EUR",
            "status": status,
        }
    )
    frame.to_csv(path, index=False, float_format="%.2f")


def _create_topic(bootstrap: str, name: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()


def _config(bootstrap: str, topic: str) -> KafkaSinkConfig:
    return KafkaSinkConfig(bootstrap=bootstrap, orders_topic=topic, clicks_topic=topic)


def run_baseline(bootstrap: str, records: list[tuple[bytes, bytes]]) -> float:
    from kafka import KafkaProducer

    topic = "bench-baseline"
    _create_topic(bootstrap, topic)
    cfg = _config(bootstrap, topic)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=cfg.linger_ms,
        batch_size=cfg.batch_size,
        compression_type=best_compression(),
        delivery_timeout_ms=cfg.delivery_timeout_ms,
        max_request_size=4 * 1024 * 1024,
        metrics_enabled=False,
    )
    producer.partitions_for(topic)  # metadata before the clock, as the sink has it too
    send = producer.send
    started, cpu = time.perf_counter(), _cpu_now()
    for key, value in records:
        send(topic, value=value, key=key)
    producer.flush()
    elapsed = time.perf_counter() - started
    CPU_RATES["baseline"].append(len(records) / (_cpu_now() - cpu))
    producer.close()
    return len(records) / elapsed


def run_replay(
    bootstrap: str, path: Path, expected: int, scratch: Path, reader_process: bool = True
) -> float:
    topic = f"bench-replay-{int(reader_process)}"
    _create_topic(bootstrap, topic)
    sink = KafkaSink(_config(bootstrap, topic))
    sink._producer.partitions_for(topic)
    rejects = RejectsWriter(scratch / "rejects.csv")
    cpu = _cpu_now()
    if reader_process:
        source = ParallelFileSource(path, "orders-csv")
        summary = pump_chunks(
            source.chunks(), sink, source=str(path), rejects=rejects, progress=False
        )
    else:
        summary = pump(
            FileSource(path, "orders-csv"), sink, source=str(path), rejects=rejects,
            progress=False,
        )  # fmt: skip
    if summary.delivered != expected or summary.failed or summary.rejected:
        raise SystemExit(f"replay lost or rejected events: {summary.lines()}")
    CPU_RATES["replay" if reader_process else "one process"].append(expected / (_cpu_now() - cpu))
    return summary.events_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--also-in-process",
        action="store_true",
        help="also time the replay with the reading in the sending process (--no-reader-process)",
    )
    args = parser.parse_args(argv)
    runs = max(args.runs, 3)

    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        scratch = Path(tmp)
        path = scratch / "orders.csv"
        started = time.perf_counter()
        make_orders_csv(path, args.rows)
        made = time.perf_counter() - started
        # the baseline's input: exactly what the replay sends, encoded before the clock starts
        records = [
            (item.customer_id.encode(), encode(item))
            for item in FileSource(path, "orders-csv")
            if not isinstance(item, Reject)
        ]
        cfg = _config("-", "-")
        print("producer benchmark: replay of a generic orders CSV vs raw kafka-python sends")
        print(
            f"  rows={args.rows:,} ({path.stat().st_size / 1e6:.0f} MB, generated in {made:.1f}s, "
            f"seed 42)  runs={runs}  partitions={PARTITIONS}  broker=tansu (memory, local)"
        )
        print(
            f"  compression={best_compression()} linger_ms={cfg.linger_ms} "
            f"batch_size={cfg.batch_size} acks=all  cpus={os.cpu_count()} "
            f"loadavg={' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(
            f"  python {platform.python_version()}  kafka-python {metadata.version('kafka-python')}"
            f"  msgspec {metadata.version('msgspec')}  crc32c {_version('crc32c')} "
            "(kafka-python's batch checksums in C; pure Python without it)"
        )
        base: list[float] = []
        ours: list[float] = []
        single: list[float] = []
        for run in range(runs):
            with local_services(scratch / f"services-{run}") as services:
                bootstrap = services["kafka"].url
                if run % 2 == 0:
                    base.append(run_baseline(bootstrap, records))
                    ours.append(run_replay(bootstrap, path, len(records), scratch))
                else:
                    ours.append(run_replay(bootstrap, path, len(records), scratch))
                    base.append(run_baseline(bootstrap, records))
                if args.also_in_process:
                    single.append(run_replay(bootstrap, path, len(records), scratch, False))
                    print(f"  run {run + 1}: replay in one process {single[-1]:>9,.0f} ev/s")
            print(
                f"  run {run + 1}: baseline {base[-1]:>9,.0f} ev/s   replay {ours[-1]:>9,.0f} ev/s"
                f"   ratio {ours[-1] / base[-1]:.2f}   loadavg {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    b, o = statistics.median(base), statistics.median(ours)
    ratio = statistics.median([x / y for x, y in zip(ours, base, strict=True)])
    print(f"median: baseline {b:,.0f} ev/s   replay {o:,.0f} ev/s   ratio {ratio:.2f}")
    if single:
        one = statistics.median(single)
        print(f"median: replay in one process {one:,.0f} ev/s   ratio {one / b:.2f}")
    cpu = {k: statistics.median(v) for k, v in CPU_RATES.items() if v}
    print(
        "median per CPU-second (all our processes and threads): "
        + "   ".join(f"{k} {v:,.0f} ev/cpu-s" for k, v in cpu.items())
    )
    rate_ok = "met" if o >= TARGET_EVENTS_PER_S else "NOT met"
    ratio_ok = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(
        f"targets: >= {TARGET_EVENTS_PER_S:,} ev/s: {rate_ok}; "
        f">= {TARGET_RATIO:.0%} of baseline: {ratio_ok}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
