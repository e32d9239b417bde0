"""The retrain gate: the pure verdict on silhouette, smallest segment and label stability, and
the measures it is given (silhouette per labelling, stability by segment name)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_score

from analytics.gate import (
    GateBounds,
    GateMeasures,
    evaluate,
    label_stability,
    measure,
    silhouette,
    smallest_share,
)
from analytics.synthetic import synthetic_state
from analytics.training import TrainResult, train
from segstream.settings import Settings

NOW = datetime(2026, 11, 27, 1, 2, tzinfo=UTC)
BOUNDS = GateBounds(silhouette_margin=0.05, min_segment_share=0.02, min_stability=0.7)


def good(**changes: object) -> GateMeasures:
    base = GateMeasures(
        customers=1000, silhouette_new=0.40, min_segment_share=0.05, current_version="km-old",
        silhouette_current=0.42, stability=0.9,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# -- the verdict ------------------------------------------------------------------------------
def test_a_model_within_every_bound_passes_and_has_no_reason() -> None:
    result = evaluate(good(), BOUNDS)
    assert result.passed and result.reason == ""
    assert [c.name for c in result.checks] == ["silhouette", "min_segment_share", "stability"]
    assert result.summary().startswith("passed: silhouette 0.400 >= 0.370")


def test_silhouette_worse_than_the_current_by_more_than_the_margin_fails() -> None:
    result = evaluate(good(silhouette_new=0.36), BOUNDS)
    assert not result.passed
    assert result.reason.startswith("silhouette 0.360 < 0.370 (current 0.420 - margin 0.05)")
    # exactly at the margin still passes
    assert evaluate(good(silhouette_new=0.37), BOUNDS).passed


def test_a_segment_below_the_minimum_share_fails() -> None:
    result = evaluate(good(min_segment_share=0.01), BOUNDS)
    assert not result.passed and result.reason == "smallest segment 1.0% < 2.0%"


def test_too_few_customers_keeping_their_segment_name_fails_and_names_the_current_model() -> None:
    result = evaluate(good(stability=0.69), BOUNDS)
    assert not result.passed
    assert "label stability 69.0% < 70.0%" in result.reason and "km-old" in result.reason


def test_a_stability_bound_above_one_can_never_be_met() -> None:
    assert not evaluate(good(stability=1.0), dataclasses.replace(BOUNDS, min_stability=1.01)).passed


def test_every_failed_check_is_in_the_reason() -> None:
    result = evaluate(good(silhouette_new=0.1, min_segment_share=0.0, stability=0.0), BOUNDS)
    assert [c.passed for c in result.checks] == [False, False, False]
    assert result.reason.count(";") == 2


def test_without_a_current_model_only_the_segment_share_is_checked() -> None:
    m = GateMeasures(customers=10, silhouette_new=-0.5, min_segment_share=0.3)
    result = evaluate(m, BOUNDS)
    assert result.passed and [c.name for c in result.checks] == ["min_segment_share"]


def test_the_stored_result_carries_checks_measures_and_bounds() -> None:
    data = evaluate(good(stability=0.5), BOUNDS).to_dict()
    assert data["passed"] is False and data["reason"] == data["summary"][len("failed: ") :]
    assert data["bounds"] == {"silhouette_margin": 0.05, "min_segment_share": 0.02,
                              "min_stability": 0.7}  # fmt: skip
    assert data["measures"]["stability"] == 0.5
    assert {c["name"]: c["passed"] for c in data["checks"]}["stability"] is False


def test_bounds_come_from_the_retrain_gate_settings() -> None:
    s = Settings.from_env(
        {"SEGSTREAM_RETRAIN_GATE_MIN_STABILITY": "0.8",
         "SEGSTREAM_RETRAIN_GATE_SILHOUETTE_MARGIN": "0.1",
         "SEGSTREAM_RETRAIN_GATE_MIN_SEGMENT_SHARE": "0.03"}
    )  # fmt: skip
    assert GateBounds.of(s.scoring) == GateBounds(0.1, 0.03, 0.8)


# -- the measures -------------------------------------------------------------------------------
def test_label_stability_is_the_share_of_equal_names() -> None:
    assert label_stability(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5
    assert label_stability([], []) == 1.0
    with pytest.raises(ValueError, match="3 current names vs 2"):
        label_stability(["a", "b", "c"], ["a", "b"])


def test_smallest_share_counts_an_empty_segment_as_zero() -> None:
    assert smallest_share(np.array([0, 0, 1, 1, 1]), 2) == pytest.approx(0.4)
    assert smallest_share(np.array([0, 0, 1, 1, 1]), 3) == 0.0


def test_silhouette_matches_sklearn_even_with_unused_segment_ids() -> None:
    rng = np.random.default_rng(0)
    z = np.vstack(
        [rng.normal(0, 1, (60, 2)), rng.normal(6, 1, (40, 2)), rng.normal(-6, 1, (30, 2))]
    )
    labels = np.repeat([0, 1, 2], [60, 40, 30])
    expected = silhouette_score(z, labels)
    assert silhouette(z, labels) == pytest.approx(expected, abs=1e-5)
    # ids 0, 3, 7 of a k=8 model (segments empty on these customers) give the same value
    assert silhouette(z, np.array([0, 3, 7])[labels]) == pytest.approx(expected, abs=1e-5)
    assert silhouette(z, np.zeros(len(z), np.int64)) == 0.0


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train(synthetic_state(3_000, seed=5), seed=1, k=5, now=NOW)


def test_a_model_measured_against_itself_is_fully_stable_with_equal_silhouettes(
    trained: TrainResult,
) -> None:
    m = measure(trained.model, trained.labels, trained.features, trained.model, seed=1)
    assert m.customers == 3_000 and m.stability == 1.0
    assert m.silhouette_current == pytest.approx(m.silhouette_new, abs=1e-9)
    assert m.current_version == trained.model.version
    assert m.min_segment_share == pytest.approx(np.bincount(trained.labels).min() / 3_000)
    assert evaluate(m, BOUNDS).passed


def test_a_model_whose_names_all_differ_from_the_current_ones_fails_on_stability(
    trained: TrainResult,
) -> None:
    renamed = dataclasses.replace(
        trained.model, version="km-renamed", names=tuple(f"x{i}" for i in range(5))
    )
    m = measure(trained.model, trained.labels, trained.features, renamed, seed=1)
    assert m.stability == 0.0
    result = evaluate(m, BOUNDS)
    assert not result.passed and [c.name for c in result.checks if not c.passed] == ["stability"]


def test_the_current_model_is_scored_on_the_same_customers_by_nearest_centroid(
    trained: TrainResult,
) -> None:
    """A current model with k=2 on other features: its silhouette is its own labelling's."""
    state = synthetic_state(3_000, seed=5)
    small = train(state, seed=1, k=2, features=("recency_days", "frequency"), now=NOW).model
    m = measure(trained.model, trained.labels, trained.features, small, seed=1)
    x = np.asarray(trained.features[list(small.feature_names)], dtype=np.float64)
    z = small.transform(x)
    ids = np.linalg.norm(z[:, None, :] - small.centroids[None], axis=2).argmin(axis=1)
    assert m.silhouette_current == pytest.approx(silhouette_score(z, ids), abs=1e-4)
    names = pd.Series([small.names[i] for i in ids])
    new = pd.Series([trained.model.names[i] for i in trained.labels])
    assert m.stability == pytest.approx(float((names == new).mean()))
