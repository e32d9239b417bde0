"""The report's numbers: pure pandas over the export-contract state frame and the changes frame.

Nothing here draws, reads files or talks to Kafka or Redis, so every table can be checked
against a hand computation in a unit test.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from analytics.report.errors import ReportInputError

__all__ = [
    "CHANGE_COLUMNS",
    "NEW_CUSTOMER",
    "STATE_COLUMNS",
    "business_view",
    "conversion_by_sessions",
    "eda_summary",
    "lorenz",
    "prepare_changes",
    "prepare_state",
    "segment_profile",
    "segment_sizes_over_time",
    "top_share",
    "transition_matrix",
]

#: The export / feature contract every team uses for a customer's state as of a time.
STATE_COLUMNS: tuple[str, ...] = (
    "customer_id", "frequency", "monetary", "aov", "first_order_ts", "last_order_ts",
    "recency_days", "tenure_days", "items", "last_seen_ts", "sessions", "page_views",
    "product_views", "add_to_carts", "checkout_starts", "abandoned_carts", "views_per_order",
)  # fmt: skip
_REQUIRED = ("customer_id", "frequency", "monetary")
_TIMESTAMPS = ("first_order_ts", "last_order_ts", "last_seen_ts")
CHANGE_COLUMNS: tuple[str, ...] = (
    "customer_id", "old_segment", "new_segment", "reason", "event_time", "processing_time",
)  # fmt: skip
#: Row label of the transition matrix for a customer's first segment (``old_segment`` None).
NEW_CUSTOMER = "(first segment)"
_DAY_S = 86400.0


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def prepare_state(state: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """A clean copy: typed columns, every contract column present, recency/tenure as of ``as_of``.

    Recency and tenure are derived again from the order timestamps, so a state exported at one
    time can be reported as of another; where the timestamps are absent the given columns stay.
    ``monetary`` is net of cancellations and returns, so it may be 0 for a customer whose every
    order was refunded.
    """
    missing = [c for c in _REQUIRED if c not in state.columns]
    if missing:
        raise ReportInputError(
            f"customer state lacks the column(s) {', '.join(missing)}; "
            f"expected the export contract: {', '.join(STATE_COLUMNS)}"
        )
    frame = state.copy()
    frame["customer_id"] = frame["customer_id"].astype(str)
    if frame["customer_id"].duplicated().any():
        dupes = frame.loc[frame["customer_id"].duplicated(), "customer_id"].head(3).tolist()
        raise ReportInputError(f"customer state lists some customers twice, e.g. {dupes}")
    for column in STATE_COLUMNS:
        if column == "customer_id":
            continue
        if column in _TIMESTAMPS:
            frame[column] = (
                _utc(frame[column])
                if column in frame
                else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
            )
        elif column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        else:
            frame[column] = np.nan
    for column in ("frequency", "monetary", "items", "sessions", "page_views", "product_views",
                   "add_to_carts", "checkout_starts", "abandoned_carts"):  # fmt: skip
        frame[column] = frame[column].fillna(0.0)
    as_of_ts = pd.Timestamp(as_of)
    as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts
    has_last = frame["last_order_ts"].notna()
    frame.loc[has_last, "recency_days"] = (
        as_of_ts - frame.loc[has_last, "last_order_ts"]
    ).dt.total_seconds() / _DAY_S
    has_first = frame["first_order_ts"].notna()
    frame.loc[has_first, "tenure_days"] = (
        as_of_ts - frame.loc[has_first, "first_order_ts"]
    ).dt.total_seconds() / _DAY_S
    buyers = frame["frequency"] > 0
    frame["aov"] = np.where(buyers, frame["monetary"] / frame["frequency"].where(buyers), np.nan)
    if frame["views_per_order"].isna().all():
        # The state store's definition (worker.core.rfm.CustomerState.views_per_order).
        frame["views_per_order"] = (frame["page_views"] + frame["product_views"]) / frame[
            "frequency"
        ].clip(lower=1)
    if "segment" in frame:
        frame["segment"] = frame["segment"].astype("string").replace("", pd.NA)
    return frame


def prepare_changes(changes: pd.DataFrame | None, as_of: datetime) -> pd.DataFrame:
    """Segment changes up to ``as_of`` in event-time order, timestamps as UTC."""
    if changes is None or changes.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in CHANGE_COLUMNS})
    missing = [c for c in ("customer_id", "old_segment", "new_segment", "event_time")
               if c not in changes.columns]  # fmt: skip
    if missing:
        raise ReportInputError(f"segment changes lack the column(s) {', '.join(missing)}")
    frame = changes.copy()
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["event_time"] = _utc(frame["event_time"])
    if "processing_time" in frame:
        frame["processing_time"] = _utc(frame["processing_time"])
    if "reason" not in frame:
        frame["reason"] = "unknown"
    as_of_ts = pd.Timestamp(as_of)
    as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts
    frame = frame[frame["event_time"].notna() & (frame["event_time"] <= as_of_ts)]
    order = ["event_time", "processing_time"] if "processing_time" in frame else ["event_time"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _describe(values: pd.Series, name: str, unit: str, population: str) -> dict[str, object]:
    data = values.dropna()
    row: dict[str, object] = {"metric": name, "unit": unit, "population": population,
                              "customers": int(data.size)}  # fmt: skip
    if data.empty:
        return row | dict.fromkeys(("mean", "p10", "p25", "median", "p75", "p90", "max"), np.nan)
    quantiles = data.quantile([0.1, 0.25, 0.5, 0.75, 0.9])
    return row | {
        "mean": float(data.mean()),
        "p10": float(quantiles.loc[0.1]),
        "p25": float(quantiles.loc[0.25]),
        "median": float(quantiles.loc[0.5]),
        "p75": float(quantiles.loc[0.75]),
        "p90": float(quantiles.loc[0.9]),
        "max": float(data.max()),
    }


def eda_summary(state: pd.DataFrame, currency: str) -> pd.DataFrame:
    """One row per EDA metric: count, mean and quantiles, with unit and population."""
    buyers = state[state["frequency"] > 0]
    everyone, with_orders = "all customers", "customers with at least one order"
    rows = [
        _describe(state["frequency"], "purchase frequency", "orders", everyone),
        _describe(buyers["aov"], "average order value", currency, with_orders),
        _describe(
            buyers["monetary"], "customer lifetime value (net revenue)", currency, with_orders
        ),
        _describe(buyers["recency_days"], "recency", "days", with_orders),
        _describe(buyers["tenure_days"], "tenure", "days", with_orders),
        _describe(state["sessions"], "sessions", "sessions", everyone),
        _describe(state["product_views"], "product views", "views", everyone),
        _describe(buyers["views_per_order"], "views per order", "views/order", with_orders),
        _describe(state["abandoned_carts"], "abandoned carts", "carts", everyone),
    ]
    return pd.DataFrame(rows)


def lorenz(monetary: pd.Series) -> tuple[np.ndarray, np.ndarray, float]:
    """Lorenz curve of net revenue over customers with positive revenue, and the Gini index.

    Returns (share of customers from poorest to richest, cumulative share of revenue, gini),
    both curves starting at 0 and ending at 1.
    """
    values = np.sort(monetary[monetary > 0].to_numpy(dtype=float))
    if values.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    cumulative = np.concatenate([[0.0], np.cumsum(values)]) / values.sum()
    population = np.linspace(0.0, 1.0, values.size + 1)
    gini = 1.0 - 2.0 * float(np.trapezoid(cumulative, population))
    return population, cumulative, gini


def top_share(monetary: pd.Series, fraction: float) -> float:
    """Share of net revenue from the top ``fraction`` of customers with positive revenue."""
    values = np.sort(monetary[monetary > 0].to_numpy(dtype=float))[::-1]
    if values.size == 0:
        return float("nan")
    top = max(1, int(np.ceil(fraction * values.size)))
    return float(values[:top].sum() / values.sum())


_SESSION_BINS = [0, 1, 2, 3, 5, 10, np.inf]
_SESSION_LABELS = ["1", "2", "3", "4-5", "6-10", "11+"]


def conversion_by_sessions(state: pd.DataFrame) -> pd.DataFrame:
    """Per session-count bucket: customers, share who ordered, mean orders, mean abandoned carts."""
    seen = state[state["sessions"] > 0]
    buckets = pd.cut(seen["sessions"], bins=_SESSION_BINS, labels=_SESSION_LABELS, right=True)
    grouped = seen.groupby(buckets, observed=False)
    return pd.DataFrame(
        {
            "sessions": _SESSION_LABELS,
            "customers": grouped.size().to_numpy(),
            "conversion": grouped["frequency"].apply(lambda f: float((f > 0).mean())).to_numpy(),
            "mean_orders": grouped["frequency"].mean().to_numpy(),
            "mean_abandoned_carts": grouped["abandoned_carts"].mean().to_numpy(),
        }
    )


def _segmented(state: pd.DataFrame) -> pd.DataFrame:
    if "segment" not in state:
        return state.iloc[0:0]
    return state[state["segment"].notna()]


def segment_profile(state: pd.DataFrame) -> pd.DataFrame:
    """Per segment: size, shares of customers and revenue, and median features in real units."""
    seg = _segmented(state)
    if seg.empty:
        return pd.DataFrame()
    total_customers = len(seg)
    total_revenue = seg["monetary"].sum()
    grouped = seg.groupby("segment", observed=True)
    profile = pd.DataFrame(
        {
            "customers": grouped.size(),
            "customer_share": grouped.size() / total_customers,
            "revenue_share": grouped["monetary"].sum() / total_revenue if total_revenue else np.nan,
            "median_recency_days": grouped["recency_days"].median(),
            "median_frequency": grouped["frequency"].median(),
            "median_monetary": grouped["monetary"].median(),
            "median_aov": grouped["aov"].median(),
            "median_tenure_days": grouped["tenure_days"].median(),
            "median_sessions": grouped["sessions"].median(),
            "median_product_views": grouped["product_views"].median(),
            "mean_abandoned_carts": grouped["abandoned_carts"].mean(),
        }
    )
    profile = profile.sort_values("revenue_share", ascending=False)
    return profile.reset_index()


def business_view(state: pd.DataFrame) -> pd.DataFrame:
    """Per segment: revenue, orders, AOV, repeat rate, revenue per customer, days since last order.

    AOV is the segment's revenue divided by its orders (not a mean of per-customer AOVs), and
    the repeat rate is the share of the segment's buyers with two orders or more.
    """
    seg = _segmented(state)
    if seg.empty:
        return pd.DataFrame()
    grouped = seg.groupby("segment", observed=True)
    revenue = grouped["monetary"].sum()
    orders = grouped["frequency"].sum()
    buyers = grouped["frequency"].apply(lambda f: int((f > 0).sum()))
    repeaters = grouped["frequency"].apply(lambda f: int((f >= 2).sum()))
    view = pd.DataFrame(
        {
            "customers": grouped.size(),
            "buyers": buyers,
            "revenue": revenue,
            "revenue_share": revenue / revenue.sum() if revenue.sum() else np.nan,
            "orders": orders,
            "aov": revenue / orders.where(orders > 0),
            "repeat_rate": repeaters / buyers.where(buyers > 0),
            "revenue_per_customer": revenue / grouped.size(),
            "median_recency_days": grouped["recency_days"].median(),
        }
    )
    return view.sort_values("revenue", ascending=False).reset_index()


def transition_matrix(changes: pd.DataFrame) -> pd.DataFrame:
    """Counts of changes from row segment (old) to column segment (new) over the period."""
    if changes.empty:
        return pd.DataFrame()
    old = changes["old_segment"].astype("object").where(changes["old_segment"].notna(), None)
    old = old.fillna(NEW_CUSTOMER).astype(str)
    new = changes["new_segment"].astype(str)
    matrix = pd.crosstab(old.rename("from_segment"), new.rename("to_segment"))
    rows = [r for r in matrix.index if r != NEW_CUSTOMER]
    ordered_rows = ([NEW_CUSTOMER] if NEW_CUSTOMER in matrix.index else []) + sorted(rows)
    return matrix.reindex(index=ordered_rows, columns=sorted(matrix.columns), fill_value=0)


def segment_sizes_over_time(
    changes: pd.DataFrame, state: pd.DataFrame, points: int = 60
) -> pd.DataFrame:
    """Segment sizes at ``points`` evenly spaced times over the changes' period.

    Each customer with changes is, before their first change, in that change's ``old_segment``
    (not counted if None) and afterwards in the ``new_segment`` of their latest change. A
    segmented customer of ``state`` with no change in the period sits in their current segment
    throughout. So a period that starts after the topic's retention still gives true sizes.
    Index = time (UTC), columns = segments.
    """
    if changes.empty:
        return pd.DataFrame()
    start, end = changes["event_time"].min(), changes["event_time"].max()
    if start == end:
        end = start + pd.Timedelta(seconds=1)
    grid = pd.date_range(start, end, periods=max(points, 2))
    first = changes.groupby("customer_id", sort=False).head(1)
    baseline = first["old_segment"].dropna().astype(str).value_counts()
    if "segment" in state:
        quiet = _segmented(state)
        quiet = quiet[~quiet["customer_id"].isin(first["customer_id"])]
        baseline = baseline.add(quiet["segment"].astype(str).value_counts(), fill_value=0)
    minus = changes.dropna(subset=["old_segment"])
    deltas = pd.concat(
        [
            pd.DataFrame(
                {"t": changes["event_time"], "segment": changes["new_segment"].astype(str), "d": 1}
            ),
            pd.DataFrame(
                {"t": minus["event_time"], "segment": minus["old_segment"].astype(str), "d": -1}
            ),
        ]
    )
    # Index of the first grid point at or after each change: the change counts from there on.
    deltas["bucket"] = np.searchsorted(grid.to_numpy(), deltas["t"].to_numpy(), side="left")
    net = deltas.pivot_table(index="bucket", columns="segment", values="d", aggfunc="sum")
    net = net.reindex(range(len(grid)), fill_value=0).fillna(0).cumsum()
    segments = sorted(set(net.columns) | set(baseline.index))
    net = net.reindex(columns=segments, fill_value=0)
    sizes = net + baseline.reindex(segments, fill_value=0)
    sizes.index = grid
    sizes.index.name = "time"
    return sizes.astype(int)
