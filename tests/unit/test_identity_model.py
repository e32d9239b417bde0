"""Identity merge, pure: the oracle, the model of the scripts, and the batch records they take.

The property tests check the *design* (visitor state, first-link-wins links, content-named
transfers, idempotent merges) against the oracle for every arrival order, replay and crash
point; tests/integration/test_identity.py checks the Redis scripts against the same oracle.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ClickEvent, LineItem, OrderEvent
from schemas.errors import SchemaError
from schemas.events import FieldProblem
from worker.core.batch import ApplyResult, Batch, Record
from worker.core.rfm import CLICK_CODES, to_delta
from worker.identity.model import (
    IdentityModel,
    attributed,
    behaviour,
    expected,
    links,
)
from worker.identity.records import RECORD, Limits, anon_calls, identity_records
from worker.identity.stage import Merged, StageResult
from worker.identity.store import with_merges
from worker.ingest.changes import ChangeReports
from worker.ingest.listener import NullListener
from worker.ingest.metrics import IngestMetrics
from worker.state.keys import Keyspace

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ORDER = OrderEvent(
    event_id="o1", schema_version=1, customer_id="C1", order_id="O1", event_time=T0,
    status="placed", items=[LineItem(sku="x", quantity=1, unit_price=5.0)], total=5.0,
)  # fmt: skip
TYPES = ("page_view", "product_view", "add_to_cart", "checkout_start", "search")


def click(
    eid: str,
    kind: str = "page_view",
    *,
    anon: str | None = None,
    cid: str | None = None,
    session: str = "s1",
    minute: int = 0,
) -> ClickEvent:
    return ClickEvent(
        event_id=eid,
        schema_version=1,
        session_id=session,
        event_time=T0 + timedelta(minutes=minute),
        type=kind,  # type: ignore[arg-type]
        customer_id=cid,
        anonymous_id=anon,
        sku="sku-1" if kind in ("product_view", "add_to_cart") else None,
    )


def identify(eid: str, anon: str, cid: str, session: str = "s1", minute: int = 0) -> ClickEvent:
    return click(eid, "identify", anon=anon, cid=cid, session=session, minute=minute)


def oracle(events: list[ClickEvent]) -> dict[str, tuple[int | None, ...]]:
    return {cid: behaviour(s) for cid, s in expected(events).items()}


def modelled(events: list[ClickEvent], crashes: list[str | None] | None = None) -> IdentityModel:
    model = IdentityModel()
    for i, event in enumerate(events):
        model.ingest(event, crash=crashes[i] if crashes else None)
    model.drain()
    return model


# -- the schema and the click code ---------------------------------------------------------------
def test_an_identify_click_needs_both_ids() -> None:
    with pytest.raises((FieldProblem, SchemaError), match="anonymous_id"):
        click("e1", "identify", cid="C1")
    with pytest.raises((FieldProblem, SchemaError), match="customer_id"):
        click("e1", "identify", anon="A1")
    assert identify("e1", "A1", "C1").type == "identify"


def test_for_its_customer_an_identify_counts_its_session_and_last_seen_only() -> None:
    assert CLICK_CODES["identify"] == 7
    got = expected([identify("e1", "A1", "C1", minute=5)])["C1"]
    assert behaviour(got) == (
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        int((T0 + timedelta(minutes=5)).timestamp() * 1000),
    )


# -- the oracle ------------------------------------------------------------------------------------
def test_the_oracle_gives_a_linked_visitors_clicks_to_its_customer_and_drops_the_rest() -> None:
    events = [
        click("e1", anon="A1", session="s1"),
        click("e2", "add_to_cart", anon="A1", session="s1"),
        click("e3", anon="A2", session="s9"),  # never identified: counts for nobody
        identify("e4", "A1", "C1", session="s1"),
        click("e5", "checkout_start", cid="C1", session="s1"),
    ]
    assert links(events) == {"A1": "C1"}
    assert [e.customer_id for e in attributed(events, {"A1": "C1"})] == ["C1"] * 4
    # one session (seen under both ids), a cart that reached checkout under the customer id
    assert oracle(events)["C1"][:7] == (1, 1, 0, 1, 1, 1, 1)
    assert set(oracle(events)) == {"C1"}


# -- the model of the scripts against the oracle -------------------------------------------------
@st.composite
def streams(draw: st.DrawFn) -> list[ClickEvent]:
    """Anonymous clicks of up to 3 visitors, clicks of 2 customers, 0-2 identifies per visitor
    (always naming the same customer: no conflicts), sessions shared across ids."""
    owners = draw(st.lists(st.sampled_from(["C1", "C2", None]), min_size=3, max_size=3))
    events: list[ClickEvent] = []
    n = draw(st.integers(1, 14))
    for i in range(n):
        who = draw(st.sampled_from(["A0", "A1", "A2", "C1", "C2"]))
        kind = draw(st.sampled_from(TYPES))
        session = draw(st.sampled_from(["s1", "s2", "s3"]))
        minute = draw(st.integers(0, 50))
        if who.startswith("A"):
            events.append(click(f"e{i}", kind, anon=who, session=session, minute=minute))
        else:
            events.append(click(f"e{i}", kind, cid=who, session=session, minute=minute))
    for v, owner in enumerate(owners):
        if owner is not None:
            for j in range(draw(st.integers(1, 2))):
                session = draw(st.sampled_from(["s1", "s2", "s4"]))
                events.append(
                    identify(f"i{v}-{j}", f"A{v}", owner, session, draw(st.integers(0, 50)))
                )
    return events


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=streams())
def test_every_arrival_order_of_links_and_clicks_gives_the_oracles_state(
    data: st.DataObject, events: list[ClickEvent]
) -> None:
    arrival = data.draw(st.permutations(events))
    assert modelled(arrival).behaviour() == oracle(events)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), events=streams())
def test_replays_and_crashes_between_transfer_and_merge_change_nothing(
    data: st.DataObject, events: list[ClickEvent]
) -> None:
    arrival = data.draw(st.permutations(events))
    replayed = arrival + data.draw(st.lists(st.sampled_from(arrival), max_size=len(arrival)))
    crashes = data.draw(
        st.lists(
            st.sampled_from([None, "before_merge", "before_delete"]),
            min_size=len(replayed),
            max_size=len(replayed),
        )
    )
    assert modelled(replayed, crashes).behaviour() == oracle(events)


def test_a_conflicting_identify_is_counted_and_the_first_link_wins() -> None:
    events = [
        click("e1", anon="A1", session="s1"),
        identify("i1", "A1", "C1", session="s1"),
        identify("i2", "A1", "C2", session="s2"),  # another customer: ignored
        click("e2", anon="A1", session="s3"),
    ]
    model = modelled(events)
    assert model.conflicts == 1 and model.links == {"A1": "C1"}
    assert model.behaviour() == oracle(events)
    assert model.behaviour()["C2"][0] == 1  # C2 has its own identify click's session only


# -- the records a batch hands to anon.lua --------------------------------------------------------
def test_a_batch_without_anonymous_or_identify_clicks_makes_no_identity_call() -> None:
    batch = Batch(
        [
            Record("clicks", 0, 1, click("e1", cid="C1")),
            Record("clicks", 0, 2, click("e2", "page_view", cid="C1", anon="A1")),  # not identify
            Record("orders", 0, 3, ORDER),
        ]
    )
    assert identity_records(batch) == []
    assert anon_calls(batch, Keyspace("ss"), Limits()) == []


def test_identity_records_go_to_their_visitors_space_one_call_per_space() -> None:
    ks = Keyspace("ss", cluster=True, shards=16)
    events = [click(f"e{i}", anon=f"A{i}") for i in range(40)]
    events.append(identify("i1", "A3", "C9"))
    batch = Batch([Record("clicks", 1, i, e) for i, e in enumerate(events)])
    calls = anon_calls(batch, ks, Limits(max_events=7, anonymous_ttl_ms=5, link_ttl_ms=9))
    spaces = {ks.space_of(f"A{i}") for i in range(40)}
    assert [c.space for c in calls] == sorted(spaces, key=ks.spaces.index)
    assert sum(c.records for c in calls) == 41
    assert all(c.key == f"{c.space}:counters" for c in calls)
    a3 = next(c for c in calls if c.space == ks.space_of("A3"))
    assert a3.args[1:5] == [7, 5, 9, 1]
    at = a3.args.index("A3")
    blob, ncid, cid = a3.args[at + 1], a3.args[at + 2], a3.args[at + 3]
    assert len(blob) == 2 * RECORD.size and (ncid, cid) == (1, "C9")
    rows = [RECORD.unpack_from(blob, k * RECORD.size) for k in range(2)]
    assert [(r[0], r[3]) for r in rows] == [(1, 0), (2, 1)]  # anonymous, then identify of C9
    assert rows[1][6] == to_delta(events[-1]).fp


# -- what scoring hears of a merge -----------------------------------------------------------------
def test_customers_a_merge_changed_are_reported_with_their_batch_as_clicks() -> None:
    heard: list[tuple[list[str], object]] = []

    class Recorder(NullListener):
        async def on_changed(self, customer_ids, reasons, snapshot):  # type: ignore[no-untyped-def]
            heard.append((list(customer_ids), reasons))

    batch = Batch([Record("orders", 0, 1, ORDER)])
    applied = ApplyResult(1, 0, ["C1"], stamp=4)
    assert with_merges(batch, applied, StageResult()) is applied  # no merge: as applied
    result = with_merges(batch, applied, StageResult([Merged("ss", 5, ("C7",))]))
    assert (result.applied, result.duplicates, list(result.changed)) == (1, 0, ["C1", "C7"])
    assert [r.stamp for _, r in result.parts] == [4, 5]
    reports = ChangeReports(Recorder(), IngestMetrics())
    reports.add(batch, result)
    asyncio.run(reports.report())
    assert heard == [(["C1"], {"C1": "order"}), (["C7"], {"C7": "clicks"})]
