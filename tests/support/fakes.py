"""In-memory stand-ins for scoring's Redis store, its publisher and the clock (unit tests).

- :class:`FakeScoringStore` keeps customers, ``unscored`` stamps and the outbox in dicts and
  follows the write script's rules (a customer is written only while its stamp is the one its
  state was read at; otherwise it is a conflict);
- :class:`FakePublisher` records what was published, and can be told to fail or to hold a
  publication until the test lets it go;
- :class:`FakeClock` is manual time: ``sleep`` waits until the test (or :meth:`FakeClock.run`)
  moves the clock past it, so nothing really sleeps and every run is the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Generic, TypeVar

from worker.scoring.plan import OutgoingChange, WritePlan
from worker.scoring.vectors import READ_FIELDS, Round, parse

T = TypeVar("T")

#: How many times :meth:`FakeClock.settle` lets every ready task run.
SETTLE_ROUNDS = 50


class FakePending(Generic[T]):
    """A request already "on the wire": its result is ``value``, or ``error`` is raised.

    ``gate``: the result waits for it (a slow Redis).
    """

    def __init__(
        self,
        value: T | None = None,
        error: Exception | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.value, self.error, self.gate = value, error, gate
        self.taken = self.abandoned = False

    async def result(self) -> T:
        assert not self.taken and not self.abandoned, "result taken twice or after abandon"
        self.taken = True
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def abandon(self) -> None:
        self.abandoned = True


class FakeScoringStore:
    """The scoring store over dicts (see :mod:`worker.scoring.ports`)."""

    prefix = "fake"

    def __init__(self) -> None:
        #: customer id -> hash fields (``READ_FIELDS`` names) as Redis would hold them.
        self.hashes: dict[str, dict[str, str]] = {}
        #: customer id -> stamp of its last state change not scored yet.
        self.unscored: dict[str, int] = {}
        #: outbox field -> [(cid, seq, JSON)], and field -> the round's conflicting customers.
        self.outboxes: dict[str, list[tuple[str, int, bytes]]] = {}
        self.skips: dict[str, list[str]] = {}
        #: Outbox fields deleted, in order.
        self.done: list[str] = []
        self.models: dict[str, bytes] = {}
        self.current: str | None = None
        self.online: dict[str, bytes] = {}
        self.status: dict[str, Any] = {}
        self.claims: set[str] = set()
        self.request: str | None = None
        self.reads: list[list[str]] = []
        self.writes: list[WritePlan] = []
        #: ``("read" | "write", customer ids)`` in the order the requests were sent.
        self.sent: list[tuple[str, list[str]]] = []
        #: Exceptions the next writes' replies raise (oldest first).
        self.failing_writes: deque[Exception] = deque()
        #: When set, every write's reply waits for this event.
        self.write_gate: asyncio.Event | None = None
        self.closed = False
        self._stamps = itertools.count(1)
        self._tokens = itertools.count()

    # -- what a test sets up --------------------------------------------------------------------
    def apply(self, customer_id: str, **fields: int | str) -> int:
        """A state change as the state script makes it: fields set, a new unscored stamp."""
        self.hashes.setdefault(customer_id, {}).update({k: str(v) for k, v in fields.items()})
        stamp = self.unscored[customer_id] = next(self._stamps)
        return stamp

    # -- the store ------------------------------------------------------------------------------
    async def send_read(
        self, customer_ids: Sequence[str], fields: Sequence[str]
    ) -> FakePending[Round]:
        ids = list(customer_ids)
        self.reads.append(ids)
        self.sent.append(("read", ids))
        replies = [
            [
                None if (v := self.hashes.get(c, {}).get(f)) is None else v.encode()
                for f in READ_FIELDS
            ]
            for c in ids
        ]
        rnd = parse(ids, replies)
        rnd = dataclasses.replace(
            rnd,
            stamps=[self.unscored.get(c, 0) for c in rnd.customer_ids],
            missing_stamps=[self.unscored.get(c, 0) for c in rnd.missing],
        )
        return FakePending(rnd)

    async def send_attributes(
        self, customer_ids: Sequence[str], fields: Sequence[str]
    ) -> FakePending[dict[str, list[bytes | None]]]:
        """The attribute read (a model with categorical features): each customer's ``fields``."""
        ids = list(customer_ids)
        self.sent.append(("attributes", ids))
        values = {c: [self.hashes.get(c, {}).get(f) for f in fields] for c in ids}
        return FakePending({c: [v.encode() if v else None for v in vs] for c, vs in values.items()})

    async def send_write(
        self,
        model_version: str,
        as_of_ms: int,
        plan: WritePlan,
        events: Sequence[tuple[str, int, bytes]],
    ) -> FakePending[tuple[list[str], str]]:
        """The write script's rules (``write.lua``), applied at once; the reply may wait or fail."""
        if not plan.ids:
            return FakePending(([], ""))
        self.writes.append(plan)
        self.sent.append(("write", list(plan.ids)))
        if self.failing_writes:
            return FakePending(error=self.failing_writes.popleft(), gate=self.write_gate)
        token = f"{next(self._tokens):020d}"
        ids, n = plan.ids, len(plan.ids)
        current = [self.unscored.get(c, 0) for c in ids]
        ok = [cur == stamp for cur, stamp in zip(current, plan.stamps, strict=True)]
        gone = [False] * n
        for k in range(0, len(plan.checks), 2):
            i, seq = plan.checks[k], plan.checks[k + 1]
            if ok[i]:
                held = self.hashes.get(ids[i])
                stored = int(held.get("segment_seq", -1)) if held else -1
                if stored == -1 and seq == -1 and held is None:
                    gone[i] = True
                elif stored != seq:
                    ok[i] = False
        for k in range(0, len(plan.changes), 3):
            row, segment, new_seq = plan.changes[k], plan.changes[k + 1], plan.changes[k + 2]
            assert isinstance(row, int)
            if ok[row] and not gone[row]:
                self.hashes.setdefault(ids[row], {}).update(
                    segment=str(segment), segment_seq=str(new_seq), model_version=model_version,
                    seg_as_of=str(as_of_ms),
                )  # fmt: skip
        for i in plan.stale:
            if ok[i] and not gone[i]:
                self.hashes[ids[i]].update(model_version=model_version, seg_as_of=str(as_of_ms))
        conflicts = [ids[i] for i in range(n) if not ok[i]]
        for i in range(n):
            if ok[i] and current[i]:
                del self.unscored[ids[i]]
        if events:
            self.outboxes[token] = list(events)
            if conflicts:
                self.skips[token] = conflicts
        return FakePending((conflicts, token), gate=self.write_gate)

    async def outbox(self) -> list[tuple[str, list[tuple[str, int, bytes]]]]:
        out = []
        for name, entries in self.outboxes.items():
            skip = set(self.skips.get(name, ()))
            out.append((name, [e for e in entries if e[0] not in skip]))
        return sorted(out)

    async def published(self, fields: Sequence[str], changes: Sequence[object]) -> None:
        for name in fields:
            self.outboxes.pop(name, None)
            self.skips.pop(name, None)
            self.done.append(name)

    async def unscored_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        ids = list(self.unscored)
        for start in range(0, len(ids), page):
            yield ids[start : start + page]

    async def customer_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        ids = list(self.hashes)
        for start in range(0, len(ids), page):
            yield ids[start : start + page]

    async def current_version(self) -> str | None:
        return self.current

    async def model_json(self, version: str) -> bytes | None:
        return self.models.get(version)

    async def online_state(self, version: str) -> bytes | None:
        return self.online.get(version)

    async def save_status(
        self, version: str, online_json: bytes | None, status: dict[str, Any]
    ) -> None:
        if online_json is not None:
            self.online[version] = online_json
        self.status = dict(status)

    async def claim(self, suffix: str, ttl_s: float) -> bool:
        if suffix in self.claims:
            return False
        self.claims.add(suffix)
        return True

    async def rescore_request(self) -> str | None:
        return self.request

    async def close(self) -> None:
        self.closed = True


