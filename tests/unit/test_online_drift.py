"""The online model (river's own parts), drift that means something, emerging groups, and names
that hold (issue 19 items 4, 6 and 7).

Pure logic first (hand-made models, seeded points), then the generator: the demo's live phase
replayed without services (tests/support/live_stream.py), steady and shifted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from river import cluster, compose

from analytics.frames import real_matrix
from analytics.profiles import new_allowed
from analytics.training import train
from schemas import LineItem, OrderEvent
from tests.support import live_stream
from tests.support.fakes import FakeClock
from worker.core import Batch, Record, features
from worker.scoring.drift import LEARN_PER_S, LearnBudget, learned_rows, proposal
from worker.scoring.vectors import Round
from worker.segmentation.assign import assign
from worker.segmentation.emerging import MAX_FAR_PER_CALL, MAX_GROUPS, EmergingGroups
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import (
    LEARN_PER_ROUND,
    ONLINE_FORMAT,
    OnlineModel,
    calibrate,
)
from worker.segmentation.rules import RULE_FEATURES, RulesModel

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def model_of(
    centroids: list[list[float]], *, calibration: dict | None = None, names=None
) -> SegmentModel:
    """A model in log1p space with mean 0, std 1 (so z = log1p(x)), ``extra["online"]``."""
    c = np.asarray(centroids, dtype=np.float64)
    d = c.shape[1]
    return SegmentModel(
        version="km-test", created_at=NOW.isoformat(), as_of=NOW.isoformat(),
        feature_names=("frequency", "sessions", "aov")[:d],
        scaler=Scaler(np.zeros(d), np.ones(d)), centroids=c,
        names=names or tuple(f"s{i}" for i in range(len(c))), seed=0, training_size=1000,
        extra={} if calibration is None else {"online": calibration},
    )  # fmt: skip


def real(z: np.ndarray) -> np.ndarray:
    """Real-unit rows whose scaled vectors (log1p, mean 0, std 1) are ``z``."""
    return np.expm1(z)


def calibrated(
    centroids: list[list[float]], spread: float = 0.3, n: int = 4000, seed: int = 0, event=None
):
    """A calibrated model whose segments are Gaussian blobs of ``spread`` around centroids;
    ``event``: how the customers at their latest event differ (an offset), if they do."""
    rng = np.random.default_rng(seed)
    c = np.asarray(centroids, dtype=np.float64)
    labels = rng.integers(0, len(c), size=n)
    z = c[labels] + rng.normal(0, spread, size=(n, c.shape[1]))
    z_event = None if event is None else z + np.asarray(event)
    return model_of(centroids, calibration=calibrate(c, z, labels, z_event)), rng


CENTRES = [[1.0, 1.0], [3.0, 1.0], [2.0, 3.0]]


def blob_stream(rng: np.random.Generator, n: int, centres, spread=0.3, weights=None):
    c = np.asarray(centres, dtype=np.float64)
    ids = rng.choice(len(c), size=n, p=weights)
    return c[ids] + rng.normal(0, spread, size=(n, c.shape[1])), ids


# -- river's own parts, stable ids, state ------------------------------------------------------


def test_the_online_model_is_river_kmeans_behind_the_batch_scaling_seeded_with_its_centroids():
    model = model_of(CENTRES)
    online = OnlineModel(model, learning_rate=0.5)
    assert isinstance(online.pipeline, compose.Pipeline)
    assert isinstance(online.pipeline["scale"], compose.FuncTransformer)
    assert isinstance(online.pipeline["kmeans"], cluster.KMeans)
    assert np.array_equal(online.centers_, model.centroids)
    x = {"frequency": float(np.expm1(2.9)), "sessions": float(np.expm1(1.2))}
    assert online.predict_one(x) == 1  # the batch model's segment 1, through the pipeline
    assert online.learn_one(x) == 1
    # river moved centre 1 halfway (halflife 0.5) to the point, the others stayed
    assert online.centers_[1] == pytest.approx([2.95, 1.1])
    assert np.array_equal(online.centers_[[0, 2]], model.centroids[[0, 2]])


def test_ids_stay_the_batch_models_while_river_follows_a_moving_population():
    model, rng = calibrated(CENTRES)
    online = OnlineModel(model, learning_rate=0.05)
    moved = np.asarray(CENTRES) + np.array([0.4, -0.3])
    for _ in range(20):
        z, _ = blob_stream(rng, 200, moved)
        online.learn_many(real(z), assign(model, real(z), margin=0).segment_ids)
    assert np.abs(online.centers_ - moved).max() < 0.15  # each centre i followed segment i


def test_state_round_trips_through_json_and_a_format_1_state_is_migrated():
    model, rng = calibrated(CENTRES)
    online = OnlineModel(model)
    z, ids = blob_stream(rng, 3000, CENTRES)
    for part in np.array_split(np.arange(3000), 10):
        online.learn_many(real(z[part]), ids[part], [f"c{i}" for i in part])
    back = OnlineModel.from_dict(json.loads(json.dumps(online.to_dict())), model)
    assert online.to_dict()["format"] == ONLINE_FORMAT
    assert back.to_dict() == online.to_dict() and back.drift() == online.drift()
    old = {  # what the hand-written OnlineKMeans saved
        "model_version": "km-test", "feature_names": ["frequency", "sessions"],
        "learning_rate": 0.01, "initial": CENTRES, "centers": [[1.5, 1.0], [3, 1], [2, 3]],
        "counts": [5, 0, 0],
    }  # fmt: skip
    migrated = OnlineModel.from_dict(old, model)
    assert migrated.centers_.tolist() == [[1.5, 1.0], [3, 1], [2, 3]]
    assert migrated.counts_.tolist() == [5, 0, 0] and migrated.reference_ is None
    with pytest.raises(ValueError, match="other features"):
        OnlineModel.from_dict({**old, "feature_names": ["aov", "sessions"]}, model)


def test_a_round_teaches_river_a_bounded_seeded_sample_and_counts_every_row():
    model, rng = calibrated(CENTRES)
    a, b = OnlineModel(model), OnlineModel(model)
    z, ids = blob_stream(rng, 3 * LEARN_PER_ROUND, CENTRES)
    a.learn_many(real(z), ids)
    b.learn_many(real(z), ids)
    assert int(a.counts_.sum()) == LEARN_PER_ROUND and a.seen == len(z)
    assert np.array_equal(a.centers_, b.centers_)  # the sample is seeded


def test_a_round_teaches_river_and_the_far_groups_no_more_than_it_is_given():
    model, rng = calibrated(CENTRES)
    online = OnlineModel(model)
    z, ids = blob_stream(rng, 3 * LEARN_PER_ROUND, CENTRES)
    online.learn_many(real(z), ids, teach=5)
    assert int(online.counts_.sum()) == 5 and online.seen == len(z)
    online.learn_many(real(z), ids, teach=10 * LEARN_PER_ROUND)  # never above the round's cap
    assert int(online.counts_.sum()) == 5 + LEARN_PER_ROUND
    groups = EmergingGroups(np.zeros((2, 2)), threshold=1.0)
    added: list[float] = []
    add = groups._add
    groups._add = lambda *a: (added.append(a[3]), add(*a))[1]  # type: ignore[method-assign]
    far = np.random.default_rng(4).normal([5.0, 5.0], 0.2, size=(40, 2))
    groups.learn_many(far, [f"c{i}" for i in range(40)], far_max=8)
    assert added == [5.0] * 8  # 8 of 40, each standing for 5: the share stays unbiased


def test_the_learning_budget_is_a_rate_whatever_the_round_rate_and_a_replay_keeps_its_sample():
    clock = FakeClock()
    budget = LearnBudget(clock)
    assert budget.take(5000) == LEARN_PER_ROUND  # a full sample to start with
    # live traffic: 40 small rounds a second teach LEARN_PER_S rows a second between them
    taught = 0
    for _ in range(400):
        clock.now += 1 / 40
        taught += budget.take(150)
    assert taught == pytest.approx(10 * LEARN_PER_S, rel=0.05)
    # a replay: a few large rounds a second, each its full sample
    for _ in range(5):
        clock.now += 0.5
        assert budget.take(5000) == LEARN_PER_ROUND
    # at least one row a round (the budget spent), and never more than the round has
    assert budget.take(5000) == 1
    assert budget.take(0) == 0
    clock.now += 10
    assert budget.take(3) == 3


# -- drift -------------------------------------------------------------------------------------


def test_calibration_gives_segment_variances_far_distance_and_shares():
    c = np.array([[0.0, 0.0], [5.0, 0.0]])
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [3000, 1000])
    z = c[labels] + rng.normal(0, 0.5, size=(4000, 2))
    cal = calibrate(c, z, labels)
    assert np.allclose(cal["segment_var"], 0.25, rtol=0.1)
    assert cal["shares"] == [0.75, 0.25]
    # 99th percentile of the distance of a 2-d Gaussian (sigma 0.5): 0.5 * sqrt(2 ln 100)
    assert cal["far_distance"] == pytest.approx(0.5 * np.sqrt(2 * np.log(100)), rel=0.1)
    event = calibrate(c, z, labels, z_event=z + np.array([3.0, 0.0]))
    assert event["far_distance"] > cal["far_distance"] and event["far_rows"] == "latest event"


def test_drift_stays_quiet_on_a_steady_stream_that_differs_from_the_training_population():
    """The stream is not the population (here: every point 0.8 off its centroid, another mix),
    but it does not change: the reference is the stream's own, so drift stays near noise."""
    model, rng = calibrated(CENTRES, event=[0.8, -0.5])
    online = OnlineModel(model)
    offset = np.asarray(CENTRES) + np.array([0.8, -0.5])
    worst = 0.0
    for _ in range(60):
        z, ids = blob_stream(rng, 200, offset, weights=[0.6, 0.3, 0.1])
        online.learn_many(real(z), ids)
        worst = max(worst, online.drift().max)
    report = online.drift(bound=1.5)
    assert report.ready and online.has_reference_.all() and online.share_reference_ is not None
    assert worst < 0.5 and report.mix < 0.1 and not report.retrain_proposed
    # ... while the old read-out (displacement from the batch centroids) would say 0.94
    assert np.linalg.norm(online.centers_ - model.centroids, axis=1).min() > 0.8


