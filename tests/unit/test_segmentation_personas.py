"""Quality on the producers' seeded personas: events -> core state -> export rows -> K-means.

Adjusted Rand index (ARI) between segments and personas, for batch training and for the online
path (a model trained earlier, then the updated customers' vectors streamed through
``assign`` + ``OnlineModel.learn_many``), against a batch retrain on the final export.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from analytics.frames import real_matrix
from analytics.training import train
from producers.synthetic import SyntheticConfig, generate
from worker.core import Batch, InMemoryStateStore, Record, features
from worker.segmentation.assign import assign
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import OnlineModel

pytestmark = pytest.mark.slow

CONFIG = SyntheticConfig(customers=3_000, days=180, seed=1, start=datetime(2026, 5, 1, tzinfo=UTC))
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def export_at():
    """``export_at(day, extra_days=0)``: export rows of the events before ``day``, as of
    ``day + extra_days`` (extra days = silence: recency grows, nothing else changes)."""
    data = generate(CONFIG)
    events = list(data.events())
    labels = data.labels
    stores: dict[int, InMemoryStateStore] = {}

    def at(day: int, extra_days: float = 0.0) -> pd.DataFrame:
        cut = CONFIG.start_ms + day * DAY_MS
        if day not in stores:
            store = InMemoryStateStore()
            recs = [Record("e", 0, i, e) for i, e in enumerate(events) if e.event_time_ms < cut]
            store.apply(Batch(recs))
            stores[day] = store
        as_of = datetime.fromtimestamp(cut / 1000, UTC) + timedelta(days=extra_days)
        df = pd.DataFrame([features(c, as_of) for c in stores[day].customers()])
        df["persona"] = df["customer_id"].map(labels)
        return df

    return at


def stream(model: SegmentModel, before: pd.DataFrame, after: pd.DataFrame) -> np.ndarray:
    """Segments after streaming ``after``'s vectors (3 passes, 30 batches) through the online path,
    starting from each customer's segment under ``model`` in ``before``."""
    x = real_matrix(after, model.feature_names)
    current = np.full(len(after), -1)
    prior = before.set_index("customer_id")
    known = after["customer_id"].isin(prior.index).to_numpy()
    x_prior = real_matrix(prior.loc[after["customer_id"][known]], model.feature_names)
    current[known] = assign(model, x_prior, margin=0.0).segment_ids
    online = OnlineModel(model, learning_rate=0.01)
    rng = np.random.default_rng(4)
    for _ in range(3):
        for batch in np.array_split(rng.permutation(len(after)), 30):
            result = assign(model, x[batch], current[batch], centroids=online.centers_)
            current[batch] = result.segment_ids
            online.learn_many(x[batch], result.segment_ids)
    return current


def test_batch_segments_match_the_personas(export_at) -> None:
    final = export_at(180)
    result = train(final, seed=0)
    ari = adjusted_rand_score(final["persona"], result.labels)
    assert ari >= 0.8, (ari, result.model.k_rule)
    names = np.array(result.model.names)[result.labels]
    top = pd.crosstab(final["persona"], names).idxmax(axis=1)
    for persona in ("champions", "big_spenders", "window_shoppers", "at_risk"):
        assert top[persona] == persona, top.to_dict()


@pytest.mark.parametrize(
    ("train_day", "final_extra_days"),
    [(170, 0.0), (180, 30.0)],
    ids=["trained-10-days-before", "30-silent-days-after-training"],
)
def test_online_path_reaches_the_batch_ari(export_at, train_day, final_extra_days) -> None:
    before = export_at(train_day)
    after = export_at(180, final_extra_days)
    model = train(before, seed=0).model
    online = adjusted_rand_score(after["persona"], stream(model, before, after))
    batch = adjusted_rand_score(after["persona"], train(after, seed=0, k=model.k).labels)
    stale = adjusted_rand_score(
        after["persona"],
        assign(model, real_matrix(after, model.feature_names), margin=0).segment_ids,
    )
    # river's k-means moves the nearest centre (not the assigned one): within 0.06 of a retrain
    # (0.929 vs 0.983 after 30 silent days, benchmarks/RESULTS.md 2026-12-06), well above stale
    assert online >= batch - 0.06, (online, batch, stale)
    assert online >= stale, (online, batch, stale)
    assert online >= 0.8
