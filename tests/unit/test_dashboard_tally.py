"""The dashboard's tally of segment changes: exact sizes, repeats skipped, tombstones, minutes."""

from __future__ import annotations

from dashboard.records import Change, Tombstone, Undecodable
from dashboard.tally import ERASED, NEW, ChangeTally

T0 = 1_780_000_040_000  # 20 s into a minute


def change(cid: str, seq: int | None, old: str | None, new: str, reason: str = "order",
           at_ms: int = T0) -> Change:  # fmt: skip
    return Change(cid, seq, old, new, reason, "km-1", at_ms)


def test_sizes_start_from_the_state_and_follow_each_change() -> None:
    tally = ChangeTally()
    tally.seed([("a", 1, "loyal"), ("b", 2, "loyal"), ("c", 1, "new")])
    tally.apply(change("a", 2, "loyal", "champions"))
    tally.apply(change("d", 1, None, "new"))
    view = tally.view(T0)
    assert view["sizes"]["current"] == {"loyal": 1, "champions": 1, "new": 2}
    assert view["sizes"]["total"] == 4
    assert view["changes"]["total"] == 2
    assert view["feed"]["seeded"] == 3


def test_a_change_already_in_the_state_or_delivered_twice_is_a_repeat_not_a_change() -> None:
    tally = ChangeTally()
    tally.seed([("a", 3, "loyal")])
    tally.apply(change("a", 3, "new", "loyal"))  # published before the snapshot, read after
    tally.apply(change("a", 4, "loyal", "champions"))
    tally.apply(change("a", 4, "loyal", "champions"))  # at-least-once redelivery
    view = tally.view(T0)
    assert view["sizes"]["current"] == {"champions": 1}
    assert view["changes"]["total"] == 1
    assert view["feed"]["repeats"] == 2
    assert view["transitions"]["total"] == 1


def test_sizes_move_from_the_known_segment_whatever_the_change_says_it_left() -> None:
    tally = ChangeTally()
    tally.seed([("a", 1, "loyal")])
    tally.apply(change("a", 5, "at_risk", "champions"))  # changes 2..4 came before the start
    assert tally.view(T0)["sizes"]["current"] == {"champions": 1}


def test_a_tombstone_removes_the_customer_and_their_counter() -> None:
    tally = ChangeTally()
    tally.seed([("a", 7, "loyal"), ("b", 1, "loyal")])
    tally.apply(Tombstone("a"))
    tally.apply(Tombstone("never-seen"))
    tally.apply(change("a", 1, None, "new"))  # the customer came back: counter starts again
    view = tally.view(T0)
    assert view["sizes"]["current"] == {"loyal": 1, "new": 1}
    assert view["feed"]["erased"] == 2
    matrix = view["transitions"]
    assert matrix["from"] == [NEW, "loyal", "new"] and matrix["to"] == ["loyal", "new", ERASED]
    assert matrix["counts"][1] == [0, 0, 1]  # loyal -> (erased)
    assert matrix["counts"][0] == [0, 1, 0]  # (new) -> new


def test_undecodable_records_are_counted_and_change_nothing() -> None:
    tally = ChangeTally()
    tally.seed([("a", 1, "loyal")])
    tally.apply(Undecodable("not a segment change: $: not JSON"))
    tally.apply(Undecodable("segment_seq header is not an integer"))
    view = tally.view(T0)
    assert view["feed"]["undecodable"] == 2 and view["feed"]["records"] == 2
    assert view["feed"]["last_undecodable"] == "segment_seq header is not an integer"
    assert view["sizes"]["current"] == {"loyal": 1} and view["changes"]["total"] == 0


def test_changes_per_minute_are_bucketed_by_processing_time_and_reason() -> None:
    tally = ChangeTally(minutes=5)
    tally.apply(change("a", 1, None, "new", "order", T0 - 60_000))
    tally.apply(change("b", 1, None, "new", "clicks", T0))
    tally.apply(change("c", 1, None, "new", "clicks", T0 + 1000))
    tally.apply(change("a", 2, "new", "loyal", "model_update", T0 + 2000))
    minutes = tally.view(T0 + 2000)["changes"]["per_minute"]
    assert len(minutes) == 5 and minutes[-1]["t"] == (T0 // 60_000) * 60_000
    assert minutes[-1]["counts"] == {"clicks": 2, "model_update": 1}
    assert minutes[-2]["counts"] == {"order": 1}
    assert all(m["counts"] == {} for m in minutes[:-2])
    assert tally.view(T0)["changes"]["by_reason"] == {"order": 1, "clicks": 2, "model_update": 1}


def test_the_last_60_seconds_weigh_the_previous_minute_by_what_is_left_of_it() -> None:
    tally = ChangeTally()
    for i in range(6):
        tally.apply(change(f"p{i}", 1, None, "new", at_ms=T0 - 60_000))  # previous minute
    for i in range(2):
        tally.apply(change(f"c{i}", 1, None, "new", at_ms=T0))
    # 20 s into the minute: 2/3 of the previous minute still lies within the last 60 s
    assert tally.view(T0)["changes"]["last_60s"] == 2 + 4


def test_old_minutes_are_dropped_beyond_the_window() -> None:
    tally = ChangeTally(minutes=3)
    for k in range(10):
        tally.apply(change(f"c{k}", 1, None, "new", at_ms=T0 + k * 60_000))
    minutes = tally.view(T0 + 9 * 60_000)["changes"]["per_minute"]
    assert [sum(m["counts"].values()) for m in minutes] == [1, 1, 1]
    assert len(tally._per_minute) <= 4
    assert tally.view(T0)["changes"]["total"] == 10


def test_sizes_over_time_are_sampled_with_every_segment_ever_seen() -> None:
    tally = ChangeTally(samples=3)
    tally.seed([("a", 1, "loyal")])
    tally.sample(T0)
    tally.apply(change("a", 2, "loyal", "champions"))
    tally.sample(T0 + 1000)
    tally.apply(change("b", 1, None, "new"))
    tally.sample(T0 + 2000)
    tally.sample(T0 + 3000)  # the first sample falls out
    history = tally.view(T0 + 3000)["sizes"]["history"]
    assert history["t"] == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert history["series"] == {"champions": [1, 1, 1], "new": [0, 1, 1]}


def test_a_change_without_a_counter_is_applied_and_seeding_twice_keeps_the_newer() -> None:
    tally = ChangeTally()
    tally.seed([("a", 2, "loyal")])
    tally.seed([("a", 1, "new"), ("b", None, "new")])
    tally.apply(change("b", None, "new", "loyal"))
    tally.apply(change("b", None, "loyal", "loyal_again"))
    view = tally.view(T0)
    assert view["sizes"]["current"] == {"loyal": 1, "loyal_again": 1}
    assert view["feed"]["repeats"] == 0


def test_no_size_is_sampled_before_the_starting_state_is_read() -> None:
    tally = ChangeTally()
    tally.sample(T0)
    assert tally.view(T0)["sizes"]["history"]["t"] == []
    assert tally.view(T0)["sizes"]["started"] is False
    tally.seed([])  # an empty Redis is a starting state too
    tally.sample(T0 + 1000)
    assert tally.view(T0)["sizes"]["history"]["t"] == [T0 + 1000]
