"""Capacity of ``segstream worker`` (state only) on one Redis and on a Redis Cluster, side by side.

What it does, on its own broker (tansu), one redis-server and one ``--primaries``-primary Redis
Cluster (no replicas), all started for the run:

1. pre-loads an orders topic and a clicks topic (4 partitions each) with ``--events`` synthetic
   events from a fixed seed (``bench_worker.make_events``: a quarter orders, over
   ``--customers`` customers);
2. for each of ``--pairs`` pairs, consumes them all once per mode, the modes' order rotated per
   pair, each run with a fresh consumer group, key prefix and flushed, ``CONFIG RESETSTAT``-ed
   nodes. The modes: ``single`` (one redis-server) and ``cluster/S`` for each ``--shards`` S
   (``SEGSTREAM_REDIS_CLUSTER=1``, ``SEGSTREAM_REDIS_SHARDS=S``). Every run is one real
   ``segstream worker`` process with ``SEGSTREAM_SCORING=0``: ingestion into state, the path
   whose capacity issue 18 asks about (scoring is measured by ``bench_worker.py``).

Measured per run, over the span between the first and the last applied batch (as in
``bench_worker.py``; events are counted in Redis, the ``received`` counters of every shard, which
the state script increments with the state):

* events/s;
* CPU per event of the worker process, of the broker, and of each Redis node (``INFO cpu``
  ``used_cpu_sys + used_cpu_user`` before and after);
* how evenly the load spreads over the primaries: each primary's share of the Redis CPU and of
  the keys (``DBSIZE``), as a ratio to the mean (target: every one within 15 % of it);
* script calls per batch: ``evalsha`` calls (``INFO commandstats``, every node) divided by the
  worker's own count of batches (``/health`` ``process.batches``): the number of shards a batch
  touches, 1 on a single Redis; and connections the nodes accepted per batch (``INFO stats``
  ``total_connections_received``): calls in flight beyond the script client's pool open new ones.

Reported: medians over the pairs, and the ratio ``cluster / single`` of events/s per pair
(target: >= 0.6; on a 2-core machine shared by the broker, the worker and every Redis node the
cluster cannot be faster: the target is efficiency, not speed-up).

``--events`` smaller than 1M is for a quick look; the issue's figure is at 1M.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.crc import key_slot

from worker.state.keys import Keyspace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: benchmarks/ is on the path, the repo is not
    sys.path.insert(0, str(REPO))

from benchmarks.bench_worker import (  # noqa: E402
    create_topics,
    make_events,
    proc_cpu_s,
    produce_all,
    redis_cpu_s,
    stop,
    tree_env,
    worker_command,
    worker_env,
)

TARGETS = {"vs_single": 0.6, "spread": 0.15}
TOPICS = ("bench-orders", "bench-clicks")
PARTITIONS = 4


@dataclass(frozen=True)
class Node:
    """One redis-server the worker writes to (a cluster's primary, or the single Redis)."""

    name: str
    port: int
    client: redis.Redis
    #: Inclusive slot ranges it serves (empty for the single Redis).
    slots: tuple[tuple[int, int], ...] = ()

    def serves(self, key: str) -> bool:
        slot = key_slot(key.encode())
        return not self.slots or any(lo <= slot <= hi for lo, hi in self.slots)


@dataclass(frozen=True)
class Mode:
    """``single``, or a cluster with ``shards`` shards."""

    shards: int = 0

    @property
    def name(self) -> str:
        return f"cluster/{self.shards}" if self.shards else "single"

    @property
    def cluster(self) -> bool:
        return self.shards > 0


@dataclass
class Run:
    mode: str
    pair: int
    events_per_s: float
    start_s: float
    worker_cpu_us: float
    broker_cpu_us: float
    #: Per node: CPU microseconds per event (of all events), keys, evalsha calls.
    node_cpu_us: list[float] = field(default_factory=list)
    node_keys: list[int] = field(default_factory=list)
    node_calls: list[int] = field(default_factory=list)
    #: Per node: connections accepted during the run (the worker opens more while more calls
    #: overlap than its pool keeps).
    node_conns: list[int] = field(default_factory=list)
    batches: int = 0

    @property
    def redis_cpu_us(self) -> float:
        return sum(self.node_cpu_us)

    @property
    def calls_per_batch(self) -> float:
        return sum(self.node_calls) / max(self.batches, 1)

    @property
    def conns_per_batch(self) -> float:
        return sum(self.node_conns) / max(self.batches, 1)


def spread(values: list[float]) -> list[float]:
    """Each value as a ratio to their mean (1.0 = exactly its share)."""
    mean = sum(values) / len(values) if values else 0.0
    return [v / mean if mean else 0.0 for v in values]


def worst(ratios: list[float]) -> float:
    """The largest distance from the mean, as a fraction (0.12 = one node 12 % off)."""
    return max((abs(r - 1) for r in ratios), default=0.0)


def cluster_nodes(port: int) -> list[Node]:
    """The cluster's primaries, in slot order, each with the slots it serves."""
    seed = redis.Redis(port=port)
    ranges: dict[int, list[tuple[int, int]]] = {}
    for entry in seed.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
        ranges.setdefault(int(entry[2][1]), []).append((int(entry[0]), int(entry[1])))
    seed.close()
    order = sorted(ranges, key=lambda p: min(ranges[p]))
    return [
        Node(f"primary-{i + 1}", p, redis.Redis(port=p), tuple(sorted(ranges[p])))
        for i, p in enumerate(order)
    ]


def counter_keys(mode: Mode, prefix: str, nodes: list[Node]) -> list[list[str]]:
    """Per node, the ``counters`` hashes of the shards it holds (one, on a single Redis)."""
    from worker.state.keys import Keyspace, counters

    spaces = Keyspace(prefix, mode.cluster, mode.shards or 1).spaces
    return [[counters(s) for s in spaces if node.serves(counters(s))] for node in nodes]


def received(nodes: list[Node], where: list[list[str]]) -> int:
    total = 0
    for node, names in zip(nodes, where, strict=True):
        if names:
            pipe = node.client.pipeline(transaction=False)
            for name in names:
                pipe.hget(name, "received")
            total += sum(int(v or 0) for v in pipe.execute())
    return total


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        report: dict[str, Any] = orjson.loads(resp.read())
        return report


def measure(
    mode: Mode, nodes: list[Node], url: str, opts: argparse.Namespace, ctx: dict[str, Any],
    pair: int,
) -> Run:  # fmt: skip
    """One run of the worker in ``mode`` against ``nodes`` (fresh: flushed, stats reset)."""
    from devstack.ports import free_port

    for node in nodes:
        node.client.flushall()
        node.client.config_resetstat()
    tag = f"{mode.name.replace('/', '')}-{pair}"
    prefix, group, port = f"b-{tag}", f"g-{tag}", free_port()
    env = worker_env(ctx["bootstrap"], url, prefix, group, TOPICS, port, ctx["dir"])
    if mode.cluster:
        env.update(SEGSTREAM_REDIS_CLUSTER="1", SEGSTREAM_REDIS_SHARDS=str(mode.shards))
    where = counter_keys(mode, prefix, nodes)
    with open(Path(ctx["dir"]) / f"{tag}.log", "wb") as log:
        proc = subprocess.Popen(
            worker_command(opts.tree), env=env, cwd=tree_env(env, opts.tree), stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            spawned = time.perf_counter()
            deadline = spawned + 1800
            first_t = first_n = None
            cpu0: list[float] = []
            while True:
                now = time.perf_counter()
                n = received(nodes, where)
                if n and first_t is None:
                    first_t, first_n = now, n
                    w0, b0 = proc_cpu_s(proc.pid), proc_cpu_s(ctx["broker_pid"])
                    cpu0 = [redis_cpu_s(node.client) for node in nodes]
                if n >= opts.events:
                    w1, b1 = proc_cpu_s(proc.pid), proc_cpu_s(ctx["broker_pid"])
                    cpu1 = [redis_cpu_s(node.client) for node in nodes]
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode} at {n}/{opts.events}")
                if now > deadline:
                    raise RuntimeError(f"timed out at {n}/{opts.events}")
                time.sleep(0.02)
            batches = int(health(port)["process"]["batches"])
        finally:
            stop(proc)
    assert first_t is not None and first_n is not None
    span = max(opts.events - first_n, 1)
    return Run(
        mode.name, pair, span / max(now - first_t, 1e-9), first_t - spawned,
        worker_cpu_us=(w1 - w0) / span * 1e6, broker_cpu_us=(b1 - b0) / span * 1e6,
        node_cpu_us=[(c1 - c0) / span * 1e6 for c0, c1 in zip(cpu0, cpu1, strict=True)],
        node_keys=[int(node.client.dbsize()) for node in nodes],
        node_calls=[evalsha_calls(node.client) for node in nodes],
        node_conns=[int(node.client.info("stats")["total_connections_received"]) for node in nodes],
        batches=batches,
    )  # fmt: skip


def print_run(r: Run) -> None:
    nodes = ", ".join(f"{x:.1f}" for x in r.node_cpu_us)
    cpu_share = " ".join(f"{x:.2f}" for x in spread(r.node_cpu_us))
    key_share = " ".join(f"{x:.2f}" for x in spread([float(k) for k in r.node_keys]))
    print(f"  pair {r.pair} {r.mode:<11} {r.events_per_s:>9,.0f} events/s  start {r.start_s:4.1f}s"
          f"  cpu/event: worker {r.worker_cpu_us:5.1f} us, broker {r.broker_cpu_us:4.1f} us, "
          f"redis {r.redis_cpu_us:5.1f} us ({nodes})  share cpu [{cpu_share}] keys [{key_share}]"
          f"  calls/batch {r.calls_per_batch:.1f} ({r.batches} batches), connections opened/batch "
          f"{r.conns_per_batch:.1f}"
          f"  load {os.getloadavg()[0]:.2f}")  # fmt: skip


def report(runs: list[Run], modes: list[Mode]) -> None:
    print("\n# results (median of pairs)")
    med = statistics.median
    for mode in modes:
        mine = [r for r in runs if r.mode == mode.name]
        if not mine:
            continue
        rate = med(r.events_per_s for r in mine)
        per_node = [med(r.node_cpu_us[i] for r in mine) for i in range(len(mine[0].node_cpu_us))]
        print(f"  {mode.name:<11} {rate:>9,.0f} events/s (pairs: "
              f"{', '.join(f'{r.events_per_s:,.0f}' for r in mine)});  CPU per event: worker "
              f"{med(r.worker_cpu_us for r in mine):.1f} us, broker "
              f"{med(r.broker_cpu_us for r in mine):.1f} us, redis "
              f"{med(r.redis_cpu_us for r in mine):.1f} us in all (per node "
              f"{', '.join(f'{x:.1f}' for x in per_node)}); script calls per batch "
              f"{med(r.calls_per_batch for r in mine):.1f}, connections opened per batch "
              f"{med(r.conns_per_batch for r in mine):.1f}")  # fmt: skip
        if not mode.cluster:
            continue
        cpu_spread = med(worst(spread(r.node_cpu_us)) for r in mine)
        key_spread = med(worst(spread([float(k) for k in r.node_keys])) for r in mine)
        cpu_shares = [med(spread(r.node_cpu_us)[i] for r in mine) for i in range(len(per_node))]
        key_shares = spread([float(k) for k in mine[0].node_keys])
        ok = max(cpu_spread, key_spread) <= TARGETS["spread"]
        print(f"  {mode.name:<11} spread over primaries (share / mean): CPU "
              f"[{' '.join(f'{x:.2f}' for x in cpu_shares)}] worst {cpu_spread:.0%}, keys "
              f"[{' '.join(f'{x:.2f}' for x in key_shares)}] worst {key_spread:.0%}; target "
              f"within {TARGETS['spread']:.0%}: {'met' if ok else 'MISSED'}")  # fmt: skip
        ratios = [
            c.events_per_s / s.events_per_s
            for c in mine
            for s in runs
            if s.mode == "single" and s.pair == c.pair
        ]
        if ratios:
            ratio = med(ratios)
            print(f"  {mode.name} / single = {ratio:.2f} (median of per-pair ratios: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}; target >= "
                  f"{TARGETS['vs_single']:.2f}: "
                  f"{'met' if ratio >= TARGETS['vs_single'] else 'MISSED'})")  # fmt: skip


def conditions(opts: argparse.Namespace, nodes: list[Node], modes: list[Mode]) -> None:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    info = nodes[0].client.info("server")
    print("# bench_cluster conditions")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cpu, shared with other work (the "
          f"broker, worker and Redis nodes compete too), load {os.getloadavg()}")  # fmt: skip
    print(f"  python {platform.python_version()}, aiokafka {version('aiokafka')}, redis-py "
          f"{version('redis')}, redis-server {info['redis_version']}, broker tansu")  # fmt: skip
    print(f"  events {opts.events:,} (25% orders), customers {opts.customers:,}, seed {opts.seed}, "
          f"{PARTITIONS}+{PARTITIONS} partitions, batch 5000, one worker process, scoring off; "
          f"pairs {opts.pairs}, modes {', '.join(m.name for m in modes)}; cluster: "
          f"{opts.primaries} primaries, no replicas, slots split evenly")  # fmt: skip
    for mode in modes:
        if mode.cluster:
            spaces = Keyspace("x", cluster=True, shards=mode.shards).spaces
            held = [sum(node.serves(f"{space}:c") for space in spaces) for node in nodes[1:]]
            print(f"  {mode.name}: shards per primary {held}")
    print(f"  worker tree {opts.tree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument(
        "--shards", default="16", help="cluster shard counts to run, comma-separated (e.g. 16,64)"
    )
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout the worker runs from")
    opts = parser.parse_args()
    modes = [Mode(), *(Mode(int(s)) for s in opts.shards.split(","))]

    from devstack.services import LocalServices, local_services

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-"))
        svc = stack.enter_context(local_services(Path(tmp) / "single"))
        cluster = LocalServices(Path(tmp) / "cluster")
        stack.callback(cluster.down)
        primaries = cluster.up_redis_cluster(0, opts.primaries)
        single = Node("single", svc["redis"].port, redis.Redis(port=svc["redis"].port))
        nodes = cluster_nodes(primaries[0].port)
        conditions(opts, [single, *nodes], modes)
        bootstrap = svc["kafka"].url
        create_topics(
            bootstrap, [*TOPICS, "bench-dead-letter", "bench-control", "bench-segment-changes"],
            PARTITIONS,
        )  # fmt: skip
        ctx = {"bootstrap": bootstrap, "dir": tmp, "broker_pid": svc["kafka"].pid}
        t = time.perf_counter()
        events = make_events(opts.events, opts.customers, opts.seed)
        made = time.perf_counter() - t
        import asyncio

        took = asyncio.run(produce_all(bootstrap, TOPICS, events))
        del events
        print(f"  pre-loaded {opts.events:,} events (made in {made:.1f}s, produced in "
              f"{took:.1f}s)\n")  # fmt: skip
        runs: list[Run] = []
        for pair in range(opts.pairs):
            for mode in modes[pair % len(modes) :] + modes[: pair % len(modes)]:
                if mode.cluster:
                    run = measure(mode, nodes, primaries[0].url, opts, ctx, pair)
                else:
                    run = measure(mode, [single], svc["redis"].url, opts, ctx, pair)
                runs.append(run)
                print_run(run)
        report(runs, modes)


if __name__ == "__main__":
    main()
