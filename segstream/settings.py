"""One frozen settings object; the only module that reads ``SEGSTREAM_*`` environment variables.

The CLI's flags fall back to the same variables (click reads them by the names in ``ENV``), so a
flag, a variable and a field of :class:`Settings` are three spellings of one setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from segstream.errors import ConfigError

#: Settings field -> environment variable. The CLI uses these names as click ``envvar``s.
ENV: dict[str, str] = {
    "kafka_bootstrap": "SEGSTREAM_KAFKA_BOOTSTRAP",
    "redis_url": "SEGSTREAM_REDIS_URL",
    "redis_prefix": "SEGSTREAM_REDIS_PREFIX",
    "orders_topic": "SEGSTREAM_ORDERS_TOPIC",
    "clicks_topic": "SEGSTREAM_CLICKS_TOPIC",
    "dead_letter_topic": "SEGSTREAM_DEAD_LETTER_TOPIC",
    "segment_changes_topic": "SEGSTREAM_SEGMENT_CHANGES_TOPIC",
    "control_topic": "SEGSTREAM_CONTROL_TOPIC",
    "group_id": "SEGSTREAM_GROUP_ID",
    "partitions": "SEGSTREAM_PARTITIONS",
    "session_timeout_s": "SEGSTREAM_SESSION_TIMEOUT_S",
    "run_dir": "SEGSTREAM_RUN_DIR",
    "kafka_port": "SEGSTREAM_KAFKA_PORT",
    "redis_port": "SEGSTREAM_REDIS_PORT",
    "model_dir": "SEGSTREAM_MODEL_DIR",
    "web_port": "SEGSTREAM_WEB_PORT",
    "batch_max_records": "SEGSTREAM_BATCH_MAX_RECORDS",
    "recency_thresholds_days": "SEGSTREAM_RECENCY_THRESHOLDS_DAYS",
    "sweep_interval_s": "SEGSTREAM_SWEEP_INTERVAL_S",
    "hysteresis_margin": "SEGSTREAM_HYSTERESIS_MARGIN",
    "drift_bound": "SEGSTREAM_DRIFT_BOUND",
    "log_level": "SEGSTREAM_LOG_LEVEL",
    "report_dir": "SEGSTREAM_REPORT_DIR",
    "report_as_of": "SEGSTREAM_REPORT_AS_OF",
    "report_state_file": "SEGSTREAM_REPORT_STATE_FILE",
    "report_model": "SEGSTREAM_REPORT_MODEL",
    "report_currency": "SEGSTREAM_REPORT_CURRENCY",
    "scoring_as_of": "SEGSTREAM_SCORING_AS_OF",
    "model_poll_s": "SEGSTREAM_MODEL_POLL_S",
    "rescore_all": "SEGSTREAM_RESCORE_ALL",
    "retrain_on_drift": "SEGSTREAM_RETRAIN_ON_DRIFT",
    "retrain_cooldown_s": "SEGSTREAM_RETRAIN_COOLDOWN_S",
    "dirty_repair_s": "SEGSTREAM_DIRTY_REPAIR_S",
    "scoring_share": "SEGSTREAM_SCORING_SHARE",
    "catch_up_lag": "SEGSTREAM_CATCH_UP_LAG",
    "catch_up_share": "SEGSTREAM_CATCH_UP_SHARE",
    "scoring": "SEGSTREAM_SCORING",
    "poison_retries": "SEGSTREAM_POISON_RETRIES",
}


@dataclass(frozen=True)
class Settings:
    """Everything a segstream process needs to know about where things are and how to behave."""

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Every Redis key starts with this, so tests and tenants can share one Redis safely.
    redis_prefix: str = "ss"
    orders_topic: str = "orders"
    clicks_topic: str = "clicks"
    dead_letter_topic: str = "dead-letter"
    segment_changes_topic: str = "segment-changes"
    control_topic: str = "segstream-control"
    group_id: str = "segstream-worker"
    partitions: int = 4
    #: Short by default: the local broker's group join waits half of it (see DESIGN.md).
    session_timeout_s: float = 6.0
    run_dir: str = ".run"
    kafka_port: int = 9092
    redis_port: int = 6379
    model_dir: str = "models"
    web_port: int = 6066
    batch_max_records: int = 5000
    #: A batch the state store keeps refusing for a reason that is not an outage is applied in
    #: pieces after this many attempts, and the records that still fail are dead-lettered
    #: (docs/state.md, "When a batch fails"). 0 = never: retry until someone fixes it.
    poison_retries: int = 5
    #: Recency thresholds (days) the sweep watches; crossing one triggers a re-score.
    recency_thresholds_days: tuple[int, ...] = (30, 60, 90, 180, 365)
    sweep_interval_s: float = 10.0
    #: A customer moves only when the new centroid is closer by this fraction of the distance.
    hysteresis_margin: float = 0.1
    #: Centroid displacement (standard units) above which drift is reported.
    drift_bound: float = 0.5
    log_level: str = "INFO"
    #: ``segstream report``: output directory, as-of time (ISO 8601, empty = now), a state
    #: export to read instead of Redis (empty = Redis), the model (current | version | none |
    #: path to an artifact JSON) and the currency label of revenue figures.
    report_dir: str = "report-out"
    report_as_of: str = ""
    report_state_file: str = ""
    report_model: str = "current"
    report_currency: str = "EUR"
    #: Scoring (docs/scoring.md): the clock recency is computed at when segments are assigned
    #: (ISO 8601; empty = the wall clock), how often the worker checks ``{prefix}:model:current``
    #: (s), whether a new model version makes it re-score every customer (0/1), whether drift
    #: above ``drift_bound`` starts ``segstream train --from redis`` (0/1) and how often at most
    #: (s), and how often customers left in ``{prefix}:dirty`` are re-scored (s).
    scoring_as_of: str = ""
    model_poll_s: float = 2.0
    rescore_all: int = 0
    retrain_on_drift: int = 0
    retrain_cooldown_s: float = 3600.0
    dirty_repair_s: float = 30.0
    #: While events keep arriving, scoring rounds take at most this share of the worker's time
    #: (the rest goes to ingestion, and customers changed meanwhile are scored once, on their
    #: latest state); when ingestion is idle, scoring runs flat out. 1 = no limit.
    scoring_share: float = 0.3
    #: Catching up: while ingestion is at least ``catch_up_lag`` records behind the brokers (a
    #: replay, a backfill, the backlog after an outage), scoring takes at most
    #: ``catch_up_share`` of the time instead: segments scored mid-backlog describe states the
    #: next events replace within seconds, and the backlog drained sooner is what brings every
    #: segment up to date sooner. 0 = never (``scoring_share`` always).
    catch_up_lag: int = 50_000
    catch_up_share: float = 0.02
    #: 1 = the worker assigns segments (``ScoringService``); 0 = state only (benchmarks).
    scoring: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SEGSTREAM_*`` variables, then apply explicit ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, var, raw, str(types[name]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def input_topics(self) -> tuple[str, str]:
        return (self.orders_topic, self.clicks_topic)


def _parse(name: str, var: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name.startswith("tuple"):
            return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is not a valid {type_name} for {name}") from exc
    return raw
