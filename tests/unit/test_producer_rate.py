"""Rate control with a fake clock: the token bucket's average rate and event-time pacing."""

from __future__ import annotations

import pytest

from producers.rate import EventTimePacer, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_holds_the_average_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=50, clock=clock, sleep=clock.sleep)
    for _ in range(5050):
        bucket.acquire()
    # the first 50 go out as a burst, the next 5000 take 5 s at 1000/s
    assert clock.now - 100.0 == pytest.approx(5.0, rel=1e-3)


def test_token_bucket_refills_while_idle_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == []
    clock.now += 100.0  # idle: the bucket refills to the burst, not to 1000 tokens
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == []
    bucket.acquire()
    assert sum(clock.slept) == pytest.approx(0.1)


def test_token_bucket_rejects_nonpositive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_pacer_follows_event_time_gaps_scaled() -> None:
    clock = FakeClock()
    pacer = EventTimePacer(60.0, clock=clock, sleep=clock.sleep)
    pacer.wait_for(0)
    pacer.wait_for(60_000)  # one minute of event time = one second at 60x
    assert clock.now - 100.0 == pytest.approx(1.0)
    pacer.wait_for(30_000)  # going back in time: no wait
    assert clock.now - 100.0 == pytest.approx(1.0)
    pacer.wait_for(3_600_000)  # an hour after the first event: 60 s after the start
    assert clock.now - 100.0 == pytest.approx(60.0)


def test_progress_bar_only_when_asked_or_on_a_terminal() -> None:
    from producers.run import progress_bar

    assert progress_bar("x", 10, enabled=False) is None
    bar = progress_bar("x", 10, enabled=True)
    assert bar is not None and len(bar.tasks) == 1 and bar.tasks[0].total == 10
    # pytest captures stderr: not a terminal, so the default is off
    assert progress_bar("x", 10) is None
