"""What a record of segment-changes means to the dashboard; no bytes make it raise."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from dashboard.records import Change, Tombstone, Undecodable, read_record
from schemas import SegmentChange, encode

WHEN = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)


def a_change(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "customer_id": "C1", "old_segment": "loyal", "new_segment": "champions",
        "reason": "order", "model_version": "km-1", "features": {"recency_days": 3.0},
        "event_time": WHEN, "processing_time": WHEN,
    } | changes  # fmt: skip
    return encode(SegmentChange(**fields))  # type: ignore[arg-type]


def test_a_segment_change_is_read_with_its_counter_header() -> None:
    got = read_record(b"C1", a_change(), [("model_version", b"km-1"), ("segment_seq", b"12")])
    assert got == Change("C1", 12, "loyal", "champions", "order", "km-1",
                         int(WHEN.timestamp() * 1000))  # fmt: skip


def test_a_first_segment_without_a_header_has_no_counter() -> None:
    got = read_record(b"C1", a_change(old_segment=None), [])
    assert isinstance(got, Change) and got.seq is None and got.old_segment is None


def test_a_null_value_is_a_tombstone_for_its_key() -> None:
    assert read_record(b"C9", None) == Tombstone("C9")


def test_unreadable_records_say_why() -> None:
    cases = {
        (None, None): "tombstone without a key",
        (b"\xff\xfe", None): "tombstone key is not UTF-8",
        (b"C1", b"not json"): "not a segment change",
        (b"C1", b'{"customer_id": "C1"}'): "not a segment change",
        (b"C1", b""): "not a segment change",
    }
    for (key, value), why in cases.items():
        got = read_record(key, value)
        assert isinstance(got, Undecodable) and got.why.startswith(why), (key, value, got)
    bad_header = read_record(b"C1", a_change(), [("segment_seq", b"twelve")])
    assert bad_header == Undecodable("segment_seq header is not an integer")


@given(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(st.tuples(st.sampled_from(["segment_seq", "x"]), st.binary(max_size=8)), max_size=3),
)
def test_no_record_makes_the_reader_raise(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    assert isinstance(read_record(key, value, headers), Change | Tombstone | Undecodable)
