"""The Redis state store: one ``EVALSHA`` per batch applies every event exactly once.

:class:`StateStore` (async, redis.asyncio + hiredis) is what the ingestion service writes
through; :class:`~worker.state.reader.StateReader` (sync redis-py) is what the CLI, tests and
the sweep read through.
The rules are those of :mod:`worker.core` (whose :class:`~worker.core.InMemoryStateStore` is
the oracle); ``apply.lua`` is their translation into one atomic server-side call, because
building one redis-py command per event costs more than Redis itself does.

Exactly once, two ways, both inside that one call (see ``docs/state.md``):

* a per-(topic, partition) fence, the last applied offset, written atomically with the state:
  a record at or below it is skipped (redelivery after a crash, rebalance or restart, and a
  retried ``apply`` whose first attempt did land);
* per-customer 8-byte fingerprints of event ids (order ids for placed/cancelled): an event seen
  before is skipped even with a new offset (ops replaying the same file twice).

In the same call, events of a customer ``segstream forget`` erased, stamped at or before the
erasure, are dropped and counted (``suppressed``; docs/forget.md): the script reads the
suppression entries itself, so this module packs nothing for them.

This module must not decide anything about events; it only packs :func:`worker.core.to_delta`
results into the script's arguments and reads hashes back into :class:`CustomerState`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from segstream.redact import redact
from worker.connect import (
    RedisTarget,
    async_redis,
    keyspace,
    redis_settings,
    script_client,
)
from worker.core.batch import ApplyResult, Batch, PackedSnapshot, Record, SnapshotSpec
from worker.core.memory import MAX_FINGERPRINTS
from worker.core.rfm import NO_FINGERPRINT, CustomerState, Kind, to_delta
from worker.redis_io import Pending, Script
from worker.state import keys
from worker.state.errors import redis_errors
from worker.state.keys import Keyspace
from worker.state.reader import (
    ERASURE_COUNTER_NAMES,
    crossing_queries,
    highest,
    int_map,
    summed,
)

__all__ = [
    "RECORD",
    "ApplyResult",
    "Batch",
    "Record",
    "StateStore",
    "build_args",
]


@dataclass(frozen=True, slots=True)
class Part:
    """One atomic call of a batch: the records of one space (all of them on a single Redis)."""

    batch: Batch
    #: A key of the space's slot (None on a single Redis, where the script declares no key).
    key: str | None
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch's script arguments, built ahead of :meth:`StateStore.apply`."""

    parts: list[Part]
    snapshot: SnapshotSpec | None = None


#: One event in the script's input blob (must match ``FMT`` in apply.lua).
RECORD = struct.Struct("<BBHqqqi8s8s8s8s")
assert RECORD.size == 64
_Z = NO_FINGERPRINT
#: The labels (and purchase lines) of a call, for the script's last arguments (see apply.lua).
_pack_labels = msgspec.msgpack.Encoder().encode
#: An event -> the lines a placed order owes the recommendation counts, each (member,
#: bought-hash, units) (worker/recommend/batch.py ``purchase_lines``), or ``None``.
PurchaseLines = Callable[[Any], Sequence[tuple[str, bytes, int]] | None]


def script_text() -> str:
    """The source of ``apply.lua`` (the benchmark times it alone)."""
    return (importlib.resources.files("worker.state") / "apply.lua").read_text()


