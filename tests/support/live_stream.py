"""The demo's live phase without services: a seeded history, a model, then live sessions scored
as the worker scores them, feeding the online model (tests and benchmarks/bench_drift.py).

``history(customers, seed)``: the producers' personas over 180 days -> ``worker.core`` state ->
export rows at the end -> ``analytics.training.train`` (k by the rule). ``run(history, scenario,
ticks)``: ``producers.live.LiveTraffic`` sessions stamped one tick (0.25 s, as the demo) apart,
applied to a copy of the state; each tick's changed customers are scored at the tick's time
against the batch model with hysteresis (their stored segment carried over) and taught to the
online model, as ``worker.scoring.rounds`` does. A :class:`Scenario` shifts the traffic: another
activity mix, other basket values, a new kind of customer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from analytics.frames import real_matrix
from analytics.training import train
from producers.live import ACTIVITY, LiveTraffic
from producers.personas import PERSONAS, Persona
from producers.synthetic import SyntheticConfig, generate
from worker.core import Batch, InMemoryStateStore, Record, features
from worker.segmentation.assign import assign
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import DriftReport, OnlineModel

START = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 180
TICK_S = 0.25

#: A kind of customer no training data had: bulk buyers with very large baskets, many lines.
WHOLESALE = Persona(
    "wholesale", 0.0, 1, 3.0, 30, (0.0, 0.0), (0.0, 0.0), 15_000.0, 12.0, 2, 0.1, 8.0
)


@dataclass(frozen=True)
class History:
    store: InMemoryStateStore
    labels: dict[str, str]
    model: SegmentModel
    #: Segment id of every customer at the end of the history (by the batch model).
    segments: dict[str, int]
    end: datetime


@dataclass(frozen=True)
class Scenario:
    """Live traffic: the generator's own (steady) or shifted."""

    name: str = "steady"
    #: Activity per persona (relative chance of a session), overriding the generator's.
    activity: Mapping[str, float] = field(default_factory=dict)
    #: Basket values multiplied by this (every persona).
    aov_factor: float = 1.0
    #: Customers of a new persona joining the live traffic: (persona, share of the history's
    #: customer count, activity).
    newcomers: tuple[tuple[Persona, float, float], ...] = ()
    #: The tick from which the traffic is shifted (before it: the generator's own).
    start: int = 0


STEADY = Scenario()
#: The mix changes: bargain hunters six times as active, champions and regulars a fifth.
MIX = Scenario("mix", activity={"bargain_hunters": 24.0, "champions": 1.2, "loyal_regulars": 0.8})
#: Every basket three times as large (a price change, another assortment).
BASKETS = Scenario("baskets", aov_factor=3.0)
#: A new persona: wholesale buyers (5 % as many as the history's customers), as active as
#: champions.
NEW_PERSONA = Scenario("new_persona", newcomers=((WHOLESALE, 0.05, 6.0),))


@dataclass
class LiveRun:
    online: OnlineModel
    #: (tick, report) every ``every`` ticks.
    reports: list[tuple[int, DriftReport]]
    #: The old read-out at the same ticks: max and mean displacement of the online centres from
    #: the batch centroids (standard units), what the demo showed before issue 19.
    old: list[tuple[float, float]]
    store: InMemoryStateStore
    segments: dict[str, int]
    labels: dict[str, str]
    end: datetime
    scored: int = 0


def history(customers: int, seed: int, *, k: int | None = None) -> History:
    config = SyntheticConfig(customers=customers, days=DAYS, seed=seed, start=START)
    data = generate(config)
    store = InMemoryStateStore()
    store.apply(Batch([Record("h", 0, i, e) for i, e in enumerate(data.events())]))
    end = START + timedelta(days=DAYS)
    rows = pd.DataFrame([features(c, end) for c in store.customers()])
    result = train(rows, seed=1, as_of=end, now=end, k=k)
    segments = dict(zip(rows["customer_id"], map(int, result.labels), strict=True))
    return History(store, dict(data.labels), result.model, segments, end)


def run(
    hist: History,
    scenario: Scenario = STEADY,
    ticks: int = 480,
    sessions: int = 40,
    seed: int = 8,
    every: int = 20,
    learning_rate: float | None = None,
) -> LiveRun:
    """``ticks`` ticks of ``sessions`` live sessions each (the demo: 40 every 0.25 s)."""
    model = hist.model
    store = copy.deepcopy(hist.store)
    labels = dict(hist.labels)
    activity = {**ACTIVITY, **scenario.activity}
    personas = tuple(replace(p, aov=p.aov * scenario.aov_factor) for p in PERSONAS)
    for persona, share, rate in scenario.newcomers:
        count = round(share * len(hist.labels))
        personas += (replace(persona, aov=persona.aov * scenario.aov_factor),)
        activity[persona.name] = rate
        labels.update({f"{persona.name}-{i:05d}": persona.name for i in range(count)})
    steady = LiveTraffic(hist.labels, seed=seed)
    shifted = LiveTraffic(labels, seed=seed + 1, personas=personas, activity=activity)
    online = OnlineModel(model) if learning_rate is None else OnlineModel(model, learning_rate)
    segments = dict(hist.segments)
    reports: list[tuple[int, DriftReport]] = []
    old: list[tuple[float, float]] = []
    offset = 0
    scored = 0
    now = hist.end
    for tick in range(ticks):
        now = hist.end + timedelta(seconds=TICK_S * (tick + 1))
        traffic = steady if tick < scenario.start or scenario is STEADY else shifted
        events = traffic.sessions(sessions, now)
        result = store.apply(Batch([Record("l", 0, offset + i, e) for i, e in enumerate(events)]))
        offset += len(events)
        ids = list(result.changed)
        if ids:
            rows = pd.DataFrame([features(store.get(c), now) for c in ids])  # type: ignore[arg-type]
            x = real_matrix(rows, model.feature_names)
            current = np.array([segments.get(c, -1) for c in ids], dtype=np.int64)
            assigned = assign(model, x, current).segment_ids
            segments.update(zip(ids, map(int, assigned), strict=True))
            online.learn_many(x, assigned, ids)
            scored += len(ids)
        if (tick + 1) % every == 0:
            reports.append((tick + 1, online.drift(float("inf"))))
            moved = np.sqrt(((online.centers_ - model.centroids) ** 2).sum(axis=1))
            old.append((float(moved.max()), float(moved.mean())))
    return LiveRun(online, reports, old, store, segments, labels, now, scored)


def final_rows(live: LiveRun) -> pd.DataFrame:
    """Every customer's export row at the end of the run, with its persona."""
    rows = pd.DataFrame([features(c, live.end) for c in live.store.customers()])
    rows["persona"] = rows["customer_id"].map(live.labels)
    return rows
