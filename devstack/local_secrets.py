"""The throwaway secrets of ``segstream services up --secure``: CA, certificates, users, ACLs.

Each ``up --secure`` makes everything anew under ``RUN_DIR/secure`` (a directory of mode 0700):
a CA and the services' certificates (:mod:`devstack.certs`), one random password per user
(:mod:`secrets`) in its own file of mode 0600, the Redis ACL file (passwords only as SHA-256
hashes) and the Kafka gateway's users file. ``RUN_DIR/secure.json`` records the paths and
names a client needs (:class:`~devstack.client_env.SecureAccess`), never a secret; ``down``
removes all of it, so a password outlives its services by no more than the services do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack.client_env import SEGSTREAM_USER, STOREFRONT_USER, SecureAccess
from segstream.acl import segstream_acl, storefront_acl

__all__ = [
    "SECURE_DIR",
    "SecureMaterial",
    "create_material",
    "load_access",
    "redis_acl_text",
    "remove_material",
    "write_secret",
]

SECURE_DIR = "secure"
ACCESS_FILE = "secure.json"
#: The SASL mechanism of the local broker's user.
KAFKA_MECHANISM = "SCRAM-SHA-512"
#: Random bytes of each password (urlsafe base64: no quoting trouble anywhere).
PASSWORD_BYTES = 24


@dataclass(frozen=True)
class SecureMaterial:
    """What the secured services are started with, and what their clients are told."""

    access: SecureAccess
    server_cert: str
    server_key: str
    redis_acl_file: str
    kafka_users_file: str


def create_material(run_dir: Path, prefix: str) -> SecureMaterial:
    """A fresh CA, certificates, passwords, Redis ACL file and Kafka users under ``run_dir``."""
    # Imported here: plain services (and every test session) need no cryptography.
    from devstack.certs import issue_local_certs
    from devstack.sasl import User, write_users_file

    directory = run_dir / SECURE_DIR
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    certs = issue_local_certs(directory)
    passwords = {
        "kafka": secrets.token_urlsafe(PASSWORD_BYTES),
        "redis": secrets.token_urlsafe(PASSWORD_BYTES),
        "storefront": secrets.token_urlsafe(PASSWORD_BYTES),
    }
    files = {name: directory / f"{name}.password" for name in passwords}
    for name, password in passwords.items():
        write_secret(files[name], password + "\n")
    acl_file = directory / "redis-users.acl"
    write_secret(
        acl_file,
        redis_acl_text(
            {
                SEGSTREAM_USER: (passwords["redis"], segstream_acl(prefix)),
                STOREFRONT_USER: (passwords["storefront"], storefront_acl(prefix)),
            }
        ),
    )
    users_file = directory / "kafka-users"
    write_users_file(users_file, [User(SEGSTREAM_USER, KAFKA_MECHANISM, passwords["kafka"])])
    access = SecureAccess(
        prefix=prefix,
        ca_file=str(certs.ca),
        kafka_password_file=str(files["kafka"]),
        redis_password_file=str(files["redis"]),
        storefront_password_file=str(files["storefront"]),
        kafka_mechanism=KAFKA_MECHANISM,
    )
    (run_dir / ACCESS_FILE).write_text(json.dumps(asdict(access)))
    return SecureMaterial(
        access=access,
        server_cert=str(certs.server_cert),
        server_key=str(certs.server_key),
        redis_acl_file=str(acl_file),
        kafka_users_file=str(users_file),
    )


def load_access(run_dir: Path) -> SecureAccess | None:
    """What ``up --secure`` recorded in ``run_dir``, or ``None`` (plain services, or none)."""
    path = run_dir / ACCESS_FILE
    if not path.is_file():
        return None
    try:
        return SecureAccess(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def remove_material(run_dir: Path) -> None:
    """Forget every secret ``create_material`` made (``services down``, a failed ``up``)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(run_dir / SECURE_DIR)
    (run_dir / ACCESS_FILE).unlink(missing_ok=True)


def redis_acl_text(users: Mapping[str, tuple[str, Sequence[str]]]) -> str:
    """A Redis ACL file: ``default`` switched off, each user on with a hashed password.

    ``users``: name -> (password, rules). Only the SHA-256 of each password is written
    (``#<hex>``), so the ACL file itself gives nobody a way in.
    """
    lines = ["user default off resetpass nocommands resetkeys resetchannels"]
    for name, (password, rules) in users.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        lines.append(" ".join(["user", name, "reset", "on", f"#{digest}", *rules]))
    return "\n".join(lines) + "\n"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` with mode 0600 from the first byte on (no window where others can read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        out.write(text)
