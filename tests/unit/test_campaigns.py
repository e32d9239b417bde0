"""Campaigns (worker/campaigns): the arm is a pure, stable, uniform function of campaign and
customer; definitions validate; who enters; the stored record and the published record."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from schemas.campaign import decode_assignment
from schemas.errors import SchemaError
from worker.campaigns import keys
from worker.campaigns.model import (
    HOLDOUT,
    TREATMENT,
    Assignment,
    Campaign,
    CampaignInvalid,
    arm_of,
    unit_of,
)
from worker.campaigns.publisher import record_of
from worker.campaigns.registry import parse_registry
from worker.campaigns.service import candidates_of
from worker.state.keys import Keyspace

T0 = 1_760_000_000_000


def test_the_arm_is_pinned_to_blake2b_of_campaign_and_customer() -> None:
    # fixed values: a change of the function would move customers between arms
    assert unit_of("spring", "C000001") == pytest.approx(0.5952049581719938)
    assert unit_of("spring", "C000002") == pytest.approx(0.15892253298846315)
    assert arm_of("spring", "C000001", 0.5) == TREATMENT
    assert arm_of("spring", "C000002", 0.5) == HOLDOUT


def test_the_arm_is_the_same_in_another_process_with_another_hash_seed() -> None:
    ids = [f"C{i}" for i in range(50)]
    here = [arm_of("promo", c, 0.3) for c in ids]
    code = (
        "from worker.campaigns.model import arm_of;"
        f"print(','.join(arm_of('promo', c, 0.3) for c in {ids!r}))"
    )
    for seed in ("1", "987"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip().split(",") == here


def test_the_holdout_share_is_the_asked_share_and_independent_across_campaigns() -> None:
    ids = [f"C{i:06d}" for i in range(40_000)]
    a = [arm_of("a", c, 0.1) == HOLDOUT for c in ids]
    b = [arm_of("b", c, 0.1) == HOLDOUT for c in ids]
    share = sum(a) / len(ids)
    assert abs(share - 0.1) < 0.006  # 4 standard errors of a binomial share
    both = sum(x and y for x, y in zip(a, b, strict=True)) / len(ids)
    assert abs(both - 0.01) < 0.002  # independent: 0.1 x 0.1


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"name": "no spaces"}, "campaign name"),
        ({"name": ""}, "campaign name"),
        ({"holdout": 0.0}, "holdout must be between 0 and 1"),
        ({"holdout": 1.0}, "holdout must be between 0 and 1"),
        ({"segment": ""}, "segment"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_a_bad_definition_is_refused_with_the_reason(kwargs: dict[str, object], said: str) -> None:
    base: dict[str, object] = {"name": "spring", "segment": "at_risk", "holdout": 0.1,
                               "created_ms": T0}  # fmt: skip
    with pytest.raises(CampaignInvalid, match=said):
        Campaign(**(base | kwargs))  # type: ignore[arg-type]


def test_a_campaign_round_trips_through_its_json_and_enters_only_while_running() -> None:
    c = Campaign("spring", "at_risk", 0.2, T0, "win back", stopped_ms=T0 + 1000)
    assert Campaign.from_json(c.to_json()) == c
    assert c.enters("at_risk", T0) and c.enters("at_risk", T0 + 999)
    assert not c.enters("at_risk", T0 - 1) and not c.enters("at_risk", T0 + 1000)
    assert not c.enters("lost", T0 + 10)


def test_the_registry_skips_a_record_that_is_not_a_campaign_and_says_why() -> None:
    good = Campaign("spring", "at_risk", 0.2, T0)
    found = parse_registry(
        {b"spring": good.to_json().encode(), b"broken": b"{not json", b"other": good.to_json()}
    )
    assert list(found.by_name) == ["spring"]
    assert set(found.invalid) == {"broken", "other"}
    assert "names campaign 'spring'" in found.invalid["other"]


def test_the_stored_assignment_round_trips_and_a_bad_one_is_refused() -> None:
    a = Assignment("spring", "C1", TREATMENT, T0, published=True)
    assert a.stored() == f"treatment|{T0}|1"
    assert Assignment.parse("spring", "C1", a.stored().encode()) == a
    for bad in ("treatment|x|0", "maybe|1|0", "treatment|1"):
        with pytest.raises(CampaignInvalid):
            Assignment.parse("spring", "C1", bad)


def test_the_published_record_carries_a_stable_assignment_id_and_the_assignment_time() -> None:
    c = Campaign("spring", "at_risk", 0.2, T0)
    key, value = record_of(Assignment("spring", "C1", HOLDOUT, T0 + 5), c)
    assert key == b"C1"
    record = decode_assignment(value)
    assert record.assignment_id == "spring:C1" and record.arm == HOLDOUT
    assert record.segment == "at_risk" and record.holdout == 0.2
    assert record.assigned_at == datetime.fromtimestamp((T0 + 5) / 1000, UTC)
    assert record_of(Assignment("spring", "C1", HOLDOUT, T0 + 5, True), c)[1] == value
    with pytest.raises(SchemaError):
        decode_assignment(b'{"schema_version": 1}')


def test_the_assignment_keys_live_in_the_customers_space_on_both_modes() -> None:
    single, cluster = Keyspace("ss"), Keyspace("ss", cluster=True, shards=4)
    assert keys.assignments(single.space_of("C42"), "C42") == "ss:cp:{C42}"
    key = keys.assignments(cluster.space_of("C42"), "C42")
    assert key.startswith(cluster.space_of("C42") + ":cp:") and keys.customer_of(key) == "C42"
    assert keys.assignments_pattern(single) == "ss:cp:{*}"
    assert keys.assignments_pattern(cluster) == "ss:{*}:cp:{*}"


def _record(value: bytes | None, offset: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="segment-changes", partition=0, offset=offset, key=b"k",
                           value=value)  # fmt: skip


def _change(customer: str, segment: str, at_ms: int) -> bytes:
    when = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
    return (
        f'{{"customer_id": "{customer}", "old_segment": null, "new_segment": "{segment}", '
        f'"reason": "order", "model_version": "v1", "features": {{}}, "event_time": "{when}", '
        f'"processing_time": "{when}", "schema_version": 1}}'
    ).encode()


def test_changes_into_a_running_campaigns_segment_are_candidates_once_and_bad_ones_are_not() -> (
    None
):
    c = Campaign("spring", "at_risk", 0.2, T0)
    campaigns = parse_registry({"spring": c.to_json()})
    records = [
        _record(_change("C1", "at_risk", T0 + 10), 0),
        _record(_change("C1", "at_risk", T0 + 5), 1),  # earlier entry of the same customer
        _record(_change("C2", "at_risk", T0 - 10), 2),  # before the campaign
        _record(_change("C3", "lost", T0 + 10), 3),  # another segment
        _record(None, 4),  # a tombstone
        _record(b"{not a change", 5),
    ]
    wanted, bad = candidates_of(records, campaigns)  # type: ignore[arg-type]
    assert [(cand[0].name, cand[1], cand[2]) for cand, _ in wanted] == [("spring", "C1", T0 + 5)]
    assert [r.offset for r, _ in bad] == [5]
    assert str(bad[0][1]).startswith("$")
