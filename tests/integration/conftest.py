"""Fixtures of the integration tier beyond the broker and Redis: private SQL databases.

One PostgreSQL and one MariaDB per test session (per xdist process), each started from the
machine's binaries on a free port (tests/support/databases.py), never a server already running
on 5432/3306; each test gets a fresh database of its own on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.support.databases import Database, private_mariadb, private_postgres


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    with private_postgres(Path(tmp_path_factory.mktemp("postgres"))) as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    with private_mariadb(Path(tmp_path_factory.mktemp("mariadb"))) as server:
        yield server


def _fresh_postgres(server: Database, name: str) -> str:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def _fresh_mariadb(server: Database, name: str) -> str:
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"mysql://root@127.0.0.1:{server.port}/{name}"


@pytest.fixture(params=["postgresql", "mariadb"])
def sql_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of this test, on the session's PostgreSQL or MariaDB."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        return _fresh_postgres(request.getfixturevalue("postgres_server"), name)
    return _fresh_mariadb(request.getfixturevalue("mariadb_server"), name)
