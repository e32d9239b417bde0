"""``segstream demo``: what a new user runs first, on a fresh machine, with nothing but this repo.

Over 400 lines: the demo's script (start, history, train, live view, report, stop) kept in order.

It starts its own broker and Redis on free ports (never the machine's own), produces a seeded
synthetic history, lets a real worker process ingest it, trains the model, streams live traffic
while a terminal view shows events/s, lag, segment sizes, the latest changes and drift, writes
the analyst report, and stops everything it started, also on Ctrl-C. With ``--secure`` the same
demo runs over TLS + SASL SCRAM-SHA-512 and a Redis ACL user (``services up --secure``): every
client it creates, and every command it starts, gets the security settings from one place.

The steps are the same commands a user would run by hand (``segstream worker``, ``train``,
``report``), started as subprocesses with the demo's settings in their environment; the demo
adds orchestration and the view, no logic of its own.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from devstack.ports import free_port
from devstack.services import LocalServices, local_services
from segstream.errors import SegstreamError
from segstream.options import var_option
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import Settings

#: How long the worker may go without applying a single record before the demo gives up.
STALL_TIMEOUT_S = 60.0


@dataclass
class ChangeFeed:
    """Segment changes read from the topic in a background thread, for the live view."""

    latest: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    sizes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    total: int = 0
    _current: dict[str, tuple[int, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, change: dict[str, Any]) -> None:
        """Count one change; a repeat (same customer, same or older seq) is ignored."""
        customer = str(change.get("customer_id"))
        seq = int(change.get("segment_seq") or change.get("seq") or 0)
        with self._lock:
            known = self._current.get(customer)
            if known and seq and seq <= known[0]:
                return
            if known:
                self.sizes[known[1]] -= 1
            new = str(change.get("new_segment"))
            self._current[customer] = (seq, new)
            self.sizes[new] += 1
            self.reasons[str(change.get("reason"))] += 1
            self.total += 1
            self.latest.appendleft(change)

    def snapshot(self) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int], int]:
        with self._lock:
            sizes = {k: v for k, v in self.sizes.items() if v > 0}
            return list(self.latest), sizes, dict(self.reasons), self.total


def _follow_changes(settings: Settings, feed: ChangeFeed, stop: threading.Event) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.kafka.segment_changes_topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
        **kafka_options(settings.kafka),
    )
    try:
        while not stop.is_set():
            for message in consumer:
                change = _change_of(message.value)
                if change is not None:
                    feed.add(change)
                if stop.is_set():
                    break
    finally:
        consumer.close()


def _change_of(value: bytes | None) -> dict[str, Any] | None:
    """A segment change to show, or ``None`` for any record that is not one (a tombstone, a
    record some other client wrote): the live view skips it rather than stop following."""
    try:
        change = json.loads(value) if value else None
        if isinstance(change, dict):
            int(change.get("segment_seq") or change.get("seq") or 0)
            return change
    except (ValueError, TypeError):
        pass
    return None


def _segstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "segstream", *args]


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _drift_text(settings: Settings) -> str:
    """The online model's drift as the scoring service last saved it (``{prefix}:scoring``)."""
    from worker.connect import sync_redis

    client = sync_redis(settings.redis, decode_responses=True)
    try:
        status: dict[str, str] = client.hgetall(f"{settings.redis.prefix}:scoring")  # type: ignore[assignment]
    finally:
        client.close()
    if not status.get("drift_max"):
        return f"n/a (model {status.get('model_version', 'none')})"
    if status.get("drift_ready") == "0":
        return "warming up (taking the stream's reference)"
    flag = "  RETRAIN PROPOSED" if status.get("drift_exceeded") in ("1", "true", "True") else ""
    emerging = int(status.get("emerging_groups") or 0)
    return (
        f"mean {float(status['drift_mean']):.2f}, max {float(status['drift_max']):.2f} segment "
        f"spreads (bound {float(status.get('drift_bound', 'nan')):.2f}), mix "
        f"{float(status.get('drift_mix') or 0):.0%}"
        + (f", {emerging} emerging group(s)" if emerging else "")
        + flag
    )


