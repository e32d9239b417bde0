"""Campaign impact: per-customer outcomes after assignment, per-arm KPIs, lift with a 95 % CI.

Pure pandas/numpy, no I/O (the readers are in :mod:`analytics.impact_sources`).

**Outcomes** (:func:`outcomes`), per assigned customer and campaign, over the *window*
``[assigned, assigned + window_days)`` (cut at ``as_of`` while it is still open):

- ``orders``: distinct orders placed in the window, minus those of them cancelled (whenever);
- ``revenue``: their totals, minus cancellations and returns of those orders (a partial return
  counts by its event id) — the rules of the state (worker/core/rfm.py), restricted to orders
  placed in the window, so revenue is attributed to when it was won;
- ``converted``: an order (not cancelled) placed within ``conversion_days`` of the assignment;
- ``retained``: at least two such orders in the window (the customer came back: repeat
  purchase);
- ``to_at_risk``: a segment change into an at-risk or lost segment (:data:`CHURN_PREFIXES`)
  in the window.

**KPIs** per arm (:data:`KPIS`): revenue per customer, orders per customer, conversion, AOV
(revenue / orders, a ratio of sums), retention, moves to at-risk/lost. **Lift** = treatment /
holdout - 1 and **difference** = treatment - holdout, each with a **95 % bootstrap percentile
interval**: customers are resampled with replacement within each arm (the arm sizes are fixed
by design), :data:`RESAMPLES` times with a fixed seed, and every KPI is recomputed on each
resample. Why the bootstrap rather than Welch's t: revenue per customer is zero-inflated and
heavy-tailed (most customers buy nothing in a window, a few buy a lot), AOV and lift are ratios
(Welch would need the delta method, whose normal approximation is poor when the holdout is a
small 10 %), and the bootstrap handles all six KPIs the same way without a normality
assumption; the fixed seed makes the report reproducible. Its cost (resamples x customers) is
bounded by :data:`MAX_DRAWS` per chunk. The unit tests (tests/unit/test_impact.py) check it on
simulated truth: a 30 % effect on order frequency is recovered within the interval, and with no
effect the interval holds 0 at the stated rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CHURN_PREFIXES",
    "IMPACT_COLUMNS",
    "KPIS",
    "OUTCOME_COLUMNS",
    "Kpi",
    "impact_table",
    "outcomes",
]

MS_PER_DAY = 86_400_000
#: Segment names (by prefix) counted as "at risk or lost" (the profile names of
#: analytics/profiles.py and the rules of worker/segmentation/rules.py).
CHURN_PREFIXES: tuple[str, ...] = ("at_risk", "lost", "cant_lose")
RESAMPLES = 2000
SEED = 20
LEVEL = 0.95
#: Index draws per bootstrap chunk (memory: 8 bytes each).
MAX_DRAWS = 4_000_000

OUTCOME_COLUMNS = [
    "campaign", "segment", "customer_id", "arm", "assigned_ms", "observed_days",
    "orders", "revenue", "converted", "retained", "to_at_risk",
]  # fmt: skip


@dataclass(frozen=True)
class Kpi:
    name: str
    label: str
    #: ``mean`` of ``column`` per customer, or ``ratio``: sum(column) / sum(denominator).
    kind: str
    column: str
    denominator: str = ""
    #: How the value is shown: ``money``, ``share`` or ``count``.
    unit: str = "count"


KPIS: tuple[Kpi, ...] = (
    Kpi("revenue_per_customer", "Revenue per customer", "mean", "revenue", unit="money"),
    Kpi("orders_per_customer", "Orders per customer", "mean", "orders"),
    Kpi("conversion", "Conversion (ordered within N days)", "mean", "converted", unit="share"),
    Kpi("aov", "AOV (revenue / orders)", "ratio", "revenue", "orders", unit="money"),
    Kpi("retention", "Retention (2+ orders in the window)", "mean", "retained", unit="share"),
    Kpi("to_at_risk", "Moved to at-risk/lost", "mean", "to_at_risk", unit="share"),
)

IMPACT_COLUMNS = [
    "campaign", "segment", "kpi", "label", "unit", "treatment_customers", "holdout_customers",
    "treatment", "holdout", "difference", "difference_low", "difference_high", "lift",
    "lift_low", "lift_high", "significant", "window_days", "observed_days_median",
]  # fmt: skip


def _empty_outcomes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTCOME_COLUMNS})


def outcomes(
    assignments: pd.DataFrame,
    orders: pd.DataFrame,
    changes: pd.DataFrame | None,
    *,
    window_days: float = 30.0,
    conversion_days: float = 7.0,
    as_of_ms: int,
) -> pd.DataFrame:
    """One row per assignment with its outcomes over the window (see the module docstring).

    ``assignments``: campaign, segment, customer_id, arm, assigned_ms. ``orders``: customer_id,
    order_id, event_id, status (placed | cancelled | returned), time_ms, total. ``changes``:
    customer_id, new_segment, time_ms (or None).
    """
    if assignments.empty:
        return _empty_outcomes()
    a = assignments[["campaign", "segment", "customer_id", "arm", "assigned_ms"]].copy()
    a["assigned_ms"] = a["assigned_ms"].astype("int64")
    window_ms = int(window_days * MS_PER_DAY)
    a["end_ms"] = np.minimum(a["assigned_ms"] + window_ms, as_of_ms)
    a["observed_days"] = ((a["end_ms"] - a["assigned_ms"]).clip(lower=0)) / MS_PER_DAY
    a["row"] = np.arange(len(a))
    per = pd.DataFrame({"row": a["row"]})
    o = _net_orders(orders)
    if not o.empty:
        m = o.merge(a[["row", "customer_id", "assigned_ms", "end_ms"]], on="customer_id")
        m = m[(m["time_ms"] >= m["assigned_ms"]) & (m["time_ms"] < m["end_ms"])]
        m = m[m["kept"]]
        conv_ms = int(conversion_days * MS_PER_DAY)
        m = m.assign(early=m["time_ms"] < m["assigned_ms"] + conv_ms)
        g = m.groupby("row")
        per = per.merge(
            pd.DataFrame(
                {"orders": g.size(), "revenue": g["net"].sum(), "early": g["early"].any()}
            ),
            left_on="row", right_index=True, how="left",
        )  # fmt: skip
    for column, fill in (("orders", 0), ("revenue", 0.0), ("early", False)):
        if column not in per:
            per[column] = fill
        per[column] = per[column].fillna(fill)
    churned = pd.Series(False, index=a.index)
    if changes is not None and not changes.empty:
        c = changes[changes["new_segment"].astype(str).str.startswith(CHURN_PREFIXES)]
        c = c[["customer_id", "time_ms"]].merge(
            a[["row", "customer_id", "assigned_ms", "end_ms"]], on="customer_id"
        )
        c = c[(c["time_ms"] >= c["assigned_ms"]) & (c["time_ms"] < c["end_ms"])]
        churned = a["row"].isin(set(c["row"]))
    out = a[["campaign", "segment", "customer_id", "arm", "assigned_ms", "observed_days"]].copy()
    out["orders"] = per["orders"].to_numpy().astype("int64")
    out["revenue"] = per["revenue"].to_numpy().astype(float).round(2)
    out["converted"] = per["early"].to_numpy().astype(bool)
    out["retained"] = out["orders"] >= 2
    out["to_at_risk"] = churned.to_numpy()
    return out.reset_index(drop=True)


def _net_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Placed orders (one row each, first placed event) with their net value and whether they
    stand (not cancelled), from order events that may repeat (replays)."""
    cols = ["customer_id", "order_id", "time_ms", "net", "kept"]
    if orders.empty:
        return pd.DataFrame(columns=cols)
    o = orders.copy()
    o["event_id"] = o["event_id"].fillna("").astype(str)
    placed = o[o["status"] == "placed"].sort_values("time_ms")
    placed = placed.drop_duplicates(["customer_id", "order_id"], keep="first")
    cancelled = o[o["status"] == "cancelled"].drop_duplicates(["customer_id", "order_id"])
    returned = o[o["status"] == "returned"]
    with_id = returned[returned["event_id"] != ""].drop_duplicates(["customer_id", "event_id"])
    returned = pd.concat([with_id, returned[returned["event_id"] == ""]])
    back = returned.groupby(["customer_id", "order_id"])["total"].sum()
    p = placed[["customer_id", "order_id", "time_ms", "total"]].set_index(
        ["customer_id", "order_id"]
    )
    p["net"] = p["total"] - back.reindex(p.index).fillna(0.0)
    gone = pd.MultiIndex.from_frame(cancelled[["customer_id", "order_id"]])
    p["kept"] = ~p.index.isin(gone)
    return p.reset_index()[cols]


