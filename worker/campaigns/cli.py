"""``segstream campaign create | list | stop``: campaigns with a holdout (docs/campaigns.md).

``create NAME --segment S [--holdout 0.1] [--description TEXT]`` registers the campaign in
Redis (``{prefix}:campaigns``; from then on every worker assigns the customers entering ``S``),
then assigns the customers already in ``S`` (a SCAN of the customer hashes' ``segment`` field),
each at the creation time, and publishes their records to ``campaign-assignments``. ``stop``
ends the assignment of newcomers (the assigned keep their arm: impact is still measured).
Output counts customers and never names one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from segstream.errors import ConfigError, SegstreamError
from segstream.options import env_option, settings_options
from segstream.redact import redact
from segstream.settings import Settings
from worker.campaigns.model import ARMS, Assignment, Campaign, CampaignInvalid
from worker.campaigns.publisher import AssignmentPublisher, record_of
from worker.campaigns.registry import CampaignRegistry
from worker.campaigns.store import AssignmentReader, Candidate
from worker.connect import keyspace, sync_redis
from worker.preflight import checks_access
from worker.state.keys import Keyspace

__all__ = ["campaign", "members_of"]

#: Customers assigned per Redis round and per publish.
PAGE = 1000


def members_of(client: Any, space: Keyspace, segment: str, page: int = PAGE) -> Iterator[str]:
    """The customers whose hash carries ``segment`` now (SCAN every primary, pipelined HGET)."""
    seen: set[str] = set()
    found: list[bytes] = []

    def flush() -> Iterator[str]:
        pipe = client.pipeline(transaction=False)
        for key in found:
            pipe.hget(key, "segment")
        for key, value in zip(found, pipe.execute(), strict=True):
            cid = space.customer_id_of(key)
            if value is not None and value.decode() == segment and cid not in seen:
                seen.add(cid)
                yield cid

    for key in client.scan_iter(match=space.customer_pattern(), count=page):
        found.append(key)
        if len(found) >= page:
            yield from flush()
            found = []
    if found:
        yield from flush()


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("campaign")
def campaign() -> None:
    """Campaigns on a segment with a holdout: create, list, stop (docs/campaigns.md)."""


@campaign.command("create")
@click.argument("name")
@click.option(
    "--segment",
    "segment",
    required=True,
    envvar="SEGSTREAM_CAMPAIGN_SEGMENT",
    show_envvar=True,
    help="The segment the campaign targets (its name).",
)
@click.option(
    "--holdout",
    type=float,
    default=0.1,
    show_default=True,
    envvar="SEGSTREAM_CAMPAIGN_HOLDOUT",
    show_envvar=True,
    help="Share of the customers kept out of the campaign (the control group).",
)
@click.option(
    "--description",
    default="",
    envvar="SEGSTREAM_CAMPAIGN_DESCRIPTION",
    show_envvar=True,
    help="What the campaign does, for the people reading its impact.",
)
@env_option(
    "campaign_assignments_topic", "--assignments-topic", help="Topic the arms are published to."
)
@settings_options
@checks_access(kafka=True, redis=True)
def create(
    name: str,
    segment: str,
    holdout: float,
    description: str,
    campaign_assignments_topic: str,
    settings: Settings,
) -> None:
    """Create a campaign on SEGMENT and assign the customers in it now."""
    settings = settings.with_(campaign_assignments_topic=campaign_assignments_topic)
    now = int(time.time() * 1000)
    try:
        new = Campaign(name, segment, holdout, now, description)
    except CampaignInvalid as exc:
        raise ConfigError(str(exc)) from None
    client = sync_redis(settings.redis)
    try:
        registry = CampaignRegistry(client, settings.redis.prefix)
        if not registry.create(new):
            old = registry.get(name)
            state = "stopped" if old is not None and not old.running else "running"
            raise ConfigError(f"campaign {name!r} exists ({state}): pick another name")
        arms = asyncio.run(_assign_members(settings, client, new))
    finally:
        client.close()
    click.echo(
        f"campaign {name} created on segment {segment!r} (holdout {holdout:.0%}): "
        f"{sum(arms.values()):,} customers in it now assigned ({arms['treatment']:,} treatment, "
        f"{arms['holdout']:,} holdout), published to {settings.kafka.campaign_assignments_topic}; "
        "customers entering it from now on are assigned by the workers"
    )


async def _assign_members(settings: Settings, client: Any, new: Campaign) -> Counter[str]:
    space = keyspace(settings.redis, settings.redis.prefix)
    reader = AssignmentReader(client, space)
    publisher = AssignmentPublisher(
        settings.kafka, settings.kafka.campaign_assignments_topic, client_id="segstream-campaign"
    )
    arms: Counter[str] = Counter({arm: 0 for arm in ARMS})
    try:
        page: list[Candidate] = []
        for cid in members_of(client, space, new.segment):
            page.append((new, cid, new.created_ms))
            if len(page) >= PAGE:
                await _one_page(reader, publisher, page, arms)
                page = []
        await _one_page(reader, publisher, page, arms)
    except SegstreamError:
        raise
    except Exception as exc:  # a broker error: one line, no traceback, no secret
        raise SegstreamError(
            redact(
                f"campaign {new.name} is registered (workers assign newcomers), but assigning the "
                f"customers in it now failed: {type(exc).__name__}: {exc}; run `segstream "
                f"campaign assign {new.name}` to finish"
            ).replace("\n", " ")
        ) from exc
    finally:
        await publisher.stop()
    return arms


async def _one_page(
    reader: AssignmentReader,
    publisher: AssignmentPublisher,
    page: list[Candidate],
    arms: Counter[str],
) -> None:
    if not page:
        return
    stored = reader.record(page)
    owed: list[tuple[Assignment, Campaign]] = []
    for (campaign_, _, _), got in zip(page, stored, strict=True):
        if got is not None:
            arms[got.arm] += 1
            if not got.published:
                owed.append((got, campaign_))
    await publisher.publish([record_of(a, c) for a, c in owed])
    reader.mark_published([a for a, _ in owed])


@campaign.command("assign")
@click.argument("name")
@env_option(
    "campaign_assignments_topic", "--assignments-topic", help="Topic the arms are published to."
)
@settings_options
@checks_access(kafka=True, redis=True)
def assign(name: str, campaign_assignments_topic: str, settings: Settings) -> None:
    """Assign (again) the customers in a running campaign's segment now (idempotent)."""
    settings = settings.with_(campaign_assignments_topic=campaign_assignments_topic)
    client = sync_redis(settings.redis)
    try:
        found = CampaignRegistry(client, settings.redis.prefix).get(name)
        if found is None:
            raise ConfigError(f"no campaign named {name!r} (segstream campaign list)")
        if not found.running:
            raise ConfigError(f"campaign {name!r} is stopped: it assigns nobody any more")
        arms = asyncio.run(_assign_members(settings, client, found))
    finally:
        client.close()
    click.echo(
        f"campaign {name}: {sum(arms.values()):,} customers in {found.segment!r} assigned "
        f"({arms['treatment']:,} treatment, {arms['holdout']:,} holdout)"
    )


