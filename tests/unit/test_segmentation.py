"""Segmentation core: features, training and the k rule, naming, assignment with hysteresis,
RFM rules, online centroids and drift, file artifacts, the orders-file source and the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score, silhouette_score

from analytics.frames import feature_frame, real_matrix
from analytics.profiles import NAME_RULES, Population, name_segments
from analytics.sources import state_from_orders
from analytics.synthetic import AS_OF, drifted, synthetic_state
from analytics.training import choose_k, elbow_k, silhouette_by_k, train
from worker.segmentation.artifacts import FileModelStore
from worker.segmentation.assign import assign, explain, ids_from_names
from worker.segmentation.errors import ArtifactInvalid, ArtifactNotFound, FeatureError
from worker.segmentation.features import RECENCY_CAP_DAYS, Scaler
from worker.segmentation.model import KScore, SegmentModel
from worker.segmentation.online import OnlineModel
from worker.segmentation.rules import RulesModel

NOW = datetime(2026, 11, 27, 1, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def personas() -> pd.DataFrame:
    return synthetic_state(7_000, seed=11)


@pytest.fixture(scope="module")
def trained(personas: pd.DataFrame):
    return train(personas, seed=3, k_range=(4, 9), now=NOW)


# -- features ------------------------------------------------------------------------------


def test_customer_without_orders_gets_the_recency_cap_and_zero_value() -> None:
    state = pd.DataFrame(
        {"customer_id": ["a", "b"], "frequency": [0, 3], "monetary": [0.0, 90.0],
         "aov": [0.0, 30.0], "recency_days": [None, 12.5], "tenure_days": [None, 40.0],
         "sessions": [7, 2]}
    )  # fmt: skip
    x = real_matrix(state, ("recency_days", "frequency", "aov", "sessions"))
    assert x.tolist() == [[RECENCY_CAP_DAYS, 0.0, 0.0, 7.0], [12.5, 3.0, 30.0, 2.0]]


def test_recency_is_derived_from_timestamps_when_an_as_of_is_given() -> None:
    state = pd.DataFrame(
        {"customer_id": ["a"], "frequency": [1], "monetary": [10.0], "recency_days": [99.0],
         "last_order_ts": ["2026-10-30T00:00:00Z"], "first_order_ts": ["2026-10-01T00:00:00Z"]}
    )  # fmt: skip
    frame = feature_frame(state, as_of=AS_OF)
    assert frame.loc[0, "recency_days"] == pytest.approx(2.0)
    assert frame.loc[0, "tenure_days"] == pytest.approx(31.0)
    assert frame.loc[0, "aov"] == pytest.approx(10.0)


def test_unknown_feature_is_refused_by_name() -> None:
    with pytest.raises(FeatureError, match="nonsense"):
        real_matrix(pd.DataFrame({"frequency": [1]}), ("nonsense",))


def test_scaler_is_log1p_then_standardise_and_inverts() -> None:
    x = np.array([[0.0, 5.0], [10.0, 5.0], [100.0, 5.0]])
    sc = Scaler.fit(x)
    z = sc.transform(x)
    assert z[:, 0].mean() == pytest.approx(0.0) and z[:, 0].std() == pytest.approx(1.0)
    assert np.allclose(z[:, 1], 0.0)  # constant feature: std 1, no NaN
    assert np.allclose(sc.inverse(z), x)


# -- training ------------------------------------------------------------------------------


def test_one_pass_silhouette_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(4, 1, (300, 3))])
    labels = {k: rng.integers(0, k, len(z)) for k in (3, 5)}
    labels[2] = (np.arange(len(z)) >= 300).astype(np.int64)
    labels[5][0] = 4  # make sure singletons or odd sizes do not break it
    ours = silhouette_by_k(z, labels)
    for k, lab in labels.items():
        assert ours[k] == pytest.approx(silhouette_score(z, lab), abs=1e-5)


def test_k_rule_skips_tiny_segments_and_breaks_ties_by_the_elbow() -> None:
    scores = [
        KScore(2, 1000.0, 0.50, 0.40),
        KScore(3, 400.0, 0.60, 0.20),
        KScore(4, 300.0, 0.605, 0.10),
        KScore(5, 250.0, 0.70, 0.005),  # best silhouette, but a 0.5 % segment
        KScore(6, 240.0, 0.40, 0.05),
    ]
    assert elbow_k([s.k for s in scores], [s.inertia for s in scores]) == 3
    k, reason = choose_k(scores, min_share=0.02, tie_tolerance=0.01)
    assert k == 3  # 3 and 4 tie within 0.01; 3 is the elbow
    assert "elbow k=3" in reason and "tied k [3, 4]" in reason
    k, _ = choose_k(scores, min_share=0.02, tie_tolerance=0.0)
    assert k == 4
    k, _ = choose_k(scores, min_share=0.0, tie_tolerance=0.0)
    assert k == 5


def test_training_recovers_the_personas(personas: pd.DataFrame, trained) -> None:
    model = trained.model
    ari = adjusted_rand_score(personas["persona"], trained.labels)
    assert model.k == 7, model.k_rule
    assert ari >= 0.8, ari
    assert len(set(model.names)) == model.k
    # The clearly drawn personas get their own names.
    crosstab = pd.crosstab(personas["persona"], np.array(model.names)[trained.labels])
    for persona in ("champions", "big_spenders", "at_risk", "lost", "window_shoppers"):
        assert crosstab.loc[persona].idxmax() == persona
    # 'new' promises a short tenure the default features (no tenure_days) cannot keep
    assert crosstab.loc["new"].idxmax() == "promising" and "new" not in model.names
    assert crosstab.loc["loyal"].idxmax() == "loyal"
    assert model.training_size == len(personas)
    assert [s.k for s in model.scores] == list(range(4, 10))
    assert sum(p["size"] for p in model.profiles) == len(personas)
    assert sum(p["share"] for p in model.profiles) == pytest.approx(1.0)


def test_training_is_deterministic_and_the_version_names_time_and_content(
    personas: pd.DataFrame, trained
) -> None:
    again = train(personas, seed=3, k_range=(4, 9), now=NOW)
    assert again.model.version == trained.model.version
    assert np.array_equal(again.model.centroids, trained.model.centroids)
    assert trained.model.version.startswith("km-20261127T0102-")
    other = train(personas, seed=4, k=5, now=NOW)
    assert other.model.version != trained.model.version


def test_fixed_k_and_too_little_data() -> None:
    from worker.segmentation.errors import TrainingError

    small = synthetic_state(500, seed=2)
    assert train(small, k=3).model.k == 3
    with pytest.raises(TrainingError, match="too few"):
        train(small.head(5), k_range=(2, 10))


def test_large_inputs_fit_and_score_on_seeded_samples(personas: pd.DataFrame) -> None:
    r = train(personas, k=7, seed=1, fit_sample=2_000, silhouette_sample=1_000)
    assert r.model.extra["fit_rows"] == 2_000 and r.model.extra["silhouette_rows"] == 1_000
    assert len(r.labels) == len(personas)  # every customer is labelled, not only the sample
    assert adjusted_rand_score(personas["persona"], r.labels) >= 0.8


# -- naming --------------------------------------------------------------------------------


def _profile(**kw: float) -> dict[str, float]:
    base = {"buyer_share": 1.0, "revenue_share": 0.1, "recency_days_median": 20.0,
            "tenure_days_median": 200.0, "frequency_median": 2.0, "monetary_median": 100.0,
            "aov_median": 50.0}  # fmt: skip
    return {**base, **kw}


def test_names_follow_the_written_rules_and_are_unique() -> None:
    pop = Population(frequency_median=4.0, monetary_p75=500.0, aov_median=50.0)
    profiles = [
        _profile(revenue_share=0.5, frequency_median=12, monetary_median=1200),  # champions
        _profile(revenue_share=0.2, frequency_median=8, monetary_median=600),  # champions -> loyal
        _profile(revenue_share=0.1, frequency_median=8, monetary_median=300),  # -> promising
        _profile(aov_median=400.0),  # big spenders
        _profile(recency_days_median=5, tenure_days_median=5, frequency_median=1),  # new (*)
        _profile(recency_days_median=120, frequency_median=6),  # at risk
        _profile(recency_days_median=400),  # lost
        _profile(recency_days_median=120),  # hibernating
        _profile(recency_days_median=150, revenue_share=0.05),  # only rule taken -> suffix
        _profile(buyer_share=0.1, revenue_share=0.0),  # window shoppers
    ]
    names = name_segments(profiles, pop, [True] * len(profiles))
    assert names == ["champions", "loyal", "promising", "big_spenders", "new", "at_risk", "lost",
                     "hibernating", "hibernating_2", "window_shoppers"]  # fmt: skip
    # (*) 'new' promises a short tenure to every member: only if tenure keeps returning
    # customers out of the segment (analytics.profiles.new_allowed)
    without = name_segments(profiles, pop)
    assert "new" not in without and without[4] == "hibernating"  # promising was taken
    assert len({n for n, _, _ in NAME_RULES}) == len(NAME_RULES)


# -- assignment and hysteresis -------------------------------------------------------------


def test_assignment_without_hysteresis_equals_the_batch_labels(personas, trained) -> None:
    model = trained.model
    x = real_matrix(personas, model.feature_names)
    result = assign(model, x, margin=0.0)
    assert np.array_equal(result.segment_ids, trained.labels)
    assert result.distances.shape == (len(x), model.k)
    assert result.changed.all()  # nobody had a segment before
    again = assign(model, x, result.segment_ids, margin=0.0)
    assert not again.changed.any()


def _two_centroid_model(margin: float) -> SegmentModel:
    return SegmentModel(
        version="km-test", created_at=NOW.isoformat(), as_of=NOW.isoformat(),
        feature_names=("frequency",), scaler=Scaler(np.zeros(1), np.ones(1)),
        centroids=np.array([[0.0], [2.0]]), names=("low", "high"), seed=0, training_size=2,
        hysteresis_margin=margin,
    )  # fmt: skip


def test_hysteresis_rule_moves_only_when_closer_by_the_margin() -> None:
    model = _two_centroid_model(0.1)
    # z = log1p(x); the boundary is z = 1. Current "low" (0): distance z to low, 2 - z to high.
    z = np.array([1.02, 1.06, 1.2])
    x = np.expm1(z)[:, None]
    result = assign(model, x, current=[0, 0, 0])
    # Moves when 2 - z < 0.9 z, i.e. z > 1.0526.
    assert result.segment_ids.tolist() == [0, 1, 1]
    assert result.changed.tolist() == [False, True, True]
    assert assign(model, x, current=[0, 0, 0], margin=0.0).segment_ids.tolist() == [1, 1, 1]
    assert assign(model, x, current=[-1, -1, -1]).segment_ids.tolist() == [1, 1, 1]


def test_noisy_updates_near_a_boundary_change_segment_at_most_once() -> None:
    rng = np.random.default_rng(5)
    customers, updates = 500, 60
    # Every customer drifts slowly across the boundary (z = 1) with noise on every update.
    start = rng.uniform(0.85, 0.95, customers)
    end = rng.uniform(1.05, 1.25, customers)

    def changes(margin: float) -> np.ndarray:
        model = _two_centroid_model(margin)
        current = np.full(customers, -1)
        count = np.zeros(customers, dtype=int)
        for t in range(updates):
            z = start + (end - start) * t / (updates - 1) + rng.normal(0, 0.01, customers)
            result = assign(model, np.expm1(np.maximum(z, 0))[:, None], current)
            count += result.changed & (current >= 0)
            current = result.segment_ids
        return count

    with_hysteresis = changes(0.1)
    assert with_hysteresis.max() <= 1
    assert with_hysteresis.sum() > 0.9 * customers  # they do cross, once
    assert changes(0.0).max() > 1  # without it the same stream flaps


def test_ids_from_names_maps_unknown_and_missing_to_minus_one() -> None:
    assert ids_from_names(("a", "b"), ["b", None, "zz", "a"]).tolist() == [1, -1, -1, 0]


def test_explain_gives_features_distances_margin_and_a_sentence() -> None:
    model = _two_centroid_model(0.1)
    held = explain(model, [np.expm1(1.02)], current="low")
    assert held.assigned == "low" and held.nearest == "high"
    assert set(held.distances) == {"low", "high"}
    assert held.distances["low"] == pytest.approx(1.02)
    assert "hysteresis margin" in held.sentence and "stays in 'low'" in held.sentence
    fresh = explain(model, [np.expm1(1.5)])
    assert fresh.assigned == "high" and "nearest centroid is 'high'" in fresh.sentence
    moved = explain(model, [np.expm1(1.5)], current="low")
    assert "moves from 'low' to 'high'" in moved.sentence
    assert moved.features == {"frequency": pytest.approx(np.expm1(1.5))}


# -- rules before any model ----------------------------------------------------------------


def test_rfm_rules_score_quintiles_and_map_the_grid() -> None:
    rules = RulesModel()
    x = np.array(
        [
            [3.0, 8.0, 900.0, 150.0],  # R5 F5 M5 -> champions
            [3.0, 1.0, 20.0, 3.0],  # R5 F1 M1, first order 3 days ago -> new
            [400.0, 1.0, 20.0, 400.0],  # R1 F1 M1 -> lost
            [100.0, 6.0, 600.0, 300.0],  # R2 F5 M5 -> cant_lose
            [100.0, 3.0, 150.0, 200.0],  # R2 F3 M3 -> at_risk
            [45.0, 2.0, 120.0, 90.0],  # R3 F2 M3 -> FM 3 (2.5 rounds up) -> need_attention
            [999.0, 0.0, 0.0, np.nan],  # no order -> window shoppers
            [3.0, 1.0, 20.0, 200.0],  # R5 F1 M1 but first order 200 days ago -> promising
        ]
    )
    assert rules.scores(x)[:3].tolist() == [[5, 5, 5], [5, 1, 1], [1, 1, 1]]
    result = rules.assign(x)
    assert [rules.names[i] for i in result.segment_ids] == [
        "champions", "new", "lost", "cant_lose", "at_risk", "need_attention", "window_shoppers",
        "promising",
    ]  # fmt: skip
    assert rules.version == "rules-v1" and result.distances.shape == (8, 0)
    assert rules.names[rules.assign(x[1:2, :3]).segment_ids[0]] == "promising"  # no tenure


def test_rfm_rules_fit_quintile_edges_on_buyers(personas: pd.DataFrame) -> None:
    x = real_matrix(personas, ("recency_days", "frequency", "monetary"))
    rules = RulesModel.fit(x)
    scores = rules.scores(x)[x[:, 1] > 0]
    r_counts = np.bincount(scores[:, 0], minlength=6)[1:]
    assert np.all(np.abs(r_counts / r_counts.sum() - 0.2) < 0.02)  # continuous -> quintiles
    names = pd.Series(np.array(rules.names)[rules.assign(x).segment_ids])
    persona = personas["persona"].to_numpy()
    # Quintiles split champions by recency (the 'new' persona is even more recent): R5 or R4.
    assert names[persona == "champions"].isin(["champions", "loyal"]).mean() > 0.95
    assert names[persona == "lost"].isin(["lost", "hibernating"]).mean() > 0.95
    assert (names[persona == "window_shoppers"] == "window_shoppers").all()


# -- online --------------------------------------------------------------------------------


def test_online_path_follows_drift_and_keeps_ids(personas: pd.DataFrame, trained) -> None:
    """Stream the drifted customers' vectors: online ARI ends close to a batch retrain."""
    model = trained.model
    later = drifted(personas, days=45.0, aov_factor=1.8)
    x_later = real_matrix(later, model.feature_names)
    truth = personas["persona"]

    online = OnlineModel(model, learning_rate=0.05)
    current = assign(model, real_matrix(personas, model.feature_names), margin=0.0).segment_ids
    rng = np.random.default_rng(8)
    # The stream: updated customers arrive in batches, over a few passes (repeat activity).
    for _ in range(3):
        for batch in np.array_split(rng.permutation(len(x_later)), 40):
            result = assign(model, x_later[batch], current[batch], centroids=online.centers_)
            current[batch] = result.segment_ids
            online.learn_many(x_later[batch], result.segment_ids)
    online_ari = adjusted_rand_score(truth, current)
    batch_ari = adjusted_rand_score(truth, train(later, k=model.k, seed=3).labels)
    stale_ari = adjusted_rand_score(truth, assign(model, x_later, margin=0.0).segment_ids)
    moved = np.sqrt(((online.centers_ - model.centroids) ** 2).sum(axis=1))
    assert online_ari >= batch_ari - 0.05, (online_ari, batch_ari, stale_ari)
    assert online_ari > stale_ari
    assert moved.max() > 0.5  # the river centres followed the population
    # Ids stayed put: each persona still maps to the segment name it had at training time.
    names = np.array(model.names)
    for persona in ("champions", "window_shoppers", "lost"):
        assert pd.Series(names[current][truth == persona]).mode()[0] == persona


