"""The analyst report built from a small seeded dataset: sections, images, captions, CSV tables."""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analytics.composition import ALL, Composition
from analytics.report import REPORT_FILE, SECTIONS, TABLE_FILES, build_report
from analytics.report.builder import NO_MODEL_NOTE
from analytics.report.sample import sample_inputs

#: Each full build draws 18 figures: seconds, not milliseconds.
pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


class _Page(HTMLParser):
    """Sections (id -> figures, notes) and every <img> of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.captions: list[str] = []
        self._current: str | None = None
        self._in_caption = False
        self._in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._current = a.get("id", "")
            self.sections[self._current] = {"figures": [], "notes": []}
        elif tag == "figure" and self._current is not None:
            self.sections[self._current]["figures"].append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a | {"section": self._current or ""})
        elif tag == "figcaption":
            self._in_caption = True
            self.captions.append("")
        elif tag == "p" and "note" in a.get("class", ""):
            self._in_note = True
            assert self._current is not None
            self.sections[self._current]["notes"].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False
        elif tag == "p":
            self._in_note = False
        elif tag == "section":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.captions[-1] += data
        if self._in_note and self._current is not None:
            self.sections[self._current]["notes"][-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(src: str) -> np.ndarray:
    match = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
    assert match, f"image is not an embedded PNG: {src[:60]!r}"
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    image.load()
    return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def inputs() -> tuple[pd.DataFrame, dict[str, object], pd.DataFrame]:
    return sample_inputs(n=400, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def full_report(
    inputs: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    state, model, changes = inputs
    return build_report(state, model, changes, tmp_path_factory.mktemp("report"), AS_OF)


def test_every_section_is_present_with_its_figures(full_report: Path) -> None:
    page = _parse(full_report)
    assert list(page.sections) == list(SECTIONS)
    expected = {
        "eda": {"fig-frequency", "fig-aov", "fig-clv", "fig-recency-days", "fig-tenure-days",
                "fig-lorenz", "fig-clicks"},
        "model-choice": {"fig-k-selection"},
        "segments": {"fig-segment-size", "fig-centroids", "fig-segment-distributions"},
        "composition": {"fig-composition-country", "fig-composition-age-band",
                        "fig-composition-favourite-category", "fig-composition-device"},
        "movement": {"fig-transitions", "fig-sizes-over-time"},
        "business": {"fig-business"},
    }  # fmt: skip
    for section, figures in expected.items():
        assert set(page.sections[section]["figures"]) == figures, section
        assert page.sections[section]["notes"] == [], section


def test_every_image_decodes_and_is_not_blank(full_report: Path) -> None:
    page = _parse(full_report)
    assert len(page.images) == 18
    for img in page.images:
        pixels = _decode(img["src"])
        assert pixels.shape[0] > 100 and pixels.shape[1] > 200, img["alt"]
        assert pixels.var() > 0, f"{img['alt']} is blank"
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 10, f"{img['alt']} has only {len(colours)} colours"
        # Mostly white background, but with real ink on it.
        ink = (pixels.sum(axis=2) < 600).mean()
        assert 0.01 < ink < 0.9, f"{img['alt']}: {ink:.1%} of pixels drawn"


def test_every_figure_has_a_title_and_a_one_sentence_caption(full_report: Path) -> None:
    page = _parse(full_report)
    assert len(page.captions) == len(page.images)
    for img, caption in zip(page.images, page.captions, strict=True):
        assert img["alt"], "figure without a title"
        assert caption.startswith(img["alt"] + "."), caption
        sentence = caption[len(img["alt"]) + 1 :].strip()
        assert len(sentence) > 40 and sentence.endswith("."), caption
        assert "nan" not in sentence.lower().split(), caption


def test_page_is_self_contained(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", text)
    assert "<link" not in text
    assert "data-broken" in text and "data-loaded" in text  # the broken-image marker script


def test_csv_tables_exist_with_expected_columns(full_report: Path) -> None:
    out = full_report.parent
    assert sorted(p.name for p in out.glob("*.csv")) == sorted(TABLE_FILES.values())
    eda = pd.read_csv(out / "eda_summary.csv")
    assert {"metric", "unit", "population", "customers", "mean", "median", "p90"} <= set(eda)
    assert {"purchase frequency", "average order value", "recency", "tenure"} <= set(eda["metric"])
    profile = pd.read_csv(out / "segment_profile.csv")
    assert {"segment", "customers", "customer_share", "revenue_share", "median_recency_days",
            "median_frequency", "median_monetary", "median_aov"} <= set(profile)  # fmt: skip
    business = pd.read_csv(out / "business_view.csv")
    assert {"segment", "customers", "revenue", "revenue_share", "aov", "repeat_rate"} <= set(
        business
    )
    transitions = pd.read_csv(out / "transition_matrix.csv", index_col=0)
    assert transitions.index.name == "from_segment"
    k = pd.read_csv(out / "k_selection.csv")
    assert list(k.columns[:3]) == ["k", "inertia", "silhouette"] and len(k) == 7


def test_tables_agree_with_a_direct_computation(
    full_report: Path, inputs: tuple[pd.DataFrame, dict[str, object], pd.DataFrame]
) -> None:
    state, _, changes = inputs
    out = full_report.parent
    segmented = state[state["segment"].notna()]
    business = pd.read_csv(out / "business_view.csv").set_index("segment")
    expected_revenue = segmented.groupby("segment")["monetary"].sum()
    assert np.allclose(business["revenue"].sort_index(), expected_revenue.sort_index(), rtol=1e-5)
    orders = segmented.groupby("segment")["frequency"].sum()
    assert np.allclose(business["aov"].sort_index(), (expected_revenue / orders).sort_index())
    repeat = segmented.groupby("segment")["frequency"].apply(lambda f: (f >= 2).mean())
    assert np.allclose(business["repeat_rate"].sort_index(), repeat.sort_index())
    assert business["revenue_share"].sum() == pytest.approx(1.0, abs=1e-4)

    transitions = pd.read_csv(out / "transition_matrix.csv", index_col=0)
    assert int(transitions.to_numpy().sum()) == len(changes)
    assert int(transitions.loc["(first segment)"].sum()) == changes["old_segment"].isna().sum()

    # Sizes rebuilt from the changes end exactly at the state's current segment counts.
    sizes = pd.read_csv(out / "segment_sizes_over_time.csv", index_col=0)
    final = sizes.iloc[-1].astype(int).sort_index()
    assert final.to_dict() == segmented["segment"].value_counts().sort_index().to_dict()


def test_composition_section_says_who_is_in_each_segment_and_writes_its_table(
    full_report: Path, inputs: tuple[pd.DataFrame, dict[str, object], pd.DataFrame]
) -> None:
    state, _, _ = inputs
    text = full_report.read_text(encoding="utf-8")
    section = text[text.index('<section id="composition"') :]
    section = section[: section.index("</section>")]
    lines = dict(re.findall(r'<li data-segment="([^"]+)">.*?<span class="words">([^<]*)</span>',
                            section))  # fmt: skip
    segments = set(state["segment"].dropna())
    assert set(lines) == segments
    # The sample's champions lean to Germany, electronics, their late thirties and desktops.
    champions = html.unescape(lines["Champions"])
    assert re.match(r"\d+ % DE \(\d\.\dx the shop\), top category electronics \(\d+ %, "
                    r"\d\.\dx the shop\), mostly 35-44 \(", champions), champions  # fmt: skip
    assert champions == Composition.of(state).sentence("Champions")

    table = pd.read_csv(full_report.parent / "composition.csv", keep_default_na=False,
                        na_values=[""])  # fmt: skip
    assert list(table.columns) == ["segment", "attribute", "level", "customers", "share",
                                   "share_of_known", "lift"]  # fmt: skip
    assert set(table["segment"]) == segments | {ALL}
    for _, part in table.groupby(["segment", "attribute"]):
        assert part["share"].sum() == pytest.approx(1.0)
    de = table[(table["segment"] == "Champions") & (table["attribute"] == "country")
               & (table["level"] == "DE")].iloc[0]  # fmt: skip
    champions_rows = state[state["segment"] == "Champions"]
    known = champions_rows["country"].notna().sum()
    share = (champions_rows["country"] == "DE").sum() / known
    shop = (state["country"] == "DE").sum() / state["country"].notna().sum()
    assert de["share_of_known"] == pytest.approx(share)
    assert de["lift"] == pytest.approx(share / shop)


def test_report_without_model_or_changes_says_so(
    inputs: tuple[pd.DataFrame, dict[str, object], pd.DataFrame], tmp_path: Path
) -> None:
    state, _, _ = inputs
    path = build_report(state, None, None, tmp_path, AS_OF)
    page = _parse(path)
    assert list(page.sections) == list(SECTIONS)
    assert page.sections["model-choice"]["notes"] == [NO_MODEL_NOTE]
    assert page.sections["model-choice"]["figures"] == []
    assert "No segment changes" in page.sections["movement"]["notes"][0]
    # Segments from the state still get profiles; centroids come from the state itself.
    assert "fig-centroids" in page.sections["segments"]["figures"]
    for img in page.images:
        assert _decode(img["src"]).var() > 0
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == sorted(TABLE_FILES.values())
    assert pd.read_csv(tmp_path / "k_selection.csv").empty
    assert list(pd.read_csv(tmp_path / "k_selection.csv").columns) == ["k", "inertia", "silhouette"]


def test_report_of_customers_without_segments(tmp_path: Path) -> None:
    state, _, _ = sample_inputs(n=120, seed=3, as_of=AS_OF)
    path = build_report(state.drop(columns=["segment"]), None, None, tmp_path, AS_OF)
    page = _parse(path)
    assert any("No customer carries a segment" in n for n in page.sections["segments"]["notes"])
    assert page.sections["business"]["figures"] == []
    assert len(page.sections["eda"]["figures"]) == 7
    assert (tmp_path / REPORT_FILE).is_file()
