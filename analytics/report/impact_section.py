"""The report's impact section: per campaign, treatment vs holdout, lift with its 95 % CI.

The numbers come from :mod:`analytics.impact` (outcomes per assigned customer, KPIs per arm,
bootstrap intervals); this module draws, per campaign, the lift of each KPI with its interval
(a forest plot) and the two arms' values side by side, and gathers the table and the CSV
(``impact.csv``: one row per campaign and KPI; ``impact_customers.csv``: one row per assigned
customer, for BI). Nothing here reads files or talks to Kafka or Redis.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import PercentFormatter

from analytics.impact import IMPACT_COLUMNS, KPIS, OUTCOME_COLUMNS, impact_table, outcomes
from analytics.report.figures import Figure

__all__ = ["IMPACT_WINDOW_DAYS", "ImpactParts", "impact_parts"]

#: The window after assignment the report measures (days) and the conversion horizon.
IMPACT_WINDOW_DAYS = 30.0
CONVERSION_DAYS = 7.0
_TREATMENT, _HOLDOUT = "#1f77b4", "#9e9e9e"


@dataclass
class ImpactParts:
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=IMPACT_COLUMNS))
    customers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=OUTCOME_COLUMNS))


def impact_parts(
    assignments: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    changes: pd.DataFrame | None,
    as_of_ms: int,
    currency: str = "EUR",
    descriptions: dict[str, str] | None = None,
) -> ImpactParts:
    """The section's parts (``assignments`` None: impact was not read, e.g. a state file)."""
    parts = ImpactParts()
    if assignments is None:
        parts.notes.append(
            "Campaign impact was not computed: it needs the assignments in Redis and the orders "
            "topic (the report was made from a state file)."
        )
        return parts
    if assignments.empty:
        parts.notes.append(
            "No campaign has assigned anyone yet. Create one with `segstream campaign create "
            "NAME --segment S --holdout 0.1`; every customer in (or entering) the segment gets "
            "an arm, and this section then compares the two arms."
        )
        return parts
    data = outcomes(
        assignments,
        orders if orders is not None else pd.DataFrame(),
        changes,
        window_days=IMPACT_WINDOW_DAYS,
        conversion_days=CONVERSION_DAYS,
        as_of_ms=as_of_ms,
    )
    table = impact_table(data, window_days=IMPACT_WINDOW_DAYS)
    parts.table, parts.customers = table, data
    parts.intro = (
        f"Each campaign's customers are split at random (a hash of campaign and customer) into "
        f"a treatment that is messaged and a holdout that is not. For each customer, the "
        f"{IMPACT_WINDOW_DAYS:g} days after their assignment (cut at the report time while "
        f"still open) give: revenue and orders (orders placed in the window, net of their "
        f"cancellations and returns), conversion (an order within {CONVERSION_DAYS:g} days), "
        f"AOV, retention (2+ orders) and moves to an at-risk or lost segment. Lift = treatment "
        f"/ holdout - 1, with a 95 % bootstrap percentile interval (customers resampled within "
        f"each arm, 2,000 times, fixed seed); a KPI is significant when the interval of the "
        f"difference excludes 0."
    )
    for (name, segment), group in table.groupby(["campaign", "segment"], sort=True):
        first = group.iloc[0]
        about = (descriptions or {}).get(str(name), "")
        parts.notes.append(
            f"{name} (segment {segment}{': ' + about if about else ''}): "
            f"{int(first.treatment_customers):,} treatment and {int(first.holdout_customers):,} "
            f"holdout customers, observed a median {first.observed_days_median:.1f} of "
            f"{IMPACT_WINDOW_DAYS:g} days so far. " + _headline(group, currency)
        )
        slug = "".join(ch if ch.isalnum() else "-" for ch in str(name).lower())
        parts.figures.append(_lift_figure(str(name), group, slug))
        parts.figures.append(_arms_figure(str(name), group, slug, currency))
    parts.tables.append(("Impact per campaign: treatment vs holdout", _shown(table, currency)))
    return parts


def _headline(group: pd.DataFrame, currency: str) -> str:
    row = group.set_index("kpi").loc["revenue_per_customer"]
    if not math.isfinite(row.lift):
        return "The holdout has no revenue yet, so there is no lift to show."
    verdict = "significant" if row.significant else "not significant at 95 %"
    return (
        f"Revenue per customer {row.treatment:,.2f} vs {row.holdout:,.2f} {currency}: lift "
        f"{row.lift:+.1%} (95 % CI {_pct(row.lift_low)} to {_pct(row.lift_high)}), {verdict}."
    )


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1%}"


