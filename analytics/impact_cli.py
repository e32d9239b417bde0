"""``segstream impact [--campaign NAME] [--window-days 30]``: treatment vs holdout, with CIs.

Reads the assignments from Redis, the orders of the assigned customers from the orders topic
(or ``--orders-file``) and the segment changes, computes per campaign the KPIs of each arm over
the window after each customer's assignment, and prints them with the lift and its 95 %
bootstrap interval (:mod:`analytics.impact`). ``--out`` also writes the table as CSV.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import click
import pandas as pd

from segstream.errors import ConfigError
from segstream.options import settings_options, var_option
from segstream.settings import Settings
from worker.preflight import checks_access

__all__ = ["format_table", "impact"]


def _number(value: float, unit: str, currency: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "money":
        return f"{value:,.2f} {currency}"
    return f"{value:,.3f}"


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1%}"


def format_table(table: pd.DataFrame, currency: str = "EUR") -> str:
    """The impact table as text: one block per campaign, one line per KPI."""
    if table.empty:
        return "no assignment yet: no campaign, or nobody in its segment (segstream campaign list)"
    out: list[str] = []
    for (name, segment), group in table.groupby(["campaign", "segment"], sort=True):
        first = group.iloc[0]
        out.append(
            f"campaign {name} on segment {segment}: {int(first.treatment_customers):,} treatment, "
            f"{int(first.holdout_customers):,} holdout; window {first.window_days:g} days "
            f"(observed so far: median {first.observed_days_median:.1f} days)"
        )
        out.append(
            f"  {'KPI':<38} {'treatment':>16} {'holdout':>16} {'lift':>8}  "
            f"{'95% CI (lift)':<20} significant"
        )
        for row in group.itertuples(index=False):
            ci = f"[{_pct(row.lift_low)}, {_pct(row.lift_high)}]"
            out.append(
                f"  {row.label:<38} {_number(row.treatment, row.unit, currency):>16} "
                f"{_number(row.holdout, row.unit, currency):>16} {_pct(row.lift):>8}  "
                f"{ci:<20} {'yes' if row.significant else 'no'}"
            )
    out.append(
        "lift = treatment / holdout - 1; 95 % bootstrap percentile intervals (customers resampled "
        "within each arm); significant = the interval of the difference excludes 0"
    )
    return "\n".join(out)


@click.command("impact")
@var_option(
    "SEGSTREAM_IMPACT_CAMPAIGN", "--campaign", default="", help="One campaign (default: all)."
)
@var_option(
    "SEGSTREAM_IMPACT_WINDOW_DAYS",
    "--window-days",
    type=float,
    default=30.0,
    help="Days after each customer's assignment the KPIs cover.",
)
@var_option(
    "SEGSTREAM_IMPACT_CONVERSION_DAYS",
    "--conversion-days",
    type=float,
    default=7.0,
    help="Conversion = an order within this many days of the assignment.",
)
@var_option(
    "SEGSTREAM_IMPACT_ORDERS_FILE",
    "--orders-file",
    default="",
    help="Read the orders from this file (JSON lines of order events, or a generic "
    "orders CSV) instead of the orders topic.",
)
@var_option(
    "SEGSTREAM_IMPACT_AS_OF",
    "--as-of",
    default="",
    help="The time windows are cut at, ISO 8601 (default: now).",
)
@var_option("SEGSTREAM_IMPACT_OUT", "--out", default="", help="Also write the table to this CSV.")
@settings_options
@checks_access(kafka=True, redis=True)
def impact(
    campaign: str,
    window_days: float,
    conversion_days: float,
    orders_file: str,
    as_of: str,
    out: str,
    settings: Settings,
) -> None:
    """Campaign impact: KPIs of treatment vs holdout after assignment, lift with 95 % CI."""
    from analytics.impact import impact_table, outcomes
    from analytics.impact_sources import gather
    from analytics.report.cli import parse_as_of

    if window_days <= 0 or conversion_days <= 0:
        raise ConfigError("--window-days and --conversion-days must be positive")
    when = parse_as_of(as_of) if as_of else datetime.now(UTC)
    inputs = gather(settings, campaign=campaign or None, orders_file=orders_file)
    if campaign and campaign not in inputs.campaigns.by_name:
        raise ConfigError(f"no campaign named {campaign!r} (segstream campaign list)")
    for what, text in inputs.sources.items():
        click.echo(f"{what}: {text}")
    data = outcomes(
        inputs.assignments,
        inputs.orders,
        inputs.changes,
        window_days=window_days,
        conversion_days=conversion_days,
        as_of_ms=int(when.timestamp() * 1000),
    )
    table = impact_table(data, window_days=window_days)
    click.echo(format_table(table, settings.report.currency))
    if out:
        table.to_csv(out, index=False, float_format="%.10g")
        click.echo(f"table written: {out}")
