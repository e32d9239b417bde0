"""The broker's latency floor: orders from a producer to a plain consumer, no worker between.

What every event-to-segment-change figure of ``bench_worker.py --change-runs`` stands on. For
each ``--linger-ms`` value, on a fresh local broker (tansu, started for the run):

1. a consumer process (``bench_worker.py _changes``) at the end of a 4-partition orders topic;
2. a producer process (``bench_worker.py _orders``) offering ``--rate`` orders/s for 5 s of
   warm-up + ``--seconds``, as a shop's producer with that linger sends them (each order's
   event time lies evenly in the interval before its send, so its wait counts);
3. latency = receive time - event time, for the orders stamped after the warm-up: p50/p90/p99
   over the whole run and per ``--window`` seconds (a broker whose cost grows with what it holds
   shows a rising tail), and the broker's CPU over the run (``/proc``).

Baseline in the same run: the first ``--linger-ms`` value. Usage:
``.venv/bin/python benchmarks/bench_broker_floor.py --linger-ms 5,20``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_worker import CHANGE_PARTITIONS, create_topics, pct  # noqa: E402


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(opts: argparse.Namespace, linger_ms: float) -> None:
    from devstack.services import local_services

    base = [sys.executable, str(REPO / "benchmarks" / "bench_worker.py")]
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp, local_services(tmp) as svc:
        bootstrap, broker_pid = svc["kafka"].url, svc["kafka"].pid
        create_topics(bootstrap, ["orders"], CHANGE_PARTITIONS)
        d = Path(tmp)
        log = open(d / "clients.log", "wb")  # noqa: SIM115 - closed below
        consumer = subprocess.Popen(
            [*base, "_changes", "--bootstrap", bootstrap, "--topic", "orders",
             "--ready", str(d / "ready"), "--stop", str(d / "stop"), "--out", str(d / "got")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            while not (d / "ready").exists():
                if consumer.poll() is not None:
                    raise RuntimeError(f"the consumer exited with {consumer.returncode}")
                time.sleep(0.1)
            cpu0, t0 = cpu_s(broker_pid), time.monotonic()
            subprocess.run(
                [*base, "_orders", "--bootstrap", bootstrap, "--topic", "orders",
                 "--rate", str(opts.rate), "--warmup", "5", "--seconds", str(opts.seconds),
                 "--customers", "100000", "--seed", str(opts.seed),
                 "--linger-ms", str(linger_ms), "--out", str(d / "sent")],
                check=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            broker_cpu = (cpu_s(broker_pid) - cpu0) / (time.monotonic() - t0)
            time.sleep(2.0)
            (d / "stop").write_text("stop")
            consumer.wait(60)
        finally:
            if consumer.poll() is None:
                consumer.kill()
            log.close()
        sent = orjson.loads((d / "sent").read_bytes())
        got = orjson.loads((d / "got").read_bytes())
    start = sent["start_ms"]
    rows = [(recv - event, event) for recv, _, event, _, _ in got if event >= start]
    lat = [ms for ms, _ in rows]
    print(f"  linger {linger_ms:g} ms: p50 {pct(lat, 0.5):6.1f}  p90 {pct(lat, 0.9):6.1f}  "
          f"p99 {pct(lat, 0.99):6.1f}  max {max(lat):6.1f} ms   n {len(lat):,} "
          f"(offered {sent['offered']:,.0f}/s)   broker CPU {100 * broker_cpu:.0f} %")  # fmt: skip
    for w in range(0, int(opts.seconds), opts.window):
        part = [ms for ms, ev in rows if start + w * 1000 <= ev < start + (w + opts.window) * 1000]
        if part:
            print(f"    {w:3d}-{w + opts.window:<3d}s  p50 {pct(part, 0.5):6.1f}  "
                  f"p99 {pct(part, 0.99):6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--linger-ms", default="5,20", help="comma-separated, one run each")
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    print("# bench_broker_floor conditions")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cpu, load {os.getloadavg()}")
    print(f"  orders at {opts.rate:,.0f}/s, 5 s warm-up + {opts.seconds:g} s, "
          f"{CHANGE_PARTITIONS} partitions, consumer fetch_max_wait_ms 10, tansu")  # fmt: skip
    for linger in (float(x) for x in opts.linger_ms.split(",")):
        one_run(opts, linger)


if __name__ == "__main__":
    main()
