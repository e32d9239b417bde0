"""``segstream rescore``: ask the running workers to re-score every customer.

The request is stored in Redis (``{prefix}:rescore:request`` = a fresh token), which every worker
checks every ``model_poll_s`` seconds, and announced on the control topic for an immediate start.
Exactly one worker claims each token (``SET NX``) and queues every customer (SCAN pages) for
re-scoring against its current model; changes are published with reason ``model_update``. A
worker started with ``--rescore-all`` does the same by itself whenever it picks up a new model.
"""

from __future__ import annotations

import asyncio
import uuid

import click

from segstream.options import settings_options
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.connect import sync_redis
from worker.preflight import checks_access
from worker.scoring import control


@click.command("rescore")
@settings_options
@checks_access(kafka=True, redis=True)
def rescore(settings: Settings) -> None:
    """Re-score every customer against the current model (done by a running worker)."""
    token, version = request_rescore(settings)
    click.echo(
        f"rescore {token} requested (model {version}); a worker claims it within "
        f"{settings.scoring.model_poll_s:g}s and publishes changes with reason model_update"
    )


def request_rescore(settings: Settings) -> tuple[str, str]:
    """Store and announce a rescore request; ``(token, current model version)``.

    Also what ``segstream models promote|rollback --rescore`` calls once the pointer has moved
    (a worker reloads the current model before it re-scores, so it scores with the new one).
    """
    token = f"cli-{uuid.uuid4().hex[:12]}"
    client = sync_redis(settings.redis)
    try:
        client.set(f"{settings.redis.prefix}:rescore:request", token)
        current = client.get(f"{settings.redis.prefix}:model:current")
    finally:
        client.close()
    asyncio.run(_announce(settings, control.encode("rescore_all", token=token)))
    return token, current.decode() if isinstance(current, bytes) else "rules-v1"


async def _announce(settings: Settings, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", **kafka_options(settings.kafka)
    )
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.control_topic, value)
    finally:
        await producer.stop()
