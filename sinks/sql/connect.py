"""Which database a URL names, opened (not connected): PostgreSQL or MySQL/MariaDB.

Each driver is imported only when its URL is given, so a PostgreSQL user needs no MySQL client.
"""

from __future__ import annotations

from sinks.sql.database import Database
from sinks.sql.schema import dialect_of

__all__ = ["open_database"]


def open_database(url: str) -> Database:
    """The database of ``url`` (``postgresql://`` or ``mysql://``/``mariadb://``), not connected."""
    if dialect_of(url) == "postgresql":
        from sinks.sql.postgres import PostgresDatabase

        return PostgresDatabase(url)
    from sinks.sql.mysql import MysqlDatabase

    return MysqlDatabase(url)
