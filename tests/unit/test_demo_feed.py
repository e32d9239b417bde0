"""The demo's live view follows segment-changes whatever else lands on the topic."""

from __future__ import annotations

import pytest

from devstack.demo import ChangeFeed, _change_of


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not json", b"[1, 2]", b"42", b'"text"', b'{"segment_seq": "x"}', b"\xff\xfe"],
)
def test_a_record_that_is_not_a_segment_change_is_skipped_not_raised(value: bytes | None) -> None:
    assert _change_of(value) is None


def test_a_segment_change_is_counted_once_per_seq() -> None:
    feed = ChangeFeed()
    change = _change_of(b'{"customer_id": "C1", "segment_seq": 3, "new_segment": "loyal"}')
    assert change is not None
    feed.add(change)
    feed.add(change)
    assert feed.total == 1 and feed.sizes["loyal"] == 1
