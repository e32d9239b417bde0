"""Model features from a DataFrame of export-contract rows, and scoring such rows (pandas).

The offline side (training, the report, ``segstream segments``) reads customer state as a
DataFrame with the columns of :data:`worker.segmentation.features.EXPORT_COLUMNS`; this module
turns it into the real-unit feature matrix the model takes. The streaming worker builds the same
matrix from Redis without pandas (:mod:`worker.scoring.vectors`, equal bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

from worker.segmentation.assign import Assignment, assign, ids_from_names
from worker.segmentation.categorical import KNOWN_CATEGORICAL
from worker.segmentation.errors import FeatureError
from worker.segmentation.features import KNOWN_FEATURES, RECENCY_CAP_DAYS
from worker.segmentation.model import SegmentModel

_DAY_S = 86_400.0


def _to_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def feature_frame(state: pd.DataFrame, as_of: datetime | None = None) -> pd.DataFrame:
    """All :data:`KNOWN_FEATURES` in real units, one row per customer (index kept).

    ``recency_days``/``tenure_days`` are taken from the frame when present and ``as_of`` is
    ``None``; otherwise they are derived from ``last_order_ts``/``first_order_ts`` and
    ``as_of`` (recency is never stored, it is a function of the as-of time).
    """
    if "frequency" not in state.columns:
        raise FeatureError("state has no 'frequency' column (export contract columns needed)")
    out = pd.DataFrame(index=state.index)
    freq = pd.to_numeric(state["frequency"], errors="coerce").fillna(0.0).clip(lower=0.0)
    out["frequency"] = freq
    monetary = pd.to_numeric(state.get("monetary", 0.0), errors="coerce")
    out["monetary"] = pd.Series(monetary, index=state.index).fillna(0.0)
    if "aov" in state.columns:
        aov = pd.to_numeric(state["aov"], errors="coerce")
    else:
        aov = out["monetary"] / freq.where(freq > 0)
    out["aov"] = aov.where(freq > 0, 0.0).fillna(0.0)
    for col, ts_col in (("recency_days", "last_order_ts"), ("tenure_days", "first_order_ts")):
        if as_of is not None and ts_col in state.columns:
            ts = _to_utc(state[ts_col])
            days = (pd.Timestamp(as_of).tz_convert("UTC") - ts).dt.total_seconds() / _DAY_S
        elif col in state.columns:
            days = pd.to_numeric(state[col], errors="coerce")
        else:
            raise FeatureError(f"state has neither {col!r} nor {ts_col!r} with an as-of time")
        # No order -> no recency/tenure: fill with the cap (documented in the module docstring).
        days = days.where(freq > 0).clip(lower=0.0, upper=RECENCY_CAP_DAYS)
        out[col] = days.fillna(RECENCY_CAP_DAYS if col == "recency_days" else 0.0)
    for col in KNOWN_FEATURES:
        if col in out.columns:
            continue
        if col in state.columns:
            out[col] = pd.to_numeric(state[col], errors="coerce").fillna(0.0).clip(lower=0.0)
        elif col == "views_per_order" and {"page_views", "product_views"} <= set(state.columns):
            views = sum(
                pd.to_numeric(state[c], errors="coerce").fillna(0.0)
                for c in ("page_views", "product_views")
            )
            out[col] = views / freq.clip(lower=1.0)
        else:
            out[col] = 0.0
    return out[list(KNOWN_FEATURES)].astype("float64")


def real_matrix(
    state: pd.DataFrame, names: Sequence[str], as_of: datetime | None = None
) -> np.ndarray:
    """The ``(n, len(names))`` float64 matrix of the named features in real units."""
    unknown = [n for n in names if n not in KNOWN_FEATURES]
    if unknown:
        raise FeatureError(f"unknown feature(s) {unknown}; known: {', '.join(KNOWN_FEATURES)}")
    return np.asarray(feature_frame(state, as_of)[list(names)], dtype=np.float64)


def categorical_values(state: pd.DataFrame, names: Sequence[str]) -> dict[str, list[object]]:
    """The named categorical columns as plain lists (a column the frame lacks: all ``None``).

    Values go to the model as they are; :func:`worker.segmentation.categorical.level_of` spells
    them (NaN and ``""`` are missing, ``True`` is ``true``), as it does for the worker's.
    """
    unknown = [n for n in names if n not in KNOWN_CATEGORICAL]
    if unknown:
        raise FeatureError(
            f"unknown categorical feature(s) {unknown}; known: {', '.join(KNOWN_CATEGORICAL)}"
        )
    return {
        name: state[name].tolist() if name in state.columns else [None] * len(state)
        for name in names
    }


def categorical_frame(state: pd.DataFrame) -> pd.DataFrame:
    """Every known categorical column of ``state`` (absent ones all ``None``), index kept."""
    values = categorical_values(state, KNOWN_CATEGORICAL)
    return pd.DataFrame(values, index=state.index, dtype=object)


@dataclass(frozen=True)
class ScoredBatch:
    """One batch of customers scored for the stream: what a segment-change event needs."""

    customer_ids: list[str]
    old: list[str | None]
    new: list[str]
    #: ``(n,)`` bool: the segment name changed (a first assignment counts as a change).
    changed: np.ndarray
    #: ``(n, d)`` features in real units, columns = ``feature_names``.
    features: np.ndarray
    feature_names: tuple[str, ...]
    #: Distance to the old segment's centroid (NaN without one, or for rules).
    old_distance: np.ndarray
    #: Distance to the new segment's centroid (NaN for rules).
    new_distance: np.ndarray

    def feature_dict(self, i: int) -> dict[str, float]:
        return {f: float(v) for f, v in zip(self.feature_names, self.features[i], strict=True)}


class _Scorer(Protocol):
    names: tuple[str, ...]
    feature_names: tuple[str, ...]

    def assign(
        self, x_real: np.ndarray, current: np.ndarray | None = None, margin: float | None = None
    ) -> Assignment: ...


def score_state(
    model: SegmentModel | _Scorer,
    state: pd.DataFrame,
    current: Sequence[str | None],
    as_of: datetime | None = None,
    margin: float | None = None,
    centroids: np.ndarray | None = None,
) -> ScoredBatch:
    """Score export-contract rows given each customer's current segment *name* (or None).

    Works with a K-means model (``centroids`` = the online model's, if any) or the RFM rules.
    """
    x = real_matrix(state, model.feature_names, as_of)
    cur = ids_from_names(model.names, current)
    if isinstance(model, SegmentModel):
        cats = categorical_values(state, model.categorical_names) if model.categorical else None
        result = assign(model, x, cur, margin, centroids, cats)
    else:
        result = model.assign(x, cur, margin)
    n = len(x)
    rows = np.arange(n)
    if result.distances.shape[1]:
        new_d = result.distances[rows, result.segment_ids]
        old_d = np.where(cur >= 0, result.distances[rows, np.maximum(cur, 0)], np.nan)
    else:
        new_d = old_d = np.full(n, np.nan)
    new = [model.names[i] for i in result.segment_ids]
    return ScoredBatch(
        customer_ids=[str(c) for c in state["customer_id"]],
        old=list(current),
        new=new,
        changed=np.array([a != b for a, b in zip(current, new, strict=True)], dtype=bool),
        features=x,
        feature_names=tuple(model.feature_names),
        old_distance=old_d,
        new_distance=new_d,
    )
