"""MySQL and MariaDB (PyMySQL): batched multi-row upserts, offsets in the same transaction.

Per batch, one transaction: delete the erased customers; one multi-row ``INSERT ... ON
DUPLICATE KEY UPDATE`` per ~1 MB of rows into ``customer_segment`` whose every assignment is
guarded by ``VALUES(segment_seq) > segment_seq`` (``segment_seq`` assigned last, so the guards
read the old value: MySQL assigns left to right); the same into ``segment_history`` with a no-op
update (a replayed change is not appended twice, and no other error is swallowed, as ``INSERT
IGNORE`` would); the profiles of new model versions; the offsets.

Times are stored as UTC ``DATETIME(6)``; the session's time zone is set to UTC. DDL is not
transactional in MySQL: a migration step cut short is re-run whole, its "already exists" errors
(duplicate column, index or table) taken as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql

from segstream.errors import ConfigError
from segstream.redact import redact
from sinks.sql.changes import ROW_COLUMNS, ChangeRow
from sinks.sql.database import RecordRefused
from sinks.sql.plan import BatchPlan
from sinks.sql.profiles import PROFILE_COLUMNS, ProfileRow
from sinks.sql.schema import SCHEMA_VERSION_TABLE, pending

LOCK_NAME = "segstream_sink_sql_migration"
LOCK_WAIT_S = 120

#: Columns of ``customer_segment`` as written, and where each comes from in a change row.
CURRENT_COLUMNS: tuple[str, ...] = (
    "customer_id", "segment", "model_version", "segment_seq", "updated_at", "event_time",
    "recency_days", "frequency", "monetary", "aov", "sessions", "features",
)  # fmt: skip

_GUARDED = [c for c in CURRENT_COLUMNS if c not in ("customer_id", "segment_seq")]

UPSERT_CURRENT = (
    f"INSERT INTO customer_segment ({', '.join(CURRENT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(CURRENT_COLUMNS))}) ON DUPLICATE KEY UPDATE "
    + ", ".join(f"{c} = IF(VALUES(segment_seq) > segment_seq, VALUES({c}), {c})" for c in _GUARDED)
    + ", segment_seq = GREATEST(segment_seq, VALUES(segment_seq))"
)

INSERT_HISTORY = (
    f"INSERT INTO segment_history ({', '.join(ROW_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(ROW_COLUMNS))}) "
    "ON DUPLICATE KEY UPDATE customer_id = customer_id"
)

INSERT_PROFILE = (
    f"INSERT INTO segment_profile ({', '.join(PROFILE_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(PROFILE_COLUMNS))}) "
    "ON DUPLICATE KEY UPDATE model_version = model_version"
)

SAVE_OFFSETS = (
    "INSERT INTO sink_offsets (topic, kafka_partition, next_offset, updated_at) "
    "VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)"
)

ERASE_CHUNK = 1000

#: Server errors that mean "this value cannot be stored" (not an outage): bad value for a
#: column, data too long, out of range, bad date, NULL where not allowed, bad JSON, invalid
#: character string, a CHECK constraint (MySQL 3819, MariaDB 4025).
RECORD_ERRORS = frozenset({1048, 1264, 1292, 1300, 1366, 1406, 3140, 3819, 4025})

#: "Already exists" answers to a migration step re-run after it was cut short.
_ALREADY = frozenset({1050, 1060, 1061})


def utc(when: datetime | None) -> datetime | None:
    return None if when is None else when.astimezone(UTC).replace(tzinfo=None)


def current_values(row: ChangeRow) -> tuple[Any, ...]:
    return (
        row.customer_id, row.new_segment, row.model_version, row.segment_seq,
        utc(row.processing_time), utc(row.event_time), row.recency_days, row.frequency,
        row.monetary, row.aov, row.sessions, row.features,
    )  # fmt: skip


def history_values(row: ChangeRow) -> tuple[Any, ...]:
    return (*row[:6], utc(row.event_time), utc(row.processing_time), *row[8:])


def connect_args(url: str) -> dict[str, Any]:
    """PyMySQL's arguments for ``mysql://user:password@host:port/database?unix_socket=...``."""
    parts = urlsplit(url)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"{redact(url)}: name the database, e.g. mysql://user@host/segstream")
    args: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": database,
        "charset": "utf8mb4",
        "autocommit": False,
        "connect_timeout": 10,
    }
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if "unix_socket" in query:
        args["unix_socket"] = query["unix_socket"]
    if "ssl_ca" in query:
        args["ssl"] = {"ca": query["ssl_ca"]}
    return args


