"""Errors raised by the worker and the local service manager.

Each message names the thing involved (port, binary, topic, key) and what to do about it,
because it is what an operator reads at 3 a.m.
"""

from __future__ import annotations

from schemas.errors import SchemaError, SegstreamError

__all__ = [
    "AccessError",
    "ConfigError",
    "ModelError",
    "SchemaError",
    "SegstreamError",
    "ServiceError",
    "StateError",
]


class ConfigError(SegstreamError):
    """A setting or flag has a value segstream cannot use."""


class AccessError(SegstreamError):
    """Kafka or Redis refused this process: wrong credentials, a certificate it does not trust,
    or a permission its user lacks. Waiting does not fix these, so commands stop on them."""


class ServiceError(SegstreamError):
    """A local broker or Redis could not be started, reached or stopped."""


class StateError(SegstreamError):
    """The Redis state store refused or could not apply a write."""


class ModelError(SegstreamError):
    """No usable segmentation model, or a model artifact that cannot be loaded."""
