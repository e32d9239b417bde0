"""``segstream``: the one command-line entry point. Subcommands live beside the code they drive.

Every flag falls back to a ``SEGSTREAM_*`` environment variable, shown in ``--help``.
"""

from __future__ import annotations

import importlib
import ssl
import sys
from typing import Any

import click

from segstream.errors import SegstreamError
from segstream.redact import redact
from segstream.settings import Settings

#: Subcommands that live beside the code they drive, as ``name: "module:attribute"``. They are
#: imported on first use, so ``segstream customer`` never loads scikit-learn and matplotlib,
#: which only ``train`` and ``report`` need. New commands add one line here.
LAZY_COMMANDS: dict[str, str] = {
    "demo": "devstack.demo:demo",
    "acl": "segstream.acl_cli:acl",
    "services": "devstack.cli:services",
    "worker": "worker.cli:worker",
    "customer": "worker.reads:customer",
    "export": "worker.reads:export",
    "train": "analytics.cli:train_command",
    "segments": "analytics.cli:segments_command",
    "models": "analytics.models_cli:models",
    "report": "analytics.report.cli:report",
    "produce": "producers.cli:produce",
    "replay": "producers.cli:replay",
    "rescore": "worker.scoring.cli:rescore",
    "forget": "worker.erase.cli:forget",
    "sink": "sinks.sql.cli:sink",
    "dashboard": "dashboard.cli:dashboard",
    "recommend": "analytics.recommend_cli:recommend",
    "campaign": "worker.campaigns.cli:campaign",
    "impact": "analytics.impact_cli:impact",
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
            click.echo(f"segstream: error: {redact(str(exc))}", err=True)
            sys.exit(1)
        except Exception as exc:
            refusal = _access_refusal(exc)
            if refusal is None:
                raise
            click.echo(f"segstream: error: {refusal}", err=True)
            sys.exit(1)


#: Exceptions of the Kafka and Redis clients that mean "refused", not "not answering": a
#: command that meets one mid-way (a permission its user lacks) stops with one line.
_REFUSALS = frozenset(
    {
        "AuthenticationError",
        "AuthenticationWrongNumberOfArgsError",
        "NoPermissionError",
        "SaslAuthenticationFailed",
        "UnsupportedSaslMechanismError",
        "TopicAuthorizationFailedError",
        "GroupAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
    }
)


def _access_refusal(exc: BaseException) -> str | None:
    """One line for a refusal by Kafka or Redis (or a TLS failure) anywhere in ``exc``'s chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return redact(f"TLS failed: {current} (check the CA file and host name settings)")
        if kind.__name__ in _REFUSALS and kind.__module__.split(".")[0] in _CLIENTS:
            return redact(f"{kind.__name__}: {current}")
        current = current.__cause__ or current.__context__
    return None


_CLIENTS = frozenset({"redis", "kafka", "aiokafka"})


@click.group(
    cls=_Group, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """Real-time customer segmentation over Kafka and Redis."""


__all__ = ["Settings", "main"]
