"""Throughput and latency of ``segstream worker``, beside the floor and a plain faust agent.

What it does, on its own broker (tansu) and Redis started for the run:

1. pre-loads an orders topic and a clicks topic (4 partitions each) with ``--events`` synthetic
   events from a fixed seed (a quarter orders, the rest clicks, over ``--customers`` customers);
2. for each of ``--runs`` runs, consumes them all with three processes, one at a time, in an
   order rotated per run, each with a fresh consumer group and Redis key prefix:

   * ``worker``: the real ``segstream worker`` (faust app + batched aiokafka ingest + the state
     store's Lua script with fences, dedup, sweep index, counters), run with
     ``SEGSTREAM_SCORING=0``: this measures ingestion into state, not segment assignment;
   * ``floor``: a bare aiokafka ``getmany`` loop applying each batch with one small Lua call
     (RFM increments + per-partition offset fence, no other logic), commit after Redis;
   * ``faust``: a plain faust agent, ``stream.take_events(1000, within=50 ms)``, doing the same
     work as the floor (same Lua call), uvloop set before faust is imported;

   events/s are counted in Redis (the ``received`` counter each path increments in the same
   script that writes the state), never from the broker's lag, over the span between the first
   and the last applied batch (group-join time is printed apart as ``start``);
3. event-to-state latency of ``segstream worker`` at an offered ``--latency-rate`` events/s for
   ``--latency-seconds``: the producer stamps ``event_time = now``; one event in 20 is an order of
   a customer never seen before, and a sampler polls Redis (pipelined ``EXISTS`` every 5 ms) for
   its state hash; latency = first time it is visible - event time.

4. event-to-segment-change latency (``--change-runs``, 0 by default), as a consumer of
   ``segment-changes`` sees it: the worker with scoring on and the K-means model below, its state
   pre-loaded with ``--change-preload`` historical events (scored before anything is timed);
   then a producer process offers ``--latency-rate`` *order* events/s of those customers for
   ``--change-warmup`` + ``--change-seconds`` seconds, as a shop's producer with ``linger.ms`` =
   ``--linger-ms`` (20) sends them: each order's ``event_time`` lies evenly inside the interval
   before the send that carries it, so its wait in the producer counts (a record batch per
   partition per 5 ms instead makes the local broker, whose cost grows with the batches it
   holds, the bottleneck: benchmarks/RESULTS.md, 2026-12-06),
   and a consumer process (aiokafka, positioned at the end of every partition before the first
   order, ``fetch_max_wait_ms`` 10) records each change's receive time. A change counts if its
   reason is ``order`` and its ``(customer_id, event_time)`` is an order the producer sent after
   the warm-up, once per such order (a repeat, at-least-once, is not counted again); latency =
   receive time - event time. An order that is followed by another of the same customer before
   its round is scored has no change of its own (the change carries the later event's time).

``--tree DIR`` runs the worker from another checkout (cwd and ``PYTHONPATH`` set to it);
``--compare-tree DIR`` runs every worker path (``worker``, ``scoring``, change latency) a second
time from DIR, labelled ``<path>@cmp``, alternating with the first in every run, and prints the
ratios ``@cmp / first``: old and new code measured side by side on one broker and Redis.

With ``--with-scoring`` a fourth path runs, ``scoring``: the same worker with segmentation on
(``SEGSTREAM_SCORING=1``; the other worker runs have it off) and a K-means model (k=6, trained on
seeded synthetic state) current in Redis, so every changed customer is read, scored, written
and, on a real change, published to segment-changes, and the online model learns. Its rate is
end to end: from the first applied batch until every event is applied *and* ``unscored`` is
empty (every changed customer scored); its ingest-only rate is printed beside it. The ratio
``scoring / worker`` (per run, median) is the overhead (target: >= 0.90).

Figures are medians over the runs; ratios are against the floor measured in the same run.
``--events`` smaller than 1M is for a quick look; the issue's figure is at 1M.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import redis

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
TARGETS = {"events_per_s": 30_000, "vs_floor": 0.5, "p99_ms": 150.0, "change_p99_ms": 250.0}

#: The floor's (and the faust agent's) whole job per batch: RFM increments and the fence.
FLOOR_LUA = """
local prefix = ARGV[1]
local np = tonumber(ARGV[2])
local fence, fkey, fpart, fhigh = {}, {}, {}, {}
local i = 3
for p = 1, np do
  fkey[p] = prefix .. ':fence:' .. ARGV[i]
  fpart[p] = ARGV[i + 1]
  fhigh[p] = tonumber(ARGV[i + 2])
  fence[p] = tonumber(redis.call('HGET', fkey[p], fpart[p]) or '-1')
  i = i + 3
end
local n = tonumber(ARGV[i])
i = i + 1
local received = 0
for e = 1, n do
  local p = tonumber(ARGV[i])
  if tonumber(ARGV[i + 1]) > fence[p] then
    received = received + 1
    local key = prefix .. ':c:{' .. ARGV[i + 2] .. '}'
    local cents = tonumber(ARGV[i + 3])
    if cents >= 0 then
      redis.call('HINCRBY', key, 'frequency', 1)
      redis.call('HINCRBY', key, 'monetary_cents', cents)
      local ms = tonumber(ARGV[i + 4])
      local last = tonumber(redis.call('HGET', key, 'last_order_ms') or '0')
      if ms > last then redis.call('HSET', key, 'last_order_ms', ms) end
    else
      redis.call('HINCRBY', key, 'page_views', 1)
    end
  end
  i = i + 5
