"""The demo's campaign: one campaign on a trained segment, and a simulated response to it.

After training, :func:`create_campaign` runs ``segstream campaign create`` on the model's
at-risk segment (else its largest lapsed one, else its first), holdout 20 %: the customers in it
now are assigned at once, and the worker assigns those the re-scoring moves into it. After the
live stream, :func:`simulate_response` plays 30 days of the campaign's effect compressed into a
few seconds of orders stamped now: each assigned customer orders at their own historical rate,
treated ones :data:`EFFECT` more often (``producers/campaign_effect.py``), so the report's impact
section shows a known lift (about +30 % orders and revenue per customer) with its interval.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import click

from segstream.security import kafka_options
from segstream.settings import Settings

#: The demo campaign, its holdout and the simulated truth (treated customers order 30 % more).
NAME = "demo-winback"
HOLDOUT = 0.2
EFFECT = 0.3
WINDOW_DAYS = 30.0
#: Preferred target segments, in order (profile names of analytics/profiles.py).
PREFERRED = ("at_risk", "cant_lose", "hibernating", "loyal", "promising")


def _target(settings: Settings) -> str | None:
    from analytics.report.sources import load_model_redis

    model, _ = load_model_redis(settings.redis, settings.redis.prefix)
    names = [str(n) for n in (model or {}).get("names", [])]
    for wanted in PREFERRED:
        for name in names:
            if name.startswith(wanted):
                return name
    return names[0] if names else None


def create_campaign(settings: Settings) -> str | None:
    """``segstream campaign create`` on the demo's target segment; its name, or None."""
    segment = _target(settings)
    if segment is None:
        click.secho("  no trained segment to run a campaign on", fg="yellow")
        return None
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "campaign", "create", NAME, "--segment", segment,
         "--holdout", str(HOLDOUT), "--description",
         f"demo win-back offer; simulated truth: treated customers order {EFFECT:.0%} more"],
        env=settings.to_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        click.secho(f"  campaign failed: {done.stderr.strip()[-300:]}", fg="yellow")
        return None
    click.echo("  " + done.stdout.strip())
    return NAME


def simulate_response(settings: Settings, data: Any, seed: int) -> int:
    """Produce the assigned customers' campaign-window orders (stamped now); how many."""
    from kafka import KafkaProducer

    from producers.campaign_effect import CampaignEffect, order_events, window_orders
    from schemas import encode
    from worker.campaigns.store import AssignmentReader
    from worker.connect import keyspace, sync_redis

    with sync_redis(settings.redis) as client:
        reader = AssignmentReader(client, keyspace(settings.redis, settings.redis.prefix))
        customers = sorted(a.customer_id for a in reader.all(NAME))
    known = set(data.customer_ids)
    customers = [c for c in customers if c in known]
    if not customers:
        return 0
    now = int(time.time() * 1000)
    truth = CampaignEffect(NAME, HOLDOUT, EFFECT, now - 5000, WINDOW_DAYS, span_ms=4000)
    orders = window_orders(data, truth, customers, seed)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        linger_ms=10,
        acks="all",
        **kafka_options(settings.kafka),
    )
    try:
        for event in order_events(orders):
            producer.send(
                settings.kafka.orders_topic, encode(event), key=event.customer_id.encode()
            )
        producer.flush()
    finally:
        producer.close()
    return len(orders)
