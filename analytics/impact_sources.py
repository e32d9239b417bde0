"""The inputs of campaign impact: assignments (Redis), orders (topic or file), segment changes.

- assignments: the campaign registry and every customer's assignments hash
  (:class:`worker.campaigns.store.AssignmentReader`: SCAN + pipelined HGETALL), as rows
  campaign, segment, customer_id, arm, assigned_ms. Forgotten customers have none.
- orders: the orders topic read from the beginning without a consumer group (nothing committed,
  nothing rebalances), or a file: JSON lines of order events (what ``segstream replay --format
  jsonl`` takes) or a generic CSV ``customer_id,order_id,ts,amount[,status][,event_id]``. Rows:
  customer_id, order_id, event_id, status, time_ms (event time), total. Only the orders of
  assigned customers at or after the earliest assignment are kept.
- segment changes: the report's reader (:func:`analytics.report.sources.read_changes`); the
  move's time is its ``processing_time`` (the clock assignments are stamped with).

A record that is not an order is skipped and counted (the worker dead-lettered it already).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from segstream.errors import SegstreamError
from worker.campaigns.registry import CampaignRegistry, Campaigns
from worker.campaigns.store import AssignmentReader
from worker.connect import RedisTarget, keyspace, sync_redis

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "ORDER_COLUMNS",
    "OrdersRead",
    "changes_for_impact",
    "read_assignments",
    "read_orders_file",
    "read_orders_topic",
]

ASSIGNMENT_COLUMNS = ["campaign", "segment", "customer_id", "arm", "assigned_ms"]
ORDER_COLUMNS = ["customer_id", "order_id", "event_id", "status", "time_ms", "total"]


class ImpactInputError(SegstreamError):
    """An input of the impact computation cannot be read (the text says which and why)."""


@dataclass(frozen=True)
class OrdersRead:
    frame: pd.DataFrame
    records: int
    rejected: int
    complete: bool
    seconds: float

    def describe(self, source: str) -> str:
        text = f"{self.records:,} records read from {source} in {self.seconds:.1f} s"
        if self.rejected:
            text += f", {self.rejected:,} not valid orders (skipped)"
        if not self.complete:
            text += ", stopped at the time limit before the end"
        return text


def read_assignments(
    redis: RedisTarget, prefix: str, campaign: str | None = None
) -> tuple[Campaigns, pd.DataFrame]:
    """The registry and the assignments (of ``campaign`` only, if given)."""
    client = sync_redis(redis)
    try:
        campaigns = CampaignRegistry(client, prefix).load()
        reader = AssignmentReader(client, keyspace(redis, prefix))
        rows = []
        for a in reader.all(campaign):
            found = campaigns.by_name.get(a.campaign)
            if found is None:
                continue  # a campaign removed from the registry by hand
            rows.append((a.campaign, found.segment, a.customer_id, a.arm, a.assigned_ms))
    finally:
        client.close()
    frame = pd.DataFrame(rows, columns=ASSIGNMENT_COLUMNS)
    return campaigns, frame.sort_values(["campaign", "customer_id"], ignore_index=True)


def _order_rows(events: Iterable[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            e.customer_id,
            e.order_id,
            e.event_id,
            e.status,
            int(e.event_time.timestamp() * 1000),
            float(e.total),
        )
        for e in events
    ]


def _keep(frame: pd.DataFrame, customers: set[str] | None, since_ms: int | None) -> pd.DataFrame:
    if customers is not None:
        frame = frame[frame["customer_id"].isin(customers)]
    if since_ms is not None:
        frame = frame[frame["time_ms"] >= since_ms]
    return frame.reset_index(drop=True)


def read_orders_topic(
    bootstrap: str,
    topic: str,
    *,
    customers: set[str] | None = None,
    since_ms: int | None = None,
    idle_s: float = 1.0,
    timeout_s: float = 300.0,
    client: Mapping[str, Any] | None = None,
) -> OrdersRead:
    """Every order event on ``topic`` (of ``customers`` since ``since_ms``), read to its end."""
    from analytics.topic_reads import read_whole_topic
    from schemas import OrderEvent

    rows: list[tuple[Any, ...]] = []

    def take(orders: Sequence[OrderEvent]) -> None:
        kept = orders if customers is None else [o for o in orders if o.customer_id in customers]
        rows.extend(_order_rows(kept))

    read = read_whole_topic(
        bootstrap, topic, OrderEvent, take, error=ImpactInputError, client_id="segstream-impact",
        idle_s=idle_s, timeout_s=timeout_s, max_records=20000, client=client,
    )  # fmt: skip
    frame = _keep(pd.DataFrame(rows, columns=ORDER_COLUMNS), customers, since_ms)
    return OrdersRead(frame, read.records, read.rejected, read.complete, read.seconds)


def read_orders_file(
    path: str | Path, *, customers: set[str] | None = None, since_ms: int | None = None
) -> OrdersRead:
    """Order events from a JSON-lines file, or a generic orders CSV (see the module docstring)."""
    from schemas import OrderEvent, decode_many

    started = time.monotonic()
    source = Path(path)
    if not source.is_file():
        raise ImpactInputError(f"orders file {source} does not exist")
    if source.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        lines = [line for line in source.read_bytes().splitlines() if line.strip()]
        valid, bad = decode_many(OrderEvent, lines)
        frame = pd.DataFrame(_order_rows(e for _, e in valid), columns=ORDER_COLUMNS)
        read = len(lines), len(bad)
    else:
        try:
            raw = pd.read_csv(source, dtype={"customer_id": str, "order_id": str})
        except (OSError, ValueError) as exc:
            raise ImpactInputError(f"orders file {source}: {exc}") from exc
        missing = {"customer_id", "order_id", "ts", "amount"} - set(raw.columns)
        if missing:
            raise ImpactInputError(f"orders file {source} lacks columns {sorted(missing)}")
        ts = pd.to_datetime(raw["ts"], utc=True, errors="coerce")
        frame = pd.DataFrame(
            {
                "customer_id": raw["customer_id"].astype(str),
                "order_id": raw["order_id"].astype(str),
                "event_id": raw["event_id"].astype(str) if "event_id" in raw else "",
                "status": raw["status"].astype(str) if "status" in raw else "placed",
                "time_ms": _ms(ts),
                "total": pd.to_numeric(raw["amount"], errors="coerce"),
            }
        )
        ok = ts.notna() & frame["total"].notna()
        read = len(raw), int((~ok).sum())
        frame = frame[ok]
    frame = _keep(frame, customers, since_ms)
    return OrdersRead(frame, read[0], read[1], True, time.monotonic() - started)


def _ms(when: pd.Series) -> pd.Series:
    """Epoch milliseconds of UTC times (NaT as 0; whatever the frame's time unit)."""
    epoch = pd.Timestamp(0, tz="UTC")
    return ((when - epoch) // pd.Timedelta(milliseconds=1)).fillna(0).astype("int64")


def changes_for_impact(changes: pd.DataFrame | None) -> pd.DataFrame:
    """The report's segment changes as customer_id, new_segment, time_ms (processing time)."""
    if changes is None or changes.empty:
        return pd.DataFrame(columns=["customer_id", "new_segment", "time_ms"])
    when = pd.to_datetime(changes["processing_time"], utc=True)
    return pd.DataFrame(
        {
            "customer_id": changes["customer_id"].astype(str),
            "new_segment": changes["new_segment"].astype(str),
            "time_ms": _ms(when),
        }
    )


@dataclass(frozen=True)
class ImpactInputs:
    """Everything the impact computation read, and where from (for the report's header)."""

    campaigns: Campaigns
    assignments: pd.DataFrame
    orders: pd.DataFrame
    changes: pd.DataFrame
    sources: dict[str, str]


def gather(
    settings: Any,
    *,
    campaign: str | None = None,
    orders_file: str = "",
    changes: pd.DataFrame | None = None,
) -> ImpactInputs:
    """Read the assignments, then the orders of the assigned customers (topic or file), then
    the segment changes (unless the caller read them already: the report has)."""
    from analytics.report.sources import read_changes
    from segstream.security import kafka_options

    campaigns, assignments = read_assignments(settings.redis, settings.redis.prefix, campaign)
    sources = {"assignments": f"{len(assignments):,} assignments of {len(campaigns.by_name)} "
               "campaign(s) from Redis"}  # fmt: skip
    customers = set(assignments["customer_id"])
    since = int(assignments["assigned_ms"].min()) if len(assignments) else None
    empty = pd.DataFrame(columns=ORDER_COLUMNS)
    if not customers:
        orders = empty
    elif orders_file:
        read = read_orders_file(orders_file, customers=customers, since_ms=since)
        orders, sources["orders"] = read.frame, read.describe(orders_file)
    else:
        topic = settings.kafka.orders_topic
        read = read_orders_topic(
            settings.kafka.bootstrap,
            topic,
            customers=customers,
            since_ms=since,
            client=kafka_options(settings.kafka),
        )
        orders, sources["orders"] = read.frame, read.describe(topic)
    if changes is None and customers:
        topic = settings.kafka.segment_changes_topic
        got = read_changes(
            settings.kafka.bootstrap,
            topic,
            idle_s=1.0,
            client_id="segstream-impact",
            client=kafka_options(settings.kafka),
        )
        changes = got.frame
        sources["segment changes"] = got.describe(topic)
    return ImpactInputs(campaigns, assignments, orders, changes_for_impact(changes), sources)
