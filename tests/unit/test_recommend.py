"""The recommendation core without Kafka or Redis: decay, ranking, cold start, merge, batches.

These rules are the reference the Lua scripts follow (tests/integration/test_recommend.py
checks the scripts against them on a real Redis).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from schemas import ClickEvent, LineItem, OrderEvent
from worker.recommend.batch import purchase_lines
from worker.recommend.decay import (
    LANDMARK_SPAN,
    SHOP,
    DecayedCounts,
    as_of,
    first_landmark,
    weight,
)
from worker.recommend.merge import SpaceCounts, merge
from worker.recommend.rank import (
    BOUGHT_KEPT,
    HASH_BYTES,
    Pick,
    bought_after,
    bought_hashes,
    member,
    rank,
    sku_hash,
    split_member,
)

H = 7 * 86_400_000
T0 = 1_740_000_000_000


def test_a_purchase_weighs_half_as_much_one_half_life_earlier() -> None:
    landmark = first_landmark(T0, H)
    assert weight(3, T0 + H, landmark, H) == pytest.approx(2 * weight(3, T0, landmark, H))
    assert as_of(weight(1, T0, landmark, H), landmark, T0 + 2 * H, H) == pytest.approx(0.25)


def test_moving_the_landmark_changes_no_score_read_as_of_a_time() -> None:
    moving = DecayedCounts(H)
    still = DecayedCounts(H)
    still.landmark = first_landmark(T0, H)
    batches = [
        [("s", T0, [("c,a", 2)]), (None, T0 + 1000, [("c,b", 1)])],
        [("s", T0 + (LANDMARK_SPAN + 3) * H, [("c,b", 5)])],  # past the span: the landmark moves
    ]
    for batch in batches:
        moving.add_batch(batch)
    assert moving.landmark != still.landmark
    # the same purchases against the old landmark, without the move
    for batch in batches:
        for segment, t, lines in batch:
            for name in (SHOP, segment) if segment else (SHOP,):
                for m, units in lines:
                    scores = still.counts.setdefault(name, {})
                    scores[m] = scores.get(m, 0.0) + weight(units, t, still.landmark, H)
    still.latest = moving.latest
    for name in (SHOP, "s"):
        got, want = moving.top(name, 10), still.top(name, 10)
        assert [m for m, _ in got] == [m for m, _ in want]
        for (_, a), (_, b) in zip(got, want, strict=True):
            assert a == pytest.approx(b, rel=1e-12)


def test_the_counts_keep_the_best_members_of_each_segment_only() -> None:
    counts = DecayedCounts(H, limit=2)
    counts.add_batch([("s", T0, [("c,a", 3), ("c,b", 1), ("c,c", 2)])])
    assert [m for m, _ in counts.top("s", 10)] == ["c,a", "c,c"]
    assert len(counts.counts[SHOP]) == 2


def test_an_item_bought_lately_outranks_one_bought_more_often_long_ago() -> None:
    counts = DecayedCounts(H)
    counts.add_batch([("s", T0, [("c,old", 7)]), ("s", T0 + 3 * H, [("c,new", 1)])])
    assert [m for m, _ in counts.top("s", 2)] == ["c,new", "c,old"]


def test_the_bought_field_keeps_the_newest_eight_and_moves_a_rebought_sku_to_the_end() -> None:
    field = bought_after(None, [f"s{i}" for i in range(10)])
    assert bought_hashes(field) == [sku_hash(f"s{i}") for i in range(2, 10)]
    assert len(field) == 24 and BOUGHT_KEPT == 8
    again = bought_after(field, ["s3"])
    assert bought_hashes(again)[-1] == sku_hash("s3") and len(bought_hashes(again)) == 8


def test_a_bought_hash_is_three_raw_bytes_with_the_bits_of_the_first_six_hex_digits() -> None:
    for sku in ("A", "toys-0042", "é,ü"):
        hex6 = hashlib.sha1(sku.encode()).hexdigest()[:6]
        assert sku_hash(sku) == bytes.fromhex(hex6) and len(sku_hash(sku)) == HASH_BYTES == 3
    # read.lua's conversion of redis.sha1hex: one byte from each pair of hex digits
    hex6 = hashlib.sha1(b"order:o1").hexdigest()[:6]
    assert sku_hash("order:o1") == bytes(int(hex6[i : i + 2], 16) for i in (0, 2, 4))


def test_a_bought_field_not_a_multiple_of_three_bytes_counts_as_empty() -> None:
    assert bought_hashes(b"abcd") == [] and bought_hashes(None) == []
    assert bought_after(b"abcd", ["s1"]) == sku_hash("s1")
    old = b"".join(hashlib.sha1(f"s{i}".encode()).hexdigest()[:6].encode() for i in range(8))
    assert not set(bought_hashes(old)) & {sku_hash(f"s{i}") for i in range(8)}  # no crash, no match


def test_members_carry_the_category_and_a_sku_may_hold_commas() -> None:
    assert split_member(member("toys", "A,B")) == ("toys", "A,B")
    assert split_member(member(None, "X")) == (None, "X")


SEGMENT = [(member("toys", "t1"), 10.0), (member("books", "k1"), 6.0), (member("toys", "t2"), 4.0)]
SHOP_LIST = [
    (member("toys", "t1"), 30.0),
    (member("home", "h1"), 20.0),
    (member("books", "k9"), 1.0),
]


def test_the_segment_list_comes_first_bought_skus_skipped_then_the_shop_fills_up() -> None:
    picks = rank(SEGMENT, SHOP_LIST, [sku_hash("t2")], None, 4)
    assert [(p.sku, p.source) for p in picks] == [
        ("t1", "segment"), ("k1", "segment"), ("h1", "shop"), ("k9", "shop"),
    ]  # fmt: skip
    assert picks[0].reason("champions") == "popular in champions"
    assert picks[2].reason("champions") == "popular in the shop"


def test_the_favourite_category_is_boosted_and_says_so() -> None:
    picks = rank(SEGMENT, SHOP_LIST, [], "books", 2, boost=1.0)
    assert picks[0] == Pick("k1", "books", 12.0, "segment", True)
    assert picks[0].reason("loyal") == "popular in loyal, in your favourite category books"
    assert picks[1].sku == "t1" and not picks[1].favourite


def test_a_cold_customer_gets_the_shops_list_and_ties_go_by_sku() -> None:
    tied = [(member("a", "z"), 1.0), (member("a", "b"), 1.0)]
    picks = rank([], tied, [], None, 5)
    assert [p.sku for p in picks] == ["b", "z"] and {p.source for p in picks} == {"shop"}


def test_the_merge_sums_spaces_as_of_the_newest_event() -> None:
    one = SpaceCounts(landmark=T0, latest=T0, lists={"s": [("c,a", 1.0)], SHOP: [("c,a", 1.0)]})
    two = SpaceCounts(
        landmark=T0 + H, latest=T0 + H, lists={"s": [("c,a", 1.0), ("c,b", 2.0)], SHOP: []}
    )
    at, lists = merge([one, two], H, 10)
    assert at == T0 + H
    assert lists["s"] == [("c,b", 2.0), ("c,a", pytest.approx(1.5))]  # 1 a half-life ago = 0.5
    assert merge([], H, 10) == (None, {})


def test_a_placed_order_gives_its_lines_summed_per_sku_in_first_seen_order() -> None:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    items = [LineItem(sku="A", quantity=1, unit_price=1.0, category="toys"),
             LineItem(sku="A", quantity=2, unit_price=1.0, category="toys"),
             LineItem(sku="B", quantity=1, unit_price=1.0)]  # fmt: skip
    placed = OrderEvent(event_id="e1", schema_version=1, customer_id="C", order_id="o1",
                        event_time=when, status="placed", items=items, total=4.0)  # fmt: skip
    lines = purchase_lines(placed)
    assert lines is not None
    assert [(line.member, line.units) for line in lines] == [("toys,A", 3), (",B", 1)]
    assert lines[0].sku_hash == sku_hash("A") and lines[1].sku_hash == sku_hash("B")


def test_only_a_placed_order_owes_the_counts_lines() -> None:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    items = [LineItem(sku="A", quantity=1, unit_price=1.0)]
    for status in ("cancelled", "returned"):
        order = OrderEvent(event_id="e2", schema_version=1, customer_id="C", order_id="o1",
                           event_time=when, status=status, items=items, total=1.0)  # fmt: skip
        assert purchase_lines(order) is None
    click = ClickEvent(event_id="k1", schema_version=1, session_id="s", event_time=when,
                       type="product_view", customer_id="C", sku="A")  # fmt: skip
    assert purchase_lines(click) is None
