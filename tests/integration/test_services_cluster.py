"""`segstream services up --redis-cluster N [--replicas R]` against real redis-servers, as a user
runs it; and the tests' own :class:`LocalRedisCluster` built on the same code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from devstack.ports import bind_refused, free_port, port_in_use
from devstack.redis_cluster import BUS_PORT_OFFSET, PRIMARY, REPLICA, cluster_nodes, parse_info
from devstack.services import PORT_ATTEMPTS, LocalServices
from segstream.settings import Settings
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def segstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
        check=False,
    )


def evaluated(lines: str) -> dict[str, str]:
    """The SEGSTREAM_* variables of a bash that evaluated ``lines`` (from a clean environment)."""
    done = subprocess.run(
        ["bash", "-c", 'eval "$LINES"; env -0'],
        env={"PATH": os.environ["PATH"], "LINES": lines},
        capture_output=True,
        check=True,
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("SEGSTREAM_")}


def free_run_of_ports(count: int) -> int:
    """A first port P such that P .. P+count-1 and their bus ports are all free right now."""
    for _ in range(200):
        first = free_port()
        ports = [first + i for i in range(count)]
        if ports[-1] + BUS_PORT_OFFSET <= 65535 and not any(
            port_in_use(p) or port_in_use(p + BUS_PORT_OFFSET) for p in ports
        ):
            return first
    raise AssertionError(f"no {count} consecutive free ports")


def up_on_a_free_run(count: int, *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`services up --redis-cluster count` on a free run of ports: (its first port, the run).

    A port free when picked may be bound before the node starts (another test's server, or an
    outgoing connection's ephemeral port): then the start fails saying so (``bind_refused``)
    and a new run is picked, as `services up` does for the ports it picks itself.
    """
    for _ in range(PORT_ATTEMPTS):
        first = free_run_of_ports(count)
        up = segstream("services", "up", "--redis-cluster", str(count),
                       "--redis-port", str(first), *args)  # fmt: skip
        if not bind_refused(up.stderr):
            break
    return first, up


def cluster_info(port: int) -> dict[str, str]:
    with redis.Redis(port=port, decode_responses=True) as client:
        return parse_info(str(client.execute_command("CLUSTER", "INFO")))


def pids_of(run_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in run_dir.glob("*.pid")]