def test_drift_fires_when_a_segment_moves_and_when_the_mix_changes():
    model, rng = calibrated(CENTRES)
    moving, mixing = OnlineModel(model), OnlineModel(model)
    for online in (moving, mixing):
        for _ in range(30):
            z, ids = blob_stream(rng, 200, CENTRES)
            online.learn_many(real(z), ids)
        assert not online.drift(bound=1.5).retrain_proposed
    shifted = np.asarray(CENTRES) + np.array([[0, 0], [0, 0], [0, 0.9]])  # segment 2 moves
    for _ in range(30):
        z, ids = blob_stream(rng, 200, shifted)
        moving.learn_many(real(z), ids)
        z, ids = blob_stream(rng, 200, CENTRES, weights=[0.1, 0.1, 0.8])  # the mix changes
        mixing.learn_many(real(z), ids)
    move = moving.drift(bound=1.5)
    assert move.exceeded and int(np.argmax(move.per_segment)) == 2 and move.max > 1.5
    assert move.displacement[2] == pytest.approx(0.9, abs=0.15)
    mix = mixing.drift(bound=1.5)
    assert mix.exceeded and mix.mix > mix.mix_bound and mix.max < 1.5
    assert "segment drift" in proposal(move) and "segment mix moved" in proposal(mix)


