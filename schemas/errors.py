"""The exception root shared by every segstream package.

It lives in ``schemas`` because that is the one package every other one imports; keeping the
root here means ``worker`` and ``producers`` never need to import each other for an except clause.
"""

from __future__ import annotations


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class SchemaError(SegstreamError):
    """An event failed to decode or validate; ``path`` names the field, ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
