"""The scoring share, catch-up and ingest-idle detection, on manual time (no sleeping)."""

from __future__ import annotations

import asyncio

from segstream.settings import Settings
from tests.support.fakes import FakeClock
from worker.scoring.pacing import INGEST_IDLE_S, Pacer


def paused(
    pacer: Pacer, clock: FakeClock, round_s: float, urgent: list[bool] | None = None
) -> float:
    """How long ``pacer.pause(round_s)`` lasts on ``clock`` (``urgent[0]``: interrupted)."""
    flag = urgent if urgent is not None else [False]

    async def run() -> float:
        started = clock.monotonic()
        await clock.run(pacer.pause(round_s, lambda: flag[0]))
        return clock.monotonic() - started

    return asyncio.run(run())


def test_while_ingestion_is_busy_a_round_is_followed_by_a_pause_that_leaves_it_its_share() -> None:
    clock = FakeClock()
    pacer = Pacer(Settings.of(scoring_share=0.25), clock)
    pacer.ingest_changed()
    # a round of 0.04 s at a share of 0.25: 0.04 * 0.75 / 0.25 = 0.12 s of pause
    assert abs(paused(pacer, clock, 0.04) - 0.12) < 1e-9


def test_a_share_of_one_or_an_idle_ingestion_means_no_pause() -> None:
    clock = FakeClock()
    busy = Pacer(Settings.of(scoring_share=1.0), clock)
    busy.ingest_changed()
    assert paused(busy, clock, 0.5) == 0
    idle = Pacer(Settings.of(scoring_share=0.1), clock)
    assert idle.ingest_idle() and paused(idle, clock, 0.5) == 0


def test_while_catching_up_the_pause_is_that_of_the_catch_up_share() -> None:
    clock = FakeClock()
    settings = Settings.of(scoring_share=0.5, catch_up_lag=100, catch_up_share=0.2)
    pacer = Pacer(settings, clock, behind=lambda: 100)
    pacer.ingest_changed()
    assert pacer.catching_up() and pacer.share() == 0.2
    # 0.02 s * 0.8 / 0.2 = 0.08 s (the live share would give 0.02 s)
    assert abs(paused(pacer, clock, 0.02) - 0.08) < 1e-9


def test_the_pause_ends_once_ingestion_has_been_idle_for_the_idle_time() -> None:
    clock = FakeClock()
    pacer = Pacer(Settings.of(scoring_share=0.01), clock)
    pacer.ingest_changed()
    assert not pacer.ingest_idle()
    # a 1 s round at 1 % would pause ~99 s; ingestion goes idle after INGEST_IDLE_S instead
    took = paused(pacer, clock, 1.0)
    assert INGEST_IDLE_S <= took < INGEST_IDLE_S + 0.05 + 1e-9
    assert pacer.ingest_idle()


def test_an_urgent_enqueue_ends_the_pause_at_its_next_look() -> None:
    clock = FakeClock()
    pacer = Pacer(Settings.of(scoring_share=0.01), clock)
    urgent = [False]

    async def run() -> float:
        pacer.ingest_changed()
        started = clock.monotonic()
        pausing = asyncio.ensure_future(pacer.pause(1.0, lambda: urgent[0]))
        await clock.advance(0.1)
        pacer.ingest_changed()  # still busy
        await clock.advance(0.1)
        assert not pausing.done()
        urgent[0] = True
        await clock.run(pausing)
        return clock.monotonic() - started

    assert abs(asyncio.run(run()) - 0.25) < 1e-9  # the look after 0.2 s, 0.05 s later
