"""Which model is live and which came before: the promotion history and what a rollback means.

Pure: records in, versions out (the Redis side is :class:`.artifacts_redis.RedisModelStore`).

Every time ``{prefix}:model:current`` is moved by segstream (``train`` publishing, a gated
retrain that passed, ``models promote``, ``models rollback``) one :class:`Promotion` is appended
to the history. A rollback is an *undo*: replaying the history as a stack (a promotion pushes
its version, a rollback pops the version it rolled back) gives the versions that were live, in
order, and a rollback goes to the one under the top. Rolling back twice goes two promotions
back; once only the first promoted version is left there is nothing to roll back to (the
command says so and changes nothing), rather than wrapping round or guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: What moved the pointer: ``train`` (a manual ``segstream train`` that publishes), ``retrain``
#: (``train --gate``, e.g. started by drift, that passed its gate), ``promote``, ``rollback``.
ACTIONS = ("train", "retrain", "promote", "rollback")


@dataclass(frozen=True)
class Promotion:
    """One move of the live pointer: ``previous`` -> ``version``."""

    version: str
    previous: str | None
    action: str
    #: UTC time, ISO 8601.
    at: str
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Promotion | None:
        """The record in ``raw``, or ``None`` for anything that is not one (never raises)."""
        try:
            data: Any = json.loads(raw)
            version = data["version"]
            if not isinstance(version, str) or not version:
                return None
            previous = data.get("previous")
            return cls(
                version=version,
                previous=previous if isinstance(previous, str) and previous else None,
                action=str(data.get("action", "promote")),
                at=str(data.get("at", "")),
                note=str(data.get("note", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def live_stack(history: Iterable[Promotion], current: str | None) -> list[str]:
    """The versions that were live, oldest first, as the history's undo stack.

    A promotion of the version already on top changes nothing; a rollback pops the version it
    rolled back (when it is on top) and makes sure its target is on top. The pointer is the
    truth where the two disagree: if it names the version under the top, the last record is a
    promotion that was interrupted before the pointer moved (the store writes the record
    first), and it is dropped; any other version (set by hand, or published before there was a
    history) is taken as promoted last.
    """
    stack: list[str] = []
    for p in history:
        if p.action == "rollback" and stack and stack[-1] == p.previous:
            stack.pop()
        if not stack or stack[-1] != p.version:
            stack.append(p.version)
    if current and (not stack or stack[-1] != current):
        if len(stack) >= 2 and stack[-2] == current:
            stack.pop()
        else:
            stack.append(current)
    return stack


def rollback_target(history: Iterable[Promotion], current: str | None) -> str | None:
    """The version a rollback from ``current`` goes to, or ``None`` (nothing to roll back to)."""
    stack = live_stack(history, current)
    return stack[-2] if len(stack) >= 2 else None


def ever_live(history: Sequence[Promotion]) -> set[str]:
    """Every version the history ever made live."""
    return {p.version for p in history}
