"""Assignments in Redis: recorded once per customer and campaign, marked once published.

``assign.lua`` (documented in the file) does both, one call per customer touching only the
customer's space (their assignments hash and their suppression entry share a hash tag), so it
runs unchanged on a single Redis and on a Redis Cluster. :class:`AssignmentStore` is the
worker's (asyncio) access, :class:`AssignmentReader` the CLI's and the analytics' (sync):
record, mark published, and read every assignment (SCAN of ``{space}:cp:{*}``).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator, Sequence
from typing import Any

from worker.campaigns import keys
from worker.campaigns.model import Assignment, Campaign, CampaignInvalid
from worker.state.keys import Keyspace

__all__ = ["AssignmentReader", "AssignmentStore", "Candidate", "script_text"]

#: (campaign, customer id, assigned ms): an assignment to record.
Candidate = tuple[Campaign, str, int]


def script_text() -> str:
    return (importlib.resources.files("worker.campaigns") / "assign.lua").read_text()


def _keys(keyspace: Keyspace, customer_id: str) -> list[str]:
    space = keyspace.space_of(customer_id)
    return [keys.assignments(space, customer_id), keys.suppression(space, customer_id)]


def _assign_args(items: Sequence[Candidate]) -> list[str | int]:
    args: list[str | int] = ["assign"]
    for campaign, cid, ms in items:
        args += [campaign.name, campaign.arm(cid), ms]
    return args


def _parse(items: Sequence[Candidate], reply: Sequence[Any]) -> list[Assignment | None]:
    out: list[Assignment | None] = []
    for (campaign, cid, _), raw in zip(items, reply, strict=True):
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        out.append(Assignment.parse(campaign.name, cid, text) if text else None)
    return out


def _by_customer(items: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    grouped: dict[str, list[Candidate]] = {}
    for item in items:
        grouped.setdefault(item[1], []).append(item)
    return grouped


class AssignmentStore:
    """The worker's access (an asyncio redis-py client, single or cluster)."""

    def __init__(self, client: Any, keyspace: Keyspace) -> None:
        self._redis = client
        self.keyspace = keyspace
        self._script = client.register_script(script_text())

    async def record(self, items: Sequence[Candidate]) -> list[Assignment | None]:
        """Record each candidate once; per candidate the stored assignment (the first one
        recorded wins), or None when the customer was forgotten after it (skipped)."""
        grouped = _by_customer(items)
        found: dict[tuple[str, str], Assignment | None] = {}
        for cid, mine in grouped.items():
            reply = await self._script(keys=_keys(self.keyspace, cid), args=_assign_args(mine))
            for (campaign, _, _), got in zip(mine, _parse(mine, reply), strict=True):
                found[(campaign.name, cid)] = got
        return [found[(c.name, cid)] for c, cid, _ in items]

    async def mark_published(self, done: Sequence[Assignment]) -> None:
        by_customer: dict[str, list[str]] = {}
        for a in done:
            by_customer.setdefault(a.customer_id, []).append(a.campaign)
        for cid, names in by_customer.items():
            await self._script(keys=_keys(self.keyspace, cid), args=["published", *names])


class AssignmentReader:
    """Sync access: record (``segstream campaign create``'s members), mark, read them all."""

    def __init__(self, client: Any, keyspace: Keyspace) -> None:
        self._redis = client
        self.keyspace = keyspace
        self._script = client.register_script(script_text())

    def record(self, items: Sequence[Candidate]) -> list[Assignment | None]:
        out: dict[tuple[str, str], Assignment | None] = {}
        for cid, mine in _by_customer(items).items():
            reply = self._script(keys=_keys(self.keyspace, cid), args=_assign_args(mine))
            for (campaign, _, _), got in zip(mine, _parse(mine, reply), strict=True):
                out[(campaign.name, cid)] = got
        return [out[(c.name, cid)] for c, cid, _ in items]

    def mark_published(self, done: Sequence[Assignment]) -> None:
        by_customer: dict[str, list[str]] = {}
        for a in done:
            by_customer.setdefault(a.customer_id, []).append(a.campaign)
        for cid, names in by_customer.items():
            self._script(keys=_keys(self.keyspace, cid), args=["published", *names])

    def get(self, customer_id: str) -> dict[str, Assignment]:
        """One customer's assignments, by campaign."""
        raw = self._redis.hgetall(keys.assignments(self.keyspace.space_of(customer_id),
                                                   customer_id))  # fmt: skip
        return {a.campaign: a for a in self._parsed(customer_id, raw)}

    def all(self, campaign: str | None = None, page: int = 1000) -> Iterator[Assignment]:
        """Every assignment (of ``campaign`` only, if given): SCAN every primary, then one
        pipelined HGETALL per page of keys. A record that does not parse is skipped."""
        seen: set[str] = set()
        found: list[bytes] = []
        for key in self._redis.scan_iter(match=keys.assignments_pattern(self.keyspace), count=page):
            found.append(key)
            if len(found) == page:
                yield from self._page(found, seen, campaign)
                found = []
        yield from self._page(found, seen, campaign)

    def _page(
        self, found: list[bytes], seen: set[str], campaign: str | None
    ) -> Iterator[Assignment]:
        if not found:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in found:
            if campaign is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, [campaign])
        for key, raw in zip(found, pipe.execute(), strict=True):
            cid = keys.customer_of(key)
            if cid in seen:
                continue
            seen.add(cid)
            if campaign is not None:
                raw = {campaign: raw[0]} if raw and raw[0] is not None else {}
            yield from self._parsed(cid, raw)

    @staticmethod
    def _parsed(customer_id: str, raw: dict[Any, Any]) -> Iterator[Assignment]:
        for name, value in raw.items():
            text = name.decode() if isinstance(name, bytes) else str(name)
            try:
                yield Assignment.parse(text, customer_id, value)
            except CampaignInvalid:
                continue
