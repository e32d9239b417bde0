"""The report's composition section: who is in each segment, in words, plots and a table.

The numbers and the words come from :mod:`analytics.composition` (pure pandas); this module
draws one stacked bar chart per headline attribute (every segment and the whole shop, shares of
all customers, unknown included) and gathers what the builder puts on the page. Nothing here
reads files or talks to Kafka or Redis.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import PercentFormatter

from analytics.composition import (
    ALL,
    COLUMNS,
    COMPOSITION_ATTRIBUTES,
    DISTINCT_SHARE,
    MIN_KNOWN,
    MIN_KNOWN_SHARE,
    NOTE_LIFT,
    OTHER,
    UNKNOWN,
    Composition,
)
from analytics.report.figures import Figure

__all__ = ["PLOT_ATTRIBUTES", "CompositionParts", "composition_parts", "stacked_shares"]

#: Attribute -> its name in plot titles, for the attributes plotted (the headline ones).
PLOT_ATTRIBUTES: dict[str, str] = {
    "country": "Country",
    "age_band": "Age band",
    "favourite_category": "Favourite category (by spend)",
    "device": "Device (most clicks)",
}
#: Levels named in a plot (the shop's most common); the rest is "(other)".
PLOT_LEVELS = 5
_OTHER_COLOUR = "#bdbdbd"
_UNKNOWN_COLOUR = "#f0f0f0"


@dataclass
class CompositionParts:
    """What the builder shows: intro, notes, one sentence per segment, figures, tables, CSV."""

    intro: str = ""
    notes: list[str] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COLUMNS)))


def composition_parts(state: pd.DataFrame) -> CompositionParts:
    """The section's parts for a prepared state (export columns, ``segment`` where known)."""
    parts = CompositionParts()
    composition = Composition.of(state)
    if not composition.segments:
        parts.notes.append(
            "No customer carries a segment yet, so there is no composition per segment. Start "
            "the worker so it assigns segments, then run the report."
        )
        return parts
    missing = [a for a in COMPOSITION_ATTRIBUTES if a not in state]
    known = [a for a in COMPOSITION_ATTRIBUTES if composition.known(ALL, a)]
    parts.intro = (
        f"Who is in each segment, from the customers' profiles (country, region, age band, "
        f"gender, sign-up channel, loyalty tier, marketing consent) and from their orders and "
        f"clicks (favourite category by spend, most viewed category, device with the most "
        f"clicks). In words: each attribute known for at least {MIN_KNOWN} of a segment's "
        f"customers and {MIN_KNOWN_SHARE:.0%} of them, its most common value as a share of "
        f"the customers whose value is known, with its lift (share in the segment / share in "
        f"the whole shop of {len(state):,} customers) where that is at least {NOTE_LIFT:.2f}x "
        f"or at most {1 / NOTE_LIFT:.2f}x; a rarer value is named too when it stands out. The "
        f"plots show shares of all customers, unknown included; composition.csv has every "
        f"segment, attribute and level."
    )
    if not known:
        parts.notes.append(
            "No customer has a known profile, category or device yet, so no demographics are "
            "known. They fill in as profile events arrive and as orders and clicks carry a "
            "category and a device."
        )
    elif missing:
        parts.notes.append(
            f"The state has no column {', '.join(missing)} (an export from before attributes "
            f"were exported?): counted as unknown."
        )
    parts.lines = [(segment, composition.sentence(segment)) for segment in composition.segments]
    parts.figures = [
        stacked_shares(composition, attribute, label)
        for attribute, label in PLOT_ATTRIBUTES.items()
        if composition.known(ALL, attribute)
    ]
    parts.table = composition.table()
    standouts = standout_levels(composition)
    if not standouts.empty:
        parts.tables.append(("What sets each segment apart (largest lifts)", standouts))
    return parts


