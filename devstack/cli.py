"""``segstream services up|down|status``: the local broker and Redis for development."""

from __future__ import annotations

import sys

import click

from devstack.services import LocalServices
from segstream.options import env_option


@click.group()
def services() -> None:
    """Start, inspect or stop a local broker (tansu) and Redis for development."""


@services.command("up")
@env_option("kafka_port", "--kafka-port", type=int, help="Broker port (0 picks a free one).")
@env_option("redis_port", "--redis-port", type=int, help="Redis port (0 picks a free one).")
@env_option("run_dir", "--run-dir", help="Where pid files and logs are kept.")
def services_up(kafka_port: int, redis_port: int, run_dir: str) -> None:
    """Start both services, wait until they answer, print their URLs."""
    started = LocalServices(run_dir).up(kafka_port, redis_port)
    for svc in started.values():
        click.echo(f"{svc.name:<6} {svc.url:<28} pid {svc.pid}  log {svc.log}")
    kafka, redis = started["kafka"].url, started["redis"].url
    click.echo(f"export SEGSTREAM_KAFKA_BOOTSTRAP={kafka} SEGSTREAM_REDIS_URL={redis}")


@services.command("down")
@env_option("run_dir", "--run-dir", help="Where pid files and logs are kept.")
def services_down(run_dir: str) -> None:
    """Stop exactly the processes `services up` started from this run directory."""
    stopped = LocalServices(run_dir).down()
    if not stopped:
        click.echo(f"nothing running from {run_dir}")
    for svc in stopped:
        click.echo(f"stopped {svc.name} (pid {svc.pid}, {svc.url})")


@services.command("status")
@env_option("run_dir", "--run-dir", help="Where pid files and logs are kept.")
def services_status(run_dir: str) -> None:
    """Say which of the services started from this run directory are running. Exit 3 if none."""
    any_up = False
    for name, (svc, alive) in LocalServices(run_dir).status().items():
        if svc is None:
            click.echo(f"{name:<6} not started")
        else:
            state = "running" if alive else "dead (stale record)"
            click.echo(f"{name:<6} {state:<20} {svc.url:<28} pid {svc.pid}")
        any_up = any_up or alive
    if not any_up:
        sys.exit(3)