# -- artifacts (files) ---------------------------------------------------------------------


def test_file_store_round_trip_keeps_versions_and_moves_current(tmp_path: Path, trained) -> None:
    store = FileModelStore(tmp_path / "models")
    with pytest.raises(ArtifactNotFound, match="segstream train"):
        store.load()
    first = trained.model
    store.save(first)
    second = train(synthetic_state(2_000, seed=5), k=4, now=NOW)
    store.save(second.model)
    assert store.current_version() == second.model.version
    assert store.versions() == sorted([first.version, second.model.version])
    loaded = store.load(first.version)
    assert loaded.to_json() == first.to_json()
    assert np.array_equal(loaded.centroids, first.centroids) and loaded.names == first.names
    assert store.load().version == second.model.version
    with pytest.raises(ArtifactNotFound, match="km-nope"):
        store.load("km-nope")
    with pytest.raises(ArtifactInvalid):
        store.load("../etc/passwd")
    (tmp_path / "models" / "km-bad.json").write_text('{"kind": "kmeans", "format": 1}')
    with pytest.raises(ArtifactInvalid, match=r"km-bad\.json"):
        store.load("km-bad")


def test_artifact_refuses_inconsistent_models(trained) -> None:
    data = trained.model.to_dict()
    data["names"] = data["names"][:-1]
    with pytest.raises(ArtifactInvalid, match="names"):
        SegmentModel.from_dict(data)


