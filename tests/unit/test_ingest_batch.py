"""Batch assembly and the small pure helpers of the ingest service (no broker, no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from schemas import ClickEvent, DeadLetter, LineItem, OrderEvent, decode, encode
from tests.support.records import Raw
from worker.backoff import BACKOFF_MAX_S
from worker.backoff import backoff as _backoff
from worker.ingest.batch import assemble, change_reasons, offsets_to_commit
from worker.ingest.dead_letter import MAX_ORIGINAL_BYTES, to_dead_letter

NOW = datetime.now(UTC).replace(microsecond=0)


def order(i: int, customer: str = "C1", status: str = "placed") -> bytes:
    return encode(
        OrderEvent(
            event_id=f"o-{i}-{status}",
            schema_version=1,
            customer_id=customer,
            order_id=f"O{i}",
            event_time=NOW - timedelta(hours=i),
            status=status,  # type: ignore[arg-type]
            items=[LineItem(sku="S", quantity=2, unit_price=5.0)],
            total=10.0,
        )
    )


def click(i: int, customer: str | None = "C1") -> bytes:
    return encode(
        ClickEvent(
            event_id=f"c-{i}",
            schema_version=1,
            session_id="s1",
            event_time=NOW,
            type="page_view",
            customer_id=customer,
            anonymous_id=None if customer else "anon",
        )
    )


def test_valid_and_rejected_records_are_split_and_every_offset_is_covered() -> None:
    orders = [
        Raw("orders", 0, 10, b"C1", order(1)),
        Raw("orders", 0, 11, b"C1", b"{not json"),
        Raw("orders", 0, 12, b"C2", order(2, "C2")),
        Raw("orders", 0, 13, None, None),
    ]
    clicks = [Raw("clicks", 3, 7, b"C1", click(1)), Raw("clicks", 3, 8, b"C1", b"\xff\xfe")]
    out = assemble([orders, clicks], "orders", "clicks")

    assert [(r.topic, r.partition, r.offset) for r in out.batch.records] == [
        ("orders", 0, 10),
        ("orders", 0, 12),
        ("clicks", 3, 7),
    ]
    assert out.batch.high_offsets == {("orders", 0): 13, ("clicks", 3): 8}
    assert out.batch.dead_lettered == {("orders", 0): 2, ("clicks", 3): 1}
    assert out.batch.dead_letter_offsets == {("orders", 0): (11, 13), ("clicks", 3): (8,)}
    assert out.received == 6
    reasons = {r.where: r.error.reason for r in out.rejected}
    assert reasons["orders[0]@11"].startswith("not JSON")
    assert reasons["orders[0]@13"] == "empty record: the value is null"
    assert reasons["clicks[3]@8"].startswith("not UTF-8")
    assert isinstance(out.batch.records[0].event, OrderEvent)
    assert isinstance(out.batch.records[2].event, ClickEvent)


def test_an_order_on_the_clicks_topic_is_rejected_by_the_click_schema() -> None:
    out = assemble([[Raw("clicks", 0, 0, None, order(1))]], "orders", "clicks")
    assert not out.batch.records
    assert out.rejected[0].error.path.startswith("$")
    assert out.batch.high_offsets == {("clicks", 0): 0}


def test_records_of_an_unexpected_topic_are_rejected_not_guessed() -> None:
    out = assemble([[Raw("other", 1, 5, None, order(1))]], "orders", "clicks")
    assert not out.batch.records
    assert "neither orders nor clicks" in out.rejected[0].error.reason


def test_empty_fetch_gives_an_empty_batch() -> None:
    out = assemble([[], []], "orders", "clicks")
    assert out.empty and out.received == 0


def test_dead_letter_keeps_original_bytes_key_and_reason() -> None:
    out = assemble([[Raw("orders", 2, 40, b"K", b'{"event_id": 1}')]], "orders", "clicks")
    letter = to_dead_letter(out.rejected[0], NOW)
    back = decode(DeadLetter, encode(letter))
    assert back.original == b'{"event_id": 1}'
    assert (back.source_topic, back.partition, back.offset, back.key) == ("orders", 2, 40, b"K")
    assert back.error == str(out.rejected[0].error) and back.error.startswith("$")
    # The JSON carries the bytes base64-encoded, so any byte string survives.
    assert msgspec.json.decode(encode(letter))["original"]


def test_a_huge_original_is_cut_so_the_dead_letter_fits_the_broker_and_says_so() -> None:
    huge = b"x" * (MAX_ORIGINAL_BYTES + 10)
    out = assemble([[Raw("orders", 0, 9, None, huge)]], "orders", "clicks")
    letter = to_dead_letter(out.rejected[0], NOW)
    assert letter.original == huge[:MAX_ORIGINAL_BYTES]
    assert "oversize" in letter.error and "orders[0]@9" in letter.error
    assert len(encode(letter)) < 1024 * 1024


def test_change_reasons_prefer_order_then_return_then_clicks() -> None:
    out = assemble(
        [
            [
                Raw("orders", 0, 0, None, order(1, "A", "returned")),
                Raw("orders", 0, 1, None, order(2, "A")),
                Raw("orders", 0, 2, None, order(3, "B", "cancelled")),
                Raw("orders", 0, 3, None, order(4, "D")),
                Raw("orders", 0, 4, None, order(5, "D", "returned")),
                Raw("orders", 0, 5, None, order(6, "E")),
            ],
            [Raw("clicks", 0, 0, None, click(1, "B")), Raw("clicks", 0, 1, None, click(2, "C"))],
        ],
        "orders",
        "clicks",
    )
    reasons = change_reasons(out.batch.records, ["A", "B", "C", "D"])
    assert reasons == {"A": "order", "B": "return", "C": "clicks", "D": "order"}
    assert change_reasons(out.batch.records, ["A"]) == {"A": "order"}


def test_commit_offsets_are_next_offsets_of_assigned_partitions_only() -> None:
    high = {("orders", 0): 13, ("clicks", 3): 8}
    assert offsets_to_commit(high, [("orders", 0)]) == {("orders", 0): 14}
    assert offsets_to_commit(high, []) == {}


def test_backoff_grows_and_is_capped() -> None:
    assert _backoff(5000) == BACKOFF_MAX_S  # hours of retries later: no overflow
    waits = [_backoff(n) for n in range(12)]
    assert waits == sorted(waits)
    assert waits[0] < 0.1 and waits[-1] == BACKOFF_MAX_S
