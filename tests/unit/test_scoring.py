"""Scoring's pure parts: features from hash fields, decisions, change events, control messages."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
import pandas as pd
import pytest

from analytics.frames import feature_frame
from schemas import SegmentChange, encode
from tests.support.customer_rows import AS_OF, AS_OF_MS, hmget_reply, random_state
from worker.core.batch import PackedSnapshot, SnapshotSpec
from worker.core.rfm import CustomerState, features
from worker.scoring import control
from worker.scoring.decide import change_events, decide, infer_reason
from worker.scoring.errors import ControlMessageInvalid
from worker.scoring.vectors import (
    READ_FIELDS,
    STATE_FIELDS,
    feature_matrix,
    fields_for,
    from_flat,
    parse,
)
from worker.segmentation.features import KNOWN_FEATURES, Scaler
from worker.segmentation.model import SegmentModel
from worker.segmentation.rules import RulesModel


def test_feature_matrix_equals_feature_frame_of_export_rows_bit_for_bit() -> None:
    rng = random.Random(3)
    states = [random_state(rng, i) for i in range(2000)]
    rnd = parse([s.customer_id for s in states], [hmget_reply(s) for s in states])
    got = feature_matrix(rnd, AS_OF_MS, KNOWN_FEATURES)
    rows = pd.DataFrame([features(s, AS_OF) for s in states])
    expected = feature_frame(rows)[list(KNOWN_FEATURES)].to_numpy()
    assert got.shape == expected.shape
    mismatch = ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
    assert not mismatch.any(), [
        (KNOWN_FEATURES[j], got[i, j], expected[i, j]) for i, j in np.argwhere(mismatch)[:5]
    ]
    assert rnd.segments == [s.segment for s in states]
    assert rnd.seqs == [s.segment_seq for s in states]


def test_parse_leaves_customers_without_a_hash_out() -> None:
    empty = [None] * len(READ_FIELDS)
    one = [b"1", b"2000", *([None] * (len(STATE_FIELDS) - 2)), b"x", b"v1", b"3"]
    rnd = parse(["gone", "C1"], [empty, one])
    assert rnd.missing == ["gone"] and rnd.customer_ids == ["C1"]
    assert rnd.raw[0, :2].tolist() == [1, 2000]
    assert rnd.segments == ["x"] and rnd.seqs == [3]


def flat_read_reply(
    replies: list[list[bytes | None]], fields: Sequence[str], stamps: list[int]
) -> list[bytes]:
    """What the read script returns for these HMGET replies of ``READ_FIELDS``."""
    from worker.scoring.store import ABSENT

    n = len(STATE_FIELDS)
    flat: list[bytes] = []
    for r in replies:
        flat += [r[STATE_FIELDS.index(f)] or str(ABSENT).encode() for f in fields]
        flat += [v or b"" for v in r[n:]]
    return flat + [str(s).encode() for s in stamps]


def test_the_read_scripts_flat_reply_gives_the_same_round_as_hmget_replies() -> None:
    from worker.scoring.store import ABSENT

    rng = random.Random(4)
    states = [random_state(rng, i) for i in range(300)]
    replies = [hmget_reply(s) for s in states] + [[None] * len(READ_FIELDS)]
    ids = [s.customer_id for s in states] + ["gone"]
    flat = flat_read_reply(replies, STATE_FIELDS, [i % 3 for i in range(len(replies))])
    a, b = parse(ids, replies), from_flat(ids, flat, ABSENT)
    assert a.customer_ids == b.customer_ids and a.missing == b.missing == ["gone"]
    assert (a.raw == b.raw).all()
    assert (a.segments, a.model_versions, a.seqs) == (b.segments, b.model_versions, b.seqs)
    assert b.stamps == [i % 3 for i in range(len(states))]


def test_a_value_that_is_not_a_number_reads_as_absent_and_a_short_reply_is_refused() -> None:
    from worker.scoring.store import ABSENT

    fields = ("f", "t1", "ts")
    flat = [b"2", b"garbage", b"1700000000000", b"loyal", b"v1", b"4", b"7"]
    rnd = from_flat(["C1"], flat, ABSENT, fields)
    assert rnd.column("f").tolist() == [2] and rnd.last_order_ms.tolist() == [-(2**62)]
    assert (rnd.segments, rnd.seqs, rnd.stamps) == (["loyal"], [4], [7])
    with pytest.raises(ValueError, match="read reply"):
        from_flat(["C1", "C2"], flat, ABSENT, fields)


def packed_snapshot(
    states: list[CustomerState], replies: list[list[bytes | None]], fields: tuple[str, ...]
) -> PackedSnapshot:
    """What apply.lua returns for these customers (its layout, built independently here)."""
    from worker.scoring.snapshot import SNAPSHOT_ABSENT

    n = len(STATE_FIELDS)
    numbers: list[int] = []
    segments: list[str] = []
    for r in replies:
        by_name = dict(zip(STATE_FIELDS, r[:n], strict=True))
        seg, version, seq = r[n:]
        numbers += [SNAPSHOT_ABSENT if by_name[f] is None else int(by_name[f]) for f in fields]
        numbers += [-1 if seq is None else int(seq), int(version == b"km-1"), len(numbers) % 3]
        segments.append((seg or b"").decode())
    spec = SnapshotSpec(fields, "km-1")
    encode_ = msgspec.msgpack.encode
    return PackedSnapshot(spec, 7, encode_(numbers), encode_(segments))


def test_a_snapshot_gives_the_round_a_read_of_the_same_fields_would() -> None:
    from worker.scoring.snapshot import REASONS, SnapshotBatch, SnapshotIndex

    rng = random.Random(5)
    states = [random_state(rng, i) for i in range(200)]
    replies = [hmget_reply(s) for s in states]
    for i, r in enumerate(replies):  # some customers scored by km-1 before, some not
        r[len(STATE_FIELDS) + 1] = b"km-1" if i % 2 else b"rules-v1"
    ids = [s.customer_id for s in states]
    fields = fields_for(("recency_days", "frequency", "aov", "sessions"))
    index = SnapshotIndex()
    packed = packed_snapshot(states, replies, fields)
    index.add(SnapshotBatch(ids, packed))
    rnd, without = index.take([*ids[::-1], "C-unknown"], fields)
    assert rnd is not None and without == ["C-unknown"] and len(index) == 0
    read = parse(ids, replies)
    order = [ids.index(c) for c in rnd.customer_ids]
    cols = [STATE_FIELDS.index(f) for f in fields]
    assert (rnd.raw[:, cols] == read.raw[order][:, cols]).all()
    assert rnd.segments == [read.segments[i] for i in order]
    assert rnd.seqs == [read.seqs[i] for i in order]
    assert rnd.model_versions == ["km-1" if i % 2 else "" for i in order]
    assert rnd.snapshot and rnd.stamps == [7] * len(ids)
    width = len(fields) + 3
    codes = msgspec.msgpack.decode(packed.numbers)[width - 1 :: width]
    assert rnd.reasons == [REASONS[codes[i]] for i in order]
    at = 1_800_000_000_000
    assert np.array_equal(
        feature_matrix(rnd, at, ("recency_days", "frequency", "aov", "sessions")),
        feature_matrix(read, at, ("recency_days", "frequency", "aov", "sessions"))[order],
    )


def test_the_latest_snapshot_wins_and_one_missing_a_needed_field_is_read_instead() -> None:
    from worker.scoring.snapshot import SnapshotBatch, SnapshotIndex

    rng = random.Random(6)
    old, new = random_state(rng, 1), random_state(rng, 2)
    new = dataclasses.replace(new, customer_id=old.customer_id)
    fields = fields_for(("frequency",))
    index = SnapshotIndex()
    for s in (old, new):
        index.add(SnapshotBatch([s.customer_id], packed_snapshot([s], [hmget_reply(s)], fields)))
    rnd, without = index.take([old.customer_id], fields)
    assert rnd is not None and without == []
    assert rnd.raw[0, STATE_FIELDS.index("f")] == new.frequency
    index.add(SnapshotBatch([new.customer_id], packed_snapshot([new], [hmget_reply(new)], fields)))
    rnd, without = index.take([new.customer_id], fields_for(("sessions",)))
    assert rnd is None and without == [new.customer_id]


def two_segment_model(margin: float = 0.0) -> SegmentModel:
    """Segments on frequency alone: 'low' near 1 order, 'high' near 20 (scaled = log1p)."""
    return SegmentModel(
        version="km-test", created_at="2026-06-01T00:00:00+00:00", feature_names=("frequency",),
        scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.log1p(np.array([[1.0], [20.0]])), names=("low", "high"), seed=0,
        training_size=10, as_of="2026-06-01T00:00:00+00:00", hysteresis_margin=margin,
    )  # fmt: skip


def round_of(freqs: list[int], segments: list[str | None]) -> object:
    replies = []
    for i, (f, seg) in enumerate(zip(freqs, segments, strict=True)):
        state = [str(f).encode(), b"100", *([None] * (len(STATE_FIELDS) - 2))]
        state[STATE_FIELDS.index("ts")] = str(AS_OF_MS - 1000 * i).encode()
        replies.append([*state, None if seg is None else seg.encode(), None, None])
    return parse([f"C{i}" for i in range(len(freqs))], replies)


def test_only_real_changes_make_events_with_distances_and_event_time() -> None:
    rnd = round_of([1, 20, 20, 1], ["low", "high", None, "high"])
    dec = decide(two_segment_model(), rnd, AS_OF_MS, margin=0.0)  # type: ignore[arg-type]
    assert dec.new_segments == ["low", "high", "high", "low"]
    assert dec.changed.tolist() == [False, False, True, True]
    events = change_events(dec, {"C2": "order", "C3": "clicks"}, AS_OF_MS)
    assert [row for row, _ in events] == [2, 3]
    new, moved = events[0][1], events[1][1]
    assert new.old_segment is None and new.old_distance is None and new.new_distance == 0.0
    assert moved.old_segment == "high" and moved.new_segment == "low" and moved.reason == "clicks"
    assert moved.old_distance == pytest.approx(np.log1p(20) - np.log1p(1))
    assert moved.event_time == datetime.fromtimestamp((AS_OF_MS - 3000) / 1000, UTC)
    assert moved.features == {"frequency": 1.0}
    again = msgspec.json.decode(encode(moved), type=SegmentChange)
    assert again == moved


def test_hysteresis_keeps_a_customer_near_the_boundary() -> None:
    # 5 orders sits a little nearer 'low' (1.10) than 'high' (1.25); margin 0.2 keeps 'high'.
    rnd = round_of([5, 5], ["high", None])
    kept = decide(two_segment_model(), rnd, AS_OF_MS, margin=0.2)  # type: ignore[arg-type]
    assert kept.new_segments == ["high", "low"] and kept.changed.tolist() == [False, True]
    off = decide(two_segment_model(), rnd, AS_OF_MS, margin=0.0)  # type: ignore[arg-type]
    assert off.new_segments == ["low", "low"]


def test_rules_before_any_model_say_rules_v1_and_recency_decay_uses_the_scoring_time() -> None:
    rnd = round_of([1, 0], ["about_to_sleep", None])
    dec = decide(RulesModel(), rnd, AS_OF_MS, margin=0.1)  # type: ignore[arg-type]
    assert dec.model_version == "rules-v1"
    assert dec.new_segments[1] == "window_shoppers"
    events = change_events(dec, {"C0": "recency_decay", "C1": "recency_decay"}, AS_OF_MS)
    for _, ev in events:
        assert ev.model_version == "rules-v1" and ev.event_time == AS_OF
        assert ev.old_distance is None and set(ev.features) == {
            "recency_days", "frequency", "monetary", "tenure_days"
        }  # fmt: skip


def test_unknown_reason_is_inferred_from_the_latest_event() -> None:
    assert infer_reason(5, 5) == "order"
    assert infer_reason(4, 5) == "clicks"


def test_control_messages_round_trip_and_junk_is_refused() -> None:
    assert control.decode(control.encode("model_update", version="v")) == {
        "type": "model_update", "version": "v"
    }  # fmt: skip
    with pytest.raises(ControlMessageInvalid):
        control.decode(b"{not json")
    with pytest.raises(ControlMessageInvalid):
        control.decode(b'{"type": "reboot"}')


def test_fields_for_reads_only_what_the_features_need() -> None:
    assert fields_for(("recency_days", "frequency", "aov", "sessions")) == (
        "f", "m", "t1", "ts", "s",
    )  # fmt: skip
    assert fields_for(("page_views",)) == ("t1", "ts", "pv")
    assert fields_for(KNOWN_FEATURES) == STATE_FIELDS
    assert fields_for(("frequency", "not_a_feature")) == STATE_FIELDS


def test_a_round_read_with_fewer_fields_gives_the_same_features() -> None:
    """Trimmed reads (only the model's fields) against full reads, for random feature sets."""
    from dataclasses import replace

    from worker.scoring.store import ABSENT

    rng = random.Random(8)
    # every stored customer has a last-seen time (the state script sets it with the first event)
    states = [random_state(rng, i) for i in range(400)]
    states = [s if s.last_seen_ms is not None else replace(s, last_seen_ms=1) for s in states]
    replies = [hmget_reply(s) for s in states] + [[None] * len(READ_FIELDS)]
    ids = [s.customer_id for s in states] + ["gone"]
    full = parse(ids, replies)
    for trial in range(40):
        names = tuple(rng.sample(KNOWN_FEATURES, rng.randint(1, 6))) if trial else ("sessions",)
        fields = fields_for(names)
        flat = flat_read_reply(replies, fields, [0] * len(replies))
        trimmed = from_flat(ids, flat, ABSENT, fields)
        assert trimmed.customer_ids == full.customer_ids and trimmed.missing == ["gone"]
        assert (trimmed.segments, trimmed.seqs) == (full.segments, full.seqs)
        np.testing.assert_array_equal(
            feature_matrix(trimmed, AS_OF_MS, names), feature_matrix(full, AS_OF_MS, names)
        )
        np.testing.assert_array_equal(trimmed.last_seen_ms, full.last_seen_ms)
        np.testing.assert_array_equal(trimmed.last_order_ms, full.last_order_ms)


def test_an_undecodable_snapshot_sends_its_customers_to_the_read_path() -> None:
    from worker.scoring.snapshot import SnapshotBatch, SnapshotIndex

    spec = SnapshotSpec(fields_for(("frequency",)), "km-1")
    broken = PackedSnapshot(spec, 3, b"\xc1", msgspec.msgpack.encode(["", ""]))
    index = SnapshotIndex()
    index.add(SnapshotBatch(["C1", "C2"], broken))
    rnd, without = index.take(["C1", "C2"], spec.fields)
    assert rnd is None and sorted(without) == ["C1", "C2"] and len(index) == 0


def test_scoring_pauses_for_its_share_only_while_ingestion_is_busy() -> None:
    import asyncio

    from segstream.settings import Settings
    from tests.support.fakes import FakeClock
    from worker.scoring.pacing import Pacer

    async def pause(share: float, busy: bool, round_s: float) -> float:
        clock = FakeClock()
        pacer = Pacer(Settings.of(scoring_share=share), clock)
        if busy:
            pacer.ingest_changed()
        started = clock.monotonic()
        await clock.run(pacer.pause(round_s, lambda: False))
        return clock.monotonic() - started

    # busy: round 0.1 s at share 0.5 -> ~0.1 s pause; idle or no limit -> none
    assert 0.08 <= asyncio.run(pause(0.5, True, 0.1)) < 0.6
    assert asyncio.run(pause(0.5, False, 0.1)) < 0.02
    assert asyncio.run(pause(1.0, True, 0.1)) < 0.02


def test_while_catching_up_scoring_takes_the_catch_up_share_and_its_end_shortens_the_pause() -> (
    None
):
    import asyncio

    from segstream.settings import Settings
    from tests.support.fakes import FakeClock
    from worker.scoring.pacing import Pacer

    lag = [5000]
    settings = Settings.of(scoring_share=0.5, catch_up_lag=1000, catch_up_share=0.1)
    clock = FakeClock()
    pacer = Pacer(settings, clock, behind=lambda: lag[0])
    assert pacer.catching_up() and pacer.share() == 0.1
    lag[0] = 999
    assert not pacer.catching_up() and pacer.share() == 0.5
    # off: no lag threshold, nobody to ask, or a catch-up share above the live one
    lag[0] = 5000
    assert not Pacer(settings.with_(catch_up_lag=0), clock, behind=lambda: 10**9).catching_up()
    assert Pacer(settings, clock).share() == 0.5
    assert Pacer(settings.with_(catch_up_share=0.9), clock, behind=lambda: 5000).share() == 0.5

    async def pause(round_s: float, lag_after: float | None = None) -> float:
        pacer.ingest_changed()  # ingestion busy
        lag[0] = 5000

        async def catch_up_ends() -> None:
            if lag_after is not None:
                await clock.sleep(lag_after)
                lag[0] = 0

        started = clock.monotonic()
        await clock.run(asyncio.gather(pacer.pause(round_s, lambda: False), catch_up_ends()))
        return clock.monotonic() - started

    # round 0.02 s: catching up (share 0.1) -> 0.18 s; the catch-up over after 0.05 s -> the
    # live share's 0.02 s has passed, so the pause ends at the next look (<= 0.05 s later)
    assert 0.15 <= asyncio.run(pause(0.02)) < 0.24
    assert 0.04 <= asyncio.run(pause(0.02, lag_after=0.05)) < 0.14


def test_a_repair_does_not_end_the_pause_a_sweep_or_rescore_does() -> None:
    """The periodic repair queues what it finds without ending the scoring share's pause (its
    customers have no reason to lose); a sweep or a rescore ends it, an empty one does not."""
    import asyncio
    from collections.abc import AsyncIterator

    from segstream.settings import Settings
    from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
    from worker.scoring.service import ScoringService

    async def scenario() -> None:
        store = FakeScoringStore()
        svc = ScoringService(Settings(), store, FakePublisher(), clock=FakeClock())

        async def pages(page: int = 1000) -> AsyncIterator[list[str]]:
            yield ["A", "B"]
            yield []
            yield ["C"]

        store.unscored_pages = pages  # type: ignore[method-assign]
        svc.pending["A"] = "order"
        assert await svc.enqueue_dirty() == 2
        assert svc.pending == {"A": "order", "B": None, "C": None} and not svc.queue.urgent
        svc.enqueue([], "recency_decay")
        assert not svc.queue.urgent
        svc.enqueue(["D"], "recency_decay")
        assert svc.queue.urgent and svc.pending["D"] == "recency_decay"

    asyncio.run(scenario())


def test_snapshots_are_asked_for_only_while_scoring_keeps_up_and_a_later_batch_drops_them() -> None:
    """Behind a backlog the state script sends no snapshot (each costs Redis per changed
    customer, and most would be replaced before their round); a batch without one makes the
    customers' older snapshot stale, so their round must read them instead."""
    import asyncio

    from segstream.settings import Settings
    from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
    from worker.scoring.service import SNAPSHOT_QUEUE_MAX, ScoringService

    rng = random.Random(9)
    states = [random_state(rng, i) for i in range(3)]
    ids = [s.customer_id for s in states]

    async def scenario() -> None:
        svc = ScoringService(Settings(), FakeScoringStore(), FakePublisher(), clock=FakeClock())
        assert svc.snapshot_spec() is None  # not ready yet
        svc.ready = True
        spec = svc.snapshot_spec()
        assert spec is not None and spec.version == svc.holder.version
        svc.pending.update(dict.fromkeys(f"Q{i}" for i in range(SNAPSHOT_QUEUE_MAX)))
        assert svc.snapshot_spec() is None  # backlog: rounds read the state instead
        svc.pending.clear()
        assert svc.snapshot_spec() == spec

        packed = packed_snapshot(states, [hmget_reply(s) for s in states], spec.fields)
        await svc.on_changed(ids, None, packed)
        assert len(svc.queue.snapshots) == 3 and list(svc.pending) == ids
        await svc.on_changed(ids[:2], {ids[0]: "order", ids[1]: "clicks"}, None)
        assert len(svc.queue.snapshots) == 1
        snapped, without = svc.queue.snapshots.take(ids, spec.fields)
        assert without == ids[:2] and snapped is not None and snapped.customer_ids == ids[2:]
        assert svc.pending == {ids[0]: "order", ids[1]: "clicks", ids[2]: None}

    asyncio.run(scenario())


def test_two_rounds_publish_at_once_only_when_they_share_no_customer() -> None:
    """Per-customer order on the topic: a round holding a customer of a publication still in
    flight waits for it (even if that one fails and is retried); disjoint rounds overlap."""
    import asyncio

    from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
    from worker.scoring.metrics import ScoringMetrics
    from worker.scoring.plan import OutgoingChange
    from worker.scoring.publishing import Publications

    async def scenario() -> list[str]:
        clock, publisher, store = FakeClock(), FakePublisher(), FakeScoringStore()
        publishing = Publications(publisher, store, ScoringMetrics(), clock)
        # the broker "acknowledges" each publication (in call order: a, c, d, e) on its gate
        gates = {name: publisher.hold_next() for name in "acde"}

        def change(cid: str) -> OutgoingChange:
            return OutgoingChange(cid, 1, "km-1", b"{}")

        await publishing.publish_behind([change("X")], "a")
        waiting = asyncio.ensure_future(publishing.publish_behind([change("X"), change("Y")], "c"))
        await clock.advance(0.05)
        assert not waiting.done() and len(publishing) == 1
        gates["a"].set()
        await waiting
        assert len(publishing) == 1  # c in flight now
        gates["c"].set()
        await publishing.settled()
        await publishing.publish_behind([change("Y")], "d")
        await publishing.publish_behind([change("Z")], "e")
        assert len(publishing) == 2  # disjoint: both in flight
        gates["e"].set()
        await clock.advance(0.05)
        gates["d"].set()
        await publishing.settled()
        return store.done  # acknowledged rounds leave the outbox in acknowledgement order

    assert asyncio.run(scenario()) == ["a", "c", "e", "d"]


def test_only_rows_read_without_a_stamp_have_their_segment_seq_compared() -> None:
    """A stamp that still holds at the write vouches for segment_seq (store.WRITE_LUA)."""
    from worker.scoring.plan import WritePlan, add_part

    rng = random.Random(9)
    states = [dataclasses.replace(random_state(rng, i), segment=None) for i in range(40)]
    rnd = parse([s.customer_id for s in states], [hmget_reply(s) for s in states])
    stamps = [0 if i % 4 == 0 else (-1 if i % 4 == 1 else 7) for i in range(len(rnd))]
    rnd = dataclasses.replace(rnd, stamps=stamps)
    dec = decide(RulesModel(), rnd, AS_OF_MS, 0.0)
    plan, sent = WritePlan(), {}  # type: ignore[var-annotated]
    add_part(plan, RulesModel().version, rnd, dec, {}, AS_OF_MS, sent)
    assert len(sent) == len(rnd)  # no segment stored yet: every row is a change
    checked = plan.checks[0::2]
    assert checked == [r for r, stamp in enumerate(stamps) if stamp <= 0]
    assert plan.checks[1::2] == [-1 if rnd.seqs[r] is None else rnd.seqs[r] for r in checked]
    # a snapshot's rows (stamped by the state script) are never compared
    plan = WritePlan()
    snap = dataclasses.replace(rnd, stamps=[7] * len(rnd), snapshot=True)
    add_part(plan, RulesModel().version, snap, dec, {}, AS_OF_MS, {})
    assert plan.checks == []