def test_an_uncalibrated_model_compares_with_its_centroids_from_the_first_point():
    online = OnlineModel(model_of([[0.0], [2.0]]), learning_rate=0.5)
    online.learn_one({"frequency": float(np.expm1(1.0))})
    report = online.drift(bound=0.4)
    assert report.ready and report.per_segment == pytest.approx((0.5, 0.0))
    assert report.exceeded and online.emerging_ is None


# -- emerging groups ---------------------------------------------------------------------------


def test_scattered_far_points_never_emerge_but_a_dense_far_group_does():
    model, rng = calibrated(CENTRES)
    online = OnlineModel(model)
    assert online.emerging_ is not None
    # 2 % of a steady stream far away, scattered in every direction: noise, not a group
    for _ in range(50):
        z, ids = blob_stream(rng, 200, CENTRES)
        far = rng.normal(0, 1, size=(4, 2))
        far = 2.0 + 6.0 * far / np.linalg.norm(far, axis=1, keepdims=True)
        online.learn_many(real(np.vstack([z, far])), np.r_[ids, np.zeros(4, int)])
    assert online.emerging_.far > 150 and not online.drift().emerging
    # a new kind of customer: 6 % of the scorings, all near (6, 6)
    for batch in range(30):
        z, ids = blob_stream(rng, 200, CENTRES)
        new = rng.normal([6.0, 6.0], 0.3, size=(12, 2))
        cids = [f"c{i}" for i in range(200)] + [f"n{batch}-{i}" for i in range(12)]
        online.learn_many(real(np.vstack([z, new])), np.r_[ids, np.full(12, 2)], cids)
    report = online.drift(bound=1.5)
    assert report.emerging and report.retrain_proposed
    group = report.emerging[0]
    assert np.allclose(group.center, [6.0, 6.0], atol=0.3) and group.customers >= 50
    assert 0.03 <= group.share < 0.1 and "emerging group" in proposal(report)
    again = EmergingGroups.from_dict(
        json.loads(json.dumps(online.emerging_.to_dict())), model.centroids
    )
    assert again.emerging() == online.emerging_.emerging()