def build_args(
    batch: Batch,
    prefix: str,
    max_fingerprints: int = MAX_FINGERPRINTS,
    snapshot: SnapshotSpec | None = None,
    lines_of: PurchaseLines | None = None,
) -> list[Any]:
    """The script's ARGV for ``batch``: partitions with fences to check, then per-customer blobs.

    ``snapshot``: the state fields (and model version) the script returns for each changed
    customer (see apply.lua); ``None`` returns none. ``lines_of``: the lines a placed order
    owes the recommendation counts (the script hands those it applies to ``{prefix}:rbox``);
    ``None`` counts nothing.
    """
    high = batch.partitions()
    index = {tp: i for i, tp in enumerate(high, start=1)}
    fields = "" if snapshot is None else ",".join(snapshot.fields)
    version = "" if snapshot is None else snapshot.version
    args: list[Any] = [prefix, max_fingerprints, fields, version, len(high)]
    for tp, top in high.items():
        dead = -1 if tp in batch.dead_letter_offsets else batch.dead_lettered.get(tp, 0)
        args += [tp[0], tp[1], top, dead]
    groups: dict[str, list[bytes]] = {}
    # customer -> (record index in its group, summary code, name, amount) entries; only
    # records with a category or device get here, the others pay one truthiness test
    labelled: dict[str, list[tuple[Any, ...]]] = {}
    # customer -> (record index in its group, batch position, member, units, bought-hash)
    bought: dict[str, list[tuple[Any, ...]]] = {}
    pack = RECORD.pack
    for position, rec in enumerate(batch.records):
        d = to_delta(rec.event)
        if lines_of is not None and d.kind is Kind.PLACED and d.customer_id:
            lines = lines_of(rec.event)
            if lines:
                at = len(groups.get(d.customer_id, ()))
                got = bought.setdefault(d.customer_id, [])
                for line in lines:
                    got.append((at, position, line[0], line[2], line[1]))
        row = pack(
            d.kind,
            d.click,
            index[(rec.topic, rec.partition)],
            rec.offset,
            d.time_ms,
            d.amount_cents,
            d.items,
            d.fp,
            d.session_fp,
            d.marker_fp,
            d.partner_fp,
        )
        rows = groups.setdefault(d.customer_id or "", [])
        if d.labels and d.customer_id:
            at = len(rows)
            labelled.setdefault(d.customer_id, []).extend((at, *label) for label in d.labels)
        rows.append(row)
    for tp, offsets in batch.dead_letter_offsets.items():
        rows = groups.setdefault("", [])
        rows.extend(pack(Kind.DEAD, 0, index[tp], off, 0, 0, 0, _Z, _Z, _Z, _Z) for off in offsets)
    args.append(len(groups))
    for cid, rows in groups.items():
        args += [cid, b"".join(rows)]
    # one argument for the whole call, '' for a batch without categories or devices (the
    # script then does nothing more than it did before summaries existed)
    everything: list[Any] = []
    if labelled:
        for number, cid in enumerate(groups, start=1):
            for entry in labelled.get(cid, ()):
                everything += (number, *entry)
    args.append(_pack_labels(everything) if everything else b"")
    if bought:
        flat: list[Any] = []
        hashes: list[bytes] = []
        for number, cid in enumerate(groups, start=1):
            for at, position, member, units, hashed in bought.get(cid, ()):
                flat += (number, at, position, member, units)
                hashes.append(hashed)
        args += [_pack_labels(flat), b"".join(hashes)]
    return args


def split(batch: Batch, keyspace: Keyspace) -> list[tuple[str, Batch]]:
    """``batch`` as one batch per space it touches, in shard order (one, on a single Redis).

    Records go to their customer's shard; records without a customer, and every partition's
    dead-letter accounting, go to shard 0, which is always called when the batch has any
    partition, so its fences and counters account for every rejected record once. Each shard's
    fence guards that shard's records only: a batch half applied when the worker died is
    re-applied exactly where a shard had not taken it yet.
    """
    if not keyspace.cluster:
        return [(keyspace.spaces[0], batch)]
    by_shard: dict[int, list[Record]] = {}
    for rec in batch.records:
        shard = keyspace.shard_of(rec.event.customer_id or "")
        by_shard.setdefault(shard, []).append(rec)
    if batch.partitions():
        by_shard.setdefault(0, [])
    out = []
    for shard in sorted(by_shard):
        records = by_shard[shard]
        if shard == 0:
            part = Batch(
                records, batch.high_offsets, batch.dead_lettered, batch.dead_letter_offsets
            )
        else:
            part = Batch(records)
        out.append((keyspace.spaces[shard], part))
    return out


def merged(parts: Sequence[tuple[Batch, ApplyResult]]) -> ApplyResult:
    """One result for a batch applied in several calls (see :attr:`ApplyResult.parts`)."""
    if len(parts) == 1:
        return parts[0][1]
    return ApplyResult(
        applied=sum(r.applied for _, r in parts),
        duplicates=sum(r.duplicates for _, r in parts),
        changed=[c for _, r in parts for c in r.changed],
        parts=tuple(parts),
    )


def _result(reply: Sequence[Any], snapshot: SnapshotSpec | None) -> ApplyResult:
    changed = [c.decode() if isinstance(c, bytes) else str(c) for c in reply[5:]]
    packed = None
    if snapshot is not None and changed:
        packed = PackedSnapshot(snapshot, int(reply[2]), bytes(reply[3]), bytes(reply[4]))
    return ApplyResult(int(reply[0]), int(reply[1]), changed, int(reply[2]), packed)


