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
    # how to reach a secured Kafka and Redis (docs/security.md)
    (
        "kafka_security_protocol",
        "--kafka-security-protocol",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    ),
    ("kafka_sasl_mechanism", "--kafka-sasl-mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."),
    ("kafka_sasl_username", "--kafka-sasl-username", "SASL user name."),
    (
        "kafka_sasl_password",
        "--kafka-sasl-password",
        "SASL password (visible to other local users as an argument: prefer the file).",
    ),
    ("kafka_sasl_password_file", "--kafka-sasl-password-file", "File holding the SASL password."),
    ("kafka_ssl_cafile", "--kafka-ssl-cafile", "CA bundle the brokers' certificates chain to."),
    ("kafka_ssl_certfile", "--kafka-ssl-certfile", "Client certificate (mutual TLS)."),
    ("kafka_ssl_keyfile", "--kafka-ssl-keyfile", "Client key (mutual TLS)."),
    (
        "kafka_ssl_check_hostname",
        "--kafka-ssl-check-hostname",
        "Check that the broker's certificate names the host dialled (true|false).",
    ),
    ("redis_password_file", "--redis-password-file", "File holding the Redis password."),
    ("redis_ssl_ca_certs", "--redis-ssl-ca-certs", "CA bundle for rediss:// URLs."),
    ("redis_ssl_certfile", "--redis-ssl-certfile", "Client certificate for rediss:// URLs."),
    ("redis_ssl_keyfile", "--redis-ssl-keyfile", "Client key for rediss:// URLs."),
    (
        "redis_ssl_check_hostname",
        "--redis-ssl-check-hostname",
        "Check that Redis' certificate names the host dialled (true|false).",
    ),
)
#: Settings whose value is never shown as a default in --help.
_SECRET = frozenset({"kafka_sasl_password"})


def settings_options(func: F) -> F:
    """Add the common options and pass the resulting ``settings`` to the command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {field: kwargs.pop(field) for field, _, _ in _COMMON}
        kwargs["settings"] = Settings.from_env(**values)
        return func(*args, **kwargs)

    for field, flag, help_text in reversed(_COMMON):
        default = Settings().get(field)
        shown = "" if field in _SECRET or default == "" else f" [default: {default}]"
        wrapper = click.option(
            flag,
            field,
            envvar=ENV[field],
            show_envvar=True,
            default=None,
            type=click.BOOL if isinstance(default, bool) else None,
            help=f"{help_text}{shown}",
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
