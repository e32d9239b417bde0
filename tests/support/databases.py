"""Private PostgreSQL and MariaDB servers for the SQL sink's tests, from the machine's binaries.

Each runs on a free port with its data and socket directories in a temporary directory, so a
test never touches a server already running on 5432/3306 and leaves nothing behind. PostgreSQL's
``initdb`` and ``postgres`` refuse to run as root, so when the tests run as root both run as the
``postgres`` user (``runuser``) on directories chowned to it. MariaDB runs as whoever we are
(``--user=root`` when root). ``./dev test`` installs the Debian packages where they are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.ports import free_port

#: How long a server may take to accept connections after it was started.
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Database:
    """A running private server: an admin URL and a database for the tests."""

    kind: str
    url: str
    port: int


class DatabaseUnavailable(RuntimeError):
    """The machine lacks the server's binaries (run ``./dev test``, which installs them)."""


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise DatabaseUnavailable(
            f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres", group="postgres")


def _wait_ready(check: list[str], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} exited at start:\n{tail}")
        if subprocess.run(check, capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def private_postgres(base: Path, database: str = "segstream") -> Iterator[Database]:
    """A PostgreSQL on a free 127.0.0.1 port, trust authentication, stopped at exit."""
    base.mkdir(parents=True, exist_ok=True)
    # The ``postgres`` user must reach its directories: pytest's temporary directories are
    # private to root, so the server's own live in a directory of their own under /tmp.
    home = Path(tempfile.mkdtemp(prefix="segstream-pg-"))
    home.chmod(0o755)
    data, sockets = home / "data", home / "sock"
    for path in (data, sockets):
        path.mkdir(mode=0o700)
        _chown_postgres(path)
    try:
        _run(_as_postgres([_postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
                           "--auth=trust", "--encoding=UTF8", "--no-sync"]))  # fmt: skip
        with _postgres_server(base, data, sockets, database) as db:
            yield db
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextmanager
def _postgres_server(base: Path, data: Path, sockets: Path, database: str) -> Iterator[Database]:
    port = free_port()
    log = base / "postgres.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _as_postgres([_postgres_bin("postgres"), "-D", str(data), "-p", str(port),
                          "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                          "-c", "fsync=off", "-c", "synchronous_commit=off",
                          "-c", "full_page_writes=off", "-c", "max_connections=50"]),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        ready = [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        _wait_ready(ready, proc, log, "private PostgreSQL")
        _run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
              database])  # fmt: skip
        yield Database("postgresql", f"postgresql://postgres@127.0.0.1:{port}/{database}", port)
    finally:
        _stop(proc)


def _mariadb_bin(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if found:
            return found
    raise DatabaseUnavailable(f"none of {names} found (apt-get install mariadb-server)")


@contextmanager
def private_mariadb(base: Path, database: str = "segstream") -> Iterator[Database]:
    """A MariaDB on a free 127.0.0.1 port, root without password, stopped at exit."""
    base.mkdir(parents=True, exist_ok=True)
    data, socket = base / "mydata", base / "mysql.sock"
    user = ["--user=root"] if os.geteuid() == 0 else []
    _run([_mariadb_bin("mariadb-install-db", "mysql_install_db"), "--no-defaults",
          f"--datadir={data}", "--auth-root-authentication-method=normal", "--skip-test-db",
          *user])  # fmt: skip
    port = free_port()
    log = base / "mariadb.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [_mariadb_bin("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}",
             f"--port={port}", f"--socket={socket}", "--skip-networking=0",
             "--bind-address=127.0.0.1", f"--pid-file={base / 'mariadb.pid'}",
             "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin", "--max-connections=50",
             "--innodb-buffer-pool-size=256M", *user],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    client = _mariadb_bin("mariadb", "mysql")
    try:
        login = [client, "--no-defaults", "-h", "127.0.0.1", f"-P{port}", "-uroot"]
        ready = [*login, "-e", "SELECT 1"]
        _wait_ready(ready, proc, log, "private MariaDB")
        _run([client, "--no-defaults", "-h", "127.0.0.1", f"-P{port}", "-uroot", "-e",
              f"CREATE DATABASE IF NOT EXISTS {database}"])  # fmt: skip
        yield Database("mysql", f"mysql://root@127.0.0.1:{port}/{database}", port)
    finally:
        _stop(proc)
