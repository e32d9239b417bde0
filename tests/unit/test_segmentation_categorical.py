"""Categorical model features: encoding, weighting, missing values, artifact, explain, worker.

The persona test is the feature's reason to exist: two personas with the same RFM and behaviour
that differ only by their favourite category (``analytics.synthetic.categorical_personas``) are
one segment to a numeric model and two to a model given the category. Both trainings go through
``analytics.training.train`` with its own k selection (``k=None``: silhouette + elbow over 2-10).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from analytics.frames import categorical_values, real_matrix
from analytics.synthetic import AS_OF, CATEGORIES, categorical_personas, synthetic_state
from analytics.training import train
from worker.core.attributes import PROFILE_FIELDS, SUMMARY_FIELDS, Attributes
from worker.scoring import categories
from worker.scoring.decide import attribute_fields, decide
from worker.scoring.vectors import READ_FIELDS, parse
from worker.segmentation.assign import assign, explain
from worker.segmentation.categorical import (
    MISSING,
    OTHER,
    CategoricalEncoder,
    CategoricalFeature,
    level_of,
    parse_weights,
)
from worker.segmentation.errors import ArtifactInvalid, FeatureError, TrainingError
from worker.segmentation.model import SegmentModel

NOW = datetime(2026, 11, 27, 1, 2, tzinfo=UTC)
NUMERIC = ("recency_days", "frequency", "aov", "sessions")
WITH_CATEGORY = (*NUMERIC, "favourite_category")
TWINS = ["loyal_fashion", "loyal_electronics"]


@pytest.fixture(scope="module")
def personas() -> pd.DataFrame:
    return categorical_personas(3_000, seed=3)


@pytest.fixture(scope="module")
def mixed(personas: pd.DataFrame):
    return train(personas, features=WITH_CATEGORY, seed=0, now=NOW)


# -- the reason: a category separates what RFM cannot ---------------------------------------------


def test_a_category_separates_two_personas_with_the_same_rfm_that_rfm_alone_merges(
    personas: pd.DataFrame, mixed
) -> None:
    numeric = train(personas, features=NUMERIC, seed=0, now=NOW)
    ari_with = adjusted_rand_score(personas["persona"], mixed.labels)
    ari_without = adjusted_rand_score(personas["persona"], numeric.labels)
    assert ari_with >= 0.9, (ari_with, mixed.model.k_rule)
    assert ari_without <= ari_with - 0.05, (ari_without, ari_with)
    # without the category the twins land in one segment; with it, in two
    top_without = pd.crosstab(personas["persona"], numeric.labels).idxmax(axis=1)
    top_with = pd.crosstab(personas["persona"], mixed.labels).idxmax(axis=1)
    assert top_without[TWINS[0]] == top_without[TWINS[1]]
    assert top_with[TWINS[0]] != top_with[TWINS[1]]
    assert (mixed.model.k, numeric.model.k) == (8, 7), (mixed.model.k_rule, numeric.model.k_rule)
    # the segments say which category made them
    tops = mixed.model.extra["categorical_profiles"]
    twin_tops = {tops[top_with[t]]["favourite_category"]["top"] for t in TWINS}
    assert twin_tops == {"fashion", "electronics"}


# -- encoding and missing values ------------------------------------------------------------------


def test_absent_values_are_a_level_of_their_own_and_never_a_nan() -> None:
    values = ["DE", None, "FR", float("nan"), "", "DE", pd.NA, "  ", "FR"] * 20
    f = CategoricalFeature.fit("country", values)
    assert f.encoding == "onehot" and f.levels == ("DE", "FR")
    assert f.missing_share == pytest.approx(5 / 9)
    assert f.level_names([None, float("nan"), "", pd.NA, "DE"]) == [MISSING] * 4 + ["DE"]
    block = f.encode(values)
    assert np.isfinite(block).all()
    assert block[:, f.columns.index(f"country={MISSING}")].sum() == 5 * 20


def test_rare_and_unseen_values_are_encoded_as_other() -> None:
    values = ["DE"] * 500 + ["FR"] * 480 + ["LU"] * 4 + ["MT"] * 16
    f = CategoricalFeature.fit("country", values, min_share=0.01, min_count=10)
    assert f.levels == ("DE", "FR", "MT")  # LU: 0.4 % < 1 %
    assert f.level_names(["LU", "IS", "MT"]) == [OTHER, OTHER, "MT"]
    assert f.other_share == pytest.approx(4 / 1000)


def test_levels_are_spelled_the_same_from_every_source() -> None:
    assert [level_of(v) for v in (True, "True", "true", np.True_)] == ["true"] * 4
    assert [level_of(v) for v in (False, "False")] == ["false"] * 2
    assert [level_of(v) for v in (None, float("nan"), "", " ", pd.NA, np.nan)] == [None] * 6
    assert level_of(1990.0) == "1990" and level_of(" FR ") == "FR"


def test_beyond_the_cardinality_bound_a_feature_is_frequency_encoded() -> None:
    rng = np.random.default_rng(1)
    values = [f"r{i}" for i in rng.integers(0, 30, 3_000)] + [None] * 300
    f = CategoricalFeature.fit("region", values, max_onehot_levels=20)
    assert f.encoding == "frequency" and len(f.levels) == 30 and f.width == 1
    col = f.encode(values)[:, 0]
    # standardised like a numeric feature: mean 0, standard deviation = the weight
    assert col.mean() == pytest.approx(0.0, abs=1e-9) and col.std() == pytest.approx(1.0)
    heavy = CategoricalFeature.fit("region", values, weight=2.0, max_onehot_levels=20)
    assert heavy.encode(values)[:, 0].std() == pytest.approx(2.0)
    # an unseen region is encoded as a share of 0 (rarer than any level), no error
    assert f.level_names(["nowhere"]) == [OTHER] and np.isfinite(f.encode(["nowhere"])).all()


# -- the weighting rule ---------------------------------------------------------------------------


def test_a_categorical_feature_weighs_at_most_one_standardised_numeric_feature(mixed) -> None:
    model = mixed.model
    (f,) = model.categorical.features
    values = categorical_values(mixed.categories, ["favourite_category"])["favourite_category"]
    block = f.encode(values)
    # two customers at different levels: squared distance 2 (a numeric feature's mean squared
    # difference between two customers); at the same level 0
    a, b = f.encode(["fashion", "home"])
    assert ((a - b) ** 2).sum() == pytest.approx(2.0)
    # the block's total variance is at most 1, a standardised numeric feature's
    assert 0.5 < block.var(axis=0).sum() <= 1.0
    # its part of every customer-to-centroid squared distance is bounded by 2 w^2
    cents = model.categorical_centroids
    part = ((block[:, None, :] - cents[None, :, :]) ** 2).sum(axis=2)
    assert part.max() <= f.max_contribution() + 1e-12 == 2.0 + 1e-12
    # while the numeric part is unbounded (heavy tails), each column has variance 1
    z = model.transform(real_matrix(mixed.features, model.feature_names))
    assert np.allclose(z.var(axis=0), 1.0)


def test_a_feature_weight_scales_its_part_of_every_distance(personas: pd.DataFrame) -> None:
    base = train(personas, k=8, features=(*NUMERIC, "country"), seed=0, now=NOW)
    heavy = train(
        personas, k=8, features=(*NUMERIC, "country"), seed=0, now=NOW,
        feature_weights={"country": 2.0, "aov": 3.0},
    )  # fmt: skip
    values = {"country": personas["country"].tolist()}
    b = base.model.categorical.encode(values, len(personas))
    h = heavy.model.categorical.encode(values, len(personas))
    assert np.allclose(h, 2.0 * b)
    assert heavy.model.categorical.features[0].max_contribution() == pytest.approx(8.0)
    x = real_matrix(base.features, NUMERIC)
    zb, zh = base.model.transform(x), heavy.model.transform(x)
    assert np.allclose(zh[:, 2], 3.0 * zb[:, 2]) and np.allclose(zh[:, :2], zb[:, :2])
    assert heavy.model.extra["feature_weights"] == {
        "recency_days": 1.0, "frequency": 1.0, "aov": 3.0, "sessions": 1.0, "country": 2.0,
    }  # fmt: skip


def test_feature_weights_are_parsed_or_refused_in_one_line() -> None:
    assert parse_weights("country=2, aov=0.5") == {"country": 2.0, "aov": 0.5}
    assert parse_weights("") == {}
    for bad in ("country", "country=x", "country=-1", "=2", "country=nan"):
        with pytest.raises(FeatureError, match="NAME=WEIGHT"):
            parse_weights(bad)


def test_unknown_features_and_stray_weights_are_refused(personas: pd.DataFrame) -> None:
    with pytest.raises(TrainingError, match="categorical: country"):
        train(personas, k=3, features=(*NUMERIC, "shoe_size"))
    with pytest.raises(TrainingError, match="does not use"):
        train(personas, k=3, features=NUMERIC, feature_weights={"country": 2})
    with pytest.raises(TrainingError, match="numeric feature"):
        train(personas, k=3, features=("country",))


# -- the artifact ---------------------------------------------------------------------------------


def test_a_categorical_model_round_trips_through_its_artifact(personas, mixed) -> None:
    model = mixed.model
    data = json.loads(model.to_json())
    assert data["format"] == 2 and data["feature_names"] == list(NUMERIC)
    assert len(data["centroids"][0]) == len(NUMERIC)  # readers of the numeric part unchanged
    again = SegmentModel.from_json(model.to_json())
    assert again.categorical == model.categorical
    assert np.array_equal(again.all_centroids, model.all_centroids)
    assert again.to_json() == model.to_json()
    x = real_matrix(personas, model.feature_names)
    cats = categorical_values(personas, model.categorical_names)
    assert np.array_equal(
        assign(again, x, categories=cats).segment_ids, assign(model, x, categories=cats).segment_ids
    )
    assert np.array_equal(assign(model, x, margin=0.0, categories=cats).segment_ids, mixed.labels)
    broken = dict(data, categorical=dict(data["categorical"], centroids=[[0.0]] * model.k))
    with pytest.raises(ArtifactInvalid, match="categorical centroids"):
        SegmentModel.from_dict(broken)


def test_a_categorical_model_refuses_to_score_without_its_categories(personas, mixed) -> None:
    x = real_matrix(personas.head(5), mixed.model.feature_names)
    with pytest.raises(FeatureError, match="favourite_category"):
        assign(mixed.model, x)


def test_numeric_only_artifacts_are_written_and_read_as_before() -> None:
    state = synthetic_state(1_500, seed=4)
    model = train(state, k=4, seed=0, now=NOW).model
    data = model.to_dict()
    assert data["format"] == 1 and "categorical" not in data and not model.categorical
    # an artifact as format-1 code wrote it (no categorical key) loads and scores unchanged
    old = {k: v for k, v in data.items() if k not in ("extra",)}
    loaded = SegmentModel.from_dict(old)
    x = real_matrix(state, model.feature_names)
    z = (np.log1p(np.maximum(x, 0)) - model.scaler.mean) / model.scaler.std
    by_hand = ((z[:, None, :] - model.centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.array_equal(assign(loaded, x, margin=0.0).segment_ids, by_hand)
    assert loaded.all_centroids is loaded.centroids  # no copy on the numeric path


# -- explain --------------------------------------------------------------------------------------


def test_explain_shows_each_categorical_features_level_and_share_of_the_distance(
    personas, mixed
) -> None:
    model = mixed.model
    row = personas[personas["persona"] == "loyal_fashion"].iloc[0]
    x = real_matrix(row.to_frame().T, model.feature_names)[0]
    ex = explain(model, x, categories={"favourite_category": row["favourite_category"]})
    assert ex.categories == {"favourite_category": row["favourite_category"]}
    assert ex.levels == {"favourite_category": row["favourite_category"]}
    assert set(ex.contributions) == set(WITH_CATEGORY)
    for side in ("assigned", "runner_up"):
        assert sum(c[f"{side}_share"] for c in ex.contributions.values()) == pytest.approx(1.0)
    d = ex.distances
    assert ex.runner_up is not None and d[ex.runner_up] >= d[ex.assigned]
    total = sum(c["assigned_d2"] for c in ex.contributions.values())
    assert total == pytest.approx(d[ex.assigned] ** 2)
    gone = explain(model, x, categories={"favourite_category": None})
    assert gone.levels == {"favourite_category": MISSING}


# -- the worker's side ----------------------------------------------------------------------------


def random_hash(rng: random.Random) -> dict[str, str]:
    """A customer hash with a random subset of profile and summary fields (some malformed)."""
    fields: dict[str, str] = {}
    for attr, name in PROFILE_FIELDS.items():
        if rng.random() < 0.3:
            continue
        if attr == "birth_year":
            fields[name] = rng.choice(["1950", "1988", "2001", "2010", "x", ""])
        elif attr == "marketing_consent":
            fields[name] = rng.choice(["1", "0", ""])
        else:
            fields[name] = rng.choice(["a", "b", "c", ""])
    for name in SUMMARY_FIELDS.values():
        if rng.random() < 0.7:
            pairs = rng.sample(["fashion", "home", "beauty", "sports", "web", "ios"], 3)
            fields[name] = ",".join(f"{p}={rng.randint(1, 9)}" for p in pairs)
    return fields


def test_the_worker_reads_the_values_the_export_carries() -> None:
    rng = random.Random(5)
    names = tuple(categories.SOURCES)
    fields = categories.fields_for(names)
    hashes = {f"C{i}": random_hash(rng) for i in range(400)}
    replies = {cid: [h.get(f, "").encode() or None for f in fields] for cid, h in hashes.items()}
    as_of_ms = int(AS_OF.timestamp() * 1000)
    got = categories.values(names, fields, list(hashes), replies, as_of_ms)
    for i, (cid, h) in enumerate(hashes.items()):
        if h.get("pb") == "x":  # the export refuses such a hash; the worker calls it missing
            assert got["age_band"][i] is None
            h = {k: v for k, v in h.items() if k != "pb"}
        want = Attributes.from_fields(h).columns(AS_OF)
        assert {n: got[n][i] for n in names} == {n: want[n] for n in names}, cid


def test_decide_assigns_with_the_attributes_as_offline_assign_does(personas, mixed) -> None:
    model = mixed.model
    assert attribute_fields(model) == ("ks",)
    rows = personas.head(300)
    as_of_ms = int(AS_OF.timestamp() * 1000)
    ids = rows["customer_id"].tolist()
    # state fields as the hash holds them, so that the round's features are the export's
    replies = []
    for r in rows.itertuples():
        buyer = r.frequency > 0
        t1 = as_of_ms - round(r.recency_days * 86_400_000) if buyer else None
        state = {"f": r.frequency, "m": round(r.monetary * 100), "t1": t1, "ts": as_of_ms,
                 "s": r.sessions}  # fmt: skip
        replies.append([None if state.get(f) is None else str(state[f]).encode()
                        for f in READ_FIELDS])  # fmt: skip
    rnd = parse(ids, replies)
    fav = rows["favourite_category"].tolist()
    levels = [level_of(c) for c in fav]  # NaN in the frame: no category
    summaries = [None if c is None else f"{c}=100,web=1".encode() for c in levels]
    attrs = {cid: [ks] for cid, ks in zip(ids, summaries, strict=True)}
    decision = decide(model, rnd, as_of_ms, 0.0, attrs)
    x = decision.x_real
    offline = assign(model, x, margin=0.0, categories={"favourite_category": fav})
    assert decision.new_segments == [model.names[i] for i in offline.segment_ids]
    # and the category is what decided some of them
    blind = assign(model, x, margin=0.0, categories={"favourite_category": [None] * len(ids)})
    assert (blind.segment_ids != offline.segment_ids).any()
    assert set(levels) == {*CATEGORIES, None}


# -- the command line -----------------------------------------------------------------------------


def test_cli_trains_with_a_categorical_feature_and_its_weight(tmp_path: Path) -> None:
    from segstream.cli import main

    export = tmp_path / "export.csv"
    categorical_personas(2_000, seed=6).drop(columns="persona").to_csv(export, index=False)
    models = tmp_path / "models"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["train", "--export", str(export), "--model-dir", str(models), "--k", "8",
         "--features", ",".join(WITH_CATEGORY), "--out", str(tmp_path / "out")],
        env={"SEGSTREAM_TRAIN_FEATURE_WEIGHTS": "favourite_category=1.5"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "most common favourite_category" in result.output
    version = (models / "current").read_text().strip()
    model = SegmentModel.from_json((models / f"{version}.json").read_text())
    (f,) = model.categorical.features
    assert f.name == "favourite_category" and f.weight == 1.5
    assert set(f.levels) == set(CATEGORIES) and f.missing_share > 0  # window shoppers: none
    bad = runner.invoke(
        main, ["train", "--export", str(export), "--feature-weights", "favourite_category"]
    )
    assert bad.exit_code == 1 and "NAME=WEIGHT" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_an_encoder_with_no_features_adds_no_columns() -> None:
    empty = CategoricalEncoder()
    assert not empty and empty.width == 0 and empty.encode({}, 3).shape == (3, 0)
