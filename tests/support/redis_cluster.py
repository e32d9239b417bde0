"""A local Redis Cluster of a test's own (or the session's), started by the devstack code.

:class:`LocalRedisCluster` is ``segstream services up --redis-cluster N --replicas R`` without
the broker (:meth:`devstack.services.LocalServices.up_redis_cluster`): the same layout, the
same formation and the same records, so ``down`` and ``status`` work on its run directory too.
A test that kills a node (failover) starts its own; the session's ``redis_cluster`` fixture
(tests/conftest.py) is shared and must not be harmed.
"""

from __future__ import annotations

import os
from pathlib import Path

from devstack.processes import RunningService, kill
from devstack.redis_cluster import PRIMARY, REPLICA, NodeView, cluster_nodes, wait_cluster_ok
from devstack.services import LocalServices


class LocalRedisCluster:
    """N primaries (and R replicas of each) on free ports, each node in its own directory."""

    def __init__(self, directory: str | os.PathLike[str], primaries: int = 3, replicas: int = 0):
        self.services = LocalServices(Path(directory))
        self.primary_count = primaries
        self.replica_count = replicas
        self.nodes: list[RunningService] = []

    def start(self) -> LocalRedisCluster:
        """Start the nodes and return once every slot is served (``cluster_state:ok``)."""
        self.nodes = self.services.up_redis_cluster(0, self.primary_count, self.replica_count)
        return self

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """A URL naming one live node: what ``SEGSTREAM_REDIS_URL`` is set to for a cluster."""
        return self.alive()[0].url

    def alive(self) -> list[RunningService]:
        return [node for node in self.nodes if node.alive()]

    def node(self, port: int) -> RunningService:
        return next(node for node in self.nodes if node.port == port)

    def views(self) -> list[NodeView]:
        """The cluster as its first live node sees it now (roles change on a failover)."""
        return cluster_nodes(self.alive()[0].port)

    def primaries(self) -> list[RunningService]:
        """The live nodes serving slots now, in slot order (after a failover: the promoted
        replica in the dead primary's place)."""
        serving = [v for v in self.views() if v.role == PRIMARY and v.slots and not v.failing]
        serving.sort(key=lambda v: int(v.slots[0].split("-")[0]))
        return [self.node(v.port) for v in serving]

    def replicas(self) -> list[RunningService]:
        """The live nodes that follow a primary now."""
        return [self.node(v.port) for v in self.views() if v.role == REPLICA and not v.failing]

    def kill(self, node: RunningService) -> None:
        """SIGKILL one node (a crash: nothing saved); the cluster fails it over after the node
        timeout (3 s) if it was a primary with a replica."""
        kill(node)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait until every live node serves all slots again (e.g. after a failover)."""
        wait_cluster_ok([n.port for n in self.alive()], timeout_s, formed=False)

    def stop(self) -> None:
        """Stop every node this cluster started (by pid) and remove their directories."""
        self.services.down()