# -- statistics ------------------------------------------------------------------------------------
def _value(kpi: Kpi, sums: dict[str, np.ndarray], n: int) -> np.ndarray:
    if kpi.kind == "ratio":
        den = sums[kpi.denominator]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, sums[kpi.column] / np.where(den > 0, den, 1), np.nan)
    return sums[kpi.column] / max(n, 1)


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    names = {k.column for k in KPIS} | {k.denominator for k in KPIS if k.denominator}
    return {c: frame[c].to_numpy(dtype=float) for c in names}


def _boot_sums(values: dict[str, np.ndarray], resamples: int, rng: np.random.Generator
               ) -> dict[str, np.ndarray]:  # fmt: skip
    """Per column, its sum on each of ``resamples`` resamples with replacement."""
    n = len(next(iter(values.values())))
    out = {c: np.empty(resamples) for c in values}
    if n == 0:
        for c in out:
            out[c][:] = 0.0
        return out
    chunk = max(1, MAX_DRAWS // n)
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        idx = rng.integers(0, n, size=(hi - lo, n))
        for c, v in values.items():
            out[c][lo:hi] = v[idx].sum(axis=1)
    return out


def _interval(draws: np.ndarray) -> tuple[float, float]:
    ok = draws[np.isfinite(draws)]
    if len(ok) < 0.9 * len(draws) or len(ok) == 0:
        return float("nan"), float("nan")
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return float(lo), float(hi)


def impact_table(
    data: pd.DataFrame,
    *,
    window_days: float = 30.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    kpis: Sequence[Kpi] = KPIS,
) -> pd.DataFrame:
    """Per campaign (and its segment) and KPI: arm sizes, values, difference and lift with
    their 95 % bootstrap intervals (see the module docstring)."""
    rows: list[dict[str, object]] = []
    if data.empty:
        return pd.DataFrame(columns=IMPACT_COLUMNS)
    for (campaign, segment), group in data.groupby(["campaign", "segment"], sort=True):
        t = group[group["arm"] == "treatment"]
        h = group[group["arm"] == "holdout"]
        rng = np.random.default_rng([seed, _stable(str(campaign))])
        tv, hv = _columns(t), _columns(h)
        t_sum = {c: np.array([v.sum()]) for c, v in tv.items()}
        h_sum = {c: np.array([v.sum()]) for c, v in hv.items()}
        t_boot = _boot_sums(tv, resamples, rng)
        h_boot = _boot_sums(hv, resamples, rng)
        observed = float(group["observed_days"].astype(float).median())
        for kpi in kpis:
            tval = float(_value(kpi, t_sum, len(t))[0]) if len(t) else float("nan")
            hval = float(_value(kpi, h_sum, len(h))[0]) if len(h) else float("nan")
            tb, hb = _value(kpi, t_boot, len(t)), _value(kpi, h_boot, len(h))
            diff = tval - hval
            d_lo, d_hi = _interval(tb - hb) if len(t) and len(h) else (np.nan, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                lift = tval / hval - 1 if hval else float("nan")
                l_lo, l_hi = _interval(tb / hb - 1) if len(t) and len(h) else (np.nan, np.nan)
            significant = bool(np.isfinite(d_lo) and (d_lo > 0 or d_hi < 0))
            rows.append({
                "campaign": campaign, "segment": segment, "kpi": kpi.name, "label": kpi.label,
                "unit": kpi.unit, "treatment_customers": len(t), "holdout_customers": len(h),
                "treatment": tval, "holdout": hval, "difference": diff,
                "difference_low": d_lo, "difference_high": d_hi, "lift": lift,
                "lift_low": l_lo, "lift_high": l_hi, "significant": significant,
                "window_days": window_days, "observed_days_median": observed,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=IMPACT_COLUMNS)


def _stable(text: str) -> int:
    """A stable integer of ``text`` for seeding (never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