@campaign.command("list")
@click.option(
    "--counts/--no-counts",
    default=True,
    show_default=True,
    help="Count each campaign's assigned customers per arm (a SCAN).",
)
@settings_options
@checks_access(redis=True)
def list_(counts: bool, settings: Settings) -> None:
    """Every campaign: segment, holdout, running or stopped, customers per arm."""
    client = sync_redis(settings.redis)
    try:
        found = CampaignRegistry(client, settings.redis.prefix).load()
        per: Counter[tuple[str, str]] = Counter()
        if counts and found.by_name:
            reader = AssignmentReader(client, keyspace(settings.redis, settings.redis.prefix))
            for a in reader.all():
                per[(a.campaign, a.arm)] += 1
    finally:
        client.close()
    if not found.by_name and not found.invalid:
        click.echo("no campaign (segstream campaign create NAME --segment S)")
        return
    head = (
        f"{'campaign':<24} {'segment':<18} {'holdout':>7} {'status':<8} {'created':<20} "
        f"{'stopped':<20}"
    )
    if counts:
        head += f" {'treatment':>9} {'holdout':>9}"
    click.echo(head)
    for c in sorted(found.by_name.values(), key=lambda c: c.created_ms):
        line = (
            f"{c.name:<24} {c.segment:<18} {c.holdout:>7.0%} "
            f"{'running' if c.running else 'stopped':<8} {_when(c.created_ms):<20} "
            f"{_when(c.stopped_ms):<20}"
        )
        if counts:
            line += f" {per[(c.name, 'treatment')]:>9,} {per[(c.name, 'holdout')]:>9,}"
        click.echo(line)
        if c.description:
            click.echo(f"  {c.description}")
    for name, why in sorted(found.invalid.items()):
        click.echo(f"{name:<24} (unreadable record: {why})")


list_.name = "list"


@campaign.command("stop")
@click.argument("name")
@settings_options
@checks_access(redis=True)
def stop(name: str, settings: Settings) -> None:
    """Stop assigning newcomers to a campaign (the assigned keep their arm)."""
    client = sync_redis(settings.redis)
    try:
        stopped = CampaignRegistry(client, settings.redis.prefix).stop(
            name, int(time.time() * 1000)
        )
    finally:
        client.close()
    if stopped is None:
        raise ConfigError(f"no campaign named {name!r} (segstream campaign list)")
    click.echo(f"campaign {name} stopped at {_when(stopped.stopped_ms)}")