def process_runs(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_three_primary_cluster_serves_keys_over_every_node_and_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    first, up = up_on_a_free_run(3, "--run-dir", str(tmp_path), "--kafka-port", "0")
    ports = [first, first + 1, first + 2]
    try:
        assert up.returncode == 0, up.stderr
        for i, port in enumerate(ports, start=1):
            assert f"redis-{i}" in up.stdout and f"redis://127.0.0.1:{port}/0" in up.stdout
        for port in ports:
            cluster = cluster_info(port)
            assert cluster["cluster_state"] == "ok" and cluster["cluster_slots_ok"] == "16384"
            assert cluster["cluster_known_nodes"] == "3" and cluster["cluster_size"] == "3"
        pids = pids_of(tmp_path)
        assert len(pids) == 4 and all(process_runs(pid) for pid in pids)  # broker + 3 nodes

        status = segstream("services", "status", "--run-dir", str(tmp_path))
        assert status.returncode == 0
        assert status.stdout.count("running") == 4 and status.stdout.count("primary") == 3
        assert "redis " not in status.stdout  # no "not started" single Redis beside the nodes

        lines = segstream("services", "env", "--run-dir", str(tmp_path))
        assert lines.returncode == 0, lines.stderr
        env = evaluated(lines.stdout)
        assert env["SEGSTREAM_REDIS_URL"] in {f"redis://127.0.0.1:{p}/0" for p in ports}
        assert env["SEGSTREAM_REDIS_CLUSTER"] == "1"
        settings = Settings.from_env(env)
        assert settings.get("redis_cluster") is True

        client = RedisCluster.from_url(settings.redis.url, decode_responses=True)
        try:
            keys = [f"k:{i}" for i in range(300)]
            for key in keys:
                client.set(key, key.upper())
            assert [client.get(key) for key in keys] == [key.upper() for key in keys]
        finally:
            client.close()
        per_node = {}
        for port in ports:
            with redis.Redis(port=port) as node:
                per_node[port] = node.dbsize()
        assert sum(per_node.values()) == 300 and all(n > 60 for n in per_node.values()), per_node
    finally:
        down = segstream("services", "down", "--run-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped redis-") == 3 and "stopped kafka" in down.stdout
    assert not any(process_runs(pid) for pid in pids)
    assert not any(port_in_use(p) or port_in_use(p + BUS_PORT_OFFSET) for p in ports)
    assert not any((tmp_path / f"redis-{i}").exists() for i in (1, 2, 3))
    status = segstream("services", "status", "--run-dir", str(tmp_path))
    assert status.returncode == 3


def test_replicas_follow_one_primary_each_and_receive_its_writes(tmp_path: Path) -> None:
    env = {
        "SEGSTREAM_RUN_DIR": str(tmp_path),
        "SEGSTREAM_KAFKA_PORT": "0",
        "SEGSTREAM_REDIS_PORT": "0",
        "SEGSTREAM_SERVICES_REDIS_CLUSTER": "3",  # the flags fall back to these variables
        "SEGSTREAM_SERVICES_REDIS_REPLICAS": "1",
    }
    up = segstream("services", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        nodes = LocalServices(tmp_path).cluster_nodes()
        assert [n.role for n in nodes] == [PRIMARY] * 3 + [REPLICA] * 3
        views = cluster_nodes(nodes[0].port)
        primaries = {v.node_id: v for v in views if v.role == PRIMARY}
        replicas = [v for v in views if v.role == REPLICA]
        assert len(primaries) == 3 and all(v.slots for v in primaries.values())
        assert Counter(v.primary_id for v in replicas) == {pid: 1 for pid in primaries}
        for node in nodes:  # up returned only once every replica's link was up
            with redis.Redis(port=node.port) as client:
                replication = client.info("replication")
            if node.role == PRIMARY:
                assert replication["connected_slaves"] == 1
                assert replication["slave0"]["state"] == "online"
            else:
                assert replication["role"] == "slave"
                assert replication["master_link_status"] == "up"

        with RedisCluster.from_url(nodes[0].url) as client:
            client.set("{t}:k", "v")
            primary = client.get_node_from_key("{t}:k")
            assert client.execute_command("WAIT", 1, 5000, target_nodes=primary) == 1
        follower = next(v for v in replicas if primaries[v.primary_id].port == primary.port)
        with redis.Redis(port=follower.port) as replica:
            replica.execute_command("READONLY")  # a replica serves reads of its primary's slots
            assert replica.get("{t}:k") == b"v"  # WAIT said it got there
    finally:
        down = segstream("services", "down", env=env)
    assert down.returncode == 0 and down.stdout.count("stopped redis-") == 6
    assert not any(port_in_use(n.port) for n in nodes)


def test_a_taken_node_port_is_a_one_line_error_and_nothing_is_left_running(tmp_path: Path) -> None:
    first = free_run_of_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first + 2))  # the third node's port
        squatter.listen()
        result = segstream(
            "services", "up", "--redis-cluster", "3", "--redis-port", str(first),
            "--kafka-port", "0", "--run-dir", str(tmp_path),
        )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"port {first + 2} for Redis Cluster node redis-3 is already taken" in result.stderr
    assert not list(tmp_path.glob("*.pid")) and not port_in_use(first)


def test_secure_with_a_cluster_is_refused_in_one_line(tmp_path: Path) -> None:
    result = segstream(
        "services", "up", "--secure", "--redis-cluster", "3", "--run-dir", str(tmp_path),
        "--kafka-port", "0", "--redis-port", "0",
    )  # fmt: skip
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--secure with --redis-cluster is not supported yet" in result.stderr
    assert not list(tmp_path.glob("*.pid"))


@pytest.mark.slow
def test_a_killed_primary_is_replaced_by_its_replica(tmp_path: Path) -> None:
    with LocalRedisCluster(tmp_path, primaries=3, replicas=1) as cluster:
        before = cluster.primaries()
        assert len(before) == 3 and len(cluster.replicas()) == 3
        with RedisCluster.from_url(cluster.url) as client:
            client.set("{x}:k", "kept")
            owner = client.get_node_from_key("{x}:k")
            assert client.execute_command("WAIT", 1, 5000, target_nodes=owner) == 1
            victim = cluster.node(owner.port)
        cluster.kill(victim)
        assert not victim.alive()
        promoted = lambda: victim not in cluster.primaries() and len(cluster.primaries()) == 3  # noqa: E731
        wait_for(promoted, 30, "the replica to take the killed primary's slots")
        cluster.wait_ok()
        with RedisCluster.from_url(cluster.url) as client:
            assert client.get("{x}:k") == b"kept"
        nodes = cluster.nodes
    assert not any(node.alive() for node in nodes)


def test_the_session_cluster_fixture_is_a_working_three_primary_cluster(
    redis_cluster: LocalRedisCluster, unique: str
) -> None:
    assert len(redis_cluster.primaries()) == 3
    with RedisCluster.from_url(redis_cluster.url, decode_responses=True) as client:
        client.set(f"{unique}:{{a}}", "1")
        client.set(f"{unique}:{{b}}", "2")
        assert client.mget_nonatomic([f"{unique}:{{a}}", f"{unique}:{{b}}"]) == ["1", "2"]
        client.delete(f"{unique}:{{a}}", f"{unique}:{{b}}")
