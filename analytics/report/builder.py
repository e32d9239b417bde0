"""Build the analyst report from data frames: one self-contained HTML file plus CSV tables.

Over 400 lines: one function per report section, in page order, so the report reads top to bottom.

:func:`build_report` does no network I/O: its inputs are the customer state (export contract
columns, optionally ``segment``), the model artifact dict (or ``None`` before any training) and
the segment changes (or ``None``). It writes into ``out_dir`` and returns the HTML path. Any
section whose inputs are missing is still present, with a note saying what is missing and how
to get it, so the report's layout never depends on the data.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analytics.composition import COLUMNS as COMPOSITION_COLUMNS
from analytics.impact import IMPACT_COLUMNS, OUTCOME_COLUMNS
from analytics.report import figures as figs
from analytics.report import tables
from analytics.report.composition_section import composition_parts
from analytics.report.errors import ReportError
from analytics.report.impact_section import impact_parts
from analytics.report.model_view import REFERENCES, ModelView, read_model

__all__ = ["REPORT_FILE", "SECTIONS", "TABLE_FILES", "build_report"]

REPORT_FILE = "report.html"
#: Section anchor -> heading, in page order.
SECTIONS: dict[str, str] = {
    "eda": "Customers at a glance (EDA)",
    "model-choice": "Choosing the number of segments",
    "segments": "Segment profiles",
    "composition": "Who is in each segment (demographics and categories)",
    "movement": "Movement between segments",
    "business": "Business view",
    "impact": "Campaign impact: treatment vs holdout",
}
#: Table name -> CSV file written beside the HTML (always written; empty with a header when the
#: data for it is missing, so BI tools can rely on the files existing).
TABLE_FILES: dict[str, str] = {
    "eda_summary": "eda_summary.csv",
    "segment_profile": "segment_profile.csv",
    "transition_matrix": "transition_matrix.csv",
    "business_view": "business_view.csv",
    "segment_sizes": "segment_sizes_over_time.csv",
    "k_selection": "k_selection.csv",
    "composition": "composition.csv",
    "impact": "impact.csv",
    "impact_customers": "impact_customers.csv",
}
_EMPTY_COLUMNS: dict[str, list[str]] = {
    "segment_profile": ["segment", "customers", "customer_share", "revenue_share"],
    "transition_matrix": ["from_segment"],
    "business_view": ["segment", "customers", "revenue", "revenue_share", "aov", "repeat_rate"],
    "segment_sizes": ["time"],
    "k_selection": ["k", "inertia", "silhouette"],
    "composition": list(COMPOSITION_COLUMNS),
    "impact": list(IMPACT_COLUMNS),
    "impact_customers": list(OUTCOME_COLUMNS),
}
NO_MODEL_NOTE = (
    "No model trained yet: there is no segmentation model artifact, so there are no elbow or "
    "silhouette curves, centroids or naming rules to show. Train one (see the README), then "
    "run the report again."
)


@dataclass
class _Section:
    id: str
    title: str
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    #: (segment, sentence) lines shown as a list after the notes.
    lines: list[tuple[str, str]] = field(default_factory=list)
    figures: list[figs.Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


def build_report(
    state: pd.DataFrame,
    model: Mapping[str, Any] | None,
    changes: pd.DataFrame | None,
    out_dir: str | Path,
    as_of: datetime | None = None,
    *,
    currency: str = "EUR",
    sources: Mapping[str, str] | None = None,
    impact: Any = None,
) -> Path:
    """Write ``report.html`` and the CSV tables into ``out_dir``; return the HTML path.

    ``as_of`` (default: now, UTC) is the time recency and tenure are measured from, and the end
    of the period of segment changes considered. ``sources`` are printed in the header (where
    the state, model and changes came from). ``impact``: the campaign impact inputs
    (:class:`analytics.impact_sources.ImpactInputs`; None: the section says they were not read).
    """
    as_of = datetime.now(UTC) if as_of is None else as_of
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the report directory {out}: {exc}") from exc
    customers = tables.prepare_state(state, as_of)
    view = read_model(model)
    moves = tables.prepare_changes(changes, as_of)
    known: list[str] = list(moves["new_segment"].dropna().astype(str).unique())
    if "segment" in customers:
        known += list(customers["segment"].dropna().astype(str).unique())
    if view is not None and view.names:
        known += view.names
    palette = figs.segment_palette(known)
    computed: dict[str, pd.DataFrame] = {}
    sections = [
        _eda(customers, currency, computed),
        _model_choice(view, computed),
        _segments(customers, view, currency, palette, computed),
        _composition(customers, computed),
        _movement(moves, customers, palette, computed),
        _business(customers, currency, palette, computed),
        _impact(impact, as_of, currency, computed),
    ]
    for name, filename in TABLE_FILES.items():
        frame = computed.get(name)
        if frame is None or frame.empty:
            frame = pd.DataFrame(columns=_EMPTY_COLUMNS.get(name, []))
        _write_csv(frame, out / filename)
    page = _page(sections, customers, view, moves, as_of, currency, sources or {})
    path = out / REPORT_FILE
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc}") from exc
    return path


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(out.index, pd.DatetimeIndex):
        out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    keep_index = not isinstance(out.index, pd.RangeIndex)
    try:
        out.to_csv(path, index=keep_index, float_format="%.15g")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc}") from exc


# -- sections -------------------------------------------------------------------------------------


def _eda(state: pd.DataFrame, currency: str, computed: dict[str, pd.DataFrame]) -> _Section:
    section = _Section("eda", SECTIONS["eda"])
    buyers = int((state["frequency"] > 0).sum())
    section.intro = (
        f"{len(state):,} customers, {buyers:,} of whom have at least one order. Order-based "
        "figures cover the customers with orders; revenue is net of cancellations and returns."
    )
    section.figures += [
        figs.frequency_hist(state),
        figs.aov_hist(state, currency),
        figs.clv_hist(state, currency),
        figs.days_hist(state, "recency_days", "recency", "#5a9f68"),
        figs.days_hist(state, "tenure_days", "tenure", "#8c6bb1"),
        figs.lorenz_curve(state),
        figs.clicks_vs_buying(state),
    ]
    summary = tables.eda_summary(state, currency)
    computed["eda_summary"] = summary
    section.tables.append(("Summary of the distributions", summary))
    return section


def _model_choice(view: ModelView | None, computed: dict[str, pd.DataFrame]) -> _Section:
    section = _Section("model-choice", SECTIONS["model-choice"])
    if view is None:
        section.notes.append(NO_MODEL_NOTE)
        return section
    section.intro = (
        f"Model {view.version or '(unversioned)'}"
        + (f", trained {view.trained_at}" if view.trained_at else "")
        + (f", k = {view.chosen_k}." if view.chosen_k is not None else ".")
        + (f" How k was chosen: {view.k_rule}." if view.k_rule else "")
    )
    section.notes += view.problems
    if view.k_scores is not None:
        computed["k_selection"] = view.k_scores
        section.figures.append(figs.k_selection(view))
        section.tables.append(("Scores by k", view.k_scores))
    return section


def _segments(
    state: pd.DataFrame,
    view: ModelView | None,
    currency: str,
    palette: dict[str, Any],
    computed: dict[str, pd.DataFrame],
) -> _Section:
    section = _Section("segments", SECTIONS["segments"])
    profile = tables.segment_profile(state)
    if view is None:
        section.notes.append(NO_MODEL_NOTE)
    if profile.empty:
        section.notes.append(
            "No customer carries a segment yet (the state has no 'segment' values), so there are "
            "no profiles to show. Start the worker so it assigns segments, then run the report."
        )
    else:
        computed["segment_profile"] = profile
        section.intro = (
            f"{int(profile['customers'].sum()):,} segmented customers in "
            f"{len(profile)} segments; medians in real units."
        )
        section.figures.append(figs.size_and_revenue(profile))
    centroids, source = _centroids(state, view)
    if centroids is not None:
        section.figures.append(figs.centroid_heatmap(centroids, source))
    if not profile.empty:
        section.figures.append(figs.segment_distributions(state, currency, palette))
        section.tables.append(("Segment profile", profile))
    if view is not None and view.names:
        rules = pd.DataFrame(
            {
                "segment": view.names,
                "rule that gave the name": [
                    view.rules.get(n, "(the artifact gives no rule)") for n in view.names
                ],
            }
        )
        if view.centroids_real is not None:
            real = view.centroids_real.reindex(view.names)
            rules["centre in real units"] = [
                ", ".join(f"{k} {round(v, 1) + 0.0:,.1f}" for k, v in row.items())
                for _, row in real.iterrows()
            ]
        section.tables.append(("Segment names and the rules that gave them", rules))
        if view.population:
            section.tables.append(("Reference values in the rules", _references(view, currency)))
    return section


def _references(view: ModelView, currency: str) -> pd.DataFrame:
    rows = []
    for key, value in view.population.items():
        symbol, meaning, unit = REFERENCES.get(key, (key, key.replace("_", " "), ""))
        unit = currency if unit == "currency" else unit
        rows.append({"symbol": symbol, "meaning": meaning, "value": value, "unit": unit})
    return pd.DataFrame(rows)


def _centroids(state: pd.DataFrame, view: ModelView | None) -> tuple[pd.DataFrame | None, str]:
    """Model centroids if the artifact has them, else standardised segment means of the state."""
    if view is not None and view.centroids is not None:
        return view.centroids, f"model {view.version or ''}".strip()
    if "segment" not in state or state["segment"].isna().all():
        return None, ""
    features = ["recency_days", "frequency", "monetary", "aov", "tenure_days", "sessions",
                "product_views", "abandoned_carts"]  # fmt: skip
    data = state[state["segment"].notna()][["segment", *features]].copy()
    for column in features:
        values = np.log1p(data[column].clip(lower=0).fillna(0))
        std = values.std()
        data[column] = (values - values.mean()) / std if std else 0.0
    means = data.groupby("segment", observed=True)[features].mean()
    means.index = means.index.astype(str)
    return means, "segment means of log1p(feature), standardised over the state"


def _composition(state: pd.DataFrame, computed: dict[str, pd.DataFrame]) -> _Section:
    parts = composition_parts(state)
    section = _Section("composition", SECTIONS["composition"], parts.intro, parts.notes)
    section.lines, section.figures, section.tables = parts.lines, parts.figures, parts.tables
    computed["composition"] = parts.table
    return section


def _impact(
    inputs: Any, as_of: datetime, currency: str, computed: dict[str, pd.DataFrame]
) -> _Section:
    """``inputs``: :class:`analytics.impact_sources.ImpactInputs`, or None (not read)."""
    descriptions = {}
    if inputs is not None:
        descriptions = {n: c.description for n, c in inputs.campaigns.by_name.items()}
    parts = impact_parts(
        None if inputs is None else inputs.assignments,
        None if inputs is None else inputs.orders,
        None if inputs is None else inputs.changes,
        int(as_of.timestamp() * 1000),
        currency,
        descriptions,
    )
    section = _Section("impact", SECTIONS["impact"], parts.intro, parts.notes)
    section.figures, section.tables = parts.figures, parts.tables
    computed["impact"], computed["impact_customers"] = parts.table, parts.customers
    return section


def _movement(
    changes: pd.DataFrame,
    state: pd.DataFrame,
    palette: dict[str, Any],
    computed: dict[str, pd.DataFrame],
) -> _Section:
    section = _Section("movement", SECTIONS["movement"])
    if changes.empty:
        section.notes.append(
            "No segment changes in the period: the segment-changes topic is empty or was not "
            "read. Changes appear once the worker assigns segments."
        )
        return section
    start, end = changes["event_time"].min(), changes["event_time"].max()
    days = (end - start).total_seconds() / 86400.0
    reasons = changes["reason"].astype(str).value_counts()
    section.intro = (
        f"{len(changes):,} segment changes of {changes['customer_id'].nunique():,} customers "
        f"between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC (event time); by reason: "
        + ", ".join(f"{r} {n:,}" for r, n in reasons.items())
        + "."
    )
    matrix = tables.transition_matrix(changes)
    computed["transition_matrix"] = matrix
    section.figures.append(figs.transition_heatmap(matrix, days))
    sizes = tables.segment_sizes_over_time(changes, state)
    if not sizes.empty:
        computed["segment_sizes"] = sizes
        section.figures.append(figs.sizes_over_time(sizes, palette))
    section.tables.append(("Transition matrix (changes from row to column)", matrix))
    return section


def _business(
    state: pd.DataFrame, currency: str, palette: dict[str, Any], computed: dict[str, pd.DataFrame]
) -> _Section:
    section = _Section("business", SECTIONS["business"])
    view = tables.business_view(state)
    if view.empty:
        section.notes.append(
            "No customer carries a segment yet, so there is no per-segment business view."
        )
        return section
    computed["business_view"] = view
    section.intro = (
        f"Revenue in {currency}, net of cancellations and returns. AOV = segment revenue / "
        "segment orders; repeat rate = share of the segment's buyers with two or more orders."
    )
    section.figures.append(figs.business(view, currency, palette))
    section.tables.append(("Business view", view))
    return section


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#1f3b5a;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px 0;font-size:24px} header p{margin:2px 0;font-size:13px;opacity:.9}
nav{padding:8px 32px;background:#e8ecf1;font-size:14px} nav a{margin-right:18px;color:#1f3b5a}
main{padding:8px 32px 40px 32px;max-width:1280px}
section{background:#fff;margin:18px 0;padding:12px 24px 20px;border-radius:6px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{border-bottom:2px solid #1f3b5a;padding-bottom:4px}
.figs{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
figure{margin:14px 0;flex:0 1 auto;max-width:100%}
figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:14px;color:#444;margin-top:4px}
.note{background:#fff6e0;border-left:4px solid #d9822b;padding:8px 12px;margin:10px 0}
table{border-collapse:collapse;font-size:12px;margin:6px 0 16px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left} th{background:#eef1f5}
.num{text-align:right;font-variant-numeric:tabular-nums}
.tablewrap{overflow-x:auto}
ul.lines{font-size:15px;line-height:1.5} ul.lines li{margin:3px 0}
"""
# Marks images that failed to decode, then the body as loaded: headless checks read these.
_SCRIPT = """
window.addEventListener('load', function () {
  var broken = 0;
  document.querySelectorAll('img').forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) { img.setAttribute('data-broken', '1'); broken++; }
  });
  document.body.setAttribute('data-broken-images', String(broken));
  document.body.setAttribute('data-loaded', '1');
});
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _png_width(png: bytes) -> int:
    """Pixel width from the PNG header (IHDR), so the page can size figures without decoding."""
    return int.from_bytes(png[16:20], "big")


def _cell(value: object, column: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp):
        return str(value.strftime("%Y-%m-%d %H:%M"))
    if isinstance(value, (float, np.floating)):
        share = "share" in column or "rate" in column or column == "conversion"
        return f"{value:.1%}" if share else f"{value:,.2f}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return str(value)


def _table_html(frame: pd.DataFrame) -> str:
    """A plain HTML table: numbers right-aligned and formatted, text left-aligned, escaped."""
    shown = frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index()
    columns = [str(c) for c in shown.columns]
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) for c in shown.columns]
    head = "".join(
        f'<th class="{"num" if num else "txt"}">{_esc(c)}</th>'
        for c, num in zip(columns, numeric, strict=True)
    )
    rows = []
    for values in shown.itertuples(index=False):
        cells = "".join(
            f'<td class="{"num" if num else "txt"}">{_esc(_cell(v, c))}</td>'
            for v, c, num in zip(values, columns, numeric, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    body = "".join(rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="tablewrap">{table}</div>'


def _page(
    sections: list[_Section],
    state: pd.DataFrame,
    view: ModelView | None,
    changes: pd.DataFrame,
    as_of: datetime,
    currency: str,
    sources: Mapping[str, str],
) -> str:
    model_text = "none (no model trained yet)" if view is None else (view.version or "unversioned")
    header = [
        f"<p>As of {_esc(as_of.strftime('%Y-%m-%d %H:%M:%S UTC'))} · {len(state):,} customers · "
        f"{len(changes):,} segment changes · model {_esc(model_text)} · currency {_esc(currency)}"
        f" · generated {_esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</p>"
    ]
    header += [f"<p>{_esc(k)}: {_esc(v)}</p>" for k, v in sources.items()]
    nav = " ".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>segstream customer segmentation report</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        "<header><h1>segstream — customer segmentation report</h1>",
        *header,
        "</header>",
        f"<nav>{nav}</nav>",
        "<main>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}" data-section="{section.id}">')
        parts.append(f"<h2>{_esc(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{_esc(section.intro)}</p>")
        parts += [f'<p class="note">{_esc(note)}</p>' for note in section.notes]
        if section.lines:
            parts.append('<ul class="lines">')
            parts += [f'<li data-segment="{_esc(name)}"><strong>{_esc(name)}</strong>: '
                      f'<span class="words">{_esc(text)}</span></li>'
                      for name, text in section.lines]  # fmt: skip
            parts.append("</ul>")
        if section.figures:
            parts.append('<div class="figs">')
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            # The caption is as wide as the image, so side-by-side figures keep their own text.
            width = _png_width(fig.png)
            parts.append(
                f'<figure id="{fig.id}" style="width:{width}px">'
                f'<img src="data:image/png;base64,{data}" alt="{_esc(fig.title)}">'
                f"<figcaption><strong>{_esc(fig.title)}.</strong> {_esc(fig.caption)}"
                "</figcaption></figure>"
            )
        if section.figures:
            parts.append("</div>")
        for title, frame in section.tables:
            parts.append(f"<h3>{_esc(title)}</h3>")
            parts.append(_table_html(frame))
        parts.append("</section>")
    parts += ["</main>", "</body></html>"]
    return "\n".join(parts)
