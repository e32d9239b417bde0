"""The sink's tables, versioned: DDL files per dialect, and the plan bringing a database up to date.

``sinks/sql/ddl/<dialect>/v<N>.sql`` is version N: the statements that take a database from
version N-1 to N (v1 from nothing). Their first line, a ``--`` comment, says what the version
brings. A database records the versions applied in ``schema_version`` (one row per version, with
when it was applied). On start the sink reads the highest, runs every later file in order, one
version at a time, each recorded in the same step, under a lock so two sinks starting together
do not both migrate. A database newer than this code (a later segstream wrote it) is refused,
never downgraded. How an upgrade runs, for operators: docs/bi.md.

Pure: reading package files, no database I/O (``postgres`` and ``mysql`` run the plan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from segstream.errors import ConfigError, SegstreamError

#: The dialects the sink writes, and the URL schemes that select each.
DIALECTS: dict[str, str] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mysql+pymysql": "mysql",
}

#: The table recording applied versions (created before any version, outside the DDL files).
SCHEMA_VERSION_TABLE: dict[str, str] = {
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
        "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY, "
        "description VARCHAR(255) NOT NULL, applied_at DATETIME(6) NOT NULL "
        "DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    ),
}

_FILE = re.compile(r"^v(\d+)\.sql$")


class SchemaTooNew(SegstreamError):
    """The database's schema is newer than this segstream knows (never downgraded)."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def dialect_of(url: str) -> str:
    """``postgresql`` or ``mysql`` from a database URL's scheme (ConfigError otherwise)."""
    scheme = urlsplit(url).scheme.lower()
    dialect = DIALECTS.get(scheme)
    if dialect is None:
        raise ConfigError(
            "SEGSTREAM_SINK_SQL_URL must start with postgresql://, mysql:// or mariadb:// "
            f"(got {scheme + '://' if scheme else 'no scheme'})"
        )
    return dialect


def split_statements(text: str) -> tuple[str, ...]:
    """The statements of a DDL file: ``--`` comment lines dropped, split at a ``;`` ending a line.

    The files hold no procedural code, so a semicolon at the end of a line always ends one.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return tuple(part.strip() for part in parts if part.strip())


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    """Every version of ``dialect``'s schema, in order (v1, v2, ... without gaps)."""
    folder = resources.files("sinks.sql").joinpath("ddl", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        description = first.lstrip("- ").strip() if first.startswith("--") else entry.name
        found.append(Migration(int(match.group(1)), description, split_statements(text)))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"DDL versions of {dialect} have gaps: {[m.version for m in found]}")
    return tuple(found)


def latest(dialect: str) -> int:
    return migrations(dialect)[-1].version


def pending(dialect: str, current: int, target: int | None = None) -> tuple[Migration, ...]:
    """The versions to run, in order, to go from ``current`` (0 = empty) to ``target`` (latest).

    Raises :class:`SchemaTooNew` when the database is ahead of this code.
    """
    newest = latest(dialect)
    goal = newest if target is None else target
    if current > newest:
        raise SchemaTooNew(
            f"the database's sink schema is v{current}, newer than this segstream's "
            f"v{newest}: run a segstream at least as new as the one that upgraded it"
        )
    if not 1 <= goal <= newest:
        raise ValueError(f"target version {goal} not in 1..{newest}")
    return tuple(m for m in migrations(dialect) if current < m.version <= goal)
