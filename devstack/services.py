"""Start, watch and stop a local Kafka-protocol broker (tansu) and Redis for development and tests.

Over 400 lines: one class, LocalServices, whose start, record and stop of each kind of service
(plain, secure, cluster) read together; ports and probes are devstack.ports, processes
devstack.processes.

This is not a supervisor: it starts two processes, records their pids, ports and command lines
under a run directory, and later stops exactly those pids (checking the command line first, so a
recycled pid is never killed). It never touches a broker or Redis it did not start — machines here
often run a Redis on 6379 already, so a taken port is an error, never a reuse.

``secure=True`` starts the same two services behind TLS and passwords (docs/security.md, "Local
secured services"): Redis with ``--tls-port`` only and ACL users, and, because tansu 0.6 can do
neither TLS nor SCRAM itself, tansu on an internal loopback port behind
:mod:`devstack.kafka_gateway` (TLS + SASL SCRAM-SHA-512), which takes the broker's public port.
The gateway is a third recorded process, so ``down`` stops it like the others.

``redis_cluster=N`` starts a Redis Cluster instead of the single Redis: N primaries (and
``redis_replicas`` replicas of each) on consecutive ports from the Redis port, each node with
its own directory under the run directory, each recorded (``redis-1``, ``redis-2``, ...) so
``status`` lists them and ``down`` stops exactly them. :mod:`devstack.redis_cluster` lays the
nodes out and forms the cluster. Not with ``secure`` yet (refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

from devstack.client_env import SEGSTREAM_USER, SecureAccess, client_settings
from devstack.local_secrets import SecureMaterial, create_material, load_access, remove_material
from devstack.ports import (
    bind_refused,
    free_port,
    kafka_answers,
    kafka_tls_answers,
    port_in_use,
    redis_answers,
    redis_tls_answers,
)
from devstack.processes import (
    RunningService,
    log_tail,
    redis_server_binary,
    tansu_binary,
    terminate,
)
from devstack.redis_cluster import (
    BUS_PORT_OFFSET,
    NodePlan,
    cluster_layout,
    cluster_ports,
    form_cluster,
    node_args,
    node_count,
)
from segstream.errors import ServiceError

KAFKA = "kafka"
REDIS = "redis"
#: Secure services only: the plaintext tansu behind the gateway (``kafka`` is then the gateway).
KAFKA_BACKEND = "kafka-backend"
SERVICE_NAMES = (KAFKA, REDIS)
ALL_NAMES = (KAFKA, KAFKA_BACKEND, REDIS)
START_TIMEOUT_S = 15.0
#: The module the secure broker's gateway runs (``python -m``); also its pid-reuse marker.
GATEWAY_MODULE = "devstack.kafka_gateway"


#: Tries of :meth:`LocalServices.up` when a picked port is taken before the bind.
PORT_ATTEMPTS = 3


#: A readiness check: does the service on this port answer?
Probe = Callable[[int], bool]


class LocalServices:
    """A broker and a Redis under one run directory: ``up``, ``status``, ``down``."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    # -- queries -------------------------------------------------------------------------------
    def _state_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _cluster_names(self) -> list[str]:
        """Recorded Redis Cluster nodes (``redis-1``, ``redis-2``, ...), in order."""
        indexes = []
        for path in self.run_dir.glob("redis-*.json"):
            index = path.stem.removeprefix("redis-")
            if index.isdigit():
                indexes.append(int(index))
        return [f"redis-{i}" for i in sorted(indexes)]

    def recorded(self) -> dict[str, RunningService]:
        """Services this run directory says it started (alive or not)."""
        found: dict[str, RunningService] = {}
        for name in (*ALL_NAMES, *self._cluster_names()):
            path = self._state_file(name)
            if path.is_file():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    found[name] = RunningService(**json.loads(path.read_text()))
        return found

    def status(self) -> dict[str, tuple[RunningService | None, bool]]:
        """For each service: its record (if any) and whether that very process still runs.

        The broker and Redis always appear (Redis as its cluster's nodes when it is one); the
        secure broker's backend only when recorded.
        """
        recs = self.recorded()
        nodes = self.cluster_nodes()
        names = [
            n for n in ALL_NAMES if n in recs or (n in SERVICE_NAMES and not (n == REDIS and nodes))
        ]
        names += [svc.name for svc in nodes]
        return {n: (recs.get(n), bool(recs.get(n) and recs[n].alive())) for n in names}

    def cluster_nodes(self) -> list[RunningService]:
        """The recorded nodes of the local Redis Cluster: redis-1 first, primaries then replicas."""
        recs = self.recorded()
        return [recs[n] for n in self._cluster_names() if n in recs]

    def secure_access(self) -> SecureAccess | None:
        """Names and files of the secure services' users (``None``: plain or not started)."""
        return load_access(self.run_dir)

    def client_settings(self, user: str = SEGSTREAM_USER) -> dict[str, str]:
        """Flat setting name -> value a client needs for the services running from here.

        What ``segstream services env`` prints and the demo uses. Raises
        :class:`ServiceError` when the broker or Redis is not running.
        """
        recs = self.recorded()
        kafka, redis = recs.get(KAFKA), recs.get(REDIS)
        nodes = [n for n in self.cluster_nodes() if n.alive()]
        if nodes:  # a cluster: the URL names one node (the first alive), clients find the rest
            redis = nodes[0]
        if kafka is None or redis is None or not (kafka.alive() and redis.alive()):
            raise ServiceError(
                f"the local services of {self.run_dir} are not running; "
                "start them with `segstream services up` (with the same --run-dir)"
            )
        access = self.secure_access()
        if access is None and user != SEGSTREAM_USER:
            raise ServiceError(
                f"the plain local services have no {user} user; "
                "start them with `segstream services up --secure`"
            )
        return client_settings(kafka.url, redis.port, access, user, cluster=bool(nodes))

    # -- lifecycle -----------------------------------------------------------------------------
    def up(
        self,
        kafka_port: int,
        redis_port: int,
        *,
        secure: bool = False,
        prefix: str = "ss",
        redis_cluster: int = 0,
        redis_replicas: int = 0,
    ) -> dict[str, RunningService]:
        """:meth:`start`; with ports picked here (0), a port another process took between the
        pick and the bind (ephemeral ports are also every outgoing connection's) makes it pick
        again, twice at most."""
        attempts = PORT_ATTEMPTS if 0 in (kafka_port, redis_port) else 1
        for attempt in range(1, attempts + 1):
            try:
                return self.start(
                    kafka_port, redis_port, secure=secure, prefix=prefix,
                    redis_cluster=redis_cluster, redis_replicas=redis_replicas,
                )  # fmt: skip
            except ServiceError as exc:
                if attempt == attempts or not bind_refused(str(exc)):
                    raise
        raise AssertionError("unreachable")

    def start(
        self,
        kafka_port: int,
        redis_port: int,
        *,
        secure: bool = False,
        prefix: str = "ss",
        redis_cluster: int = 0,
        redis_replicas: int = 0,
    ) -> dict[str, RunningService]:
        """Start both services (or neither), wait until both answer, and record them.

        Port 0 means "pick a free port". Raises :class:`ServiceError` with a one-line message
        when a port is taken, a binary is missing or a service dies during start-up.
        ``secure``: TLS and passwords (see the module's docstring); the Redis ACL users may
        touch keys under ``prefix`` only. ``redis_cluster``: a Redis Cluster of that many
        primaries, each with ``redis_replicas`` replicas, on ``redis_port``, ``redis_port + 1``,
        ... (0, the default: one plain Redis).
        """
        plans = self._prepare(redis_port, redis_cluster, redis_replicas, secure=secure)
        kafka_port = kafka_port or free_port()
        wanted = [(KAFKA, kafka_port)]
        if not plans:
            redis_port = redis_port or free_port()
            wanted.append((REDIS, redis_port))
        for name, port in wanted:
            if port_in_use(port):
                var = "SEGSTREAM_KAFKA_PORT" if name == KAFKA else "SEGSTREAM_REDIS_PORT"
                raise ServiceError(
                    f"port {port} for {name} is already taken by another process; "
                    f"choose another with --{name}-port or {var} (0 picks a free one)"
                )
        started: dict[str, RunningService] = {}
        try:
            if secure:
                probes = self._start_secure(kafka_port, redis_port, prefix, started)
            else:
                started[KAFKA] = self._start_kafka(kafka_port)
                if not plans:
                    started[REDIS] = self._start_redis(redis_port)
                probes = {KAFKA: kafka_answers, REDIS: redis_answers}
            started.update(self._start_cluster(plans))
            deadline = time.monotonic() + START_TIMEOUT_S
            for name, svc in started.items():
                self._wait_ready(svc, deadline, probes.get(name, redis_answers))
            if plans:
                form_cluster(plans)
        except BaseException:
            self._stop_all(started.values())
            remove_material(self.run_dir)
            raise
        if not secure:
            remove_material(self.run_dir)  # a crashed secure run's leftovers must not linger
        return started

    def up_redis_cluster(
        self, first_port: int, primaries: int, replicas: int = 0
    ) -> list[RunningService]:
        """A Redis Cluster alone (no broker), recorded like :meth:`up`'s: for tests and
        benchmarks that need a cluster of their own. ``down`` stops it."""
        plans = self._prepare(first_port, primaries, replicas, secure=False)
        started: dict[str, RunningService] = {}
        try:
            started.update(self._start_cluster(plans))
            deadline = time.monotonic() + START_TIMEOUT_S
            for svc in started.values():
                self._wait_ready(svc, deadline, redis_answers)
            form_cluster(plans)
        except BaseException:
            self._stop_all(started.values())
            raise
        return list(started.values())

    def _prepare(
        self, redis_port: int, redis_cluster: int, redis_replicas: int, *, secure: bool
    ) -> list[NodePlan]:
        """Refuse a second start and forget dead records; the cluster's layout, if one."""
        if redis_cluster < 0:
            raise ServiceError(
                f"--redis-cluster must be 0 (one plain Redis) or more, not {redis_cluster}"
            )
        if redis_replicas and not redis_cluster:
            raise ServiceError(
                "--replicas needs --redis-cluster N (replicas of a cluster's primaries)"
            )
        if secure and redis_cluster:
            raise ServiceError(
                "--secure with --redis-cluster is not supported yet: "
                "start a plain cluster (drop --secure) or a secured single Redis"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        running = {n: s for n, (s, alive) in self.status().items() if alive and s}
        if running:
            names = ", ".join(f"{s.name} (pid {s.pid}, {s.url})" for s in running.values())
            raise ServiceError(
                f"already running from {self.run_dir}: {names}; run `segstream services down` first"
            )
        for stale in self.recorded().values():  # dead: a new start must not list them
            self._forget(stale)
        if not redis_cluster:
            return []
        count = node_count(redis_cluster, redis_replicas)
        ports = cluster_ports(
            redis_port, count, free_port, lambda port: not port_in_use(port + BUS_PORT_OFFSET)
        )
        plans = cluster_layout(ports, redis_cluster, redis_replicas)
        bus_ports = f"{ports[0] + BUS_PORT_OFFSET}..{ports[-1] + BUS_PORT_OFFSET}"
        for plan in plans:
            for port in (plan.port, plan.bus_port):
                if port_in_use(port):
                    raise ServiceError(
                        f"port {port} for Redis Cluster node {plan.name} is already taken by "
                        f"another process; the {count} nodes use ports {ports[0]}..{ports[-1]} "
                        f"and bus ports {bus_ports}: "
                        "choose another first port with --redis-port or SEGSTREAM_REDIS_PORT "
                        "(0 picks free ones)"
                    )
        return plans

    def restart_kafka(self, port: int) -> RunningService:
        """Start the broker alone again on ``port`` (after it died); for fault tests and ops.

        The local broker keeps its topics in memory: it comes back empty. Plain services only.
        """
        if self.secure_access() is not None:
            raise ServiceError("restart_kafka supports the plain local services only")
        recorded = self.recorded().get(KAFKA)
        if recorded is not None and recorded.alive():
            raise ServiceError(f"{KAFKA} is still running (pid {recorded.pid})")
        svc = self._start_kafka(port)
        self._wait_ready(svc, time.monotonic() + START_TIMEOUT_S)
        return svc

    def down(self) -> list[RunningService]:
        """Stop the processes this run directory started, by pid; returns what was stopped.

        The secure services' certificates and passwords are removed with them.
        """
        recorded = list(self.recorded().values())
        stopped = [svc for svc in recorded if svc.alive()]
        self._stop_all(recorded)
        remove_material(self.run_dir)
        return stopped

    def _stop_all(self, services: Iterable[RunningService]) -> None:
        """Terminate (all at once: a cluster's nodes exit in parallel) and forget ``services``."""
        services = list(services)
        for svc in services:
            if svc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(svc.pid, signal.SIGTERM)
        for svc in services:
            terminate(svc)
            self._forget(svc)

    def _forget(self, svc: RunningService) -> None:
        """Remove a stopped service's record, pid file and (a cluster node's) directory."""
        self._state_file(svc.name).unlink(missing_ok=True)
        (self.run_dir / f"{svc.name}.pid").unlink(missing_ok=True)
        if svc.role:
            shutil.rmtree(self._node_dir(svc.name), ignore_errors=True)

    # -- internals -----------------------------------------------------------------------------
    def _spawn(
        self,
        name: str,
        port: int,
        url: str,
        binary: Path,
        args: list[str],
        marker: str = "",
        env: Mapping[str, str] | None = None,
        role: str = "",
    ) -> RunningService:
        log = self.run_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(binary), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                env=None if env is None else dict(env),
                start_new_session=True,  # a Ctrl-C in the caller's terminal is ours to handle
            )
        svc = RunningService(name, proc.pid, port, url, str(binary), str(log), marker, role)
        # Popen returns while the child may still be inside exec (its /proc exe and command
        # line not yet the new program's): a check in that window would call it dead.
        deadline = time.monotonic() + 2.0
        while not svc.alive() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        self._state_file(name).write_text(json.dumps(asdict(svc)))
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        return svc

    def _start_kafka(
        self, port: int, advertised_port: int | None = None, name: str = KAFKA
    ) -> RunningService:
        binary = tansu_binary()
        args = [
            "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://localhost:{advertised_port or port}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        return self._spawn(name, port, f"localhost:{port}", binary, args)

    def _start_redis(self, port: int) -> RunningService:
        binary = redis_server_binary()
        args = [
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.run_dir.resolve()), "--protected-mode", "no",
        ]  # fmt: skip
        return self._spawn(REDIS, port, f"redis://127.0.0.1:{port}/0", binary, args)

    def _node_dir(self, name: str) -> Path:
        return self.run_dir.resolve() / name

    def _start_cluster(self, plans: list[NodePlan]) -> dict[str, RunningService]:
        """Start one redis-server per planned node, each in a fresh directory of its own (a
        node's ``nodes-PORT.conf`` from an earlier run would make it rejoin that old cluster)."""
        binary = redis_server_binary()
        started = {}
        for plan in plans:
            directory = self._node_dir(plan.name)
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            url = f"redis://127.0.0.1:{plan.port}/0"
            args = node_args(plan.port, str(directory))
            started[plan.name] = self._spawn(
                plan.name, plan.port, url, binary, args, role=plan.role
            )
        return started

    def _start_secure(
        self, kafka_port: int, redis_port: int, prefix: str, started: dict[str, RunningService]
    ) -> dict[str, Probe]:
        """tansu on an internal port, the TLS + SCRAM gateway on ``kafka_port``, Redis with TLS
        and ACL users; fills ``started`` as each process starts (so a failure stops them)."""
        material = create_material(self.run_dir.resolve(), prefix)
        context = ssl.create_default_context(cafile=material.access.ca_file)
        backend_port = free_port()
        # Metadata must send clients to the gateway, never to tansu's plaintext port.
        started[KAFKA_BACKEND] = self._start_kafka(backend_port, kafka_port, KAFKA_BACKEND)
        started[KAFKA] = self._start_gateway(kafka_port, backend_port, material)
        started[REDIS] = self._start_redis_tls(redis_port, material)
        return {
            KAFKA_BACKEND: kafka_answers,
            KAFKA: lambda port: kafka_tls_answers(port, context),
            REDIS: lambda port: redis_tls_answers(port, context),
        }

    def _start_gateway(
        self, port: int, backend_port: int, material: SecureMaterial
    ) -> RunningService:
        args = [
            "-m", GATEWAY_MODULE,
            "--listen", f"127.0.0.1:{port}",
            "--backend", f"127.0.0.1:{backend_port}",
            "--cert", material.server_cert,
            "--key", material.server_key,
            "--users-file", material.kafka_users_file,
        ]  # fmt: skip
        # The gateway imports devstack from this checkout, installed or not.
        source_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p)
        return self._spawn(
            KAFKA,
            port,
            f"localhost:{port}",
            Path(sys.executable),
            args,
            marker=GATEWAY_MODULE,
            env={**os.environ, "PYTHONPATH": path},
        )

    def _start_redis_tls(self, port: int, material: SecureMaterial) -> RunningService:
        binary = redis_server_binary()
        args = [
            "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", material.server_cert, "--tls-key-file", material.server_key,
            "--tls-ca-cert-file", material.access.ca_file, "--tls-auth-clients", "no",
            "--aclfile", material.redis_acl_file,
            "--save", "", "--appendonly", "no",
            "--dir", str(self.run_dir.resolve()), "--protected-mode", "no",
        ]  # fmt: skip
        url = f"rediss://{SEGSTREAM_USER}@127.0.0.1:{port}/0"
        return self._spawn(REDIS, port, url, binary, args)

    def _wait_ready(self, svc: RunningService, deadline: float, probe: Probe | None = None) -> None:
        if probe is None:
            probe = kafka_answers if svc.name == KAFKA else redis_answers
        while time.monotonic() < deadline:
            if not svc.alive():
                tail = log_tail(Path(svc.log))
                raise ServiceError(
                    f"{svc.name} exited during start-up (see {svc.log}): {tail or 'no output'}"
                )
            if probe(svc.port):
                return
            time.sleep(0.02)
        raise ServiceError(
            f"{svc.name} did not answer on port {svc.port} within {START_TIMEOUT_S:.0f}s "
            f"(see {svc.log})"
        )


@contextlib.contextmanager
def local_services(
    run_dir: str | os.PathLike[str],
    *,
    secure: bool = False,
    prefix: str = "ss",
    redis_cluster: int = 0,
    redis_replicas: int = 0,
) -> Iterator[dict[str, RunningService]]:
    """A broker and Redis (or a Redis Cluster of ``redis_cluster`` primaries) on free ports for
    the duration of a ``with`` block (demo, tests)."""
    services = LocalServices(run_dir)
    started = services.up(
        0,
        0,
        secure=secure,
        prefix=prefix,
        redis_cluster=redis_cluster,
        redis_replicas=redis_replicas,
    )
    try:
        yield started
    finally:
        services.down()