class FakePublisher:
    """Records publications in acknowledgement order; fails or holds them on request."""

    def __init__(self) -> None:
        #: Every change acknowledged, in order.
        self.published: list[OutgoingChange] = []
        #: Every call's changes, acknowledged or not, in call order.
        self.calls: list[list[OutgoingChange]] = []
        self.notices: list[bytes] = []
        self.started = self.stopped = False
        self._failures: deque[Exception] = deque()
        self._holds: deque[asyncio.Event] = deque()

    def fail_next(self, times: int = 1, error: Exception | None = None) -> None:
        """The next ``times`` calls fail (the broker went away)."""
        for _ in range(times):
            self._failures.append(error or ConnectionError("broker unavailable"))

    def hold_next(self) -> asyncio.Event:
        """The next call (in call order) waits for the returned event before it is answered."""
        gate = asyncio.Event()
        self._holds.append(gate)
        return gate

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def publish(self, items: Sequence[OutgoingChange]) -> None:
        self.calls.append(list(items))
        if self._holds:
            await self._holds.popleft().wait()
        if self._failures:
            raise self._failures.popleft()
        self.published += items

    async def notice(self, value: bytes) -> None:
        self.notices.append(value)


class FakeClock:
    """Manual time: :meth:`sleep` returns once the clock has been moved past its end."""

    def __init__(self, start: float = 1000.0, wall_ms: int = 1_780_000_000_000) -> None:
        self.now = self.start = start
        self.wall_ms = wall_ms
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        #: :meth:`advance` calls under way (a :meth:`run` leaves the clock to them meanwhile).
        self._advancing = 0

    def monotonic(self) -> float:
        return self.now

    def time_ms(self) -> int:
        return self.wall_ms + round((self.now - self.start) * 1000)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), fut))
        await fut

    @property
    def sleeping(self) -> int:
        """How many sleeps have not ended yet."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def settle(self) -> None:
        """Let every task that can run, run (nothing moves the clock meanwhile)."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)

    def _wake_next(self, until: float) -> bool:
        """End the earliest sleeps (all with the same end) if they end by ``until``."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if not self._sleepers or self._sleepers[0][0] > until:
            return False
        end = self._sleepers[0][0]
        self.now = max(self.now, end)
        while self._sleepers and self._sleepers[0][0] == end:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        return True

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, waking the sleeps that end meanwhile, in order."""
        target = self.now + seconds
        self._advancing += 1
        try:
            await self.settle()
            while self._wake_next(target):
                await self.settle()
            self.now = max(self.now, target)
        finally:
            self._advancing -= 1

    async def run(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, moving the clock to the next sleep's end whenever nothing else runs.

        Raises ``AssertionError`` when ``aw`` waits for something no sleep will bring.
        """
        task = asyncio.ensure_future(aw)
        while True:
            await self.settle()
            if task.done():
                return task.result()
            if self._advancing:
                continue
            if not self._wake_next(float("inf")):
                task.cancel()
                raise AssertionError("stuck: waiting for something the clock will not bring")
