"""One frozen settings object, grouped by concern; the only module that reads ``SEGSTREAM_*``.

Over 400 lines: every setting of every room, each a typed field with its one-line meaning, in one
place so that a name, its variable and its flag are defined once.

Every setting has one flat *name* (``kafka_bootstrap``, ``scoring_share``...), which is also
its environment variable (``SEGSTREAM_`` + the name in capitals) and, with dashes, its CLI flag;
in code it lives in a group (``settings.kafka.bootstrap``, ``settings.scoring.share``). The
table :data:`SETTINGS` ties the three spellings together: :meth:`Settings.from_env` reads the
variables, :meth:`Settings.with_` takes flat names, :meth:`Settings.to_env` writes them back
for a child process, and the CLI's options use the same variable names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, NamedTuple

from segstream.errors import ConfigError


@dataclass(frozen=True)
class KafkaSettings:
    """Where the brokers are, which topics segstream reads and writes, and the consumer group."""

    bootstrap: str = "localhost:9092"
    orders_topic: str = "orders"
    clicks_topic: str = "clicks"
    dead_letter_topic: str = "dead-letter"
    segment_changes_topic: str = "segment-changes"
    control_topic: str = "segstream-control"
    group_id: str = "segstream-worker"
    #: Partitions of the topics segstream creates.
    partitions: int = 4
    #: Short by default: the local broker's group join waits half of it (docs/worker.md).
    session_timeout_s: float = 6.0
    #: Where platform services ask segstream to forget customers (``segstream forget``).
    erase_requests_topic: str = "erase-requests"
    #: Customer-profile updates (demographics) the worker merges into the customer hashes.
    profiles_topic: str = "profiles"
    #: Where segstream publishes each customer's campaign arm (docs/campaigns.md).
    campaign_assignments_topic: str = "campaign-assignments"
    #: How every client talks to the brokers: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    #: (docs/security.md). :mod:`segstream.security` turns these into each client's options.
    security_protocol: str = "PLAINTEXT"
    #: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (with a SASL_* protocol).
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    #: Never printed; ``sasl_password_file`` (a file holding it) is read when this is empty.
    sasl_password: str = field(default="", repr=False)
    sasl_password_file: str = ""
    #: CA bundle the brokers' certificates are checked against (empty = the system's).
    ssl_cafile: str = ""
    #: Client certificate and key, for brokers that ask for one (mutual TLS).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    #: Off only for brokers whose certificates do not name the host the client dials.
    ssl_check_hostname: bool = True

    @property
    def input_topics(self) -> tuple[str, str]:
        return (self.orders_topic, self.clicks_topic)


@dataclass(frozen=True)
class RedisSettings:
    """The Redis holding customer state, segments and models."""

    url: str = "redis://127.0.0.1:6379/0"
    #: Every Redis key starts with this, so tests and tenants can share one Redis safely.
    prefix: str = "ss"
    #: Read when the URL carries no password (an ACL user's secret kept out of the URL).
    password_file: str = ""
    #: ``rediss://`` only: the CA bundle the server's certificate is checked against (empty =
    #: the system's), and a client certificate and key for servers that ask for one.
    ssl_ca_certs: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    #: Off only for servers whose certificates do not name the host the client dials.
    ssl_check_hostname: bool = True
    #: Redis Cluster (or a managed cluster-mode Redis): the URL names any node (docs/state.md,
    #: "Redis Cluster").
    cluster: bool = False
    #: On a cluster, the customers are spread over this many shards, each a hash tag of its
    #: own: a batch is at most this many atomic calls. Fixed for the life of the data.
    shards: int = 16
    #: Replica safety: a batch's offsets are committed only once ``WAIT`` confirmed it reached
    #: this many replicas of its primary (0 = do not wait; docs/state.md, "Replicas").
    wait_replicas: int = 0
    #: How long one ``WAIT`` may take; fewer replicas by then is an outage (retried).
    wait_timeout_ms: int = 2000


@dataclass(frozen=True)
class IngestSettings:
    """How the worker applies events to the state (docs/state.md)."""

    batch_max_records: int = 5000
    #: A batch the state store keeps refusing for a reason that is not an outage is applied in
    #: pieces after this many attempts, and the records that still fail are dead-lettered
    #: (docs/state.md, "When a batch fails"). 0 = never: retry until someone fixes it.
    poison_retries: int = 5
    #: Recency thresholds (days) the sweep watches; crossing one triggers a re-score.
    recency_thresholds_days: tuple[int, ...] = (30, 60, 90, 180, 365)
    sweep_interval_s: float = 10.0
    #: How long a forgotten customer's old events are dropped (``segstream forget``): set it
    #: longer than the input topics' retention and any replay window (docs/forget.md).
    erase_suppress_days: float = 90.0
    #: How long an anonymous visitor's unlinked behaviour is kept (refreshed on each of its
    #: clicks), the most events kept per visitor, and how long a visitor -> customer link lives
    #: (refreshed on use): docs/state.md, "Anonymous visitors and identity merge".
    anonymous_ttl_days: float = 30.0
    anonymous_max_events: int = 500
    identity_link_ttl_days: float = 180.0


@dataclass(frozen=True)
class ScoringSettings:
    """How the worker assigns segments beside ingestion (docs/scoring.md)."""

    #: The worker assigns segments; off = state only (benchmarks).
    enabled: bool = True
    #: A customer moves only when the new centroid is closer by this fraction of the distance.
    hysteresis_margin: float = 0.1
    #: Move of a segment's recent centre from its reference, in segment spreads (the segment's
    #: own standard deviation at training), above which drift is reported (docs/segmentation.md
    #: "Drift and emerging groups").
    drift_bound: float = 1.5
    #: The clock recency is computed at when segments are assigned (ISO 8601; empty = now).
    as_of: str = ""
    #: How often the worker checks ``{prefix}:model:current`` (s).
    model_poll_s: float = 2.0
    #: A new model version makes the worker re-score every customer.
    rescore_all: bool = False
    #: Drift above ``drift_bound`` starts ``segstream train --from redis``, at most once per
    #: ``retrain_cooldown_s``.
    retrain_on_drift: bool = False
    retrain_cooldown_s: float = 3600.0
    #: The gate an automatic retrain must pass to be promoted (else it is stored, not promoted):
    #: silhouette at most this much below the current model's,
    gate_silhouette_margin: float = 0.05
    #: every segment at least this share of the customers,
    gate_min_segment_share: float = 0.02
    #: and at least this share of customers keeping their segment name.
    gate_min_stability: float = 0.7
    #: How often customers left in ``{prefix}:unscored`` are re-scored (s).
    repair_interval_s: float = 30.0
    #: While events keep arriving, scoring rounds take at most this share of the worker's time
    #: (the rest goes to ingestion, and customers changed meanwhile are scored once, on their
    #: latest state); when ingestion is idle, scoring runs flat out. 1 = no limit.
    share: float = 0.3
    #: Catching up: while ingestion is at least ``catch_up_lag`` records behind the brokers (a
    #: replay, a backfill, the backlog after an outage), scoring takes at most
    #: ``catch_up_share`` of the time instead: segments scored mid-backlog describe states the
    #: next events replace within seconds, and the backlog drained sooner is what brings every
    #: segment up to date sooner. 0 = never (``share`` always).
    catch_up_lag: int = 50_000
    catch_up_share: float = 0.02


@dataclass(frozen=True)
class ReportSettings:
    """``segstream report``: output directory, as-of time (ISO 8601, empty = now), a state
    export to read instead of Redis (empty = Redis), the model (current | version | none | path
    to an artifact JSON) and the currency label of revenue figures."""

    dir: str = "report-out"
    as_of: str = ""
    state_file: str = ""
    model: str = "current"
    currency: str = "EUR"


@dataclass(frozen=True)
class LocalSettings:
    """``segstream services`` and the demo: where local services keep pid files and logs, ports."""

    run_dir: str = ".run"
    kafka_port: int = 9092
    redis_port: int = 6379


@dataclass(frozen=True)
class SinkSettings:
    """``segstream sink sql``: the database it keeps in step (docs/bi.md) and its batch size."""

    #: ``postgresql://user:password@host:5432/db`` or ``mysql://...``; never printed unredacted.
    sql_url: str = field(default="", repr=False)
    #: Records consumed per transaction (larger: faster, longer transactions).
    sql_batch_records: int = 20000


@dataclass(frozen=True)
class RecommendSettings:
    """Recommendations from the orders stream (docs/recommendations.md)."""

    #: Ingestion counts placed orders for recommendations, and the worker merges the lists.
    enabled: bool = True
    #: Half-life of a purchase's weight in the popularity counts (days of event time).
    half_life_days: float = 7.0
    #: Skus kept per segment (and for the shop) in each space's counts, and in the merged lists.
    pop_max: int = 500
    top_max: int = 100
    #: How often the merged top lists (``{space}:rtop:<segment>``) are rewritten (s).
    merge_interval_s: float = 5.0


@dataclass(frozen=True)
class Settings:
    """Everything a segstream process needs to know about where things are and how to behave."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    #: Directory of versioned model artifacts (``segstream train``).
    model_dir: str = "models"
    #: Address and port of the worker's web pages (/health, /metrics, /scoring). The image and
    #: compose bind 0.0.0.0 so a mapped port reaches them.
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: ``segstream dashboard``: where it listens (docs/dashboard.md), and the worker web pages it
    #: polls for events/s, lag, dead letters and drift (empty = this worker's web_host:web_port).
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 6068
    dashboard_worker_url: str = ""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``SEGSTREAM_*`` variables, then explicit ``overrides`` (flat names)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.var)
            if raw is not None and raw != "":
                values[setting.name] = setting.parse(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls().with_(**values)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """The defaults with some settings given by flat name (``Settings.of(partitions=2)``)."""
        return cls().with_(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with settings changed by flat name (``None`` values are ignored)."""
        top: dict[str, Any] = {}
        by_group: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if value is None:
                continue
            setting = _BY_NAME.get(name)
            if setting is None:
                raise TypeError(f"unknown setting {name!r}")
            if isinstance(setting.default, bool):
                value = bool(value)
            if setting.group is None:
                top[setting.attr] = value
            else:
                by_group.setdefault(setting.group, {})[setting.attr] = value
        for group, values in by_group.items():
            top[group] = replace(getattr(self, group), **values)
        return replace(self, **top)

    def get(self, name: str) -> Any:
        """A setting's value by flat name."""
        setting = _BY_NAME[name]
        holder = self if setting.group is None else getattr(self, setting.group)
        return getattr(holder, setting.attr)

    def to_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment that gives a child segstream process these settings.

        ``base``: the environment to extend (default: this process's).
        """
        env = dict(os.environ if base is None else base)
        for setting in SETTINGS:
            env[setting.var] = setting.format(self.get(setting.name))
        return env


class Setting(NamedTuple):
    """One setting: its flat name (and so variable and flag), and where it lives in Settings."""

    name: str
    group: str | None
    attr: str

    @property
    def var(self) -> str:
        return "SEGSTREAM_" + self.name.upper()

    @property
    def default(self) -> Any:
        return Settings().get(self.name)

    def parse(self, raw: str) -> Any:
        """The variable's text as this setting's type; a bad value names the variable."""
        kind = type(self.default)
        try:
            if kind is bool:
                return _boolean(raw)
            if kind is tuple:
                return tuple(int(part) for part in raw.split(",") if part.strip())
            return kind(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{self.var}={raw!r} is not a valid {kind.__name__} for {self.name}"
            ) from exc

    @staticmethod
    def format(value: Any) -> str:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return str(value)


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _group(group: str, *attrs: str, prefix: str = "") -> tuple[Setting, ...]:
    return tuple(Setting(prefix + attr, group, attr) for attr in attrs)


#: Every setting, by concern. A flat name is the group's prefix + the attribute unless listed.
SETTINGS: tuple[Setting, ...] = (
    Setting("kafka_bootstrap", "kafka", "bootstrap"),
    *_group(
        "kafka",
        "orders_topic",
        "clicks_topic",
        "dead_letter_topic",
        "segment_changes_topic",
        "control_topic",
        "group_id",
        "partitions",
        "session_timeout_s",
        "erase_requests_topic",
        "profiles_topic",
        "campaign_assignments_topic",
    ),
    *_group(
        "kafka",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "sasl_password_file",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        prefix="kafka_",
    ),
    *_group(
        "redis",
        "url",
        "prefix",
        "password_file",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "cluster",
        "shards",
        "wait_replicas",
        "wait_timeout_ms",
        prefix="redis_",
    ),
    *_group(
        "ingest",
        "batch_max_records",
        "poison_retries",
        "recency_thresholds_days",
        "sweep_interval_s",
        "erase_suppress_days",
        "anonymous_ttl_days",
        "anonymous_max_events",
        "identity_link_ttl_days",
    ),
    Setting("scoring", "scoring", "enabled"),
    *_group(
        "scoring",
        "hysteresis_margin",
        "drift_bound",
        "model_poll_s",
        "rescore_all",
        "retrain_on_drift",
        "retrain_cooldown_s",
        "catch_up_lag",
        "catch_up_share",
    ),
    *_group(
        "scoring",
        "gate_silhouette_margin",
        "gate_min_segment_share",
        "gate_min_stability",
        prefix="retrain_",
    ),
    Setting("scoring_as_of", "scoring", "as_of"),
    Setting("scoring_share", "scoring", "share"),
    Setting("dirty_repair_s", "scoring", "repair_interval_s"),
    *_group("report", "dir", "as_of", "state_file", "model", "currency", prefix="report_"),
    *_group("local", "run_dir", "kafka_port", "redis_port"),
    *_group("sink", "sql_url", "sql_batch_records", prefix="sink_"),
    *_group(
        "recommend",
        "enabled",
        "half_life_days",
        "pop_max",
        "top_max",
        "merge_interval_s",
        prefix="recommend_",
    ),
    Setting("model_dir", None, "model_dir"),
    Setting("web_host", None, "web_host"),
    Setting("web_port", None, "web_port"),
    Setting("dashboard_host", None, "dashboard_host"),
    Setting("dashboard_port", None, "dashboard_port"),
    Setting("dashboard_worker_url", None, "dashboard_worker_url"),
    Setting("log_level", None, "log_level"),
)
_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

#: Flat setting name -> environment variable (the CLI's options use these as click ``envvar``).
ENV: dict[str, str] = {s.name: s.var for s in SETTINGS}


def _check_table() -> None:
    """Every field of every group has exactly one setting (checked at import: a missing row
    would silently make a field unsettable from the environment)."""
    wanted: set[tuple[str | None, str]] = {
        (None, f.name) for f in fields(Settings) if f.name not in _GROUPS
    }
    for group in _GROUPS:
        wanted |= {(group, f.name) for f in fields(getattr(Settings(), group))}
    have = {(s.group, s.attr) for s in SETTINGS}
    if wanted != have or len(have) != len(SETTINGS):
        raise RuntimeError(f"SETTINGS out of step with Settings: {sorted(map(str, wanted ^ have))}")


#: The groups: the fields of Settings that hold a settings dataclass of their own.
_GROUPS = tuple(f.name for f in fields(Settings) if f.default_factory is not MISSING)
_check_table()