end
for p = 1, np do
  if fhigh[p] > fence[p] then redis.call('HSET', fkey[p], fpart[p], fhigh[p]) end
end
redis.call('HINCRBY', prefix .. ':counters', 'received', received)
return received
"""


# -- synthetic events ----------------------------------------------------------------------------
def make_events(
    n: int, customers: int, seed: int, t0: datetime = T0
) -> list[tuple[bool, bytes, bytes]]:
    """``(is_order, key, json)``: valid orders and clicks over 600 days from ``t0`` (fast)."""
    rng = random.Random(seed)
    out: list[tuple[bool, bytes, bytes]] = []
    span = 600 * 86400
    kinds = ("page_view", "search", "checkout_start")
    for i in range(n):
        cid = f"C{rng.randrange(customers):07d}"
        when = (t0 + timedelta(seconds=rng.randrange(span))).isoformat().replace("+00:00", "Z")
        if rng.random() < 0.25:
            qty, price = rng.randint(1, 3), rng.randrange(100, 20000) / 100
            total = round(qty * price, 2)
            body = (
                f'{{"event_id":"E{seed}-{i}","schema_version":1,"customer_id":"{cid}",'
                f'"order_id":"O{seed}-{i}","event_time":"{when}","status":"placed",'
                f'"items":[{{"sku":"SKU-{rng.randrange(500)}","quantity":{qty},'
                f'"unit_price":{price}}}],"total":{total},"currency":"EUR"}}'
            )
            out.append((True, cid.encode(), body.encode()))
        else:
            body = (
                f'{{"event_id":"K{seed}-{i}","schema_version":1,"session_id":"S{seed}-{i // 6}",'
                f'"event_time":"{when}","type":"{kinds[i % 3]}","customer_id":"{cid}"}}'
            )
            out.append((False, cid.encode(), body.encode()))
    return out


async def produce_all(bootstrap: str, topics: tuple[str, str], events: list[Any]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    pending = []
    for is_order, key, value in events:
        pending.append(await producer.send(topics[0] if is_order else topics[1], value, key=key))
        if len(pending) >= 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.stop()
    return time.perf_counter() - started


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    admin.close()


# -- floor and faust paths (run in their own processes: `bench_worker.py _floor|_faust ...`) ------
def floor_args(prefix: str, rows: list[tuple[str, int, int, bytes]]) -> list[Any]:
    """Script arguments for ``(topic, partition, offset, value)`` rows (decoded with orjson)."""
    parts: dict[tuple[str, int], int] = {}
    high: dict[tuple[str, int], int] = {}
    body: list[Any] = []
    for topic, partition, offset, value in rows:
        tp = (topic, partition)
        idx = parts.setdefault(tp, len(parts) + 1)
        high[tp] = max(high.get(tp, -1), offset)
        ev = orjson.loads(value)
        cid = ev.get("customer_id") or ev.get("anonymous_id") or ""
        if "total" in ev:
            ms = int(datetime.fromisoformat(ev["event_time"]).timestamp() * 1000)
            body += [idx, offset, cid, round(ev["total"] * 100), ms]
        else:
            body += [idx, offset, cid, -1, 0]
    args: list[Any] = [prefix, len(parts)]
    for tp in parts:
        args += [tp[0], tp[1], high[tp]]
    args.append(len(rows))
    return args + body


async def run_floor(opts: argparse.Namespace) -> None:
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer

    r = aioredis.Redis.from_url(opts.redis_url)
    script = r.register_script(FLOOR_LUA)
    consumer = AIOKafkaConsumer(
        *opts.topics.split(","), bootstrap_servers=opts.bootstrap, group_id=opts.group,
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=6000,
        heartbeat_interval_ms=2000, max_poll_records=opts.batch,
    )  # fmt: skip
    await consumer.start()
    done = 0
    while done < opts.expect:
        fetched = await consumer.getmany(timeout_ms=200, max_records=opts.batch)
        rows = [(m.topic, m.partition, m.offset, m.value) for ms in fetched.values() for m in ms]
        if not rows:
            continue
        done += int(await script(keys=[], args=floor_args(opts.prefix, rows)))
        await consumer.commit()
    await consumer.stop()
    await r.aclose()


def run_faust(opts: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import faust

    app = faust.App(
        opts.group, broker=f"kafka://{opts.bootstrap}", store="memory://", web_enabled=False,
        broker_session_timeout=6, broker_heartbeat_interval=2, topic_partitions=4,
        datadir=tempfile.mkdtemp(prefix="bench-faust-"), autodiscover=False,
    )  # fmt: skip
    topic = app.topic(*opts.topics.split(","), value_serializer="raw")
    state: dict[str, Any] = {"done": 0}

    @app.agent(topic)
    async def apply(stream: Any) -> None:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(opts.redis_url)
        script = r.register_script(FLOOR_LUA)
        async for events in stream.take_events(1000, within=0.05):
            rows = [
                (e.message.topic, e.message.partition, e.message.offset, e.value) for e in events
            ]
            state["done"] += int(await script(keys=[], args=floor_args(opts.prefix, rows)))
            if state["done"] >= opts.expect:
                app._crash_reason = None
                asyncio.get_event_loop().call_soon(lambda: asyncio.ensure_future(app.stop()))

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class Throughput:
    path: str
    run: int
    events_per_s: float
    start_s: float
    total_s: float
    #: CPU time per event of the consuming process and of redis-server over the measured span:
    #: what each path costs, independent of how busy the machine is.
    proc_cpu_us: float = 0.0
    redis_cpu_us: float = 0.0
    #: Events applied per second (for ``scoring``, ``events_per_s`` also waits for scoring).
    ingest_events_per_s: float = 0.0


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def publish_model(redis_url: str, prefix: str, seed: int) -> str:
    """A K-means model (k=6) trained on seeded synthetic state, made current under ``prefix``."""
    from analytics.synthetic import synthetic_state
    from analytics.training import train
    from worker.segmentation.artifacts_redis import RedisModelStore

    model = train(synthetic_state(20_000, seed=seed), k=6, seed=seed).model
    RedisModelStore.from_url(redis_url, prefix).save(model)
    return model.version


def watch(
    r: redis.Redis, prefix: str, expect: int, proc: subprocess.Popen[bytes], scored: bool = False
) -> Throughput:
    """Until ``expect`` events are applied (and, with ``scored``, nothing is left unscored)."""
    key = f"{prefix}:counters"
    spawned = time.perf_counter()
    first_t = first_n = ingest_t = None
    cpu0 = rcpu0 = 0.0
    deadline = spawned + 1800
    while True:
        now = time.perf_counter()
        n = int(r.hget(key, "received") or 0)
        if n and first_t is None:
            first_t, first_n = now, n
            cpu0, rcpu0 = proc_cpu_s(proc.pid), redis_cpu_s(r)
        if n >= expect and ingest_t is None:
            ingest_t = now
        if n >= expect and (not scored or not r.exists(f"{prefix}:unscored")):
            cpu1, rcpu1 = proc_cpu_s(proc.pid), redis_cpu_s(r)
            break
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode} at {n}/{expect}")
        if now > deadline:
            raise RuntimeError(f"timed out at {n}/{expect}")
        time.sleep(0.02)
    assert first_t is not None and first_n is not None
    span_events = max(expect - first_n, 1)
    rate = span_events / max(now - first_t, 1e-9)
    assert ingest_t is not None
    return Throughput(
        "", 0, rate, first_t - spawned, now - spawned,
        ingest_events_per_s=span_events / max(ingest_t - first_t, 1e-9),
        proc_cpu_us=(cpu1 - cpu0) / span_events * 1e6,
        redis_cpu_us=(rcpu1 - rcpu0) / span_events * 1e6,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def worker_env(
    bootstrap: str, redis_url: str, prefix: str, group: str, topics: tuple[str, str], port: int,
    run_dir: str,
) -> dict[str, str]:  # fmt: skip
    env = dict(os.environ)
    env.update(
        SEGSTREAM_KAFKA_BOOTSTRAP=bootstrap, SEGSTREAM_REDIS_URL=redis_url,
        SEGSTREAM_REDIS_PREFIX=prefix, SEGSTREAM_GROUP_ID=group,
        SEGSTREAM_ORDERS_TOPIC=topics[0], SEGSTREAM_CLICKS_TOPIC=topics[1],
        SEGSTREAM_DEAD_LETTER_TOPIC="bench-dead-letter", SEGSTREAM_CONTROL_TOPIC="bench-control",
        SEGSTREAM_WEB_PORT=str(port), SEGSTREAM_RUN_DIR=run_dir, SEGSTREAM_LOG_LEVEL="WARNING",
        SEGSTREAM_SESSION_TIMEOUT_S="6", SEGSTREAM_SWEEP_INTERVAL_S="60",
        # Issue 4's figure is ingestion into state; segment assignment is measured on its own.
        SEGSTREAM_SCORING="0", SEGSTREAM_SEGMENT_CHANGES_TOPIC="bench-segment-changes",
    )  # fmt: skip
    return env


def spawn(
    path: str, opts: argparse.Namespace, ctx: dict[str, Any], tag: str, port: int | None = None,
    tree: Path = REPO,
) -> Any:  # fmt: skip
    """Start one path's process; a worker (run from ``tree``) serves its pages on ``port``."""
    from devstack.ports import free_port

    prefix, group = f"b-{tag}", f"g-{tag}"
    log = open(Path(ctx["dir"]) / f"{tag}.log", "wb")  # noqa: SIM115 - closed by the caller
    topics = ctx["topics"]
    if path in ("worker", "scoring"):
        env = worker_env(
            ctx["bootstrap"],
            ctx["redis_url"],
            prefix,
            group,
            topics,
            port or free_port(),
            ctx["dir"],
        )
        if path == "scoring":
            env["SEGSTREAM_SCORING"] = "1"
            publish_model(ctx["redis_url"], prefix, opts.seed)
        cmd = worker_command(tree)
        cwd = tree_env(env, tree)
    else:
        env, cwd = dict(os.environ), REPO
        cmd = [
            sys.executable, __file__, f"_{path}", "--bootstrap", ctx["bootstrap"],
            "--redis-url", ctx["redis_url"], "--prefix", prefix, "--group", group,
            "--topics", ",".join(topics), "--expect", str(opts.events), "--batch", "5000",
        ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    return proc, prefix, log


def worker_command(tree: Path) -> list[str]:
    """``segstream worker`` as a checkout runs it (``python -m worker`` before segstream/ existed,
    so that old and new code can be measured side by side)."""
    package = "segstream" if (Path(tree) / "segstream" / "cli.py").exists() else "worker"
    return [sys.executable, "-m", package, "worker"]


def tree_env(env: dict[str, str], tree: Path) -> Path:
    """Make ``env`` import the worker from checkout ``tree``; returns the cwd to run it in.

    ``python -m`` puts the cwd first on ``sys.path``, so both are needed.
    """
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    )
    return tree


