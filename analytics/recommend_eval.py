"""Offline evaluation of recommendations: ``segstream recommend evaluate``.

Learns from the events before ``--split-at`` exactly what the worker would hold at that time,
then scores the purchases after it:

- the customers' state at T (the in-memory oracle of the state script, worker/core/memory.py),
  and their segments: a K-means model trained on that state as ``segstream train`` does
  (``--model train``, the default), or segstream's RFM rules (``--model rules``, what the
  worker assigns before any model exists). A customer first seen after T is cold: no segment;
- the forward-decayed counts per segment and for the shop (worker/recommend/decay.py, the rule
  count.lua applies), every purchase before T counted under its customer's segment at T, then
  each list cut to ``top_max`` as the merge cuts it; the recently bought field (``rb``) and the
  favourite category of every customer, as the worker keeps them;
- three recommenders, each giving every customer with a purchase after T a list of N skus:
  **segstream** (worker/recommend/rank.py: their segment's list, favourite category boosted,
  bought skus skipped, the shop's list to fill up), **global popularity** (the shop's top N for
  everyone) and **own past purchases** (the customer's distinct skus before T, most recent
  first);
- hit rate@N (the share of those customers with at least one of their later skus in their list)
  and NDCG@N (binary relevance: a listed sku is relevant if the customer bought it after T).

Two simplifications, both stated in the output's docs: each purchase before T counts under the
customer's segment at T (the worker counts it under the segment the customer had when it
arrived), and the per-space bound ``pop_max`` is not applied (it drops only skus far below the
top lists).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from schemas import ClickEvent, OrderEvent, SchemaError, decode
from worker.core.batch import Batch, Record
from worker.core.memory import InMemoryStateStore
from worker.core.rfm import features, to_ms
from worker.recommend.decay import SHOP, DecayedCounts, half_life_ms
from worker.recommend.rank import BOOST, bought_after, bought_hashes, member, rank

__all__ = ["Evaluation", "Score", "evaluate", "read_events", "render"]

RECOMMENDERS = ("segstream", "global popularity", "own past purchases")


@dataclass(frozen=True)
class Score:
    recommender: str
    hit_rate: float
    ndcg: float


@dataclass
class Evaluation:
    top: int
    split_at: datetime
    model: str
    segments: int
    events_before: int
    purchases_after: int
    customers: int
    cold: int
    scores: list[Score] = field(default_factory=list)

    def score(self, recommender: str) -> Score:
        return next(s for s in self.scores if s.recommender == recommender)


def read_events(path: str | Path) -> tuple[list[OrderEvent | ClickEvent], int]:
    """Orders and clicks of a jsonl replay file (profiles and lines that do not decode are
    skipped and counted: the second value)."""
    events: list[OrderEvent | ClickEvent] = []
    skipped = 0
    with Path(path).open("rb") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                if b'"order_id"' in line:
                    events.append(decode(OrderEvent, line))
                elif b'"session_id"' in line:
                    events.append(decode(ClickEvent, line))
                else:
                    skipped += 1
            except SchemaError:
                skipped += 1
    return events, skipped


def _records(events: Iterable[OrderEvent | ClickEvent]) -> Iterator[Record]:
    for offset, e in enumerate(events):
        yield Record("orders" if isinstance(e, OrderEvent) else "clicks", 0, offset, e)


def _segments(rows: list[dict[str, object]], model: str, as_of: datetime, seed: int) -> list[str]:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if model == "rules":
        from analytics.frames import real_matrix
        from worker.segmentation.rules import RulesModel

        rules = RulesModel()
        ids = rules.assign(real_matrix(frame, rules.feature_names, as_of)).segment_ids
        return [rules.names[int(i)] for i in ids]
    from analytics.training import train

    result = train(frame, seed=seed, as_of=as_of)
    return [result.model.names[int(i)] for i in result.labels]


def _dcg(hits: Sequence[bool]) -> float:
    return sum(1.0 / math.log2(i + 2) for i, hit in enumerate(hits) if hit)


def evaluate(
    events: Sequence[OrderEvent | ClickEvent],
    split_at: datetime,
    top: int = 10,
    model: str = "train",
    half_life_days: float = 7.0,
    top_max: int = 100,
    boost: float = BOOST,
    seed: int = 0,
) -> Evaluation:
    """Learn from ``events`` before ``split_at``, score the placed orders at or after it."""
    cut = to_ms(split_at)
    ordered = sorted(events, key=lambda e: to_ms(e.event_time))
    before = [e for e in ordered if to_ms(e.event_time) < cut]
    after = [
        e
        for e in ordered
        if isinstance(e, OrderEvent) and e.status == "placed" and to_ms(e.event_time) >= cut
    ]
    store = InMemoryStateStore()
    chunk = 20_000
    records = list(_records(before))
    for i in range(0, len(records), chunk):
        store.apply(Batch(records[i : i + chunk]))
    states = {s.customer_id: s for s in store.customers()}
    ids = list(states)
    rows = [features(states[c], split_at) for c in ids]
    segment_of = dict(zip(ids, _segments(rows, model, split_at, seed), strict=True)) if ids else {}

    counts = DecayedCounts(half_life_ms(half_life_days))
    bought: dict[str, bytes] = {}
    history: dict[str, list[str]] = {}
    purchases = []
    for e in before:
        if isinstance(e, OrderEvent) and e.status == "placed":
            skus = list(dict.fromkeys(item.sku for item in e.items))
            units: dict[str, int] = {}
            for item in e.items:
                key = member(item.category, item.sku)
                units[key] = units.get(key, 0) + item.quantity
            purchases.append(
                (segment_of.get(e.customer_id), to_ms(e.event_time), list(units.items()))
            )
            bought[e.customer_id] = bought_after(bought.get(e.customer_id), skus)
            seen = history.setdefault(e.customer_id, [])
            for sku in skus:
                if sku in seen:
                    seen.remove(sku)
                seen.append(sku)
    counts.add_batch(purchases)
    shop_list = counts.top(SHOP, top_max, cut)
    lists = {seg: counts.top(seg, top_max, cut) for seg in counts.counts if seg != SHOP}

    wanted: dict[str, set[str]] = {}
    for e in after:
        wanted.setdefault(e.customer_id, set()).update(item.sku for item in e.items)
    popular = [text.partition(",")[2] for text, _ in shop_list[:top]]
    totals = {name: [0.0, 0.0] for name in RECOMMENDERS}
    cold = 0
    for cid, relevant in wanted.items():
        state = states.get(cid)
        segment = segment_of.get(cid)
        cold += state is None
        favourite = state.attributes.favourite_category if state is not None else None
        picks = rank(
            lists.get(segment, []) if segment else [],
            shop_list,
            bought_hashes(bought.get(cid)),
            favourite,
            top,
            boost,
        )
        own = list(reversed(history.get(cid, [])))[:top]
        ideal = _dcg([True] * min(len(relevant), top))
        for name, listed in (
            ("segstream", [p.sku for p in picks]),
            ("global popularity", popular),
            ("own past purchases", own),
        ):
            hits = [sku in relevant for sku in listed]
            totals[name][0] += any(hits)
            totals[name][1] += _dcg(hits) / ideal
    n = len(wanted)
    result = Evaluation(
        top=top,
        split_at=split_at,
        model=model,
        segments=len(set(segment_of.values())),
        events_before=len(before),
        purchases_after=len(after),
        customers=n,
        cold=cold,
    )
    for name in RECOMMENDERS:
        hit, gain = totals[name]
        result.scores.append(Score(name, hit / n if n else 0.0, gain / n if n else 0.0))
    return result


def render(result: Evaluation) -> str:
    n = result.top
    lines = [
        f"learned from {result.events_before} events before {result.split_at.isoformat()} "
        f"({result.segments} segments, model: {result.model}); scored {result.purchases_after} "
        f"purchases after it by {result.customers} customers ({result.cold} cold)",
        f"{'recommender':<20}  {'hit_rate@' + str(n):>12}  {'ndcg@' + str(n):>10}",
    ]
    for s in result.scores:
        lines.append(f"{s.recommender:<20}  {s.hit_rate:>12.4f}  {s.ndcg:>10.4f}")
    return "\n".join(lines)
