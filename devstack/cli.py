"""``segstream services up|down|status|env``: the local broker and Redis (or Redis Cluster) for
development."""

from __future__ import annotations

import sys

import click

from devstack.client_env import SEGSTREAM_USER, STOREFRONT_USER, env_lines
from devstack.services import KAFKA, REDIS, LocalServices
from segstream.options import env_option, var_option
from segstream.redact import redact


@click.group()
def services() -> None:
    """Start, inspect or stop a local broker (tansu) and Redis for development."""


@services.command("up")
@env_option("kafka_port", "--kafka-port", type=int, help="Broker port (0 picks a free one).")
@env_option("redis_port", "--redis-port", type=int, help="Redis port (0 picks a free one).")
@env_option("run_dir", "--run-dir", help="Where pid files, logs and secrets are kept.")
@var_option(
    "SEGSTREAM_SERVICES_SECURE",
    "--secure",
    is_flag=True,
    help="TLS everywhere, a SCRAM-SHA-512 Kafka user and Redis ACL users (throwaway CA and "
    "random passwords under the run dir; `segstream services env` gives the settings).",
)
@env_option(
    "redis_prefix",
    "--redis-prefix",
    help="With --secure: the key prefix the Redis ACL users are confined to.",
)
@var_option(
    "SEGSTREAM_SERVICES_REDIS_CLUSTER",
    "--redis-cluster",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="A Redis Cluster of N primaries on --redis-port P, P+1, ... instead of one Redis "
    "(0: one plain Redis). Not with --secure yet.",
)
@var_option(
    "SEGSTREAM_SERVICES_REDIS_REPLICAS",
    "--replicas",
    type=click.IntRange(min=0),
    default=0,
    metavar="R",
    help="With --redis-cluster: R replicas of each primary, on the ports after the primaries'.",
)
def services_up(
    kafka_port: int,
    redis_port: int,
    run_dir: str,
    secure: bool,
    redis_prefix: str,
    redis_cluster: int,
    replicas: int,
) -> None:
    """Start both services, wait until they answer, print their URLs."""
    local = LocalServices(run_dir)
    started = local.up(
        kafka_port,
        redis_port,
        secure=secure,
        prefix=redis_prefix,
        redis_cluster=redis_cluster,
        redis_replicas=replicas,
    )
    for svc in started.values():
        role = f" ({svc.role})" if svc.role else ""
        click.echo(f"{svc.name:<13} {redact(svc.url):<34} pid {svc.pid}  log {svc.log}{role}")
    if redis_cluster:
        click.echo(
            f"Redis Cluster: {redis_cluster} primaries with {replicas} replica(s) each, "
            "all 16384 slots served (cluster_state:ok)"
        )
    access = local.secure_access()
    if access is not None:
        click.echo(
            f"secured: TLS (CA {access.ca_file}), Kafka SASL {access.kafka_mechanism} and Redis "
            f"ACL user {SEGSTREAM_USER} (keys {access.prefix}:* only), read-only Redis user "
            f"{STOREFRONT_USER}; passwords in {local.run_dir / 'secure'} (mode 0600)"
        )
    click.echo(f'settings for clients: eval "$(segstream services env --run-dir {run_dir})"')


@services.command("env")
@env_option("run_dir", "--run-dir", help="Where pid files, logs and secrets are kept.")
@click.option(
    "--user",
    type=click.Choice([SEGSTREAM_USER, STOREFRONT_USER]),
    default=SEGSTREAM_USER,
    show_default=True,
    help="Whose settings: segstream's processes (Kafka and Redis), or the storefront's "
    "read-only Redis user (secure services only; Redis lines only).",
)
def services_env(run_dir: str, user: str) -> None:
    """Print the `export SEGSTREAM_...` lines a client needs for the running services.

    Use as `eval "$(segstream services env)"`. Passwords stay in their files: the lines name
    the files (SEGSTREAM_KAFKA_SASL_PASSWORD_FILE, SEGSTREAM_REDIS_PASSWORD_FILE), never a
    secret. Security settings the services do not need are unset.
    """
    for line in env_lines(LocalServices(run_dir).client_settings(user)):
        click.echo(line)


@services.command("down")
@env_option("run_dir", "--run-dir", help="Where pid files, logs and secrets are kept.")
def services_down(run_dir: str) -> None:
    """Stop exactly the processes `services up` started from this run directory."""
    stopped = LocalServices(run_dir).down()
    if not stopped:
        click.echo(f"nothing running from {run_dir}")
    for svc in stopped:
        click.echo(f"stopped {svc.name} (pid {svc.pid}, {redact(svc.url)})")


@services.command("status")
@env_option("run_dir", "--run-dir", help="Where pid files, logs and secrets are kept.")
def services_status(run_dir: str) -> None:
    """Say which of the services started from this run directory are running. Exit 3 if none."""
    local = LocalServices(run_dir)
    any_up = False
    for name, (svc, alive) in local.status().items():
        if svc is None:
            click.echo(f"{name:<13} not started")
        else:
            state = "running" if alive else "dead (stale record)"
            role = f"  {svc.role}" if svc.role else ""
            click.echo(f"{name:<13} {state:<20} {redact(svc.url):<34} pid {svc.pid}{role}")
        any_up = any_up or alive
    if any_up and local.secure_access() is not None:
        click.echo(f"secured ({KAFKA}: TLS + SASL, {REDIS}: TLS + ACL users)")
    if not any_up:
        sys.exit(3)