async def latency_run(opts: argparse.Namespace, ctx: dict[str, Any], run: int) -> list[float]:
    """Offered ``--latency-rate`` events/s for ``--latency-seconds``; returns latencies (ms)."""
    import urllib.request

    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer

    from devstack.ports import free_port

    topics = (f"lat-orders-{run}", f"lat-clicks-{run}")
    create_topics(ctx["bootstrap"], list(topics), 4)
    prefix, group, port = f"lat-{run}", f"lat-g-{run}", free_port()
    env = worker_env(ctx["bootstrap"], ctx["redis_url"], prefix, group, topics, port, ctx["dir"])
    log = open(Path(ctx["dir"]) / f"latency-{run}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        worker_command(opts.tree), env=env, cwd=tree_env(env, opts.tree),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # until the ingest consumer owns partitions
            url = f"http://127.0.0.1:{port}/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if orjson.loads(resp.read()).get("assigned"):
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("latency worker did not get partitions")
            await asyncio.sleep(0.1)
        producer = AIOKafkaProducer(bootstrap_servers=ctx["bootstrap"], linger_ms=1, acks=1)
        await producer.start()
        r = aioredis.Redis.from_url(ctx["redis_url"])
        pending: dict[str, float] = {}
        latencies: list[float] = []
        rng = random.Random(1000 + run)
        stop_at = time.time() + opts.latency_seconds
        warm_until = time.time() + 1.0

        async def sample() -> None:
            while time.time() < stop_at + 5 and (pending or time.time() < stop_at):
                if pending:
                    names = list(pending)
                    pipe = r.pipeline(transaction=False)
                    for cid in names:
                        pipe.exists(f"{prefix}:c:{{{cid}}}")
                    seen = await pipe.execute()
                    now = time.time()
                    for cid, hit in zip(names, seen, strict=True):
                        if hit:
                            born = pending.pop(cid)
                            if born >= warm_until:
                                latencies.append((now - born) * 1000)
                await asyncio.sleep(0.005)

        sampler = asyncio.ensure_future(sample())
        tick, i = 0.01, 0
        per_tick = opts.latency_rate * tick
        next_tick, owed = time.time(), 0.0
        while time.time() < stop_at:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                i += 1
                born = time.time()
                when = datetime.fromtimestamp(born, UTC).isoformat().replace("+00:00", "Z")
                if i % 20 == 0:
                    cid = f"L{run}-{i}"
                    pending[cid] = born
                    value = (
                        f'{{"event_id":"LE{run}-{i}","schema_version":1,"customer_id":"{cid}",'
                        f'"order_id":"LO{run}-{i}","event_time":"{when}","status":"placed",'
                        f'"items":[{{"sku":"S","quantity":1,"unit_price":9.5}}],"total":9.5}}'
                    )
                    await producer.send(topics[0], value.encode(), key=cid.encode())
                else:
                    cid = f"C{rng.randrange(opts.customers):07d}"
                    value = (
                        f'{{"event_id":"LK{run}-{i}","schema_version":1,"session_id":"LS{i // 6}",'
                        f'"event_time":"{when}","type":"page_view","customer_id":"{cid}"}}'
                    )
                    await producer.send(topics[1], value.encode(), key=cid.encode())
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.time()))
        offered = i / opts.latency_seconds
        await producer.flush()
        await sampler
        await producer.stop()
        await r.aclose()
        if pending:
            print(f"  latency run {run}: {len(pending)} sampled events never became visible")
        print(f"  latency run {run}: offered {offered:,.0f} events/s, {len(latencies)} samples")
        return latencies
    finally:
        stop(proc)
        log.close()


