"""The report's numbers on hand-made inputs, and the tolerant model-artifact reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.report import ReportInputError, tables
from analytics.report.cli import parse_as_of
from analytics.report.model_view import read_model
from analytics.report.sample import sample_inputs
from analytics.report.sources import find_model_file, load_model, read_state_file

AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


def _state(rows: list[dict[str, object]]) -> pd.DataFrame:
    return tables.prepare_state(pd.DataFrame(rows), AS_OF)


def test_prepare_state_derives_recency_tenure_and_aov_from_as_of() -> None:
    frame = _state(
        [
            {"customer_id": "A", "frequency": 2, "monetary": 50.0,
             "first_order_ts": "2026-06-20T12:00:00Z", "last_order_ts": "2026-06-29T00:00:00Z",
             "recency_days": 999.0},
            {"customer_id": "B", "frequency": 0, "monetary": 0.0, "first_order_ts": "",
             "last_order_ts": None},
        ]
    )  # fmt: skip
    a, b = frame.iloc[0], frame.iloc[1]
    assert a["recency_days"] == pytest.approx(1.5)
    assert a["tenure_days"] == pytest.approx(10.0)
    assert a["aov"] == 25.0
    assert np.isnan(b["aov"]) and pd.isna(b["last_order_ts"])
    assert b["sessions"] == 0  # absent behaviour columns count as 0


def test_prepare_state_names_missing_columns() -> None:
    with pytest.raises(ReportInputError, match="monetary"):
        tables.prepare_state(pd.DataFrame({"customer_id": ["A"], "frequency": [1]}), AS_OF)
    with pytest.raises(ReportInputError, match="twice"):
        _state([{"customer_id": "A", "frequency": 1, "monetary": 1.0}] * 2)


def test_lorenz_and_top_share_by_hand() -> None:
    money = pd.Series([0.0, 10.0, 10.0, 10.0, 70.0])
    population, cumulative, gini = tables.lorenz(money)
    assert population.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert cumulative.tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 1.0])
    # Area under the curve = 0.25 * (0.05 + 0.15 + 0.25 + 0.65) = 0.275 -> gini 0.45
    assert gini == pytest.approx(0.45)
    assert tables.top_share(money, 0.25) == pytest.approx(0.7)
    assert tables.top_share(money, 0.5) == pytest.approx(0.8)
    assert tables.top_share(pd.Series([0.0]), 0.2) != tables.top_share(pd.Series([0.0]), 0.2)


def _changes(rows: list[tuple[str, str | None, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "old_segment", "new_segment", "event_time"])
    frame["reason"] = "order"
    return tables.prepare_changes(frame, AS_OF)


def test_transition_matrix_counts_moves_and_first_segments() -> None:
    changes = _changes(
        [
            ("A", None, "x", "2026-06-01T00:00:00Z"),
            ("A", "x", "y", "2026-06-02T00:00:00Z"),
            ("B", "y", "x", "2026-06-03T00:00:00Z"),
            ("C", "x", "y", "2026-06-04T00:00:00Z"),
            ("D", "x", "y", "2026-07-04T00:00:00Z"),  # after as_of: not in the period
        ]
    )
    matrix = tables.transition_matrix(changes)
    assert matrix.index.tolist() == [tables.NEW_CUSTOMER, "x", "y"]
    assert matrix.loc[tables.NEW_CUSTOMER, "x"] == 1
    assert matrix.loc["x", "y"] == 2 and matrix.loc["y", "x"] == 1
    assert int(matrix.to_numpy().sum()) == 4


def test_segment_sizes_over_time_with_history_that_starts_mid_way() -> None:
    # B was in y before the period (its first change has an old segment); E never changed.
    changes = _changes(
        [
            ("A", None, "x", "2026-06-01T00:00:00Z"),
            ("B", "y", "x", "2026-06-03T00:00:00Z"),
            ("A", "x", "y", "2026-06-05T00:00:00Z"),
        ]
    )
    state = _state(
        [
            {"customer_id": c, "frequency": 1, "monetary": 1.0, "segment": s}
            for c, s in (("A", "y"), ("B", "x"), ("E", "y"))
        ]
    )
    sizes = tables.segment_sizes_over_time(changes, state, points=5)
    assert sizes.index[0] == pd.Timestamp("2026-06-01T00:00:00Z")
    assert sizes.index[-1] == pd.Timestamp("2026-06-05T00:00:00Z")
    # t=06-01: A in x; B in y; E in y.  06-03: B moves to x.  06-05: A moves to y.
    assert sizes["x"].tolist() == [1, 1, 2, 2, 1]
    assert sizes["y"].tolist() == [2, 2, 1, 1, 2]
    assert sizes.iloc[-1].to_dict() == state["segment"].value_counts().to_dict()


def test_business_view_by_hand() -> None:
    state = _state(
        [
            {"customer_id": "A", "frequency": 3, "monetary": 300.0, "segment": "s"},
            {"customer_id": "B", "frequency": 1, "monetary": 50.0, "segment": "s"},
            {"customer_id": "C", "frequency": 0, "monetary": 0.0, "segment": "s"},
            {"customer_id": "D", "frequency": 2, "monetary": 150.0, "segment": "t"},
        ]
    )
    view = tables.business_view(state).set_index("segment")
    assert view.loc["s", "revenue"] == 350.0 and view.loc["s", "orders"] == 4
    assert view.loc["s", "aov"] == pytest.approx(87.5)
    assert view.loc["s", "repeat_rate"] == pytest.approx(0.5)  # A of buyers A, B
    assert view.loc["s", "revenue_share"] == pytest.approx(0.7)
    assert view.loc["t", "repeat_rate"] == 1.0


def test_conversion_by_sessions() -> None:
    state = _state(
        [
            {"customer_id": "A", "frequency": 0, "monetary": 0.0, "sessions": 1},
            {"customer_id": "B", "frequency": 1, "monetary": 5.0, "sessions": 1},
            {"customer_id": "C", "frequency": 2, "monetary": 5.0, "sessions": 12},
            {"customer_id": "D", "frequency": 0, "monetary": 0.0, "sessions": 0},
        ]
    )
    conv = tables.conversion_by_sessions(state).set_index("sessions")
    assert conv.loc["1", "customers"] == 2 and conv.loc["1", "conversion"] == 0.5
    assert conv.loc["11+", "conversion"] == 1.0
    assert conv["customers"].sum() == 3  # D had no session


def test_read_model_of_the_segmentation_artifact_layout() -> None:
    _, model, _ = sample_inputs(n=120, seed=1, as_of=AS_OF)
    view = read_model(model)
    assert view is not None and view.problems == []
    assert view.chosen_k == 5 and view.version == model["version"]
    assert view.k_scores is not None and view.k_scores["k"].tolist() == list(range(2, 9))
    assert view.centroids is not None and view.centroids.shape == (5, 4)
    assert view.centroids_real is not None
    # log1p + standardise inverted: real-unit centres are positive, recency in days.
    assert (view.centroids_real.to_numpy() > 0).all()
    assert set(view.rules) == set(model["names"])  # type: ignore[arg-type]


def test_read_model_degrades_with_notes() -> None:
    assert read_model(None) is None
    view = read_model({"version": "v1", "centroids": [[0.0, 1.0], [1.0, 0.0, 2.0]]})
    assert view is not None
    assert view.centroids is None and view.k_scores is None
    assert any("different lengths" in p for p in view.problems)
    assert any("elbow/silhouette" in p for p in view.problems)
    other = read_model(
        {"selection": {"k": [2, 3], "inertia": [5.0, 3.0], "silhouette": [0.4, 0.5]},
         "chosen_k": 3, "centroids": {"0": [1, 2], "1": [3, 4], "2": [5, 6]},
         "names": {"0": "a", "1": "b", "2": "c"}}
    )  # fmt: skip
    assert other is not None and other.chosen_k == 3
    assert other.names == ["a", "b", "c"] and other.k_scores is not None


def test_model_files_current_version_and_none(tmp_path: Path) -> None:
    assert load_model(tmp_path / "absent") == (None, f"no model artifact in {tmp_path / 'absent'}")
    (tmp_path / "km-20260101T0000-aaaa.json").write_text(json.dumps({"version": "old"}))
    (tmp_path / "km-20260201T0000-bbbb.json").write_text(json.dumps({"version": "new"}))
    assert load_model(tmp_path)[0] == {"version": "new"}  # newest by name
    (tmp_path / "current").write_text("km-20260101T0000-aaaa\n")
    assert load_model(tmp_path)[0] == {"version": "old"}  # the pointer wins
    assert find_model_file(tmp_path, "km-20260201T0000-bbbb") is not None
    assert load_model(tmp_path, "none")[0] is None
    with pytest.raises(ReportInputError, match="no model artifact 'v9'"):
        load_model(tmp_path, "v9")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ReportInputError, match="not readable JSON"):
        load_model(tmp_path, str(tmp_path / "broken.json"))


def test_state_file_round_trip_csv_and_jsonl(tmp_path: Path) -> None:
    state, _, _ = sample_inputs(n=60, seed=2, as_of=AS_OF)
    state.to_csv(tmp_path / "s.csv", index=False)
    state.to_json(tmp_path / "s.jsonl", orient="records", lines=True, date_format="iso")
    for name in ("s.csv", "s.jsonl"):
        back = tables.prepare_state(read_state_file(tmp_path / name), AS_OF)
        want = tables.prepare_state(state, AS_OF)
        assert back["customer_id"].tolist() == want["customer_id"].tolist()
        assert np.allclose(back["monetary"], want["monetary"])
        assert np.allclose(back["recency_days"].fillna(-1), want["recency_days"].fillna(-1))
    with pytest.raises(ReportInputError, match="does not exist"):
        read_state_file(tmp_path / "nope.csv")


def test_parse_as_of() -> None:
    assert parse_as_of("2026-06-30T12:00:00Z") == AS_OF
    assert parse_as_of("2026-06-30T14:00:00+02:00") == AS_OF
    assert parse_as_of("2026-06-30T12:00:00") == AS_OF
    assert parse_as_of("").tzinfo is not None


def _trained(tmp_path: Path) -> tuple[pd.DataFrame, Path, dict[str, object]]:
    from analytics.synthetic import AS_OF as SYN_AS_OF
    from analytics.synthetic import synthetic_state
    from analytics.training import train

    state = synthetic_state(300, seed=4)
    model = train(state, k_range=(2, 4), seed=0, as_of=SYN_AS_OF).model
    path = tmp_path / f"{model.version}.json"
    path.write_text(model.to_json())
    export = state.drop(columns=[c for c in ("persona", "segment") if c in state.columns])
    return export, path, model.to_dict()


@pytest.mark.slow
def test_assign_segments_matches_the_segmentation_package(tmp_path: Path) -> None:
    from analytics.frames import real_matrix
    from analytics.report.sources import assign_segments
    from analytics.synthetic import AS_OF as SYN_AS_OF
    from worker.segmentation.assign import assign
    from worker.segmentation.model import SegmentModel

    export, _, model = _trained(tmp_path)
    names = assign_segments(export, model, SYN_AS_OF)
    segment_model = SegmentModel.from_dict(model)
    ids = assign(segment_model, real_matrix(export, segment_model.feature_names, SYN_AS_OF))
    assert names.tolist() == [segment_model.names[i] for i in ids.segment_ids]
    assert set(names) <= set(segment_model.names) and names.nunique() > 1
    with pytest.raises(ReportInputError, match="cannot assign"):
        assign_segments(export, {"kind": "kmeans", "format": 1}, SYN_AS_OF)


@pytest.mark.slow
def test_cli_report_from_an_export_without_segments(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segstream.cli import main

    export, model_path, model = _trained(tmp_path)
    export.to_csv(tmp_path / "export.csv", index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["report", "--out", str(out), "--state-file", str(tmp_path / "export.csv"),
         "--model", str(model_path), "--no-changes", "--as-of", "2026-11-01T00:00:00Z"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "assigned by the model's nearest centroid" in result.output
    assert f"300 customers from {tmp_path / 'export.csv'}" in result.output
    profile = pd.read_csv(out / "segment_profile.csv")
    assert profile["customers"].sum() == 300
    assert set(profile["segment"]) <= set(model["names"])  # type: ignore[arg-type]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="fig-k-selection"' in page and 'id="fig-business"' in page
    assert "not read (--no-changes)" in page


def test_cli_report_rejects_a_bad_as_of(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segstream.cli import main

    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--as-of", "yesterday"])
    assert result.exit_code == 1
    assert "--as-of 'yesterday' is not an ISO 8601 time" in result.output
