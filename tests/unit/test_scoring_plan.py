"""A round's write plan and outgoing changes, built from its decisions (pure)."""

from __future__ import annotations

import dataclasses

import msgspec

from tests.support.customer_rows import AS_OF_MS, hmget_reply, random_state
from worker.scoring.decide import decide
from worker.scoring.plan import OutgoingChange, build, from_outbox, outbox_entries
from worker.scoring.vectors import READ_FIELDS, parse
from worker.segmentation.rules import RulesModel


def test_each_real_change_becomes_one_outgoing_change_with_the_next_segment_seq() -> None:
    import random

    rng = random.Random(4)
    states = [random_state(rng, i) for i in range(200)]
    rnd = parse([s.customer_id for s in states], [hmget_reply(s) for s in states])
    rnd = dataclasses.replace(rnd, stamps=[5] * len(rnd))
    model = RulesModel()
    dec = decide(model, rnd, AS_OF_MS, 0.0)
    plan, sent = build(model.version, [(rnd, dec)], {"C1": "order"}, AS_OF_MS)
    changed = dec.changed_rows.tolist()
    assert [rnd.customer_ids[r] for r in changed] == list(sent)
    for r in changed:
        cid = rnd.customer_ids[r]
        got = sent[cid]
        assert isinstance(got, OutgoingChange) and got.customer_id == cid
        assert got.segment_seq == (rnd.seqs[r] or 0) + 1 and got.model_version == model.version
        event = msgspec.json.decode(got.payload)
        assert event["new_segment"] == dec.new_segments[r] and event["customer_id"] == cid
    assert plan.ids == rnd.customer_ids and plan.stamps == rnd.stamps
    assert plan.changes[0::3] == changed and plan.changes[2::3] == [
        sent[c].segment_seq for c in sent
    ]
    assert plan.checks == []  # every row stamped: nothing to compare
    kept_other_version = [
        r for r, v in enumerate(rnd.model_versions) if v != model.version and r not in changed
    ]
    assert plan.stale == kept_other_version
    assert outbox_entries(sent) == [
        (c.customer_id, c.segment_seq, c.payload) for c in sent.values()
    ]


def test_a_customer_without_a_hash_is_compared_so_that_its_entry_goes_without_a_write() -> None:
    rnd = parse(["gone"], [[None] * len(READ_FIELDS)])
    rnd = dataclasses.replace(rnd, missing_stamps=[9])
    model = RulesModel()
    plan, sent = build(model.version, [(rnd, decide(model, rnd, AS_OF_MS, 0.0))], {}, AS_OF_MS)
    assert sent == {} and plan.ids == ["gone"] and plan.stamps == [9] and plan.checks == [0, -1]


def test_outbox_entries_come_back_as_changes_each_customers_in_seq_order() -> None:
    def entry(cid: str, seq: int) -> tuple[str, int, bytes]:
        return (cid, seq, msgspec.json.encode({"model_version": f"km-{seq}"}))

    got = from_outbox([("t1", [entry("B", 2), entry("A", 1)]), ("t0", [entry("B", 1)])])
    assert [(c.customer_id, c.segment_seq, c.model_version) for c in got] == [
        ("A", 1, "km-1"), ("B", 1, "km-1"), ("B", 2, "km-2"),
    ]  # fmt: skip
