"""Settings come from defaults, then SEGSTREAM_* variables, then explicit overrides."""

from __future__ import annotations

import pytest

from segstream.errors import ConfigError
from segstream.settings import ENV, Settings


def test_every_setting_has_an_environment_variable() -> None:
    names = {f for f in Settings.__dataclass_fields__}
    assert names == set(ENV)
    assert all(var.startswith("SEGSTREAM_") for var in ENV.values())


def test_environment_then_overrides() -> None:
    env = {
        "SEGSTREAM_KAFKA_BOOTSTRAP": "k:1",
        "SEGSTREAM_PARTITIONS": "8",
        "SEGSTREAM_RECENCY_THRESHOLDS_DAYS": "30,90",
        "SEGSTREAM_HYSTERESIS_MARGIN": "0.25",
    }
    s = Settings.from_env(env, partitions=2, redis_url=None)
    assert s.kafka_bootstrap == "k:1"
    assert s.partitions == 2  # explicit beats environment
    assert s.recency_thresholds_days == (30, 90)
    assert s.hysteresis_margin == 0.25
    assert s.redis_url == Settings().redis_url  # None means "not given"


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SEGSTREAM_PARTITIONS='many'"):
        Settings.from_env({"SEGSTREAM_PARTITIONS": "many"})