@contextlib.contextmanager
def _worker_process(
    settings: Settings, log_path: Path, command: str = "worker"
) -> Iterator[subprocess.Popen[bytes]]:
    """``segstream worker`` (or another long-running ``command``: the dashboard) until the
    block ends: SIGTERM, then SIGKILL if it hangs."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _segstream(command),
            env=settings.to_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _counters(settings: Settings) -> dict[str, int]:
    from worker.state.reader import StateReader

    with StateReader(settings.redis, settings.redis.prefix) as reader:
        return reader.counters()


def _wait_ingested(settings: Settings, expected: int, worker: subprocess.Popen[bytes]) -> float:
    """Block until the worker has received ``expected`` records; returns events/s observed.

    Gives up, with the worker's own last error from /health, when it makes no progress for
    :data:`STALL_TIMEOUT_S` (a worker that cannot fetch would otherwise look merely slow).
    """
    started = last_progress = time.monotonic()
    last_print, last_received = 0.0, -1
    while True:
        received = _counters(settings).get("received", 0)
        now = time.monotonic()
        if received >= expected:
            return received / max(now - started, 1e-9)
        if worker.poll() is not None:
            raise SegstreamError(f"the worker exited with status {worker.returncode}")
        if received != last_received:
            last_received, last_progress = received, now
        elif now - last_progress > STALL_TIMEOUT_S:
            error = _health(settings.web_port).get("last_error") or "no error reported"
            raise SegstreamError(
                f"the worker applied nothing for {STALL_TIMEOUT_S:.0f}s "
                f"({received:,}/{expected:,} records); its last error: {error}"
            )
        if now - last_print > 3:
            rate = received / max(now - started, 1e-9)
            click.echo(f"  worker applied {received:,}/{expected:,} records ({rate:,.0f}/s)")
            last_print = now
        time.sleep(0.5)


def _render(
    phase: str,
    feed: ChangeFeed,
    stats: dict[str, Any],
    drift: str,
) -> Any:
    from rich.console import Group
    from rich.table import Table

    latest, sizes, reasons, total = feed.snapshot()
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[bold]{phase}[/]",
        f"produced {stats['produced']:,} ({stats['produce_rate']:,.0f}/s)",
        f"applied {stats['received']:,} ({stats['apply_rate']:,.0f}/s)",
        f"lag {stats['lag']:,}",
        f"dead letters {stats['dead_lettered']:,}",
    )
    head.add_row("", f"segment changes {total:,}", f"drift {drift}", "", "")
    size_table = Table(title="segment sizes", show_edge=False)
    size_table.add_column("segment")
    size_table.add_column("customers", justify="right")
    for name, count in sorted(sizes.items(), key=lambda kv: -kv[1]):
        size_table.add_row(name, f"{count:,}")
    change_table = Table(title="latest segment changes", show_edge=False)
    for column in ("customer", "from", "to", "reason", "model"):
        change_table.add_column(column)
    for change in latest:
        change_table.add_row(
            str(change.get("customer_id")),
            str(change.get("old_segment") or "-"),
            str(change.get("new_segment")),
            str(change.get("reason")),
            str(change.get("model_version")),
        )
    reason_line = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))
    return Group(head, size_table, change_table, f"changes by reason: {reason_line or '-'}")


@click.command("demo")
@var_option(
    "SEGSTREAM_DEMO_CUSTOMERS",
    "--customers",
    type=int,
    default=10000,
    help="Synthetic customers in the history.",
)
@var_option("SEGSTREAM_DEMO_DAYS", "--days", type=int, default=180, help="Days of history.")
@var_option(
    "SEGSTREAM_DEMO_MINUTES",
    "--minutes",
    type=float,
    default=0.75,
    help="How long the live stream runs after training.",
)
@var_option(
    "SEGSTREAM_DEMO_SEED",
    "--seed",
    type=int,
    default=7,
    help="Seed of the synthetic history and live traffic.",
)
@var_option(
    "SEGSTREAM_DEMO_OUT",
    "--out",
    "out_dir",
    default="demo-out",
    help="Where the model, report and logs are written.",
)
@var_option(
    "SEGSTREAM_DEMO_KEEP_RUNNING",
    "--keep-running",
    is_flag=True,
    help="Keep streaming, with the services up, until Ctrl-C.",
)
@var_option(
    "SEGSTREAM_DEMO_SECURE",
    "--secure",
    is_flag=True,
    help="Run over TLS, SASL SCRAM-SHA-512 and a Redis ACL user (`services up --secure`).",
)
@var_option(
    "SEGSTREAM_DEMO_REDIS_CLUSTER",
    "--redis-cluster",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Keep the state in a local Redis Cluster of N primaries (`services up --redis-cluster`).",
)
def demo(
    customers: int,
    days: int,
    minutes: float,
    seed: int,
    out_dir: str,
    keep_running: bool,
    secure: bool,
    redis_cluster: int,
) -> None:
    """End to end: services, synthetic history, worker, training, live stream, report."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # A `kill` or a closed terminal stops the demo like Ctrl-C does: through the cleanup below.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    t0 = time.monotonic()
    interrupted = False
    with (
        tempfile.TemporaryDirectory(prefix="segstream-demo-") as run_dir,
        local_services(run_dir, secure=secure, prefix="ss", redis_cluster=redis_cluster),
    ):
        # The same settings `segstream services env` prints (secure: the ACL's prefix, "ss").
        services = {"redis_prefix": "ss"} | LocalServices(run_dir).client_settings()
        settings = Settings.of(
            **services,
            group_id="segstream-demo",
            run_dir=str(out / "run"),
            model_dir=str(out / "models"),
            web_port=free_port(),
            dashboard_port=free_port(),
            sweep_interval_s=5.0,
        )
        secured = " over TLS + SASL SCRAM-SHA-512 and a Redis ACL user" if secure else ""
        _step(
            t0,
            f"[1/6] started broker {settings.kafka.bootstrap} and Redis "
            f"{redact(settings.redis.url)}{secured} (for this demo only)",
        )
        click.echo(
            '  to look around from another terminal while it runs: eval "$(segstream '
            f'services env --run-dir {shlex.quote(run_dir)})"; export SEGSTREAM_REDIS_PREFIX=ss'
        )
        try:
            _run(settings, out, customers, days, minutes, seed, keep_running, t0)
        except KeyboardInterrupt:
            interrupted = True
            click.echo("\ninterrupted: stopping the worker and the services...")
    click.echo(f"services stopped; total {time.monotonic() - t0:.0f}s")
    if interrupted:
        sys.exit(130)


