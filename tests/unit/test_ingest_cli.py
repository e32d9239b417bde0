"""``segstream worker`` parses its flags and environment into Settings (nothing is started)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import worker.cli as cli_worker
from segstream.cli import main
from segstream.settings import Settings


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Settings]:
    seen: dict[str, Settings] = {}
    monkeypatch.setattr(cli_worker, "run_worker", lambda settings: seen.update(settings=settings))
    return seen


def test_defaults_parse_into_the_default_settings(captured: dict[str, Settings]) -> None:
    result = CliRunner().invoke(main, ["worker"], env={"SEGSTREAM_GROUP_ID": None})
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.kafka.group_id, s.web_port, s.ingest.batch_max_records) == (
        "segstream-worker",
        6066,
        5000,
    )
    assert s.scoring.enabled == Settings().scoring.enabled


def test_flags_and_environment_reach_the_settings(captured: dict[str, Settings]) -> None:
    env = {"SEGSTREAM_WEB_PORT": "7001", "SEGSTREAM_SCORING": "0", "SEGSTREAM_GROUP_ID": "g1"}
    args = ["worker", "--batch-max-records", "123", "--session-timeout", "9", "--redis-prefix", "p"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.web_port, s.kafka.group_id, s.ingest.batch_max_records) == (7001, "g1", 123)
    assert (s.kafka.session_timeout_s, s.redis.prefix, s.scoring.enabled) == (9.0, "p", False)


def test_help_names_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0
    for var in ("SEGSTREAM_WEB_PORT", "SEGSTREAM_GROUP_ID", "SEGSTREAM_BATCH_MAX_RECORDS"):
        assert var in result.output
