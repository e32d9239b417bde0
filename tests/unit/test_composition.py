"""Segment composition (analytics.composition): shares, unknowns, lift, thresholds, the words;
and where it shows: each trained profile's sentence, printed by ``segstream segments``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analytics.composition import (
    ALL,
    COLUMNS,
    MIN_KNOWN,
    NO_DEMOGRAPHICS,
    OTHER,
    UNKNOWN,
    Composition,
    describe_labels,
    level_values,
)
from analytics.synthetic import synthetic_state
from analytics.training import train


def _frame(*groups: tuple[str | None, int, dict[str, object]]) -> pd.DataFrame:
    """``n`` rows of ``segment`` with the given column values, per group, in order."""
    rows = []
    for segment, n, values in groups:
        rows += [{"segment": segment, **values} for _ in range(n)]
    return pd.DataFrame(rows)


#: Two segments and 10 unsegmented customers; 14 unknown countries. Overall known:
#: DE 36, FR 44, NL 6, IT 10 (96 known of 110).
SHOP = _frame(
    ("A", 24, {"country": "DE"}), ("A", 8, {"country": "FR"}), ("A", 8, {"country": None}),
    ("B", 12, {"country": "DE"}), ("B", 36, {"country": "FR"}), ("B", 6, {"country": "NL"}),
    ("B", 6, {"country": ""}), (None, 10, {"country": "IT"}),
)  # fmt: skip


def _row(table: pd.DataFrame, segment: str, attribute: str, level: str) -> pd.Series:
    hit = table[(table["segment"] == segment) & (table["attribute"] == attribute)
                & (table["level"] == level)]  # fmt: skip
    assert len(hit) == 1, (segment, attribute, level)
    return hit.iloc[0]


def test_shares_are_of_the_segment_and_of_its_known_values_and_unknowns_are_counted() -> None:
    table = Composition.of(SHOP, attributes=["country"]).table()
    assert list(table.columns) == list(COLUMNS)
    de = _row(table, "A", "country", "DE")
    assert de["customers"] == 24
    assert de["share"] == pytest.approx(24 / 40)
    assert de["share_of_known"] == pytest.approx(24 / 32)
    unknown = _row(table, "A", "country", UNKNOWN)
    assert unknown["customers"] == 8 and unknown["share"] == pytest.approx(0.2)
    assert np.isnan(unknown["share_of_known"]) and np.isnan(unknown["lift"])
    assert _row(table, "B", "country", UNKNOWN)["customers"] == 6  # "" is unknown too
    shop = _row(table, ALL, "country", UNKNOWN)
    assert shop["customers"] == 14 and shop["share"] == pytest.approx(14 / 110)
    for _, part in table.groupby(["segment", "attribute"]):
        assert part["share"].sum() == pytest.approx(1.0)


def test_lift_compares_the_segment_with_the_whole_shop_unsegmented_included() -> None:
    composition = Composition.of(SHOP, attributes=["country"])
    assert composition.lift("A", "country", "DE") == pytest.approx((24 / 32) / (36 / 96))
    assert composition.lift("B", "country", "FR") == pytest.approx((36 / 54) / (44 / 96))
    assert composition.lift(ALL, "country", "IT") == pytest.approx(1.0)
    assert np.isnan(composition.lift("A", "country", "IT"))  # no IT in A: no lift to speak of


def test_the_table_keeps_the_top_levels_and_folds_the_rest_into_other() -> None:
    counts = {"mobile": 30, "desktop": 20, "tablet": 10, "tv": 4, "watch": 1}
    frame = _frame(*(("S", n, {"device": device}) for device, n in counts.items()))
    table = Composition.of(frame, attributes=["device"]).table(top=3)
    part = table[table["segment"] == "S"]
    assert list(part["level"]) == ["mobile", "desktop", "tablet", OTHER]
    other = _row(table, "S", "device", OTHER)
    assert other["customers"] == 5 and np.isnan(other["lift"])


def test_ties_between_levels_are_broken_by_name_so_the_words_are_stable() -> None:
    frame = _frame(("S", 25, {"device": "tablet"}), ("S", 25, {"device": "desktop"}))
    assert list(Composition.of(frame, attributes=["device"]).levels("S", "device").index) == [
        "desktop",
        "tablet",
    ]


def test_the_sentence_gives_the_most_common_value_and_its_lift_when_notable() -> None:
    sentences = Composition.of(SHOP, attributes=["country"]).sentences()
    assert list(sentences) == ["B", "A"]  # largest segment first
    assert sentences["A"] == "75 % DE (2.0x the shop)"
    # FR: 36 of 54 known, 1.45x the shop.
    assert sentences["B"] == "67 % FR (1.5x the shop)"


def test_a_lift_near_one_is_not_mentioned() -> None:
    frame = _frame(("A", 30, {"device": "mobile"}), ("A", 20, {"device": "desktop"}),
                   ("B", 33, {"device": "mobile"}), ("B", 17, {"device": "desktop"}))  # fmt: skip
    assert Composition.of(frame).sentence("A") == "60 % mobile"


def test_a_rarer_but_distinctive_value_is_named_too() -> None:
    # A: DE as common as in the shop, IT 20 % against 5 % overall.
    frame = _frame(
        ("A", 30, {"country": "DE"}), ("A", 10, {"country": "IT"}), ("A", 10, {"country": "FR"}),
        ("B", 300, {"country": "DE"}), ("B", 150, {"country": "FR"}),
    )  # fmt: skip
    sentence = Composition.of(frame).sentence("A")
    lift = (10 / 50) / (10 / 500)
    assert sentence == f"60 % DE, IT 20 % ({lift:.1f}x the shop)"


def test_headline_attributes_come_first_and_others_only_when_distinctive() -> None:
    base = {"country": "DE", "favourite_category": "books", "age_band": "35-44",
            "device": "mobile", "gender": "female", "loyalty_tier": "gold"}  # fmt: skip
    frame = _frame(
        ("A", 40, base),
        ("B", 40, base | {"country": "FR", "loyalty_tier": "bronze", "device": "desktop"}),
    )
    sentence = Composition.of(frame).sentence("A")
    # gender is the same everywhere (not said), the gold tier is twice the shop's share (said).
    assert sentence == (
        "100 % DE (2.0x the shop), top category books (100 %), mostly 35-44 (100 %), "
        "100 % mobile (2.0x the shop), 100 % gold tier (2.0x the shop)"
    )


def test_attributes_with_too_few_known_values_are_left_out() -> None:
    few = _frame(("A", MIN_KNOWN - 1, {"country": "DE"}), ("A", 30, {"country": None}),
                 ("B", 50, {"country": "FR"}))  # fmt: skip
    sentence = Composition.of(few).sentence("A")
    assert sentence.startswith("too few known values to describe")
    assert f"{MIN_KNOWN - 1} of {MIN_KNOWN + 29}" in sentence
    enough = _frame(("A", MIN_KNOWN, {"country": "DE"}), ("A", 30, {"country": None}),
                    ("B", 50, {"country": "FR"}))  # fmt: skip
    assert Composition.of(enough).sentence("A").startswith("100 % DE")
    # Enough in number but under 10 % of a large segment: left out too.
    thin = _frame(("A", 25, {"country": "DE"}), ("A", 300, {"country": None}),
                  ("B", 50, {"country": "FR"}))  # fmt: skip
    assert Composition.of(thin).sentence("A").startswith("too few known values")


def test_a_segment_without_any_profile_data_says_no_demographics_known() -> None:
    frame = _frame(("A", 30, {"country": None, "device": None}), ("B", 30, {"country": "DE"}))
    assert Composition.of(frame).sentence("A") == NO_DEMOGRAPHICS
    no_columns = pd.DataFrame({"segment": ["A"] * 5, "frequency": [1] * 5})
    composition = Composition.of(no_columns)
    assert composition.sentence("A") == NO_DEMOGRAPHICS
    assert set(composition.table()["level"]) == {UNKNOWN}


def test_marketing_consent_from_bools_or_export_text_reads_yes_or_no() -> None:
    values = pd.Series([True, False, None, "True", "false", "1", "", np.nan], dtype=object)
    assert level_values(values, "marketing_consent").tolist() == [
        "yes", "no", pd.NA, "yes", "no", "yes", pd.NA, pd.NA,
    ]  # fmt: skip
    frame = _frame(("A", 30, {"marketing_consent": True}), ("B", 90, {"marketing_consent": False}))
    assert Composition.of(frame).sentence("A") == "100 % consent to marketing (4.0x the shop)"


def test_plot_shares_use_the_shops_top_levels_and_add_up_to_one() -> None:
    shares = Composition.of(SHOP, attributes=["country"]).shares("country", levels=2)
    assert list(shares.columns) == ["FR", "DE", OTHER, UNKNOWN]
    assert list(shares.index) == [ALL, "B", "A"]
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert shares.loc["B", OTHER] == pytest.approx(6 / 60)  # NL
    assert shares.loc[ALL, OTHER] == pytest.approx(16 / 110)  # NL + IT


def test_describe_labels_gives_one_sentence_per_segment_id() -> None:
    frame = SHOP[SHOP["segment"].notna()].reset_index(drop=True)
    labels = np.where(frame["segment"] == "A", 0, 1)
    sentences = describe_labels(frame, labels, 3)
    assert sentences[0] == Composition.of(frame, attributes=["country"]).sentence("A")
    assert sentences[1].startswith("67 % FR")
    assert sentences[2] == NO_DEMOGRAPHICS  # no customer in segment 2


def _with_attributes(state: pd.DataFrame) -> pd.DataFrame:
    """Country and device that follow the persona, so each segment has a composition."""
    out = state.copy()
    persona = out["persona"].astype(str)
    out["country"] = np.where(persona == "champions", "DE", "FR")
    out["device"] = np.where(out.index % 2 == 0, "mobile", None)
    for column in ("region", "age_band", "gender", "favourite_category"):
        out[column] = None
    return out


def test_trained_profiles_carry_their_composition_and_segments_prints_it(tmp_path: Path) -> None:
    from segstream.cli import main

    state = _with_attributes(synthetic_state(1_500, seed=4))
    result = train(state.drop(columns="persona"), k=5, seed=1)
    expected = describe_labels(state, result.labels, 5)
    assert [p["composition"] for p in result.model.profiles] == expected
    assert any("DE" in words for words in expected)

    export = tmp_path / "export.csv"
    state.drop(columns="persona").to_csv(export, index=False)
    models = tmp_path / "models"
    runner = CliRunner()
    args = ["--model-dir", str(models), "--k", "5", "--seed", "1", "--out", str(tmp_path / "o")]
    trained = runner.invoke(main, ["train", "--export", str(export), *args])
    assert trained.exit_code == 0, trained.output
    shown = runner.invoke(main, ["segments", "--model-dir", str(models)])
    assert shown.exit_code == 0, shown.output
    who = [line.strip() for line in shown.output.splitlines() if line.strip().startswith("who:")]
    assert len(who) == 5
    assert any("% DE" in line for line in who), who