def _step(t0: float, text: str) -> None:
    """A demo step's headline, with the seconds since the demo started."""
    click.secho(f"[{time.monotonic() - t0:5.0f}s] {text}", bold=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _send_profiles(settings: Settings, data: Any) -> int:
    """The personas' demographics as profile events (the profile consumer stores them)."""
    from kafka import KafkaProducer

    from producers.demographics import profiles
    from schemas.codec import encode
    from segstream.security import kafka_options

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, linger_ms=10, acks="all",
        **kafka_options(settings.kafka),
    )  # fmt: skip
    sent = 0
    for profile in profiles(data):
        producer.send(
            settings.kafka.profiles_topic, encode(profile), key=profile.customer_id.encode()
        )
        sent += 1
    producer.flush()
    producer.close()
    return sent


def _create_topics(settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, **kafka_options(settings.kafka)
    )
    topics = [
        NewTopic(name, num_partitions=settings.kafka.partitions, replication_factor=1)
        for name in (
            settings.kafka.orders_topic,
            settings.kafka.clicks_topic,
            settings.kafka.segment_changes_topic,
            settings.kafka.profiles_topic,
            settings.kafka.campaign_assignments_topic,
        )
    ] + [
        NewTopic(name, num_partitions=1, replication_factor=1)
        for name in (settings.kafka.dead_letter_topic, settings.kafka.control_topic)
    ]
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics(topics)
    admin.close()