# -- event-to-segment-change latency ---------------------------------------------------------------
#: Partitions of the change-latency run's topics (the consumer assigns itself all of them).
CHANGE_PARTITIONS = 4


@dataclass
class ChangeLatency:
    label: str
    run: int
    latencies_ms: list[float]
    #: Event time -> the change's ``processing_time`` (ingested, queued, assigned).
    decided_ms: list[float]
    offered_per_s: float
    orders: int
    unmatched: int
    repeats: int
    scoring: dict[str, Any]
    load: tuple[float, float]
    #: Event time -> the order record received by a plain consumer of the orders topic: the
    #: broker and clients alone, no worker (the in-run floor of the change latency).
    floor_ms: list[float] = field(default_factory=list)


def order_value(cid: str, event_ms: int, n: int, seed: int) -> bytes:
    when = datetime.fromtimestamp(event_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return (
        f'{{"event_id":"LE{seed}-{n}","schema_version":1,"customer_id":"{cid}",'
        f'"order_id":"LO{seed}-{n}","event_time":"{when.replace("+00:00", "Z")}",'
        f'"status":"placed","items":[{{"sku":"SKU-{n % 500}","quantity":1,"unit_price":19.5}}],'
        f'"total":19.5,"currency":"EUR"}}'
    ).encode()


async def run_orders(opts: argparse.Namespace) -> None:
    """The producer process: ``--rate`` orders/s for warm-up + seconds, as a shop's producer
    with ``linger.ms`` = ``--linger-ms`` sends them.

    The orders happen continuously: each one's ``event_time`` lies evenly inside the interval
    since the previous send, and they are sent together at its end (one record batch per
    partition), so every order's latency includes the time it waited in the producer (half the
    linger on average). ``send`` per record would cost ~30 us of Python, a third of a core at
    10k/s; batches built here cost a fraction. Partition as Kafka's default partitioner gives
    the key. Writes ``{"start_ms", "end_ms", "offered", "sent": [[cid, event_ms], ...]}`` (the
    orders stamped after the warm-up) to ``--out``.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    producer = AIOKafkaProducer(bootstrap_servers=opts.bootstrap, acks=1, linger_ms=0)
    await producer.start()
    parts = sorted(await producer.partitions_for(opts.topic))
    rng = random.Random(opts.seed)
    tick = opts.linger_ms / 1000
    began = time.time()
    measure_from = began + opts.warmup
    stop_at = measure_from + opts.seconds
    start_ms = int(measure_from * 1000)
    sent: list[tuple[str, int]] = []
    owed, n, last, next_tick = 0.0, 0, began, began + tick
    pending = []
    while last < stop_at:
        await asyncio.sleep(max(0.0, next_tick - time.time()))
        next_tick += tick
        now = time.time()
        owed += opts.rate * (now - last)
        count = int(owed)
        owed -= count
        batches: dict[int, Any] = {}
        for i in range(count):
            n += 1
            event_ms = int((last + (i + 0.5) * (now - last) / count) * 1000)
            cid = f"C{rng.randrange(opts.customers):07d}"
            key = cid.encode()
            part = parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]
            batch = batches.get(part)
            if batch is None:
                batch = batches[part] = producer.create_batch()
            value = order_value(cid, event_ms, n, opts.seed)
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, opts.topic, partition=part))
                batch = batches[part] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            if event_ms >= start_ms:
                sent.append((cid, event_ms))
        last = now
        for part, batch in batches.items():
            pending.append(await producer.send_batch(batch, opts.topic, partition=part))
        if len(pending) > 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    ended = time.time()
    await producer.stop()
    Path(opts.out).write_bytes(
        orjson.dumps(
            {
                "start_ms": start_ms,
                "end_ms": int(ended * 1000),
                "offered": n / (ended - began),
                "sent": sent,
            }
        )
    )


async def run_changes(opts: argparse.Namespace) -> None:
    """The consumer process: every ``segment-changes`` record from now on, with its receive time.

    Positioned at the end of every partition, then ``--ready`` is written; consumes until the
    file ``--stop`` exists, then writes ``[[recv_ms, cid, event_ms, reason, decided_ms], ...]``
    (``decided_ms``: the change's ``processing_time``) to ``--out``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=opts.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    tps = [TopicPartition(opts.topic, p) for p in range(CHANGE_PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    Path(opts.ready).write_text("ready")
    got: list[tuple[float, str, int, str, float]] = []
    stop_file = Path(opts.stop)
    while not stop_file.exists():
        fetched = await consumer.getmany(timeout_ms=100)
        recv_ms = time.time() * 1000
        for msgs in fetched.values():
            for m in msgs:
                ev = orjson.loads(m.value)
                when = datetime.fromisoformat(ev["event_time"].replace("Z", "+00:00"))
                # an order record (the floor consumer) has no processing time: decided = received
                done = ev.get("processing_time")
                decided = (
                    recv_ms
                    if done is None
                    else datetime.fromisoformat(done.replace("Z", "+00:00")).timestamp() * 1000
                )
                got.append((recv_ms, ev["customer_id"], round(when.timestamp() * 1000),
                            ev.get("reason", "order"), decided))  # fmt: skip
    await consumer.stop()
    Path(opts.out).write_bytes(orjson.dumps(got))


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: timed out after {timeout:.0f}s")
        time.sleep(0.1)


def change_latency_run(
    opts: argparse.Namespace, ctx: dict[str, Any], run: int, label: str, tree: Path
) -> ChangeLatency:
    """One event-to-segment-change measurement (docstring, step 4) of the worker in ``tree``."""
    import urllib.request

    from devstack.ports import free_port

    tag = f"chg-{label.replace('@', '-')}-{run}"
    topics = (f"{tag}-orders", f"{tag}-clicks")
    changes_topic = f"{tag}-changes"
    create_topics(ctx["bootstrap"], [*topics, changes_topic], CHANGE_PARTITIONS)
    r = redis.Redis.from_url(ctx["redis_url"])
    prefix, port, tmp = tag, free_port(), Path(ctx["dir"])
    publish_model(ctx["redis_url"], prefix, opts.seed)
    if opts.change_preload:
        # histories that end now, as a live service's customers' do (a history that ended
        # months ago makes nearly every customer's first live order a change)
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=600)
        events = make_events(opts.change_preload, opts.customers, opts.seed, t0)
        asyncio.run(produce_all(ctx["bootstrap"], topics, events))
        del events
    env = worker_env(
        ctx["bootstrap"], ctx["redis_url"], prefix, f"g-{tag}", topics, port, ctx["dir"]
    )
    env.update(SEGSTREAM_SCORING="1", SEGSTREAM_SEGMENT_CHANGES_TOPIC=changes_topic)
    cwd = tree_env(env, tree)
    log = open(tmp / f"{tag}.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        worker_command(tree), env=env, cwd=cwd, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    helpers: list[subprocess.Popen[bytes]] = []
    scoring: dict[str, Any] = {}
    try:
        # 1. the pre-load applied and scored: nothing below is timed before that
        def settled() -> bool:
            n = int(r.hget(f"{prefix}:counters", "received") or 0)
            return n >= opts.change_preload and not r.exists(f"{prefix}:unscored")

        wait_for("pre-load", settled, 600, worker)
        # 2. the consumer, at the end of every partition
        files = {
            k: tmp / f"{tag}.{k}"
            for k in ("ready", "stop", "changes", "orders", "floor-ready", "floor")
        }
        base = [sys.executable, __file__]
        consumer = subprocess.Popen(
            [*base, "_changes", "--bootstrap", ctx["bootstrap"], "--topic", changes_topic,
             "--ready", str(files["ready"]), "--stop", str(files["stop"]),
             "--out", str(files["changes"])], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        helpers.append(consumer)
        floor = None
        if opts.change_floor:
            floor = subprocess.Popen(
                [*base, "_changes", "--bootstrap", ctx["bootstrap"], "--topic", topics[0],
                 "--ready", str(files["floor-ready"]), "--stop", str(files["stop"]),
                 "--out", str(files["floor"])], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            helpers.append(floor)
            wait_for("floor consumer ready", files["floor-ready"].exists, 60, floor)
        wait_for("consumer ready", files["ready"].exists, 60, consumer)
        load0 = os.getloadavg()[0]
        # 3. the orders, then until everything they changed is scored and consumed
        producer = subprocess.Popen(
            [*base, "_orders", "--bootstrap", ctx["bootstrap"], "--topic", topics[0],
             "--rate", str(opts.latency_rate), "--warmup", str(opts.change_warmup),
             "--seconds", str(opts.change_seconds), "--customers", str(opts.customers),
             "--linger-ms", str(opts.linger_ms),
             "--seed", str(opts.seed + 1000 + run), "--out", str(files["orders"])],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        helpers.append(producer)
        producer.wait(opts.change_warmup + opts.change_seconds + 120)
        if producer.returncode:
            raise RuntimeError(f"order producer exited with {producer.returncode}")
        load1 = os.getloadavg()[0]
        wait_for("scored", lambda: not r.exists(f"{prefix}:unscored"), 120, worker)
        time.sleep(2.0)
        files["stop"].write_text("stop")
        consumer.wait(60)
        if floor is not None:
            floor.wait(60)
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/scoring", timeout=5) as resp,
        ):
            scoring = orjson.loads(resp.read())
    finally:
        for proc in [*helpers, worker]:
            stop(proc)
        log.close()
    orders = orjson.loads(files["orders"].read_bytes())
    sent = {(cid, ms) for cid, ms in orders["sent"]}
    seen: set[tuple[str, int]] = set()
    latencies: list[float] = []
    decided: list[float] = []
    unmatched = repeats = 0
    for recv_ms, cid, event_ms, reason, decided_ms in orjson.loads(files["changes"].read_bytes()):
        if reason != "order" or event_ms < orders["start_ms"]:
            continue
        key = (cid, event_ms)
        if key not in sent:
            unmatched += 1
        elif key in seen:
            repeats += 1
        else:
            seen.add(key)
            latencies.append(recv_ms - event_ms)
            decided.append(decided_ms - event_ms)
    floor_ms = [
        recv_ms - event_ms
        for recv_ms, _, event_ms, _, _ in (
            orjson.loads(files["floor"].read_bytes()) if opts.change_floor else []
        )
        if event_ms >= orders["start_ms"]
    ]
    return ChangeLatency(
        label, run, latencies, decided, orders["offered"], len(orders["sent"]), unmatched, repeats,
        scoring, (load0, load1), floor_ms,
    )  # fmt: skip


def pct(xs: list[float], q: float) -> float:
    """The ``q``-quantile (0-1) of ``xs``, nearest rank."""
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, round(q * len(ys) + 0.5) - 1))]


def print_change_latency(c: ChangeLatency) -> None:
    xs = c.latencies_ms
    sc = c.scoring
    rounds = sc.get("rounds", 0)
    if not xs:
        print(f"  run {c.run} {c.label:<11} no changes measured")
        return
    print(f"  run {c.run} {c.label:<11} event->change p50 {pct(xs, .5):6.1f}  p90 "
          f"{pct(xs, .9):6.1f}  p99 {pct(xs, .99):6.1f}  max {max(xs):7.1f} ms   n {len(xs):,} "
          f"of {c.orders:,} orders (offered {c.offered_per_s:,.0f}/s; {c.unmatched} unmatched, "
          f"{c.repeats} repeats); event->decided p50 {pct(c.decided_ms, .5):.0f}, p99 "
          f"{pct(c.decided_ms, .99):.0f} ms"
          + (f"; floor (orders topic, no worker) p50 {pct(c.floor_ms, .5):.0f}, p99 "
             f"{pct(c.floor_ms, .99):.0f} ms" if c.floor_ms else "")
          + f"   worker: {rounds} rounds, "
          f"{sc.get('scored', 0):,} scored, "
          f"{sc.get('round_seconds_sum', 0) / max(rounds, 1) * 1000:.0f} ms/round, "
          f"{sc.get('catch_up_rounds', 0)} catching up   load "
          f"{c.load[0]:.2f}->{c.load[1]:.2f}")  # fmt: skip


def conditions(opts: argparse.Namespace, redis_url: str, paths: list[str]) -> None:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    info = redis.Redis.from_url(redis_url).info("server")
    print("# bench_worker conditions")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cpu, load {os.getloadavg()}")
    print(f"  python {platform.python_version()}, aiokafka {version('aiokafka')}, "
          f"faust-streaming {version('faust-streaming')}, redis-py {version('redis')}, "
          f"uvloop {version('uvloop')}, redis-server {info['redis_version']}, "
          "broker tansu")  # fmt: skip
    print(f"  events {opts.events:,} (25% orders), customers {opts.customers:,}, seed {opts.seed}, "
          f"4+4 partitions, batch 5000, runs {opts.runs}, "
          f"paths {','.join(paths) or '-'}")  # fmt: skip
    print(f"  worker tree {opts.tree}" + (f", compared with {opts.compare_tree} (@cmp)"
          if opts.compare_tree else ""))  # fmt: skip
    if opts.change_runs:
        print(f"  event->segment change: {opts.change_runs} run(s) per tree, orders offered at "
              f"{opts.latency_rate:,.0f}/s for {opts.change_warmup:.0f}s warm-up + "
              f"{opts.change_seconds:.0f}s measured, customers {opts.customers:,} pre-loaded "
              f"with {opts.change_preload:,} events of the last 600 days (seed {opts.seed}), "
              f"order seeds {opts.seed}+1000+run, 4 partitions, consumer fetch_max_wait_ms 10, "
              "model k=6")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--paths", default="worker,floor,faust")
    parser.add_argument("--latency-rate", type=float, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--latency-runs", type=int, default=None, help="default: --runs")
    parser.add_argument(
        "--with-scoring", action="store_true", help="also run the worker with scoring on"
    )
    parser.add_argument("--change-runs", type=int, default=0, help="event-to-segment-change runs")
    parser.add_argument(
        "--change-floor",
        action="store_true",
        help="also time the orders themselves at a plain consumer of the orders topic (the "
        "broker and clients without the worker); it is one more process consuming every order, "
        "so on a small machine it slows the run it measures",
    )
    parser.add_argument(
        "--linger-ms",
        type=float,
        default=20,
        help="the order producer's linger: it sends what happened in each interval of this length "
        "at its end (the orders' latency includes the wait)",
    )
    parser.add_argument("--change-seconds", type=float, default=30)
    parser.add_argument("--change-warmup", type=float, default=10)
    parser.add_argument("--change-preload", type=int, default=200_000)
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout the worker runs from")
    parser.add_argument("--compare-tree", type=Path, default=None, help="a second checkout, beside")
    opts = parser.parse_args()
    paths = opts.paths.split(",") if opts.paths else []
    if opts.with_scoring and "scoring" not in paths:
        paths.append("scoring")
    trees = {"": opts.tree.resolve()}
    if opts.compare_tree is not None:
        trees["@cmp"] = opts.compare_tree.resolve()
        paths += [f"{p}@cmp" for p in paths if p in ("worker", "scoring")]

    from devstack.services import local_services

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, local_services(tmp) as svc:
        bootstrap, redis_url = svc["kafka"].url, svc["redis"].url
        conditions(opts, redis_url, paths)
        r = redis.Redis.from_url(redis_url)
        topics = ("bench-orders", "bench-clicks")
        create_topics(
            bootstrap, [*topics, "bench-dead-letter", "bench-control", "bench-segment-changes"], 4
        )
        ctx = {"bootstrap": bootstrap, "redis_url": redis_url, "topics": topics, "dir": tmp}
        results: list[Throughput] = []
        if paths:
            t = time.perf_counter()
            events = make_events(opts.events, opts.customers, opts.seed)
            made = time.perf_counter() - t
            took = asyncio.run(produce_all(bootstrap, topics, events))
            del events
            print(f"  pre-loaded {opts.events:,} events (made in {made:.1f}s, "
                  f"produced in {took:.1f}s)\n")  # fmt: skip
        for run in range(opts.runs if paths else 0):
            order = paths[run % len(paths) :] + paths[: run % len(paths)]
            for path in order:
                r.flushdb()
                base, _, cmp = path.partition("@")
                tree = trees["@" + cmp if cmp else ""]
                tag = f"{base}-{cmp}-{run}" if cmp else f"{path}-{run}"
                proc, prefix, log = spawn(base, opts, ctx, tag, tree=tree)
                try:
                    res = watch(r, prefix, opts.events, proc, scored=base == "scoring")
                finally:
                    stop(proc)
                    log.close()
                res.path, res.run = path, run
                results.append(res)
                print(f"  run {run} {path:<11} {res.events_per_s:>10,.0f} events/s   "
                      f"start {res.start_s:5.1f}s   total {res.total_s:6.1f}s   "
                      f"cpu/event: process {res.proc_cpu_us:5.1f} us, redis "
                      f"{res.redis_cpu_us:5.1f} us   load {os.getloadavg()[0]:.2f}")  # fmt: skip
        latencies: list[float] = []
        per_run_p99: list[float] = []
        for run in range(opts.runs if opts.latency_runs is None else opts.latency_runs):
            r.flushdb()
            got = asyncio.run(latency_run(opts, ctx, run))
            latencies += got
            if got:
                per_run_p99.append(statistics.quantiles(got, n=100)[98])
        changes: list[ChangeLatency] = []
        labels = [f"changes{k}" for k in trees]
        for run in range(opts.change_runs):
            for label in labels[run % len(labels) :] + labels[: run % len(labels)]:
                r.flushdb()
                tree = trees[label.removeprefix("changes")]
                changes.append(change_latency_run(opts, ctx, run, label, tree))
                print_change_latency(changes[-1])
        report(results, latencies, per_run_p99)
        report_changes(changes)


def report_changes(changes: list[ChangeLatency]) -> None:
    for label in dict.fromkeys(c.label for c in changes):
        mine = [c for c in changes if c.label == label and c.latencies_ms]
        if not mine:
            continue
        per = {q: [pct(c.latencies_ms, v) for c in mine] for q, v in
               (("p50", .5), ("p90", .9), ("p99", .99), ("max", 1.0))}  # fmt: skip
        med = {q: statistics.median(v) for q, v in per.items()}
        print(f"  {label} event->segment change (median of {len(mine)} runs): p50 {med['p50']:.1f}"
              f", p90 {med['p90']:.1f}, p99 {med['p99']:.1f} ms (per run "
              f"{', '.join(f'{x:.0f}' for x in per['p99'])}), max {med['max']:.0f} ms; "
              f"{statistics.median(len(c.latencies_ms) for c in mine):,.0f} changes a run; "
              f"target p99 <= {TARGETS['change_p99_ms']:.0f} ms")  # fmt: skip
        floors = [c.floor_ms for c in mine if c.floor_ms]
        if floors:
            f50 = statistics.median(pct(f, 0.5) for f in floors)
            f99 = statistics.median(pct(f, 0.99) for f in floors)
            print(f"  {label} floor: event->order record at a plain consumer of the orders topic "
                  f"(no worker) p50 {f50:.1f}, p99 {f99:.1f} ms; the worker adds p50 "
                  f"{med['p50'] - f50:.1f}, p99 {med['p99'] - f99:.1f} ms")  # fmt: skip


def report(results: list[Throughput], latencies: list[float], per_run_p99: list[float]) -> None:
    print("\n# results (median of runs)")
    med: dict[str, float] = {}
    for path in dict.fromkeys(r.path for r in results):
        rates = [r.events_per_s for r in results if r.path == path]
        med[path] = statistics.median(rates)
        runs = ", ".join(f"{x:,.0f}" for x in rates)
        cpu = statistics.median(r.proc_cpu_us for r in results if r.path == path)
        rcpu = statistics.median(r.redis_cpu_us for r in results if r.path == path)
        print(f"  {path:<7} {med[path]:>10,.0f} events/s   (runs: {runs});  CPU per event: "
              f"process {cpu:.1f} us, redis-server {rcpu:.1f} us")  # fmt: skip
    if "worker" in med and "floor" in med:
        per_run = [
            w.events_per_s / f.events_per_s
            for w in results
            if w.path == "worker"
            for f in results
            if f.path == "floor" and f.run == w.run
        ]
        ratio = statistics.median(per_run)
        print(f"  worker / floor = {ratio:.2f} (median of per-run ratios; target >= "
              f"{TARGETS['vs_floor']:.2f})")  # fmt: skip
    if "worker" in med:
        ok = med["worker"] >= TARGETS["events_per_s"]
        print(f"  worker target {TARGETS['events_per_s']:,} events/s: {'met' if ok else 'MISSED'}")
    if "scoring" in med and "worker" in med:
        per_run = [
            sc.events_per_s / w.events_per_s
            for sc in results
            if sc.path == "scoring"
            for w in results
            if w.path == "worker" and w.run == sc.run
        ]
        ingest = statistics.median(r.ingest_events_per_s for r in results if r.path == "scoring")
        ratio = statistics.median(per_run)
        print(f"  scoring (end to end, every changed customer scored) / worker (state only) = "
              f"{ratio:.3f} (median of per-run ratios: {', '.join(f'{x:.3f}' for x in per_run)}"
              f"; target >= 0.90); scoring's ingest-only rate {ingest:,.0f} events/s")  # fmt: skip
    for path in ("worker", "scoring"):
        if f"{path}@cmp" in med and path in med:
            per_run = [
                c.events_per_s / b.events_per_s
                for c in results
                if c.path == f"{path}@cmp"
                for b in results
                if b.path == path and b.run == c.run
            ]
            print(f"  {path}@cmp / {path} = {statistics.median(per_run):.3f} (median of per-run "
                  f"ratios: {', '.join(f'{x:.3f}' for x in per_run)})")  # fmt: skip
    if "faust" in med and "worker" in med:
        print(f"  worker / faust take() = {med['worker'] / med['faust']:.1f}x")
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        p50, p99 = statistics.median(latencies), q[98]
        print(f"  latency (all samples, n={len(latencies)}): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {max(latencies):.1f} ms; per-run p99 "
              f"{', '.join(f'{x:.1f}' for x in per_run_p99)} ms; "
              f"target p99 <= {TARGETS['p99_ms']:.0f} ms")  # fmt: skip


def sub_main(kind: str) -> None:
    parser = argparse.ArgumentParser()
    if kind in ("_orders", "_changes"):
        parser.add_argument("--bootstrap", required=True)
        parser.add_argument("--topic", required=True)
        parser.add_argument("--out", required=True)
        if kind == "_orders":
            for name in ("--rate", "--warmup", "--seconds"):
                parser.add_argument(name, type=float, required=True)
            parser.add_argument("--customers", type=int, required=True)
            parser.add_argument("--seed", type=int, required=True)
            parser.add_argument("--linger-ms", type=float, default=20)
            asyncio.run(run_orders(parser.parse_args(sys.argv[2:])))
        else:
            parser.add_argument("--ready", required=True)
            parser.add_argument("--stop", required=True)
            asyncio.run(run_changes(parser.parse_args(sys.argv[2:])))
        return
    for name in ("--bootstrap", "--redis-url", "--prefix", "--group", "--topics"):
        parser.add_argument(name, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--batch", type=int, default=5000)
    opts = parser.parse_args(sys.argv[2:])
    if kind == "_floor":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(run_floor(opts))
    else:
        run_faust(opts)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_floor", "_faust", "_orders", "_changes"):
        sys.path.insert(0, str(REPO))
        sub_main(sys.argv[1])
    else:
        main()
