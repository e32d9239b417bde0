"""Pure parts of the local service manager: backend choice, ports, records."""

from __future__ import annotations

import pytest

from devstack.services import (
    LocalServices,
    choose_backend,
    redis_server_binary,
    tansu_binary,
)
from segstream.errors import ServiceError


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
