"""The SQL sink's pure parts: records -> rows, tombstones, rejects; a batch -> its plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas import SegmentChange, encode
from schemas.errors import SchemaError
from sinks.sql.changes import Change, Decoded, Position, Reject, Tombstone, decode_record
from sinks.sql.plan import halves, plan_batch

WHEN = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def change(cid: str, new: str = "loyal", version: str = "rules-v1", **features: float) -> bytes:
    return encode(
        SegmentChange(
            customer_id=cid, old_segment=None, new_segment=new, reason="order",
            model_version=version, features=features or {"frequency": 3.0, "aov": 20.0},
            event_time=WHEN, processing_time=WHEN, new_distance=0.5,
        )
    )  # fmt: skip


def at(offset: int, partition: int = 0) -> Position:
    return Position("changes", partition, offset)


def decoded(cid: str, seq: int, offset: int, partition: int = 0, new: str = "loyal") -> Change:
    got = decode_record(
        at(offset, partition), cid.encode(), change(cid, new), [("segment_seq", str(seq).encode())]
    )
    assert isinstance(got, Change), got
    return got


def test_a_change_becomes_a_row_with_monetary_derived_from_frequency_and_aov() -> None:
    got = decode_record(at(7), b"c1", change("c1", sessions=4.0, frequency=3.0, aov=20.0),
                        [("model_version", b"x"), ("segment_seq", b"12")])  # fmt: skip
    assert isinstance(got, Change)
    row = got.row
    assert (row.customer_id, row.segment_seq, row.new_segment, row.old_segment) == (
        "c1", 12, "loyal", None,
    )  # fmt: skip
    assert (row.frequency, row.aov, row.monetary, row.sessions, row.recency_days) == (
        3.0, 20.0, 60.0, 4.0, None,
    )  # fmt: skip
    assert json.loads(row.features) == {"sessions": 4.0, "frequency": 3.0, "aov": 20.0}
    assert row.event_time == WHEN and row.new_distance == 0.5 and row.old_distance is None


def test_monetary_of_the_change_is_kept_when_the_model_used_it() -> None:
    got = decode_record(at(0), b"c", change("c", monetary=99.5, frequency=2.0, aov=1.0),
                        [("segment_seq", b"1")])  # fmt: skip
    assert isinstance(got, Change) and got.row.monetary == 99.5


def test_a_null_value_is_a_tombstone_of_the_key() -> None:
    assert decode_record(at(3), b"gone", None, None) == Tombstone(at(3), "gone")


def test_records_that_cannot_be_taken_are_rejects_with_a_reason() -> None:
    cases = {
        "key": (None, change("c"), [("segment_seq", b"1")]),
        "not the event": (b"other", change("c"), [("segment_seq", b"1")]),
        "headers.segment_seq: is missing": (b"c", change("c"), []),
        "not an integer": (b"c", change("c"), [("segment_seq", b"x")]),
        "positive": (b"c", change("c"), [("segment_seq", b"0")]),
        "$": (b"c", b"{nope", [("segment_seq", b"1")]),
        "UTF-8": (b"\xff", None, []),
        "NUL": (b"c", change("c", new="a\x00b"), [("segment_seq", b"1")]),
    }
    for expected, (key, value, headers) in cases.items():
        got = decode_record(at(1), key, value, headers)
        assert isinstance(got, Reject), expected
        assert expected in str(got.error), (expected, str(got.error))
        assert got.value == (value or b"") and got.key == key


def test_the_plan_keeps_each_change_once_and_the_highest_seq_per_customer() -> None:
    records = [
        decoded("a", 1, 0, new="new"),
        decoded("a", 2, 1),
        decoded("a", 2, 2),  # republished
        decoded("b", 1, 0, partition=1),
        decoded("a", 1, 3, new="new"),  # late and lower
    ]
    plan = plan_batch(records)
    assert sorted((r.customer_id, r.segment_seq) for r in plan.history) == [
        ("a", 1), ("a", 2), ("b", 1),
    ]  # fmt: skip
    assert sorted((r.customer_id, r.segment_seq, r.new_segment) for r in plan.latest) == [
        ("a", 2, "loyal"), ("b", 1, "loyal"),
    ]  # fmt: skip
    assert plan.offsets == {("changes", 0): 4, ("changes", 1): 1}
    assert plan.versions == {"rules-v1"} and plan.erase == () and plan.rejects == ()


def test_a_tombstone_erases_what_came_before_it_and_keeps_what_follows() -> None:
    records: list[Decoded] = [
        decoded("a", 1, 0),
        decoded("a", 2, 1),
        Tombstone(at(2), "a"),
        decoded("a", 1, 3, new="new"),  # came back after the forget
        Tombstone(at(4), "b"),
        decoded("c", 1, 5),
        Reject(at(6), b"x", b"?", SchemaError("$", "bad")),
    ]
    plan = plan_batch(records)
    assert set(plan.erase) == {"a", "b"}
    assert sorted((r.customer_id, r.segment_seq, r.new_segment) for r in plan.history) == [
        ("a", 1, "new"), ("c", 1, "loyal"),
    ]  # fmt: skip
    assert plan.offsets == {("changes", 0): 7} and len(plan.rejects) == 1


def test_halves_keep_each_partitions_records_in_order() -> None:
    records = [decoded("a", 1, 0), decoded("b", 1, 0, 1), decoded("a", 2, 1), decoded("b", 2, 1, 1)]
    first, second = halves(records)
    assert list(first) + list(second) == records
    assert plan_batch(first).offsets == {("changes", 0): 1, ("changes", 1): 1}
