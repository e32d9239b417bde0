"""``redis_io.evalsha_sent``: a script call that says when Redis has it, on a real Redis."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis

from worker.redis_io import bulk_client, evalsha_sent

pytestmark = pytest.mark.integration

#: Busy for about ARGV[1] ms of Redis time, then returns ARGV[2].
SLOW = """
local t = redis.call('TIME')
local until_us = t[1] * 1e6 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us
return ARGV[2]
"""
SHA = hashlib.sha1(SLOW.encode()).hexdigest()


def test_on_sent_fires_while_redis_is_still_running_the_script(redis_url: str) -> None:
    async def run() -> tuple[bool, object]:
        client = bulk_client(redis_url)
        try:
            sent = asyncio.Event()
            call = asyncio.ensure_future(evalsha_sent(client, SHA, SLOW, [300, "done"], sent.set))
            await asyncio.wait_for(sent.wait(), 5)
            pending = not call.done()  # the reply is ~300 ms away
            return pending, await call
        finally:
            await client.aclose()

    pending, reply = asyncio.run(run())
    assert pending and reply == b"done"


def test_a_script_redis_no_longer_holds_is_loaded_and_sent_again(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).script_flush()
    calls: list[int] = []

    async def run() -> object:
        client = bulk_client(redis_url)
        try:
            return await evalsha_sent(client, SHA, SLOW, [0, "again"], lambda: calls.append(1))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == b"again"
    assert len(calls) == 2  # once per send: the NOSCRIPT attempt, then the one that ran
