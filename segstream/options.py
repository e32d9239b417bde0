"""Click options shared by every ``segstream`` subcommand, each falling back to its env variable.

A command decorated with :func:`settings_options` receives one ``settings: Settings`` argument
built from flags, then environment (via the names in :data:`segstream.settings.ENV`), then defaults.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from segstream.settings import ENV, Settings

F = TypeVar("F", bound=Callable[..., Any])

#: (field, flag, help) for the options every command that talks to Kafka or Redis accepts.
_COMMON: tuple[tuple[str, str, str], ...] = (
    ("kafka_bootstrap", "--kafka-bootstrap", "Kafka bootstrap servers (host:port,...)."),
    ("redis_url", "--redis-url", "Redis URL holding the customer state."),
    ("redis_prefix", "--redis-prefix", "Prefix of every Redis key segstream writes."),
    ("orders_topic", "--orders-topic", "Topic of order events."),
    ("clicks_topic", "--clicks-topic", "Topic of clickstream events."),
    ("dead_letter_topic", "--dead-letter-topic", "Topic receiving rejected input records."),
    ("segment_changes_topic", "--segment-changes-topic", "Topic receiving segment changes."),
    ("control_topic", "--control-topic", "Topic carrying model-update and drift notices."),
    ("model_dir", "--model-dir", "Directory of versioned model artifacts."),
    ("run_dir", "--run-dir", "Directory for pid files and logs of local services."),
)


def settings_options(func: F) -> F:
    """Add the common options and pass the resulting ``settings`` to the command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {field: kwargs.pop(field) for field, _, _ in _COMMON}
        kwargs["settings"] = Settings.from_env(**values)
        return func(*args, **kwargs)

    for field, flag, help_text in reversed(_COMMON):
        wrapper = click.option(
            flag,
            field,
            envvar=ENV[field],
            show_envvar=True,
            default=None,
            help=f"{help_text} [default: {Settings().get(field)}]",
        )(wrapper)
    return wrapper  # type: ignore[return-value]


def env_option(field: str, *flags: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option for one settings field that falls back to its environment variable."""
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    kwargs.setdefault("default", Settings().get(field))
    return click.option(*flags, field, envvar=ENV[field], **kwargs)


def var_option(var: str, *flags: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that is not a :class:`Settings` field but still falls back to ``var``."""
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", not kwargs.get("is_flag", False))
    return click.option(*flags, envvar=var, **kwargs)
