"""What the loop needs of a database, whichever it is (:mod:`sinks.sql.connect` opens one).

A write either commits everything of a batch (rows, profiles, offsets) or nothing. Its failures
come in two kinds, and the loop treats them differently:

- :class:`RecordRefused`: the database refuses a value of this batch (a text it cannot store, a
  number out of range): the batch is split until the record is alone, which is dead-lettered;
- anything else (connection lost, server restarting, lock timeout, disk full, a permission):
  an outage, waited out with the same batch, never a reason to drop a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sinks.sql.plan import BatchPlan
from sinks.sql.profiles import ProfileRow


class RecordRefused(Exception):
    """The database refused a value of the batch (not an outage): split it, find the record."""


class Database(Protocol):
    dialect: str

    def connect(self) -> None:
        """(Re)connect; a broken connection is dropped first."""

    def close(self) -> None: ...

    def schema_version(self) -> int:
        """The highest applied version (0 = a database the sink never wrote)."""

    def migrate(self, target: int | None = None) -> tuple[int, int]:
        """Bring the schema to ``target`` (default latest) under a lock; ``(from, to)``."""

    def offsets(self, topic: str) -> dict[int, int]:
        """partition -> next offset to read, as committed with the rows."""

    def known_versions(self) -> set[str]:
        """Model versions already in ``segment_profile``."""

    def write(self, plan: BatchPlan, profiles: Sequence[ProfileRow]) -> None:
        """Everything of one batch in one transaction; raises RecordRefused or an outage."""
