"""A redis-server of a test's own behind TLS, with an admin the test uses to shape ACL users.

``segstream services up --secure`` gives the segstream and storefront users only; a test that
needs a user *lacking* a permission creates it here, as the admin, on a TLS-only server.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import redis

from devstack.certs import LocalCerts, issue_local_certs
from devstack.ports import free_port
from devstack.processes import redis_server_binary
from tests.support.waiting import wait_for


class TlsRedis:
    """redis-server with ``--tls-port`` only; ``admin`` is the password-protected default user."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.certs: LocalCerts = issue_local_certs(directory / "tls")
        self.admin_password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        c = self.certs
        args = [
            str(redis_server_binary()), "--port", "0", "--tls-port", str(self.port),
            "--bind", "127.0.0.1", "--tls-cert-file", str(c.server_cert),
            "--tls-key-file", str(c.server_key), "--tls-ca-cert-file", str(c.ca),
            "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--requirepass", self.admin_password,
        ]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._answers, 15, "the TLS redis-server")

    def url(self, user: str, password: str | None = None) -> str:
        secret = f":{password}" if password is not None else ""
        return f"rediss://{user}{secret}@localhost:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url("default", self.admin_password), ssl_ca_certs=str(self.certs.ca)
        )

    def add_user(self, name: str, password: str, rules: list[str]) -> None:
        with self.admin() as client:
            client.execute_command("ACL", "SETUSER", name, "on", f">{password}", *rules)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def _answers(self) -> bool:
        try:
            with self.admin() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