def _value(value: float, unit: str, currency: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "money":
        return f"{value:,.2f} {currency}"
    return f"{value:,.3f}"


def _shown(table: pd.DataFrame, currency: str) -> pd.DataFrame:
    rows = []
    for r in table.itertuples(index=False):
        treated = _value(r.treatment, r.unit, currency)
        held = _value(r.holdout, r.unit, currency)
        rows.append(
            {
                "campaign": r.campaign,
                "segment": r.segment,
                "KPI": r.label,
                "treatment (n)": f"{treated} ({r.treatment_customers:,})",
                "holdout (n)": f"{held} ({r.holdout_customers:,})",
                "lift": _pct(r.lift),
                "95 % CI of lift": f"{_pct(r.lift_low)} to {_pct(r.lift_high)}",
                "significant": "yes" if r.significant else "no",
            }
        )
    return pd.DataFrame(rows)


def _render(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def _lift_figure(name: str, group: pd.DataFrame, slug: str) -> Figure:
    g = group.set_index("kpi").reindex([k.name for k in KPIS])
    fig = MplFigure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(g))[::-1]
    lift = g["lift"].to_numpy(dtype=float)
    lo, hi = g["lift_low"].to_numpy(dtype=float), g["lift_high"].to_numpy(dtype=float)
    ok = np.isfinite(lift) & np.isfinite(lo) & np.isfinite(hi)
    colours = [_TREATMENT if s else _HOLDOUT for s in g["significant"].fillna(False)]
    for i in np.flatnonzero(ok):
        ax.plot([lo[i], hi[i]], [y[i], y[i]], color=colours[i], linewidth=2.5)
        ax.plot([lift[i]], [y[i]], "o", color=colours[i], markersize=7)
    for i in np.flatnonzero(~ok):
        ax.text(0, y[i], "n/a (no lift: the holdout is at 0)", va="center", ha="center", fontsize=8)
    ax.axvline(0, color="#444", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(g["label"].fillna(""))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    title = f"{name}: lift of each KPI, treatment vs holdout"
    ax.set_title(title)
    ax.set_xlabel("lift = treatment / holdout - 1 (bar: 95 % CI)")
    significant = [str(lbl) for lbl, s in zip(g["label"], g["significant"], strict=True) if s]
    caption = (
        f"Lift per KPI for campaign {name} with its 95 % bootstrap interval; blue = the "
        f"interval of the difference excludes 0 "
        + (f"({', '.join(significant)})." if significant else "(none is significant so far).")
    )
    return Figure(f"fig-impact-lift-{slug}", title, _render(fig), caption)


def _arms_figure(name: str, group: pd.DataFrame, slug: str, currency: str) -> Figure:
    g = group.set_index("kpi")
    fig = MplFigure(figsize=(7.5, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kpis, unit in (
        (axes[0], ["revenue_per_customer", "aov"], currency),
        (axes[1], ["conversion", "retention", "to_at_risk"], "share"),
    ):
        x = np.arange(len(kpis))
        t = g.loc[kpis, "treatment"].to_numpy(dtype=float)
        h = g.loc[kpis, "holdout"].to_numpy(dtype=float)
        ax.bar(x - 0.2, np.nan_to_num(t), width=0.4, color=_TREATMENT, label="treatment")
        ax.bar(x + 0.2, np.nan_to_num(h), width=0.4, color=_HOLDOUT, label="holdout")
        ax.set_xticks(x)
        ax.set_xticklabels([str(g.loc[k, "label"]).split(" (")[0] for k in kpis], fontsize=8)
        if unit == "share":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_ylabel("share of the arm's customers")
        else:
            ax.set_ylabel(currency)
    title = f"{name}: treatment and holdout side by side"
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2,
               frameon=False, fontsize=8)  # fmt: skip
    row = g.loc["revenue_per_customer"]
    caption = (
        f"Revenue per customer and AOV ({currency}), and the share of customers converting, "
        f"retained and moving to at-risk/lost, for {int(row.treatment_customers):,} treatment "
        f"and {int(row.holdout_customers):,} holdout customers of {name}."
    )
    return Figure(f"fig-impact-arms-{slug}", title, _render(fig), caption)
