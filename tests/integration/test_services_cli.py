"""`segstream services up | status | down` against the real binaries, as a user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.ports import free_port, kafka_answers, redis_answers
from devstack.services import LocalServices
from segstream.errors import ServiceError

pytestmark = pytest.mark.integration


def segstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_up_status_down_round_trip(tmp_path: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()
    env = {
        "SEGSTREAM_KAFKA_PORT": str(kafka_port),  # flags fall back to these variables
        "SEGSTREAM_REDIS_PORT": str(redis_port),
        "SEGSTREAM_RUN_DIR": str(tmp_path),
    }
    up = segstream("services", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert f"localhost:{kafka_port}" in up.stdout
        assert f"redis://127.0.0.1:{redis_port}/0" in up.stdout
        assert kafka_answers(kafka_port) and redis_answers(redis_port)
        assert (tmp_path / "kafka.pid").is_file() and (tmp_path / "redis.pid").is_file()

        status = segstream("services", "status", env=env)
        assert status.returncode == 0
        assert status.stdout.count("running") == 2

        lines = segstream("services", "env", env=env)
        assert lines.returncode == 0, lines.stderr
        assert lines.stdout.splitlines()[:3] == [
            f"export SEGSTREAM_KAFKA_BOOTSTRAP=localhost:{kafka_port}",
            "export SEGSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
            f"export SEGSTREAM_REDIS_URL=redis://127.0.0.1:{redis_port}/0",
        ]
        assert lines.stdout.splitlines()[3].startswith("unset SEGSTREAM_KAFKA_SASL_MECHANISM ")
        storefront = segstream("services", "env", "--user", "storefront", env=env)
        assert storefront.returncode == 1 and "no storefront user" in storefront.stderr

        again = segstream("services", "up", env=env)
        assert again.returncode == 1
        assert "already running" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    finally:
        down = segstream("services", "down", env=env)
    assert down.returncode == 0
    assert "stopped kafka" in down.stdout and "stopped redis" in down.stdout
    assert not kafka_answers(kafka_port) and not redis_answers(redis_port)
    status = segstream("services", "status", env=env)
    assert status.returncode == 3 and "not started" in status.stdout


def test_a_taken_port_is_a_one_line_error_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = segstream(
            "services", "up", "--redis-port", str(taken), "--kafka-port", "0",
            "--run-dir", str(tmp_path),
        )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"port {taken} for redis is already taken" in lines[0]
    assert "--redis-port" in lines[0]
    assert LocalServices(tmp_path).recorded() == {}


def test_down_stops_only_what_it_started(tmp_path: Path) -> None:
    # A Redis we did NOT start through this run dir must survive `down`.
    other = LocalServices(tmp_path / "other")
    theirs = other.up(0, 0)
    try:
        mine = LocalServices(tmp_path / "mine")
        mine.up(0, 0)
        stopped = mine.down()
        assert {s.name for s in stopped} == {"kafka", "redis"}
        assert redis_answers(theirs["redis"].port) and kafka_answers(theirs["kafka"].port)
    finally:
        other.down()


def test_a_service_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    class BrokenRedis(LocalServices):
        def _start_redis(self, port: int):  # type: ignore[no-untyped-def]
            script = "echo 'FATAL: cannot open config'; exit 3"
            return self._spawn("redis", port, f"redis://x:{port}", Path("/bin/sh"), ["-c", script])

    services = BrokenRedis(tmp_path)
    with pytest.raises(ServiceError, match=r"redis exited during start-up .*FATAL: cannot open"):
        services.up(0, 0)
    assert services.recorded() == {}  # the broker it did start was stopped again


def test_a_picked_broker_port_taken_before_tansu_binds_it_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: free to a connect, not to a bind
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr("devstack.services.free_port", lambda: next(picks, None) or free_port())
        services = LocalServices(tmp_path)
        started = services.up(0, 0)
        try:
            assert started["kafka"].port != taken and kafka_answers(started["kafka"].port)
        finally:
            services.down()