class StateStore:
    """Async writer of customer state: ``apply`` is one atomic, idempotent EVALSHA per batch.

    Redis being unreachable raises :class:`StoreUnavailable` (retry the same batch; it is safe),
    an error reply raises :class:`StoreRejected`. The script goes through
    :class:`~worker.redis_io.ScriptClient` (sent whole, then awaited); every other command
    through redis-py.
    """

    def __init__(
        self,
        redis: RedisTarget,
        prefix: str,
        *,
        max_fingerprints: int = MAX_FINGERPRINTS,
        lines_of: PurchaseLines | None = None,
    ) -> None:
        #: For messages: the URL with its password masked.
        self.where = redact(redis_settings(redis).url)
        self.prefix = prefix
        self.keyspace = keyspace(redis, prefix)
        self.max_fingerprints = max_fingerprints
        #: What a placed order owes the recommendation counts (``None``: they are off).
        self.lines_of = lines_of
        self._redis = async_redis(redis)
        self._scripts = script_client(redis)
        self._script = Script.of(script_text())

    def prepare(self, batch: Batch, snapshot: SnapshotSpec | None = None) -> Prepared:
        """The script's arguments for ``batch``, for :meth:`apply`.

        Building them is most of the CPU an apply costs this process; the ingest service calls
        this while the previous batch's script is still running in Redis, so the two overlap
        instead of adding up. ``snapshot``: what to return of each changed customer's state.
        """
        parts = [
            Part(
                part,
                f"{space}:counters" if self.keyspace.cluster else None,
                build_args(part, space, self.max_fingerprints, snapshot, self.lines_of),
            )
            for space, part in split(batch, self.keyspace)
        ]
        return Prepared(parts, snapshot)

    async def send_apply(
        self, batch: Batch, prepared: Prepared | None = None
    ) -> Pending[ApplyResult]:
        """Send ``batch``'s script call; returns once Redis has the whole request.

        The caller goes back to CPU work (the next batch's decoding) while Redis runs the
        script, then takes the :class:`ApplyResult` from the returned ``result()``. A request
        still in this process's buffers would leave only at the caller's next await, and Redis
        would wait for it meanwhile. ``prepared``: what :meth:`prepare` returned for this batch
        (built here when omitted).
        """
        if not batch.records and not batch.partitions():
            return Pending.ready(ApplyResult(0, 0, []))
        prep = prepared if prepared is not None else self.prepare(batch)
        sent: list[Pending[Any]] = []
        with self._errors("refused a batch"):
            try:
                for part in prep.parts:
                    sent.append(await self._scripts.send(self._script, part.args, part.key))
            except BaseException:
                for pending in sent:
                    pending.abandon()
                raise

        async def receive() -> ApplyResult:
            results = []
            with self._errors("refused a batch"):
                for part, pending in zip(prep.parts, sent, strict=True):
                    results.append((part.batch, _result(await pending.result(), prep.snapshot)))
            return merged(results)

        def abandon() -> None:
            for pending in sent:
                pending.abandon()

        return Pending(receive, abandon)

    async def apply(self, batch: Batch, prepared: Prepared | None = None) -> ApplyResult:
        """Apply ``batch`` in one round trip (:meth:`send_apply`, then its result); records
        already applied are skipped."""
        return await (await self.send_apply(batch, prepared)).result()

    async def fences(self, topic: str) -> dict[int, int]:
        """Partition -> last applied offset of ``topic`` (the highest of any shard's)."""
        return highest(
            [
                int_map(await self._call(self._redis.hgetall(keys.fence(space, topic))))
                for space in self.keyspace.spaces
            ]
        )

    async def _counter_hashes(self) -> list[dict[Any, Any]]:
        return [
            await self._call(self._redis.hgetall(keys.counters(space)))
            for space in self.keyspace.spaces
        ]

    async def counters(self) -> dict[str, int]:
        """received, valid, dead_lettered, applied, duplicates (+ fenced, deduped, anonymous)."""
        return summed(await self._counter_hashes())

    async def erasure_counters(self) -> dict[str, int]:
        """``suppressed``, ``erasures``, ``forgotten`` (see :data:`ERASURE_COUNTER_NAMES`)."""
        return summed(await self._counter_hashes(), ERASURE_COUNTER_NAMES)

    async def customer(self, customer_id: str) -> CustomerState | None:
        raw = await self._call(self._redis.hgetall(self.keyspace.customer(customer_id)))
        return CustomerState.from_hash(customer_id, raw) if raw else None

    async def customers_crossing(
        self, threshold_days: float, since_ms: int, until_ms: int
    ) -> list[str]:
        """See :meth:`~worker.state.reader.StateReader.customers_crossing`."""
        out: list[str] = []
        for chunk in crossing_queries(self.keyspace, threshold_days, since_ms, until_ms):
            pipe = self._redis.pipeline(transaction=False)
            for key, lo, hi in chunk:
                pipe.zrangebyscore(key, lo, hi)
            for found in await self._call(pipe.execute()):
                out.extend(m.decode() for m in found)
        return out

    async def ping(self) -> bool:
        return bool(await self._call(self._redis.ping()))

    async def close(self) -> None:
        await self._scripts.close()
        await self._redis.aclose()

    async def _call(self, awaitable: Any) -> Any:
        with self._errors():
            return await awaitable

    def _errors(self, refused: str = "") -> contextlib.AbstractContextManager[None]:
        """redis-py's exceptions as the store's: unavailable (retry) or rejected."""
        return redis_errors(f"Redis at {self.where}", refused)
