"""``segstream``: the one command-line entry point. Subcommands live beside the code they drive.

Every flag falls back to a ``SEGSTREAM_*`` environment variable, shown in ``--help``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from worker.cli_options import env_option
from worker.config import Settings
from worker.errors import SegstreamError
from worker.services import LocalServices

#: Subcommands that live beside the code they drive, as ``name: "module:attribute"``. They are
#: imported on first use, so ``segstream customer`` does not pay for scikit-learn and matplotlib
#: (about 2 s here) that ``train`` and ``report`` need. New commands add one line here.
LAZY_COMMANDS: dict[str, str] = {
    "demo": "worker.demo:demo",
    "worker": "worker.cli_worker:worker",
    "customer": "worker.reads:customer",
    "export": "worker.reads:export",
    "train": "worker.segmentation.cli:train_command",
    "segments": "worker.segmentation.cli:segments_command",
    "report": "worker.report.cli:report",
    "produce": "producers.cli:produce",
    "replay": "producers.cli:replay",
    "rescore": "worker.scoring.cli:rescore",
}


class _Group(click.Group):
    """Turns a :class:`SegstreamError` into one line on stderr and exit status 1, no traceback.

    It also loads the commands named in :data:`LAZY_COMMANDS` only when they are asked for.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            if command.name != cmd_name:
                raise RuntimeError(f"LAZY_COMMANDS[{cmd_name!r}] names command {command.name!r}")
            self.add_command(command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SegstreamError as exc:
            click.echo(f"segstream: error: {exc}", err=True)
            sys.exit(1)


@click.group(
    cls=_Group, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """Real-time customer segmentation over Kafka and Redis."""


@main.group(cls=_Group)
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


__all__ = ["Settings", "main"]