# -- what the worker teaches it ----------------------------------------------------------------


def test_the_online_model_learns_event_scorings_only_not_sweeps_rescores_or_conflicts():
    rnd = Round(
        ["a", "b", "c", "d", "e"], np.zeros((5, 1), np.int64), [None] * 5, [None] * 5, [None] * 5,
        [], reasons=[None, "order", None, "clicks", None],
    )  # fmt: skip
    items = {"a": "recency_decay", "b": None, "c": "model_update", "d": None, "e": None}
    assert learned_rows(rnd, items, {"d"}).tolist() == [1, 4]


# -- names that hold ---------------------------------------------------------------------------


def test_a_returning_customer_is_never_new_under_the_rules():
    rules = RulesModel()
    # first order 200 days ago, lapsed, ordered again 2 days ago: 2 orders, small baskets
    returning = np.array([[2.0, 2.0, 40.0, 200.0], [2.0, 1.0, 20.0, 200.0]])
    newcomer = np.array([[2.0, 1.0, 20.0, 2.0]])
    fitted = RulesModel.fit(np.array([[5, 2, 30, 40], [20, 3, 90, 90], [60, 5, 200, 150],
                                      [100, 8, 400, 300], [200, 12, 900, 400]], float))  # fmt: skip
    for model in (rules, fitted):
        assert "new" not in [model.names[i] for i in model.assign(returning).segment_ids]
    assert rules.names[rules.assign(newcomer).segment_ids[0]] == "new"
    assert RULE_FEATURES[-1] == "tenure_days"


# -- the generator: the demo's live phase without services --------------------------------------

CUSTOMERS = 3000
#: The demo streams 40 sessions a tick over 10k customers; the same pace per customer.
SESSIONS = 12


@pytest.fixture(scope="module")
def history() -> live_stream.History:
    return live_stream.history(CUSTOMERS, seed=7)


@pytest.mark.slow
def test_generator_steady_traffic_stays_quiet_and_a_new_persona_proposes_a_retrain(history):
    steady = live_stream.run(history, ticks=480, sessions=SESSIONS, every=40)
    worst = max(r.max for _, r in steady.reports)
    last = steady.reports[-1][1]
    assert last.ready and not any(r.retrain_proposed for _, r in steady.reports), (worst, last)
    shifted = live_stream.run(
        history, replace(live_stream.NEW_PERSONA, start=240), ticks=480, sessions=SESSIONS,
        every=40,
    )  # fmt: skip
    before = [r for tick, r in shifted.reports if tick <= 240]
    after = [r for tick, r in shifted.reports if tick > 240]
    assert not any(r.retrain_proposed for r in before)
    assert any(r.emerging and r.retrain_proposed for r in after)


@pytest.mark.slow
def test_generator_mix_change_proposes_a_retrain(history):
    shifted = live_stream.run(
        history, replace(live_stream.MIX, start=240), ticks=480, sessions=SESSIONS, every=40
    )
    assert not any(r.retrain_proposed for tick, r in shifted.reports if tick <= 240)
    assert shifted.reports[-1][1].exceeded


def _returning(history: live_stream.History) -> tuple[pd.DataFrame, datetime]:
    """Every churned customer (last order months ago) ordering again, one day after the end."""
    store = history.store.__class__()
    store._states = dict(history.store._states)  # a copy of the states is enough here
    when = history.end + timedelta(days=1)
    churned = [c for c, p in history.labels.items() if p == "churned"]
    orders = [
        OrderEvent(event_id=f"back-{c}", schema_version=1, customer_id=c, order_id=f"back-{c}",
                   event_time=when, status="placed", total=30.0, currency="EUR",
                   items=[LineItem(sku="SKU-00001", quantity=1, unit_price=30.0)])
        for c in churned
    ]  # fmt: skip
    store.apply(Batch([Record("r", 0, i, o) for i, o in enumerate(orders)]))
    rows = pd.DataFrame([features(store.get(c), when) for c in churned])  # type: ignore[arg-type]
    assert (rows["tenure_days"] > 100).all() and (rows["recency_days"] < 1).all()
    return rows, when