def _run(
    settings: Settings,
    out: Path,
    customers: int,
    days: int,
    minutes: float,
    seed: int,
    keep_running: bool,
    t0: float,
) -> None:
    from producers.sinks import KafkaSink, KafkaSinkConfig
    from producers.synthetic import SyntheticConfig, default_start, generate

    _create_topics(settings)
    data = generate(SyntheticConfig(customers, days, seed, default_start(days)))
    labels_path = data.write_labels(out / "personas.csv")
    _step(
        t0,
        f"[2/6] generated {customers:,} customers over {days} days: {data.n_orders:,} "
        f"order events, {data.n_clicks:,} clicks (ground truth {labels_path})",
    )
    log_path = out / "worker.log"
    with (
        _worker_process(settings, log_path) as worker,
        _worker_process(settings, out / "dashboard.log", "dashboard"),
    ):
        _step(
            t0,
            f"[3/6] worker started (pid {worker.pid}, log {log_path}); producing the "
            "history to Kafka while it ingests",
        )
        click.echo(
            f"  live dashboard: http://127.0.0.1:{settings.dashboard_port}/  (open it in a "
            "browser: segment sizes, changes, transitions, drift, events/s, lag, dead letters)"
        )
        sink = KafkaSink(
            KafkaSinkConfig(
                bootstrap=settings.kafka.bootstrap,
                orders_topic=settings.kafka.orders_topic,
                clicks_topic=settings.kafka.clicks_topic,
                kafka=settings.kafka,
            )
        )
        topics = {"order": settings.kafka.orders_topic, "click": settings.kafka.clicks_topic}
        produce_started = time.monotonic()
        for kind, key, value in data.records():
            sink.send_raw(topics[kind], key, value)
        result = sink.close()
        produced = result.delivered
        profiled = _send_profiles(settings, data)
        click.echo(f"  sent {profiled:,} customer profiles (demographics) to the profiles topic")
        produce_s = time.monotonic() - produce_started
        click.echo(
            f"  produced {produced:,} records in {produce_s:.0f}s ({produced / produce_s:,.0f}/s)"
        )
        _wait_ingested(settings, produced, worker)
        ingest_s = time.monotonic() - produce_started
        click.echo(
            f"  history ingested by the worker: {produced:,} records in {ingest_s:.0f}s "
            f"({produced / ingest_s:,.0f}/s, produced and consumed at the same time)"
        )

        _step(t0, "[4/6] training K-means on the state in Redis (k chosen by silhouette)")
        trained = subprocess.run(
            _segstream("train", "--from", "redis", "--seed", str(seed)),
            env=settings.to_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        click.echo(trained.stdout.rstrip())
        if trained.returncode != 0:
            raise SegstreamError(f"training failed: {trained.stderr.strip()[-500:]}")
        _rescore_all(settings)
        from devstack.demo_campaign import create_campaign, simulate_response

        campaign = create_campaign(settings)  # one campaign, holdout 20 % (docs/campaigns.md)

        _step(t0, "[5/6] live traffic: sessions, orders and returns stamped now")
        feed, stop = ChangeFeed(), threading.Event()
        follower = threading.Thread(
            target=_follow_changes, args=(settings, feed, stop), daemon=True
        )
        follower.start()
        try:
            _live(settings, data.labels, feed, seed, minutes, keep_running, worker, produced)
        finally:
            stop.set()
            follower.join(timeout=5)
        _, sizes, reasons, total = feed.snapshot()
        if campaign is not None:
            sent = simulate_response(settings, data, seed)
            click.echo(f"  campaign {campaign}: simulated response, {sent:,} orders (treated "
                       "customers order 30 % more often; the report measures it)")  # fmt: skip

    _step(t0, "[6/6] writing the analyst report")
    report_dir = out / "report"
    reported = subprocess.run(
        _segstream("report", "--out", str(report_dir)),
        env=settings.to_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if reported.returncode != 0:
        click.secho(f"report failed: {reported.stderr.strip()[-500:]}", fg="red")
    else:
        click.echo(reported.stdout.rstrip())
    some_customer = next(iter(sorted(data.labels)))
    by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))
    click.secho(f"\n{total:,} segment changes published ({by_reason})", fg="green")
    click.echo(f"report:    {report_dir / 'report.html'}")
    click.echo(f"models:    {settings.model_dir}")
    click.echo(
        f"customer:  segstream customer {some_customer} --explain  (needs the services: run "
        "the demo with --keep-running and eval the `services env` line printed at its start)"
    )
    click.echo(
        f"took {time.monotonic() - t0:.0f}s; segment sizes: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]))
    )


