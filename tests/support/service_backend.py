"""Which services a test run uses: the local ones, or Docker's through testcontainers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from segstream.errors import ServiceError

__all__ = ["choose_backend", "docker_engine_answers"]


def choose_backend(environ: Mapping[str, str], docker_answers: bool) -> str:
    """Which services the test run uses: ``"docker"`` (testcontainers) or ``"local"``.

    Docker is chosen only when asked for with ``SEGSTREAM_TEST_DOCKER=1`` *and* an engine
    answers; asking without an engine is an error rather than a silent fallback, so a CI job
    that wants real Apache Kafka never quietly tests against tansu instead.
    """
    wanted = environ.get("SEGSTREAM_TEST_DOCKER", "").strip().lower() in {"1", "true", "yes"}
    if not wanted:
        return "local"
    if not docker_answers:
        raise ServiceError(
            "SEGSTREAM_TEST_DOCKER=1 but no Docker engine answers; start Docker or unset it"
        )
    return "docker"


def docker_engine_answers(timeout_s: float = 3.0) -> bool:
    """True when ``docker info`` reaches an engine (the client alone is not enough)."""
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())
