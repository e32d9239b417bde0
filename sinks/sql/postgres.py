"""PostgreSQL (psycopg 3): COPY a batch into a staging table, then one upsert and one insert.

Per batch, one transaction: delete the erased customers; COPY every change into a session-local
temporary table (no WAL, no index); one ``INSERT ... SELECT DISTINCT ON ... ON CONFLICT DO
UPDATE ... WHERE segment_seq < EXCLUDED.segment_seq`` into ``customer_segment`` (a change never
overwrites a newer one); the changes appended to ``segment_history`` once each (below); the
profiles of new model versions; the offsets. The statements are built here as plain strings
(module constants) so the unit tests read them.

History is appended optimistically: a plain ``INSERT ... SELECT`` inside a savepoint, and only if
the primary key refuses a row (a change the database already holds: the worker republished its
outbox after the sink had written it) the savepoint is rolled back and the batch goes in again
with ``ON CONFLICT DO NOTHING``. Almost no batch holds such a change, and ``ON CONFLICT``'s
speculative insertion costs every row an extra index probe: the plain insert took about 2 us
less server CPU per change (benchmarks/RESULTS.md, 2026-12-06). The primary key, not the
statement, is what keeps every change once, so both paths end the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from segstream.redact import redact
from sinks.sql.changes import ROW_COLUMNS
from sinks.sql.database import RecordRefused
from sinks.sql.plan import BatchPlan
from sinks.sql.profiles import PROFILE_COLUMNS, ProfileRow
from sinks.sql.schema import SCHEMA_VERSION_TABLE, pending

#: Any constant: the advisory lock two starting sinks take around a migration.
MIGRATION_LOCK = 0x5E65_7100

STAGING = "segstream_sink_staging"

_COLS = ", ".join(ROW_COLUMNS)

#: The staging table: the change columns, no constraint, dropped with the session.
CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} "
    "(customer_id text, segment_seq bigint, old_segment text, new_segment text, reason text, "
    "model_version text, event_time timestamptz, processing_time timestamptz, "
    "recency_days double precision, frequency double precision, monetary double precision, "
    "aov double precision, sessions double precision, features jsonb, "
    "old_distance double precision, new_distance double precision) ON COMMIT DELETE ROWS"
)

#: Binary COPY: the text format costs 3x the client CPU (each value printed, then parsed).
COPY_STAGING = f"COPY {STAGING} ({_COLS}) FROM STDIN (FORMAT BINARY)"

#: The staging columns' types, in :data:`ROW_COLUMNS` order (binary COPY needs them).
STAGING_TYPES: tuple[str, ...] = (
    "text", "int8", "text", "text", "text", "text", "timestamptz", "timestamptz",
    "float8", "float8", "float8", "float8", "float8", "jsonb", "float8", "float8",
)  # fmt: skip

#: Per customer its highest segment_seq in the batch; written only over an older row.
UPSERT_CURRENT = (
    "INSERT INTO customer_segment (customer_id, segment, model_version, segment_seq, "
    "updated_at, event_time, recency_days, frequency, monetary, aov, sessions, features) "
    "SELECT DISTINCT ON (customer_id) customer_id, new_segment, model_version, segment_seq, "
    "processing_time, event_time, recency_days, frequency, monetary, aov, sessions, features "
    f"FROM {STAGING} ORDER BY customer_id, segment_seq DESC "
    "ON CONFLICT (customer_id) DO UPDATE SET segment = EXCLUDED.segment, "
    "model_version = EXCLUDED.model_version, segment_seq = EXCLUDED.segment_seq, "
    "updated_at = EXCLUDED.updated_at, event_time = EXCLUDED.event_time, "
    "recency_days = EXCLUDED.recency_days, frequency = EXCLUDED.frequency, "
    "monetary = EXCLUDED.monetary, aov = EXCLUDED.aov, sessions = EXCLUDED.sessions, "
    "features = EXCLUDED.features "
    "WHERE customer_segment.segment_seq < EXCLUDED.segment_seq"
)

#: Every change, appended; the primary key refuses the batch if one is already there.
APPEND_HISTORY = f"INSERT INTO segment_history ({_COLS}) SELECT {_COLS} FROM {STAGING}"

#: Every change once: a replay (offsets behind, a worker's republished outbox) adds nothing.
INSERT_HISTORY = (
    f"INSERT INTO segment_history ({_COLS}) SELECT {_COLS} FROM {STAGING} "
    "ON CONFLICT (customer_id, segment_seq) DO NOTHING"
)

ERASE = (
    "DELETE FROM customer_segment WHERE customer_id = ANY(%(ids)s)",
    "DELETE FROM segment_history WHERE customer_id = ANY(%(ids)s)",
)

INSERT_PROFILE = (
    f"INSERT INTO segment_profile ({', '.join(PROFILE_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(PROFILE_COLUMNS))}) "
    "ON CONFLICT (model_version, segment) DO NOTHING"
)

SAVE_OFFSETS = (
    "INSERT INTO sink_offsets (topic, kafka_partition, next_offset, updated_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (topic, kafka_partition) DO UPDATE SET "
    "next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at"
)

#: SQLSTATE classes of a value the database refuses: 22 data exception (bad text, number out
#: of range, invalid JSON), 23 integrity constraint violation. Everything else is an outage.
_RECORD_CLASSES = ("22", "23")


def refuses_record(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state[:2] in _RECORD_CLASSES


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact(self.url)!r})"

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.connect()
        assert self._conn is not None
        return self._conn

    def connect(self) -> None:
        self.close()
        conn = psycopg.connect(self.url, autocommit=False, application_name="segstream-sink")
        with conn.transaction():
            conn.execute("SET TIME ZONE 'UTC'")
        self._conn = conn
        self._staging_ready = False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def schema_version(self) -> int:
        conn = self.conn
        with conn.transaction():
            exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return 0
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def migrate(self, target: int | None = None) -> tuple[int, int]:
        conn = self.conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(SCHEMA_VERSION_TABLE["postgresql"])
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            start = int(row[0]) if row else 0
            version = start
            # PostgreSQL's DDL is transactional: every step commits with its schema_version row
            # or not at all (and the lock keeps a second sink out meanwhile).
            for step in pending("postgresql", start, target):
                with conn.transaction():
                    for statement in step.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                        (step.version, step.description),
                    )
                version = step.version
        return start, version

    def offsets(self, topic: str) -> dict[int, int]:
        conn = self.conn
        with conn.transaction():
            rows = conn.execute(
                "SELECT kafka_partition, next_offset FROM sink_offsets WHERE topic = %s", (topic,)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def known_versions(self) -> set[str]:
        conn = self.conn
        with conn.transaction():
            rows = conn.execute("SELECT DISTINCT model_version FROM segment_profile").fetchall()
        return {str(r[0]) for r in rows}

    def write(self, plan: BatchPlan, profiles: Sequence[ProfileRow]) -> None:
        conn = self.conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                if plan.erase:
                    ids = list(plan.erase)
                    for statement in ERASE:
                        cur.execute(statement, {"ids": ids})
                if plan.history:
                    if not self._staging_ready:
                        cur.execute(CREATE_STAGING)
                        self._staging_ready = True
                    with cur.copy(COPY_STAGING) as copy:
                        copy.set_types(list(STAGING_TYPES))
                        for row in plan.history:
                            copy.write_row(row)
                    cur.execute(UPSERT_CURRENT)
                    try:
                        with conn.transaction():  # a savepoint: the refused append is undone
                            cur.execute(APPEND_HISTORY)
                    except pgerrors.UniqueViolation:
                        cur.execute(INSERT_HISTORY)
                if profiles:
                    cur.executemany(INSERT_PROFILE, profiles)
                if plan.offsets:
                    now = datetime.now(UTC)
                    cur.executemany(
                        SAVE_OFFSETS,
                        [(t, p, o, now) for (t, p), o in sorted(plan.offsets.items())],
                    )
        except psycopg.Error as exc:
            if isinstance(exc, pgerrors.UndefinedTable):
                self._staging_ready = False
            if refuses_record(exc):
                raise RecordRefused(f"PostgreSQL refused it: {exc}") from exc
            raise