# -- sources -------------------------------------------------------------------------------


def test_orders_file_builds_the_state_like_the_core_rules(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "customer_id,order_id,ts,amount,currency,status\n"
        "A,o1,2026-10-01T10:00:00Z,100.0,EUR,placed\n"
        "A,o2,2026-10-21T10:00:00Z,50.0,EUR,placed\n"
        "A,o2,2026-10-21T10:00:00Z,50.0,EUR,placed\n"  # duplicate row counts once
        "A,o2,2026-10-22T10:00:00Z,50.0,EUR,cancelled\n"
        "A,o1,2026-10-25T10:00:00Z,30.0,EUR,returned\n"
        "B,o3,2026-10-31T10:00:00Z,20.0,EUR,placed\n"
    )
    state = state_from_orders(csv, as_of=AS_OF).set_index("customer_id")
    assert state.loc["A", "frequency"] == 1 and state.loc["A", "monetary"] == pytest.approx(70.0)
    assert state.loc["A", "aov"] == pytest.approx(70.0)
    assert state.loc["A", "recency_days"] == pytest.approx(10 + 14 / 24)  # last placed o2
    assert state.loc["A", "tenure_days"] == pytest.approx(30 + 14 / 24)
    assert state.loc["B", "frequency"] == 1 and state.loc["B", "recency_days"] < 1
    assert state.loc["A", "first_order_ts"] == "2026-10-01T10:00:00Z"