def refuses_record(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.DataError):
        return True
    code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
    return code in RECORD_ERRORS


class MysqlDatabase:
    dialect = "mysql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: pymysql.connections.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"MysqlDatabase({redact(self.url)!r})"

    @property
    def conn(self) -> pymysql.connections.Connection[Any]:
        if self._conn is None or not self._conn.open:
            self.connect()
        assert self._conn is not None
        return self._conn

    def connect(self) -> None:
        self.close()
        conn = pymysql.connect(**connect_args(self.url))
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
        conn.commit()
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.err.Error:
                pass
            finally:
                self._conn = None

    def _scalar(self, sql: str, args: Any = None) -> Any:
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        conn.commit()
        return None if row is None else row[0]

    def schema_version(self) -> int:
        exists = self._scalar(
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = 'schema_version'"
        )
        if not exists:
            return 0
        return int(self._scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version") or 0)

    def migrate(self, target: int | None = None) -> tuple[int, int]:
        conn = self.conn
        if self._scalar("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, LOCK_WAIT_S)) != 1:
            raise TimeoutError(f"another sink held {LOCK_NAME} for {LOCK_WAIT_S} s")
        try:
            with conn.cursor() as cur:
                cur.execute(SCHEMA_VERSION_TABLE["mysql"])
            start = self.schema_version()
            version = start
            for step in pending("mysql", start, target):
                with conn.cursor() as cur:
                    for statement in step.statements:
                        try:
                            cur.execute(statement)
                        except pymysql.err.MySQLError as exc:
                            if not (exc.args and exc.args[0] in _ALREADY):
                                raise
                    cur.execute(
                        "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                        (step.version, step.description),
                    )
                conn.commit()
                version = step.version
            return start, version
        finally:
            self._scalar("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))

    def offsets(self, topic: str) -> dict[int, int]:
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(
                "SELECT kafka_partition, next_offset FROM sink_offsets WHERE topic = %s", (topic,)
            )
            rows = cur.fetchall()
        conn.commit()
        return {int(p): int(o) for p, o in rows}

    def known_versions(self) -> set[str]:
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT model_version FROM segment_profile")
            rows = cur.fetchall()
        conn.commit()
        return {str(r[0]) for r in rows}

    def write(self, plan: BatchPlan, profiles: Sequence[ProfileRow]) -> None:
        conn = self.conn
        try:
            conn.begin()
            with conn.cursor() as cur:
                erase = list(plan.erase)
                for i in range(0, len(erase), ERASE_CHUNK):
                    chunk = erase[i : i + ERASE_CHUNK]
                    marks = ", ".join(["%s"] * len(chunk))
                    for table in ("customer_segment", "segment_history"):
                        cur.execute(f"DELETE FROM {table} WHERE customer_id IN ({marks})", chunk)
                if plan.latest:
                    cur.executemany(UPSERT_CURRENT, [current_values(r) for r in plan.latest])
                if plan.history:
                    cur.executemany(INSERT_HISTORY, [history_values(r) for r in plan.history])
                if profiles:
                    cur.executemany(
                        INSERT_PROFILE,
                        [(*p[:11], utc(p.trained_at), utc(p.first_seen_at)) for p in profiles],
                    )
                if plan.offsets:
                    now = utc(datetime.now(UTC))
                    cur.executemany(
                        SAVE_OFFSETS,
                        [(t, p, o, now) for (t, p), o in sorted(plan.offsets.items())],
                    )
            conn.commit()
        except pymysql.err.MySQLError as exc:
            try:
                conn.rollback()
            except pymysql.err.Error:
                self.close()
            if refuses_record(exc):
                raise RecordRefused(f"MySQL refused it: {exc}") from exc
            raise
