"""The report's figures, drawn with matplotlib's object API (no pyplot state) and seaborn.

Over 400 lines: one small function per figure; splitting them would scatter the shared axis style.

Each function returns a :class:`Figure` spec: a title, the PNG bytes and one sentence saying
what the figure shows, computed from the data. Every axis is labelled with its unit. Nothing
here reads files or talks to Kafka or Redis.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

from analytics.report import tables
from analytics.report.model_view import ModelView

__all__ = ["Figure", "segment_palette"]

_DPI = 100
_BLUE = "#3b6ea8"
_ORANGE = "#d9822b"
sns.set_theme(style="whitegrid", context="notebook")


@dataclass(frozen=True)
class Figure:
    """One rendered figure: anchor id, title, PNG bytes and its one-sentence caption."""

    id: str
    title: str
    png: bytes
    caption: str


def _render(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    # Constrained layout already fits everything in the canvas; "tight" would draw twice.
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _new(width: float = 8.0, height: float = 3.8, ncols: int = 1) -> tuple[MplFigure, list[Axes]]:
    fig = MplFigure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def segment_palette(segments: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A stable colour per segment name (sorted), shared by every segment figure."""
    names = sorted({str(s) for s in segments})
    colours = sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours, strict=True))


def _compact(value: float, _pos: object = None) -> str:
    """Tick label for amounts: 950, 12k, 1.5M (short enough not to collide)."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def _money_axis(
    axis: Any, log: bool = False, values: pd.Series | None = None, max_ratio: float = 100.0
) -> None:
    if log:
        # Ticks at 1-2-5 steps over up to two decades (a range like 15-300 reads 20, 50, 100,
        # 200), at powers of ten beyond; minor ticks unlabelled (log axes label 2×10¹, 3×10¹
        # ... which collide).
        positive = values[values > 0] if values is not None else pd.Series(dtype=float)
        wide = len(positive) > 0 and positive.max() / positive.min() > max_ratio
        axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(_compact))


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


# -- EDA ------------------------------------------------------------------------------------------


def frequency_hist(state: pd.DataFrame) -> Figure:
    freq = state["frequency"].astype(int)
    cap = int(max(10, np.ceil(freq.quantile(0.99)))) if len(freq) else 10
    counts = freq.clip(upper=cap).value_counts().reindex(range(cap + 1), fill_value=0)
    fig, (ax,) = _new()
    ax.bar(counts.index, counts.to_numpy(), color=_BLUE, width=0.85)
    ax.set_xticks(range(cap + 1))
    ax.set_xticklabels([str(i) for i in range(cap)] + [f"{cap}+"])
    title = "Purchase frequency"
    ax.set_title(title)
    ax.set_xlabel("orders per customer (count, net of cancellations)")
    ax.set_ylabel("customers (count)")
    share_zero = float((freq == 0).mean()) if len(freq) else float("nan")
    share_repeat = float((freq >= 2).mean()) if len(freq) else float("nan")
    caption = (
        f"How many orders each of the {len(freq):,} customers has placed: "
        f"{share_zero:.0%} have none yet and {share_repeat:.0%} ordered twice or more."
    )
    return Figure("fig-frequency", title, _render(fig), caption)


def _log_hist(ax: Axes, values: pd.Series, colour: str) -> None:
    data = values[values > 0].to_numpy(dtype=float)
    if data.size == 0:
        ax.text(0.5, 0.5, "no customers with a positive value", ha="center", transform=ax.transAxes)
        return
    low, high = data.min(), data.max()
    bins = np.geomspace(low, high if high > low else low * 1.01, 40).tolist()
    ax.hist(data, bins=bins, color=colour, edgecolor="white", linewidth=0.4)
    ax.set_xscale("log")
    _money_axis(ax.xaxis, log=True, values=values, max_ratio=1e4)
    median = float(np.median(data))
    ax.axvline(median, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"median {median:,.0f}", (median, 0.93), xycoords=("data", "axes fraction"),
                xytext=(4, 0), textcoords="offset points", fontsize=9)  # fmt: skip


def aov_hist(state: pd.DataFrame, currency: str) -> Figure:
    buyers = state[state["frequency"] > 0]
    fig, (ax,) = _new()
    _log_hist(ax, buyers["aov"], _BLUE)
    title = "Average order value per customer"
    ax.set_title(title)
    ax.set_xlabel(f"average order value ({currency}, log scale)")
    ax.set_ylabel("customers (count)")
    q = buyers["aov"].quantile([0.25, 0.5, 0.75]) if len(buyers) else pd.Series([np.nan] * 3)
    caption = (
        f"Net revenue per order for each buying customer; the middle half spends between "
        f"{_fmt(q.iloc[0], 0)} and {_fmt(q.iloc[2], 0)} {currency} per order "
        f"(median {_fmt(q.iloc[1], 0)})."
    )
    return Figure("fig-aov", title, _render(fig), caption)


def clv_hist(state: pd.DataFrame, currency: str) -> Figure:
    buyers = state[state["frequency"] > 0]
    fig, (ax,) = _new()
    _log_hist(ax, buyers["monetary"], _ORANGE)
    title = "Customer lifetime value (net revenue to date)"
    ax.set_title(title)
    ax.set_xlabel(f"net revenue per customer ({currency}, log scale)")
    ax.set_ylabel("customers (count)")
    mean, median = buyers["monetary"].mean(), buyers["monetary"].median()
    caption = (
        f"Revenue each buying customer has brought so far, net of cancellations and returns; "
        f"the mean ({_fmt(mean, 0)} {currency}) above the median ({_fmt(median, 0)}) shows a "
        f"long tail of high-value customers."
    )
    return Figure("fig-clv", title, _render(fig), caption)


def days_hist(state: pd.DataFrame, column: str, what: str, colour: str) -> Figure:
    buyers = state[(state["frequency"] > 0) & state[column].notna()]
    fig, (ax,) = _new()
    data = buyers[column].clip(lower=0)
    if data.empty:
        ax.text(0.5, 0.5, "no customer has an order yet", ha="center", transform=ax.transAxes)
    else:
        ax.hist(data, bins=40, color=colour, edgecolor="white", linewidth=0.4)
    title = what.capitalize()
    ax.set_title(title)
    since = "last" if column == "recency_days" else "first"
    ax.set_xlabel(f"days since the customer's {since} order (days, as of the report time)")
    ax.set_ylabel("customers (count)")
    if column == "recency_days":
        caption = (
            f"How long ago each buying customer last ordered: {float((data <= 30).mean()):.0%} "
            f"ordered in the last 30 days, {float((data > 90).mean()):.0%} not for over 90 days."
        )
    else:
        caption = (
            f"How long ago each buying customer first ordered (median "
            f"{_fmt(float(data.median()), 0)} days): the age of the customer base."
        )
    return Figure(f"fig-{column.replace('_', '-')}", title, _render(fig), caption)


def lorenz_curve(state: pd.DataFrame) -> Figure:
    population, cumulative, gini = tables.lorenz(state["monetary"])
    fig, (ax,) = _new(6.5, 4.6)
    # Plotted richest first: "the top x % of customers bring y % of revenue".
    top_x = 1.0 - population[::-1]
    top_y = 1.0 - cumulative[::-1]
    ax.plot(top_x, top_y, color=_ORANGE, linewidth=2, label="actual")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="equal spend")
    marks = []
    for fraction in (0.01, 0.1, 0.2, 0.5):
        share = tables.top_share(state["monetary"], fraction)
        if np.isfinite(share):
            ax.plot([fraction], [share], "o", color="black", markersize=4)
            ax.annotate(f"top {fraction:.0%}: {share:.0%}", (fraction, share), xytext=(6, -12),
                        textcoords="offset points", fontsize=9)  # fmt: skip
            marks.append((fraction, share))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    title = "Revenue concentration"
    ax.set_title(title)
    ax.set_xlabel("top customers by net revenue (% of paying customers)")
    ax.set_ylabel("share of net revenue (%)")
    ax.legend(loc="lower right")
    top20 = dict(marks).get(0.2, float("nan"))
    caption = (
        f"Cumulative share of net revenue brought by the best customers: the top 20% bring "
        f"{top20:.0%} of it (Gini {_fmt(gini, 2)}; 0 = everyone spends the same)."
    )
    return Figure("fig-lorenz", title, _render(fig), caption)


def clicks_vs_buying(state: pd.DataFrame) -> Figure:
    conv = tables.conversion_by_sessions(state)
    fig, (left, right) = _new(10.0, 3.9, ncols=2)
    left.bar(conv["sessions"], conv["conversion"], color=_BLUE)
    left.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    left.set_title("Conversion by number of sessions")
    left.set_xlabel("sessions per customer (count)")
    left.set_ylabel("customers with ≥ 1 order (%)")
    for x, (n, c) in enumerate(zip(conv["customers"], conv["conversion"], strict=True)):
        if n:
            left.annotate(f"n={n:,}", (x, c), ha="center", xytext=(0, 3),
                          textcoords="offset points", fontsize=8)  # fmt: skip
    buyers = state[state["frequency"] > 0]
    freq_bucket = pd.cut(buyers["frequency"], [0, 1, 2, 3, 5, 10, np.inf],
                         labels=["1", "2", "3", "4-5", "6-10", "11+"])  # fmt: skip
    grouped = buyers.groupby(freq_bucket, observed=False)
    abandoned = grouped["abandoned_carts"].mean()
    per_order = grouped["views_per_order"].median()
    positions = np.arange(len(abandoned))
    right.bar(positions - 0.2, abandoned.to_numpy(), width=0.4, color=_ORANGE,
              label="abandoned carts (mean)")  # fmt: skip
    twin = right.twinx()
    twin.grid(False)
    twin.plot(positions, per_order.to_numpy(), "o-", color=_BLUE,
              label="views per order (median)")  # fmt: skip
    right.set_xticks(positions)
    right.set_xticklabels([str(c) for c in abandoned.index])
    right.set_title("Browsing and abandoned carts by frequency")
    right.set_xlabel("orders per customer (count)")
    right.set_ylabel("abandoned carts per customer (mean)")
    twin.set_ylabel("page + product views per order (median)")
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles=handles, loc="upper right", fontsize=8)
    title = "Clickstream behaviour and buying"
    fig.suptitle(title)
    seen = conv[conv["customers"] > 0]
    low = seen["conversion"].iloc[0] if len(seen) else float("nan")
    high = seen["conversion"].iloc[-1] if len(seen) else float("nan")
    caption = (
        f"Left: the share of customers who ordered is {_fmt(100 * low, 0)}% among those with "
        f"{seen['sessions'].iloc[0] if len(seen) else '?'} session(s) and {_fmt(100 * high, 0)}% "
        f"among those with {seen['sessions'].iloc[-1] if len(seen) else '?'}; right: abandoned "
        f"carts and page + product views per order, by how often customers buy."
    )
    return Figure("fig-clicks", title, _render(fig), caption)


# -- model choice ---------------------------------------------------------------------------------


def k_selection(view: ModelView) -> Figure:
    scores = view.k_scores
    assert scores is not None
    fig, (elbow, sil) = _new(10.0, 3.8, ncols=2)
    chosen = view.chosen_k
    for ax, column, colour, label in (
        (elbow, "inertia", _BLUE, "inertia (standard units²)"),
        (sil, "silhouette", _ORANGE, "mean silhouette (−1 to 1)"),
    ):
        data = scores.dropna(subset=[column])
        ax.plot(data["k"], data[column], "o-", color=colour)
        if chosen is not None:
            ax.axvline(chosen, color="black", linestyle="--", linewidth=1)
            at = data[data["k"] == chosen]
            if not at.empty:
                ax.plot([chosen], [at[column].iloc[0]], "o", color="red", markersize=9,
                        label=f"chosen k = {chosen}")  # fmt: skip
                ax.legend(loc="best")
        ax.set_xlabel("number of segments k (count)")
        ax.set_ylabel(label)
        ax.set_xticks(scores["k"].tolist())
    elbow.set_title("Elbow: inertia by k")
    sil.set_title("Silhouette by k")
    title = "Choosing the number of segments"
    fig.suptitle(title)
    best = scores.dropna(subset=["silhouette"])
    best_k = int(best.loc[best["silhouette"].idxmax(), "k"]) if len(best) else None
    caption = (
        f"K-means fitted for k = {scores['k'].min()} to {scores['k'].max()} on the standardised "
        f"features: inertia (within-cluster sum of squared distances) falls as k grows, "
        f"silhouette (higher = better separated) is highest at k = {best_k}; the model uses "
        f"k = {chosen} (dashed line, red dot)."
    )
    return Figure("fig-k-selection", title, _render(fig), caption)


# -- segment profiles -----------------------------------------------------------------------------


def size_and_revenue(profile: pd.DataFrame) -> Figure:
    data = profile.sort_values("customer_share")
    fig, (ax,) = _new(8.0, 0.5 * len(data) + 1.6)
    y = np.arange(len(data))
    ax.barh(y + 0.2, data["customer_share"], height=0.4, color=_BLUE, label="share of customers")
    ax.barh(y - 0.2, data["revenue_share"], height=0.4, color=_ORANGE, label="share of revenue")
    ax.set_yticks(y)
    ax.set_yticklabels(data["segment"].astype(str))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    title = "Segment size and revenue share"
    ax.set_title(title)
    ax.set_xlabel("share of segmented customers / of their net revenue (%)")
    ax.set_ylabel("segment")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    top = profile.sort_values("revenue_share", ascending=False).iloc[0]
    caption = (
        f"How big each segment is and how much of the revenue it brings: {top['segment']} "
        f"holds {top['customer_share']:.0%} of customers and {top['revenue_share']:.0%} of "
        f"revenue."
    )
    return Figure("fig-segment-size", title, _render(fig), caption)


def centroid_heatmap(centroids: pd.DataFrame, source: str) -> Figure:
    height = max(3.6, 0.55 * len(centroids) + 2.0)
    fig, (ax,) = _new(max(7.0, 1.1 * len(centroids.columns) + 2.5), height)
    limit = float(np.nanmax(np.abs(centroids.to_numpy()))) if centroids.size else 1.0
    sns.heatmap(centroids.astype(float), ax=ax, cmap="RdBu_r", center=0, vmin=-limit,
                vmax=limit, annot=True, fmt=".2f", linewidths=0.5,
                cbar_kws={"label": "z (standard deviations)"})  # fmt: skip
    title = "Segment centroids (standardised)"
    ax.set_title(title)
    ax.set_xlabel("feature (log1p-transformed, then standardised; z units)")
    ax.set_ylabel("segment")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    caption = (
        f"Where each segment's centre lies on each feature, in standard deviations from the "
        f"average customer ({source}); red is above average, blue below."
    )
    return Figure("fig-centroids", title, _render(fig), caption)


_REAL_UNITS = (
    ("recency_days", "recency (days since last order)"),
    ("frequency", "frequency (orders)"),
    ("monetary", "net revenue ({cur})"),
    ("aov", "average order value ({cur})"),
)


def segment_distributions(state: pd.DataFrame, currency: str, palette: dict[str, object]) -> Figure:
    seg = state[state["segment"].notna()].copy()
    seg["segment"] = seg["segment"].astype(str)
    order = sorted(seg["segment"].unique())
    fig, axes = _new(12.0, 0.45 * len(order) + 2.4, ncols=4)
    for ax, (column, label) in zip(axes, _REAL_UNITS, strict=True):
        data = seg[seg[column].notna()]
        sns.boxplot(data=data, x=column, y="segment", hue="segment", order=order,
                    palette=palette, showfliers=False, ax=ax, legend=False)  # fmt: skip
        unit_label = label.format(cur=currency)
        ax.set_title(unit_label.split(" (")[0].capitalize())
        ax.set_xlabel(unit_label)
        ax.set_ylabel("segment" if ax is axes[0] else "")
        if ax is not axes[0]:
            ax.set_yticklabels([])
        if column in ("monetary", "aov") and (data[column] > 0).all() and len(data):
            ax.set_xscale("log")
            _money_axis(ax.xaxis, log=True, values=data[column])
    title = "Segments in real units"
    fig.suptitle(title)
    caption = (
        "The spread of recency, frequency, net revenue and order value inside each segment "
        "(box = middle half, line = median, whiskers = 1.5 × IQR; outliers hidden)."
    )
    return Figure("fig-segment-distributions", title, _render(fig), caption)


# -- movement -------------------------------------------------------------------------------------


def transition_heatmap(matrix: pd.DataFrame, days: float) -> Figure:
    fig, (ax,) = _new(max(6.5, 1.0 * len(matrix.columns) + 3.5), max(3.6, 0.55 * len(matrix) + 2.2))
    sns.heatmap(matrix, ax=ax, cmap="Blues", annot=True, fmt=",d", linewidths=0.5,
                cbar_kws={"label": "segment changes (count)"})  # fmt: skip
    title = "Segment transitions"
    ax.set_title(title)
    ax.set_xlabel("to segment")
    ax.set_ylabel("from segment")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    moves = matrix.drop(index=tables.NEW_CUSTOMER, errors="ignore")
    total = int(moves.to_numpy().sum())
    if total:
        stacked = moves.stack()
        (src, dst), top = stacked.idxmax(), int(stacked.max())
        busiest = f"; the most common move is {src} → {dst} ({top:,})"
    else:
        busiest = ""
    caption = (
        f"How many customers moved from each segment (rows) to each other segment (columns) "
        f"over the {days:,.1f} days covered by the changes: {total:,} moves{busiest}."
    )
    return Figure("fig-transitions", title, _render(fig), caption)


def sizes_over_time(sizes: pd.DataFrame, palette: dict[str, object]) -> Figure:
    fig, (ax,) = _new(9.0, 4.2)
    for segment in sizes.columns:
        ax.plot(sizes.index, sizes[segment], label=str(segment), color=palette.get(str(segment)),
                linewidth=1.8)  # fmt: skip
    title = "Segment sizes over time"
    ax.set_title(title)
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel("customers in segment (count)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    fig.autofmt_xdate()
    growth = (sizes.iloc[-1] - sizes.iloc[0]).sort_values(ascending=False)
    net = ", ".join(f"{name} {int(delta):+,}" for name, delta in growth.items())
    caption = (
        f"Customers in each segment over the period, rebuilt from the segment changes; net "
        f"change from the first to the last change: {net}."
    )
    return Figure("fig-sizes-over-time", title, _render(fig), caption)


# -- business view --------------------------------------------------------------------------------


def business(view: pd.DataFrame, currency: str, palette: dict[str, object]) -> Figure:
    data = view.sort_values("revenue", ascending=True)
    fig, axes = _new(12.0, 0.45 * len(data) + 2.4, ncols=3)
    names = data["segment"].astype(str)
    colours = [palette.get(n) for n in names]
    panels = (
        ("revenue", f"net revenue ({currency})", "Revenue"),
        ("aov", f"average order value ({currency})", "AOV"),
        ("repeat_rate", "buyers with ≥ 2 orders (%)", "Repeat rate"),
    )
    for ax, (column, label, panel_title) in zip(axes, panels, strict=True):
        ax.barh(names, data[column].fillna(0), color=colours)
        ax.set_title(panel_title)
        ax.set_xlabel(label)
        ax.set_ylabel("segment" if ax is axes[0] else "")
        if ax is not axes[0]:
            ax.set_yticklabels([])
        if column == "repeat_rate":
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        else:
            _money_axis(ax.xaxis)
    title = "Business view by segment"
    fig.suptitle(title)
    top = view.iloc[0]
    caption = (
        f"Revenue, average order value and repeat rate per segment, to pick targets: "
        f"{top['segment']} brings the most revenue ({top['revenue_share']:.0%}) with an AOV of "
        f"{_fmt(top['aov'], 0)} {currency} and a repeat rate of "
        f"{_fmt(100 * top['repeat_rate'], 0)}%."
    )
    return Figure("fig-business", title, _render(fig), caption)
