"""Where training data comes from: a generic orders CSV, an export file, or Redis.

Each source returns a pandas DataFrame with the export contract columns
(:data:`worker.segmentation.features.EXPORT_COLUMNS`), one row per customer, as of ``as_of``.

- :func:`state_from_orders` builds the state from a generic orders file
  ``customer_id,order_id,ts,amount[,currency,status]`` with pandas, by the rules of
  ``worker.core.rfm``: frequency = distinct placed orders minus distinct cancelled ones;
  monetary = placed minus cancelled minus returned amounts; first/last order time from placed
  rows. Without event ids, a repeated (order_id, status) row of placed/cancelled counts once;
  every return row counts (partial returns). ``status`` defaults to ``placed``. Behaviour
  columns are 0 (an orders file has no clicks).
- :func:`state_from_export` reads an export (CSV, JSON lines or JSON records).
- :func:`state_from_redis` reads every customer hash through the state store's reader
  (``worker.state.StateReader``: SCAN + one pipelined HGETALL per page), rows via
  ``worker.core.rfm.features``. This is the only function here that touches Redis.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from worker.connect import RedisTarget
from worker.core.attributes import ATTRIBUTE_COLUMNS
from worker.segmentation.errors import FeatureError
from worker.segmentation.features import EXPORT_COLUMNS

_DAY_S = 86_400.0


def _read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FeatureError(f"{p}: no such file")
    if p.suffix in (".jsonl", ".ndjson"):
        return pd.read_json(p, lines=True)
    if p.suffix == ".json":
        return pd.read_json(p)
    return pd.read_csv(p)


def state_from_orders(
    orders: pd.DataFrame | str | Path, as_of: datetime | None = None
) -> pd.DataFrame:
    """Export-contract state from a generic orders table (see module docstring)."""
    src = orders if isinstance(orders, pd.DataFrame) else _read_table(orders)
    where = "orders" if isinstance(orders, pd.DataFrame) else str(orders)
    missing = {"customer_id", "order_id", "ts", "amount"} - set(src.columns)
    if missing:
        raise FeatureError(
            f"{where}: missing column(s) {sorted(missing)}; expected "
            "customer_id,order_id,ts,amount[,currency,status]"
        )
    df = src.copy()
    df["customer_id"] = df["customer_id"].astype(str)
    df["order_id"] = df["order_id"].astype(str)
    df["status"] = df["status"].fillna("placed").astype(str) if "status" in df else "placed"
    bad_status = set(df["status"]) - {"placed", "cancelled", "returned"}
    if bad_status:
        raise FeatureError(f"{where}: unknown status value(s) {sorted(bad_status)}")
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce", format="ISO8601")
    df["amount"] = pd.to_numeric(df["amount"], errors="coerce")
    bad = df["ts"].isna() | df["amount"].isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
        raise FeatureError(f"{where}: line {line}: unparseable ts or amount")
    once = df[df["status"] != "returned"].drop_duplicates(["order_id", "status"])
    df = pd.concat([once, df[df["status"] == "returned"]])
    sign = np.where(df["status"] == "placed", 1.0, -1.0)
    df["net"] = df["amount"] * sign
    g = df.groupby("customer_id", sort=True)
    placed = df[df["status"] == "placed"].groupby("customer_id")
    cancelled = df[df["status"] == "cancelled"].groupby("customer_id")
    out = pd.DataFrame(index=g.size().index)
    n_placed = placed["order_id"].nunique().reindex(out.index, fill_value=0)
    n_cancel = cancelled["order_id"].nunique().reindex(out.index, fill_value=0)
    out["frequency"] = (n_placed - n_cancel).clip(lower=0).astype("int64")
    out["monetary"] = g["net"].sum().round(2)
    out["aov"] = np.where(out["frequency"] > 0, out["monetary"] / out["frequency"].clip(lower=1), 0)
    first = placed["ts"].min().reindex(out.index)
    last = placed["ts"].max().reindex(out.index)
    ref = pd.Timestamp(as_of) if as_of is not None else df["ts"].max()
    out["recency_days"] = ((ref - last).dt.total_seconds() / _DAY_S).clip(lower=0)
    out["tenure_days"] = ((ref - first).dt.total_seconds() / _DAY_S).clip(lower=0)
    out["first_order_ts"] = first.map(_iso)
    out["last_order_ts"] = last.map(_iso)
    out["last_seen_ts"] = g["ts"].max().map(_iso)
    out["items"] = g["quantity"].sum() if "quantity" in df else 0
    for col in ("sessions", "page_views", "product_views", "add_to_carts", "checkout_starts",
                "abandoned_carts"):  # fmt: skip
        out[col] = 0
    out["views_per_order"] = 0.0
    for col in ATTRIBUTE_COLUMNS:  # an orders file carries no profile (None = unknown)
        out[col] = None
    out = out.reset_index()
    return out[list(EXPORT_COLUMNS)]


def _iso(ts: pd.Timestamp) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    return str(ts.tz_convert(UTC).isoformat()).replace("+00:00", "Z")


def state_from_export(path: str | Path) -> pd.DataFrame:
    """An export file (CSV / JSON lines / JSON) with the contract columns."""
    df = _read_table(path)
    missing = {"customer_id", "frequency"} - set(df.columns)
    if missing:
        raise FeatureError(f"{path}: not an export, missing column(s) {sorted(missing)}")
    df["customer_id"] = df["customer_id"].astype(str)
    return df


def state_from_redis(
    redis: RedisTarget, prefix: str, as_of: datetime | None = None
) -> pd.DataFrame:
    """Every customer in Redis under ``prefix`` as export rows as of ``as_of`` (default now)."""
    from worker.core.rfm import features
    from worker.state import StateReader

    when = as_of or datetime.now(UTC)
    with StateReader(redis, prefix) as reader:
        rows = [features(state, when) for state in reader.customers()]
    return pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
