"""Settings come from defaults, then SEGSTREAM_* variables, then explicit overrides."""

from __future__ import annotations

import pytest

from segstream.errors import ConfigError
from segstream.settings import ENV, SETTINGS, Settings


def test_every_setting_has_an_environment_variable() -> None:
    assert set(ENV) == {s.name for s in SETTINGS}
    assert all(var == "SEGSTREAM_" + name.upper() for name, var in ENV.items())
    assert all(var.startswith("SEGSTREAM_") for var in ENV.values())


def test_environment_then_overrides() -> None:
    env = {
        "SEGSTREAM_KAFKA_BOOTSTRAP": "k:1",
        "SEGSTREAM_PARTITIONS": "8",
        "SEGSTREAM_RECENCY_THRESHOLDS_DAYS": "30,90",
        "SEGSTREAM_HYSTERESIS_MARGIN": "0.25",
    }
    s = Settings.from_env(env, partitions=2, redis_url=None)
    assert s.kafka.bootstrap == "k:1"
    assert s.kafka.partitions == 2  # explicit beats environment
    assert s.ingest.recency_thresholds_days == (30, 90)
    assert s.scoring.hysteresis_margin == 0.25
    assert s.redis.url == Settings().redis.url  # None means "not given"


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SEGSTREAM_PARTITIONS='many'"):
        Settings.from_env({"SEGSTREAM_PARTITIONS": "many"})


def test_every_field_of_every_group_is_a_setting_with_one_flat_name() -> None:
    s = Settings()
    grouped = {(g, f) for g in ("kafka", "redis", "ingest", "scoring", "report", "local")
               for f in getattr(s, g).__dataclass_fields__}  # fmt: skip
    assert grouped <= {(x.group, x.attr) for x in SETTINGS}
    assert len({x.name for x in SETTINGS}) == len(SETTINGS)


def test_to_env_round_trips_every_setting_through_from_env() -> None:
    changed = Settings.of(
        kafka_bootstrap="b:1", redis_url="redis://:pw@h:1/2", partitions=7, scoring=False,
        rescore_all=True, recency_thresholds_days=(5, 9), scoring_share=0.5, report_dir="r",
        run_dir="/tmp/x", web_port=1234, dirty_repair_s=3.5,
    )  # fmt: skip
    assert Settings.from_env(changed.to_env({})) == changed
    assert Settings.from_env(Settings().to_env({})) == Settings()


def test_booleans_are_booleans_and_accept_the_usual_spellings() -> None:
    assert Settings().scoring.enabled is True
    assert Settings.from_env({"SEGSTREAM_SCORING": "0"}).scoring.enabled is False
    assert Settings.from_env({"SEGSTREAM_RESCORE_ALL": "yes"}).scoring.rescore_all is True
    assert Settings.from_env({"SEGSTREAM_RETRAIN_ON_DRIFT": "true"}).scoring.retrain_on_drift
    with pytest.raises(ConfigError, match="SEGSTREAM_SCORING='maybe'"):
        Settings.from_env({"SEGSTREAM_SCORING": "maybe"})
    assert Settings.of(scoring=0).scoring.enabled is False


def test_settings_are_grouped_by_concern() -> None:
    s = Settings.from_env({"SEGSTREAM_KAFKA_BOOTSTRAP": "k:9", "SEGSTREAM_REDIS_PREFIX": "p"})
    assert (s.kafka.bootstrap, s.redis.prefix) == ("k:9", "p")
    assert s.kafka.input_topics == ("orders", "clicks")
    with pytest.raises(TypeError, match="unknown setting 'kafka_bootstap'"):
        Settings.of(kafka_bootstap="typo")