def test_new_is_allowed_only_where_tenure_keeps_a_returning_customer_out():
    # z = log1p(x): tenure 5 d -> 1.79, 120 d -> 4.80; recency in the first column
    centroids = np.array([[0.5, 1.8], [0.5, 5.0], [4.0, 5.0]])
    names = ("recency_days", "tenure_days")
    # only the newcomers' segment is separated (the others have a long tenure already)
    assert new_allowed(centroids, names, np.zeros(2), np.ones(2)) == [True, False, False]
    # newcomers (recency 0.5) and long-standing lapsed customers (recency 3): a long tenure
    # takes the newcomers' centre to the lapsed ones, unless tenure barely counts (std 10)
    two = np.array([[0.5, 1.8], [3.0, 5.0]])
    assert new_allowed(two, names, np.zeros(2), np.ones(2))[0] is True
    squeezed = two / np.array([1.0, 10.0])
    assert new_allowed(squeezed, names, np.zeros(2), np.array([1.0, 10.0]))[0] is False
    assert new_allowed(centroids[:, :1], names[:1], np.zeros(1), np.ones(1)) == [False] * 3


@pytest.mark.slow
def test_a_returning_customer_is_never_new_under_a_trained_models_names(history):
    rows, _ = _returning(history)
    model = history.model  # default features: no tenure, so no segment may be called new
    assert "new" not in model.names
    rules = RulesModel()
    ruled = rules.assign(real_matrix(rows, RULE_FEATURES)).segment_ids
    assert "new" not in {rules.names[i] for i in ruled}
    final = pd.DataFrame([features(c, history.end) for c in history.store.customers()])
    with_tenure = ("recency_days", "frequency", "aov", "sessions", "tenure_days")
    for weight in (1.0, 2.0):
        tm = train(
            final, seed=1, as_of=history.end, now=history.end, k=8, features=with_tenure,
            feature_weights={"tenure_days": weight},
        ).model  # fmt: skip
        got = {tm.names[i] for i in assign(tm, real_matrix(rows, tm.feature_names)).segment_ids}
        assert "new" not in got, (weight, tm.names, got)
        # weight 1: returning customers share the newcomers' segment, so it is not called new;
        # weight 2: tenure keeps them out, and the newcomers' segment is 'new'
        assert ("new" in tm.names) is (weight == 2.0), tm.names


def test_far_points_scattered_over_more_regions_than_groups_drop_the_lightest_group() -> None:
    rng = np.random.default_rng(1)
    groups = EmergingGroups(rng.normal(size=(6, 4)), threshold=0.5)
    scattered = rng.normal(scale=6.0, size=(4000, 4))
    for start in range(0, len(scattered), 250):
        groups.learn_many(scattered[start : start + 250], [f"c{i}" for i in range(250)])
    assert groups.far > 3000
    assert len(groups.groups) == MAX_GROUPS
    assert groups.emerging() == []  # scattered: no region holds a dense share


def test_a_round_of_mostly_far_points_adds_a_bounded_sample_that_stands_for_all_of_them() -> None:
    centroids = np.zeros((2, 2))
    rng = np.random.default_rng(3)
    groups = EmergingGroups(centroids, threshold=1.0)
    added: list[float] = []
    add = groups._add
    groups._add = lambda *a: (added.append(a[3]), add(*a))[1]  # type: ignore[method-assign]
    # 40 far points in a round (each added), then 640 (a sample of 64, each standing for 10)
    for n in (40, 640):
        z = rng.normal([5.0, 5.0], 0.2, size=(n, 2))
        groups.learn_many(z, [f"c{n}-{i}" for i in range(n)])
    assert added == [1.0] * 40 + [10.0] * MAX_FAR_PER_CALL
    (group,) = groups.groups
    assert group.weight == pytest.approx(40 + 640, rel=0.01)  # faded a little, not sampled away
    assert np.allclose(group.center, [5.0, 5.0], atol=0.1) and groups.far == 680
    again = EmergingGroups.from_dict(json.loads(json.dumps(groups.to_dict())), centroids)
    assert again.emerging() == groups.emerging()