def _rescore_all(settings: Settings) -> None:
    """Ask the running worker to re-score every customer against the newly trained model."""
    done = subprocess.run(
        _segstream("rescore"), env=settings.to_env(), capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        click.echo(done.stdout.rstrip())
    else:
        click.secho(f"rescore request failed: {done.stderr.strip()[-300:]}", fg="yellow")


def _live(
    settings: Settings,
    labels: dict[str, str],
    feed: ChangeFeed,
    seed: int,
    minutes: float,
    keep_running: bool,
    worker: subprocess.Popen[bytes],
    produced_before: int,
) -> None:
    from kafka import KafkaProducer
    from rich.console import Console
    from rich.live import Live

    from producers.live import LiveTraffic
    from schemas import encode

    traffic = LiveTraffic(labels, seed=seed + 1, run_tag=f"live{int(time.time())}")
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        linger_ms=10,
        acks="all",
        **kafka_options(settings.kafka),
    )
    console = Console()
    interactive = console.is_terminal
    deadline = time.monotonic() + minutes * 60
    produced = produced_before
    window: deque[tuple[float, int, int]] = deque(maxlen=20)
    last_plain = 0.0

    def stats() -> dict[str, Any]:
        counters = _counters(settings)
        now = time.monotonic()
        window.append((now, produced, counters.get("received", 0)))
        t_old, p_old, r_old = window[0]
        span = max(now - t_old, 1e-9)
        return {
            "produced": produced,
            "received": counters.get("received", 0),
            "produce_rate": (produced - p_old) / span,
            "apply_rate": (counters.get("received", 0) - r_old) / span,
            "lag": max(produced - counters.get("received", 0), 0),
            "dead_lettered": counters.get("dead_lettered", 0),
        }

    live = Live(console=console, refresh_per_second=4) if interactive else None
    with live if live is not None else contextlib.nullcontext():
        while keep_running or time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SegstreamError(f"the worker exited with status {worker.returncode}")
            for event in traffic.sessions(40, datetime.now(UTC)):
                topic = (
                    settings.kafka.orders_topic
                    if event.kind == "order"
                    else settings.kafka.clicks_topic
                )
                producer.send(topic, encode(event), key=str(event.customer_id).encode())
                produced += 1
            producer.flush()
            current = stats()
            drift = _drift_text(settings)
            if live is not None:
                live.update(_render("live", feed, current, drift))
            elif time.monotonic() - last_plain > 5:
                last_plain = time.monotonic()
                latest, _, _, total = feed.snapshot()
                click.echo(
                    f"  live: produced {current['produced']:,}, applied "
                    f"{current['received']:,} ({current['apply_rate']:,.0f}/s), lag "
                    f"{current['lag']:,}, changes {total:,}, drift "
                    f"{drift}"
                )
                for change in latest[:3]:
                    click.echo(
                        f"    {change.get('customer_id')}: {change.get('old_segment')} -> "
                        f"{change.get('new_segment')} ({change.get('reason')})"
                    )
            time.sleep(0.25)
    producer.close()
