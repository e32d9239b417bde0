"""Pure parts of the local service manager: backend choice, records, client env lines, secrets,
the Redis Cluster's layout."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from devstack.client_env import STOREFRONT_USER, SecureAccess, client_settings, env_lines
from devstack.local_secrets import (
    create_material,
    load_access,
    redis_acl_text,
    remove_material,
    write_secret,
)
from devstack.ports import bind_refused
from devstack.processes import RunningService, redis_server_binary, tansu_binary
from devstack.redis_cluster import (
    PRIMARY,
    REPLICA,
    cluster_layout,
    cluster_ports,
    parse_cluster_nodes,
)
from devstack.services import LocalServices
from segstream.errors import ServiceError
from segstream.security import kafka_options, read_secret
from segstream.settings import Settings
from tests.support.service_backend import choose_backend
from tests.support.waiting import wait_for


@pytest.mark.parametrize(
    ("env", "docker", "expected"),
    [
        ({}, False, "local"),
        ({}, True, "local"),  # Docker present but not asked for: the fast local path
        ({"SEGSTREAM_TEST_DOCKER": "0"}, True, "local"),
        ({"SEGSTREAM_TEST_DOCKER": "1"}, True, "docker"),
        ({"SEGSTREAM_TEST_DOCKER": "true"}, True, "docker"),
    ],
)
def test_backend_choice(env: dict[str, str], docker: bool, expected: str) -> None:
    assert choose_backend(env, docker) == expected


def test_asking_for_docker_without_an_engine_is_an_error_not_a_silent_fallback() -> None:
    with pytest.raises(ServiceError, match="no Docker engine answers"):
        choose_backend({"SEGSTREAM_TEST_DOCKER": "1"}, docker_answers=False)


def test_binaries_come_from_the_wheels_or_the_machine() -> None:
    assert tansu_binary().is_file()
    assert redis_server_binary().is_file()


def test_status_of_an_empty_run_dir_says_nothing_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    status = LocalServices(tmp_path).status()
    assert status == {"kafka": (None, False), "redis": (None, False)}


# -- secure local services: what a client is told, and how the secrets are kept -----------------
def _access(directory: str = "/run/s") -> SecureAccess:
    return SecureAccess(
        prefix="shop",
        ca_file=f"{directory}/ca.pem",
        kafka_password_file=f"{directory}/kafka.password",
        redis_password_file=f"{directory}/redis.password",
        storefront_password_file=f"{directory}/storefront.password",
    )


def _evaluated(lines: list[str], start: dict[str, str]) -> dict[str, str]:
    """The SEGSTREAM_* variables of a bash that started with ``start`` and evaluated ``lines``."""
    script = 'eval "$LINES"; env -0'
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], "LINES": "\n".join(lines), **start},
        capture_output=True,
        check=True,
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("SEGSTREAM_")}


def test_plain_services_env_gives_bootstrap_and_url_and_clears_stale_security() -> None:
    values = client_settings("localhost:19092", 16379, None)
    env = _evaluated(
        env_lines(values),
        {"SEGSTREAM_KAFKA_SASL_PASSWORD_FILE": "/old", "SEGSTREAM_REDIS_SSL_CA_CERTS": "/old"},
    )
    assert env == {
        "SEGSTREAM_KAFKA_BOOTSTRAP": "localhost:19092",
        "SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "SEGSTREAM_REDIS_URL": "redis://127.0.0.1:16379/0",
    }
    settings = Settings.from_env(env)
    assert kafka_options(settings.kafka) == {}


def test_secure_services_env_names_password_files_and_the_ca_never_a_password() -> None:
    values = client_settings("localhost:19093", 16380, _access())
    env = _evaluated(env_lines(values), {"SEGSTREAM_KAFKA_SASL_PASSWORD": "stale-secret"})
    assert env == {
        "SEGSTREAM_KAFKA_BOOTSTRAP": "localhost:19093",
        "SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SEGSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SEGSTREAM_KAFKA_SASL_USERNAME": "segstream",
        "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE": "/run/s/kafka.password",
        "SEGSTREAM_KAFKA_SSL_CAFILE": "/run/s/ca.pem",
        "SEGSTREAM_REDIS_URL": "rediss://segstream@127.0.0.1:16380/0",
        "SEGSTREAM_REDIS_PREFIX": "shop",
        "SEGSTREAM_REDIS_PASSWORD_FILE": "/run/s/redis.password",
        "SEGSTREAM_REDIS_SSL_CA_CERTS": "/run/s/ca.pem",
    }  # the stale inline password is gone: it would have shadowed the password file


def test_storefront_env_has_redis_lines_only_and_leaves_kafka_settings_alone() -> None:
    lines = env_lines(client_settings("localhost:1", 16381, _access(), user=STOREFRONT_USER))
    assert not any("KAFKA" in line for line in lines)
    env = _evaluated(lines, {"SEGSTREAM_KAFKA_SASL_USERNAME": "someone"})
    assert env["SEGSTREAM_REDIS_URL"] == "rediss://storefront@127.0.0.1:16381/0"
    assert env["SEGSTREAM_REDIS_PASSWORD_FILE"] == "/run/s/storefront.password"
    assert env["SEGSTREAM_KAFKA_SASL_USERNAME"] == "someone"


def test_the_plain_services_have_no_storefront_user() -> None:
    with pytest.raises(ValueError, match="no storefront user"):
        client_settings("localhost:1", 2, None, user=STOREFRONT_USER)


@pytest.mark.parametrize("directory", ["/tmp/with space", "/tmp/it's", "/tmp/$HOME;rm -rf x", "/é"])
def test_env_lines_quote_paths_so_the_shell_keeps_them_verbatim(directory: str) -> None:
    env = _evaluated(env_lines(client_settings("localhost:1", 2, _access(directory))), {})
    assert env["SEGSTREAM_KAFKA_SSL_CAFILE"] == f"{directory}/ca.pem"
    assert env["SEGSTREAM_REDIS_PASSWORD_FILE"] == f"{directory}/redis.password"


def test_redis_acl_file_switches_default_off_and_holds_only_password_hashes() -> None:
    text = redis_acl_text({"segstream": ("pw-one", ["~shop:*", "+get"]), "ro": ("pw-two", [])})
    lines = text.splitlines()
    assert lines[0].startswith("user default off ")
    assert "nocommands" in lines[0] and "nopass" not in text
    assert (
        lines[1] == f"user segstream reset on #{hashlib.sha256(b'pw-one').hexdigest()} ~shop:* +get"
    )
    assert lines[2].startswith("user ro reset on #")
    assert "pw-one" not in text and "pw-two" not in text


def test_a_secret_is_written_mode_0600_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "s.password"
    path.write_text("old")
    path.chmod(0o644)
    write_secret(path, "new\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "new\n"


def test_secure_material_keeps_passwords_in_0600_files_and_down_removes_them(
    tmp_path: Path,
) -> None:
    material = create_material(tmp_path, "shop")
    access = material.access
    assert stat.S_IMODE((tmp_path / "secure").stat().st_mode) == 0o700
    files = [
        access.kafka_password_file,
        access.redis_password_file,
        access.storefront_password_file,
        material.redis_acl_file,
        material.kafka_users_file,
        material.server_key,
    ]
    for name in files:
        assert stat.S_IMODE(Path(name).stat().st_mode) == 0o600, name
    passwords = [
        read_secret(f, "x")
        for f in (
            access.kafka_password_file,
            access.redis_password_file,
            access.storefront_password_file,
        )
    ]
    assert len(set(passwords)) == 3 and all(len(p) >= 32 for p in passwords)
    recorded = (tmp_path / "secure.json").read_text()
    assert not any(p in recorded for p in passwords)
    assert load_access(tmp_path) == access
    acl = Path(material.redis_acl_file).read_text()
    assert "~shop:*" in acl and "%R~shop:*" in acl and not any(p in acl for p in passwords)
    again = create_material(tmp_path, "shop")  # every `up --secure` makes new passwords
    assert read_secret(again.access.kafka_password_file, "x") != passwords[0]
    remove_material(tmp_path)
    assert not (tmp_path / "secure").exists() and load_access(tmp_path) is None


def test_a_recorded_process_must_still_carry_its_marker_to_count_as_alive(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "devstack.kafka_gateway"]
    )
    try:
        base = RunningService("kafka", proc.pid, 1, "localhost:1", sys.executable, "log")
        # Popen may return while the child is still inside exec, its command line empty
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_for(lambda: b"devstack.kafka_gateway" in cmdline.read_bytes(), 5, "the exec")
        assert replace(base, marker="devstack.kafka_gateway").alive()
        assert not replace(base, marker="something.else").alive()  # a recycled python pid
    finally:
        proc.kill()
        proc.wait()
    assert not replace(base, marker="devstack.kafka_gateway").alive()


def test_status_lists_the_secure_backend_only_when_recorded_and_env_needs_running_services(
    tmp_path: Path,
) -> None:
    services = LocalServices(tmp_path)
    dead = RunningService("kafka-backend", 2**22 + 1, 1, "localhost:1", sys.executable, "log")
    (tmp_path / "kafka-backend.json").write_text(json.dumps(asdict(dead)))
    assert list(services.status()) == ["kafka", "kafka-backend", "redis"]
    assert services.status()["kafka-backend"] == (dead, False)
    with pytest.raises(ServiceError, match="not running; start them with `segstream services up`"):
        services.client_settings()


# -- local Redis Cluster: the layout, what a client is told, what is refused --------------------
def test_cluster_nodes_take_consecutive_ports_from_the_first_one_primaries_first() -> None:
    plans = cluster_layout(cluster_ports(7000, 6, pick=lambda: 1), primaries=3, replicas=1)
    assert [(p.name, p.port, p.role) for p in plans] == [
        ("redis-1", 7000, PRIMARY),
        ("redis-2", 7001, PRIMARY),
        ("redis-3", 7002, PRIMARY),
        ("redis-4", 7003, REPLICA),
        ("redis-5", 7004, REPLICA),
        ("redis-6", 7005, REPLICA),
    ]
    assert [p.primary_port for p in plans[3:]] == [7000, 7001, 7002]
    assert [p.bus_port for p in plans[:2]] == [17000, 17001]


@pytest.mark.parametrize(("primaries", "replicas"), [(1, 0), (2, 0), (3, 0), (3, 2), (5, 1)])
def test_primaries_split_every_slot_evenly_and_each_gets_its_replicas(
    primaries: int, replicas: int
) -> None:
    count = primaries * (1 + replicas)
    plans = cluster_layout(list(range(9000, 9000 + count)), primaries, replicas)
    ranges = [p.slots for p in plans if p.slots is not None]
    assert [p.role for p in plans if p.slots is not None] == [PRIMARY] * primaries
    served = [slot for lo, hi in ranges for slot in range(lo, hi + 1)]
    assert served == list(range(16384))  # each slot once, in order
    sizes = [hi - lo + 1 for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1
    followed = Counter(p.primary_port for p in plans if p.role == REPLICA)
    assert followed == {9000 + i: replicas for i in range(primaries) if replicas}


def test_free_cluster_ports_pass_over_duplicates_taken_and_too_high_bus_ports() -> None:
    offered = iter([40000, 40000, 60000, 41000, 42000, 43000])
    ports = cluster_ports(0, 3, pick=lambda: next(offered), usable=lambda port: port != 41000)
    assert ports == [40000, 42000, 43000]  # 60000 + 10000 is no port; 41000's bus port taken


def test_a_first_port_whose_bus_ports_pass_65535_is_refused_with_the_highest_that_fits() -> None:
    with pytest.raises(ServiceError, match=r"choose a port <= 55533, or 0"):
        cluster_ports(55534, 3, pick=lambda: 1)
    assert cluster_ports(55533, 3, pick=lambda: 1) == [55533, 55534, 55535]


def test_a_cluster_without_primaries_or_with_negative_replicas_is_refused() -> None:
    with pytest.raises(ServiceError, match="at least one primary"):
        cluster_layout([], 0, 0)
    with pytest.raises(ServiceError, match="0 or more"):
        cluster_layout([1], 1, -1)


def test_cluster_env_names_one_node_and_sets_the_cluster_flag() -> None:
    env = _evaluated(env_lines(client_settings("localhost:1", 7001, None, cluster=True)), {})
    assert env["SEGSTREAM_REDIS_URL"] == "redis://127.0.0.1:7001/0"
    assert env["SEGSTREAM_REDIS_CLUSTER"] == "1"
    assert Settings.from_env(env).get("redis_cluster") is True


def test_plain_services_env_unsets_the_cluster_flag_of_an_earlier_cluster() -> None:
    env = _evaluated(env_lines(client_settings("localhost:1", 7001, None)), {})
    assert "SEGSTREAM_REDIS_CLUSTER" not in env
    stale = _evaluated(
        env_lines(client_settings("localhost:1", 7001, None)), {"SEGSTREAM_REDIS_CLUSTER": "1"}
    )
    assert "SEGSTREAM_REDIS_CLUSTER" not in stale
    assert Settings.from_env(stale).get("redis_cluster") is False


def test_secured_services_have_no_cluster_settings_yet() -> None:
    with pytest.raises(ValueError, match="no Redis Cluster yet"):
        client_settings("localhost:1", 2, _access(), cluster=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secure": True, "redis_cluster": 3}, "--secure with --redis-cluster is not supported"),
        ({"redis_replicas": 1}, "--replicas needs --redis-cluster N"),
        ({"redis_cluster": -1}, "must be 0"),
    ],
)
def test_a_cluster_request_that_cannot_be_met_is_refused_before_anything_starts(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceError, match=message):
        LocalServices(tmp_path / "run").up(1, 1, **kwargs)
    assert not (tmp_path / "run").exists()


def test_status_lists_a_clusters_nodes_in_place_of_the_single_redis(tmp_path: Path) -> None:
    for index in (1, 2, 10):  # numeric order, not text order
        dead = RunningService(
            f"redis-{index}", 2**22 + index, 7000 + index, "u", "b", "l", "", "primary"
        )
        (tmp_path / f"redis-{index}.json").write_text(json.dumps(asdict(dead)))
    services = LocalServices(tmp_path)
    assert list(services.status()) == ["kafka", "redis-1", "redis-2", "redis-10"]
    assert [n.port for n in services.cluster_nodes()] == [7001, 7002, 7010]
    with pytest.raises(ServiceError, match="not running"):
        services.client_settings()


def test_cluster_nodes_output_is_read_into_roles_primaries_and_slots() -> None:
    text = (
        "aa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "bb 127.0.0.1:7003@17003,host slave aa 0 1 1 connected\n"
        "cc 127.0.0.1:7001@17001 master,fail - 0 1 2 disconnected 5461-10922 [5462->-dd]\n"
    )
    views = {v.node_id: v for v in parse_cluster_nodes(text)}
    assert (views["aa"].port, views["aa"].role, views["aa"].slots) == (7000, PRIMARY, ("0-5460",))
    assert not views["aa"].failing and views["aa"].connected
    assert (views["bb"].port, views["bb"].role, views["bb"].primary_id) == (7003, REPLICA, "aa")
    assert views["cc"].failing and not views["cc"].connected
    assert views["cc"].slots == ("5461-10922",)


def test_bind_refused_reads_redis_servers_and_tansus_own_words() -> None:
    redis_line = "# Warning: Could not create server TCP listening socket 127.0.0.1:36606: "
    redis_line += "bind: Address already in use"
    tansu_line = 'Io(Os { code: 98, kind: AddrInUse, message: "Address in use" })'
    assert bind_refused(redis_line) and bind_refused(tansu_line)
    assert not bind_refused("FATAL: cannot open config")