def standout_levels(composition: Composition, per_segment: int = 3) -> pd.DataFrame:
    """Per segment, the levels most over-represented against the shop (lift >= NOTE_LIFT),
    among attributes known well enough and levels holding at least DISTINCT_SHARE of them.
    """
    rows = []
    for segment in composition.segments:
        size = int(composition.sizes[segment])
        found = []
        for attribute in composition.attributes:
            levels = composition.levels(segment, attribute)
            known = int(levels.sum())
            if known < MIN_KNOWN or known < MIN_KNOWN_SHARE * size:
                continue
            shop = composition.levels(ALL, attribute)
            for level, n in levels.items():
                share = float(n) / known
                lift = composition.lift(segment, attribute, str(level))
                if share >= DISTINCT_SHARE and lift >= NOTE_LIFT:
                    shop_share = float(shop[level]) / float(shop.sum())
                    found.append((segment, attribute, level, share, shop_share, lift))
        found.sort(key=lambda r: (-r[5], r[1], r[2]))
        rows += found[:per_segment]
    columns = ["segment", "attribute", "level", "share_of_known", "shop_share_of_known", "lift"]
    return pd.DataFrame(rows, columns=columns)


def _render(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def stacked_shares(composition: Composition, attribute: str, label: str) -> Figure:
    """One horizontal stacked bar per segment and one for the shop: the attribute's levels."""
    shares = composition.shares(attribute, PLOT_LEVELS)
    shares = shares.loc[:, (shares > 0).any()]
    rows = list(shares.index)[::-1]  # the shop on top
    names = [
        f"{'all customers' if r == ALL else r} (n={int(composition.sizes[r]):,})" for r in rows
    ]
    fig = MplFigure(figsize=(5.6, 0.42 * len(rows) + 2.3), layout="constrained")
    ax = fig.subplots()
    named = [c for c in shares.columns if c not in (OTHER, UNKNOWN)]
    colours = dict(zip(named, sns.color_palette("Set2", max(len(named), 1)), strict=False))
    colours |= {OTHER: _OTHER_COLOUR, UNKNOWN: _UNKNOWN_COLOUR}
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for column in shares.columns:
        values = shares.loc[rows, column].to_numpy(dtype=float)
        ax.barh(y, values, left=left, height=0.7, color=colours[column], label=str(column),
                edgecolor="#9e9e9e" if column == UNKNOWN else "white", linewidth=0.6,
                hatch="///" if column == UNKNOWN else None)  # fmt: skip
        for i, value in enumerate(values):
            if value >= 0.09:
                ax.text(left[i] + value / 2, y[i], f"{value:.0%}", ha="center", va="center",
                        fontsize=8, color="#222")  # fmt: skip
        left += values
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(axis="y", visible=False)
    title = f"{label} by segment"
    ax.set_title(title)
    ax.set_xlabel("share of the segment's customers (%)")
    ax.set_ylabel("segment")
    # Below the bars, so two plots fit side by side on the page.
    columns = min(len(shares.columns), 4)
    fig.legend(loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    fig_id = "fig-composition-" + attribute.replace("_", "-")
    return Figure(fig_id, title, _render(fig), _caption(composition, attribute, label))


def _caption(composition: Composition, attribute: str, label: str) -> str:
    total = int(composition.sizes[ALL])
    unknown = 1 - composition.known(ALL, attribute) / total if total else 0.0
    best: tuple[float, str, str, float, float] | None = None
    for segment in composition.segments:
        levels = composition.levels(segment, attribute)
        known = int(levels.sum())
        if known < MIN_KNOWN:
            continue
        shop = composition.levels(ALL, attribute)
        for level, n in levels.items():
            share = float(n) / known
            lift = composition.lift(segment, attribute, str(level))
            if share >= DISTINCT_SHARE and (best is None or lift > best[0]):
                best = (lift, segment, str(level), share, float(shop[level]) / float(shop.sum()))
    what = label.split(" (")[0].lower()
    text = (
        f"Each segment's customers by {what}, against all {total:,} customers "
        f"({unknown:.0%} of whom have no known {what}, hatched)"
    )
    if best is not None and best[0] >= NOTE_LIFT:
        lift, segment, level, share, shop_share = best
        text += (
            f"; {level} stands out most in {segment}: {share:.0%} of its known values against "
            f"{shop_share:.0%} in the shop ({lift:.1f}x)"
        )
    else:
        text += f"; no segment has a value above {NOTE_LIFT:.2f}x the shop"
    return text + "."
