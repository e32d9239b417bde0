"""The campaigns in Redis (``{prefix}:campaigns``): create, stop, list; sync and async.

The registry is tiny (one hash field per campaign) and read by the worker's campaign consumer
before each batch of segment changes, so a campaign created by ``segstream campaign create`` is
seen by every worker at its next batch. A record that does not parse is skipped and reported
(``invalid``), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from worker.campaigns import keys
from worker.campaigns.model import Campaign, CampaignInvalid

__all__ = ["AsyncCampaignRegistry", "CampaignRegistry", "Campaigns", "parse_registry"]

_CREATE = """
if redis.call('HGET', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Campaigns:
    """The registry's content: campaigns by name, and the fields that are not campaigns."""

    by_name: dict[str, Campaign] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)

    def entering(self, segment: str, at_ms: int) -> list[Campaign]:
        """The campaigns a customer entering ``segment`` at ``at_ms`` is assigned to."""
        return [c for c in self.by_name.values() if c.enters(segment, at_ms)]


def parse_registry(raw: dict[Any, Any]) -> Campaigns:
    out, bad = {}, {}
    for name, value in raw.items():
        text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        try:
            campaign = Campaign.from_json(value)
            if campaign.name != text:
                raise CampaignInvalid(f"the record names campaign {campaign.name!r}")
            out[text] = campaign
        except CampaignInvalid as exc:
            bad[text] = str(exc)
    return Campaigns(out, bad)


class CampaignRegistry:
    """Sync access for the CLI and the analytics (a redis-py client, single or cluster)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._redis = client
        self.key = keys.registry(prefix)
        # create-if-absent with the commands segstream's ACL user has (HGET, HSET: no HSETNX)
        self._create = client.register_script(_CREATE)

    def load(self) -> Campaigns:
        return parse_registry(self._redis.hgetall(self.key))

    def get(self, name: str) -> Campaign | None:
        return self.load().by_name.get(name)

    def create(self, campaign: Campaign) -> bool:
        """Register ``campaign``; False if a campaign of that name exists (running or not)."""
        return bool(self._create(keys=[self.key], args=[campaign.name, campaign.to_json()]))

    def stop(self, name: str, at_ms: int) -> Campaign | None:
        """Stop a running campaign at ``at_ms`` (a stopped one is returned unchanged)."""
        campaign = self.get(name)
        if campaign is None or not campaign.running:
            return campaign
        stopped = replace(campaign, stopped_ms=max(at_ms, campaign.created_ms))
        self._redis.hset(self.key, name, stopped.to_json())
        return stopped


class AsyncCampaignRegistry:
    """Async reads for the worker."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._redis = client
        self.key = keys.registry(prefix)

    async def load(self) -> Campaigns:
        return parse_registry(await self._redis.hgetall(self.key))