def test_orders_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,order_id,ts,amount\nA,o1,2026-10-01T10:00:00Z,1\nA,o2,x,2\n")
    with pytest.raises(FeatureError, match=r"bad.csv: line 3"):
        state_from_orders(bad)
    with pytest.raises(FeatureError, match="missing column"):
        state_from_orders(pd.DataFrame({"customer_id": ["a"]}))


# -- purity and CLI ------------------------------------------------------------------------


def test_pure_modules_import_neither_kafka_nor_redis() -> None:
    code = (
        "import sys\n"
        "import worker.segmentation.assign, worker.segmentation.online, worker.segmentation.rules\n"
        "import analytics.frames, analytics.training, analytics.synthetic, analytics.plots\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('redis', 'kafka', 'aiokafka', 'faust', 'confluent_kafka'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_train_from_an_export_then_segments(tmp_path: Path) -> None:
    from segstream.cli import main

    export = tmp_path / "export.csv"
    synthetic_state(3_000, seed=9).drop(columns="persona").to_csv(export, index=False)
    models = tmp_path / "models"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["train", "--export", str(export), "--model-dir", str(models), "--k-range", "5-8",
         "--seed", "2", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    version = (models / "current").read_text().strip()
    assert (models / f"{version}.json").exists()
    for png in ("elbow.png", "silhouette.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "k=7" in result.output and "window_shoppers" in result.output
    shown = runner.invoke(main, ["segments", "--model-dir", str(models)])
    assert shown.exit_code == 0, shown.output
    assert version in shown.output and "champions" in shown.output
    missing = runner.invoke(main, ["segments", "--model-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "segstream train" in missing.output
    both = runner.invoke(main, ["train", "--export", str(export), "--from", "redis"])
    assert both.exit_code == 1 and "exactly one" in both.output


# -- stream-facing helpers and contracts ---------------------------------------------------


def test_score_state_reports_changes_by_name_with_distances(personas, trained) -> None:
    from analytics.frames import score_state

    model = trained.model
    rows = personas.head(50)
    expected = np.array(model.names)[trained.labels[:50]]
    current: list[str | None] = list(expected)
    current[0], current[1] = None, "no-such-segment"
    other = next(n for n in model.names if n != expected[2])
    current[2] = other
    scored = score_state(model, rows, current, margin=0.0)
    assert scored.new == list(expected)
    assert scored.changed.tolist() == [True, True, True] + [False] * 47
    assert np.isnan(scored.old_distance[:2]).all()
    d = assign(model, real_matrix(rows, model.feature_names), margin=0.0).distances
    assert scored.new_distance[2] == pytest.approx(d[2].min())
    assert scored.old_distance[2] == pytest.approx(d[2, model.names.index(other)])
    assert set(scored.feature_dict(0)) == set(model.feature_names)
    rules = score_state(RulesModel(), rows, [None] * 50)
    assert rules.changed.all() and np.isnan(rules.new_distance).all()
    assert set(rules.new) <= set(RulesModel().names)


def test_export_columns_are_the_cores() -> None:
    from worker.core import EXPORT_COLUMNS as CORE_COLUMNS
    from worker.segmentation.features import EXPORT_COLUMNS

    assert EXPORT_COLUMNS == CORE_COLUMNS


def test_cli_train_from_an_orders_file(tmp_path: Path) -> None:
    from segstream.cli import main

    rng = np.random.default_rng(3)
    rows = ["customer_id,order_id,ts,amount,currency,status"]
    for c in range(300):
        heavy = c % 3 == 0
        for o in range(int(rng.integers(5, 9) if heavy else 1)):
            day = int(rng.integers(1, 20) if heavy else rng.integers(100, 300))
            amount = rng.uniform(20, 40) if heavy else rng.uniform(200, 400)
            rows.append(f"C{c},C{c}-{o},2026-{1 + day // 31:02d}-{1 + day % 28:02d}T12:00:00Z,"
                        f"{amount:.2f},EUR,placed")  # fmt: skip
    orders = tmp_path / "orders.csv"
    orders.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        main,
        ["train", "--file", str(orders), "--k", "2", "--features", "recency_days,frequency,aov",
         "--model-dir", str(tmp_path / "m"), "--as-of", "2026-11-01T00:00:00Z"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = FileModelStore(tmp_path / "m").load()
    assert model.k == 2 and model.training_size == 300
    assert model.as_of.startswith("2026-11-01")
    sizes = sorted(p["size"] for p in model.profiles)
    assert sizes == [100, 200]
