"""What the worker's online model needs of the training data (``extra["online"]`` of a model).

The stream scores a customer just after its event; the training rows describe every customer at
the as-of time. So the distance above which a scored customer counts as far from every segment
is calibrated on the training customers *as they looked at their latest event*: recency and
tenure shortened by the time since that event (``last_seen_ts``), the counts as they are (they
have not changed since). Without ``last_seen_ts`` or an as-of time, the rows as trained are used.
The pure part is :func:`worker.segmentation.online.calibrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from worker.segmentation.features import Scaler
from worker.segmentation.online import calibrate

_DAY_S = 86_400.0


def at_latest_event(
    state: pd.DataFrame, frame: pd.DataFrame, as_of: datetime | None
) -> pd.DataFrame | None:
    """``frame`` (features at ``as_of``) moved back to each customer's latest event; ``None``
    when the state does not say when that was."""
    if as_of is None or "last_seen_ts" not in state.columns:
        return None
    seen = pd.to_datetime(state["last_seen_ts"], utc=True, errors="coerce", format="ISO8601")
    back = (pd.Timestamp(as_of).tz_convert("UTC") - seen).dt.total_seconds() / _DAY_S
    back = back.fillna(0.0).clip(lower=0.0).to_numpy()
    out = frame.copy()
    buyers = out["frequency"].to_numpy() > 0
    for col in ("recency_days", "tenure_days"):
        if col in out.columns:
            shifted = np.maximum(out[col].to_numpy() - back, 0.0)
            out[col] = np.where(buyers, shifted, out[col].to_numpy())
    return out


def online_calibration(
    state: pd.DataFrame,
    frame: pd.DataFrame,
    numeric: Sequence[str],
    scaler: Scaler,
    centroids: np.ndarray,
    labels: np.ndarray,
    as_of: datetime | None,
) -> dict[str, Any]:
    """:func:`~worker.segmentation.online.calibrate` on the numeric model space."""
    cols = list(numeric)
    z = scaler.transform(frame[cols].to_numpy(dtype=np.float64))
    event = at_latest_event(state, frame, as_of)
    z_event = None if event is None else scaler.transform(event[cols].to_numpy(dtype=np.float64))
    return calibrate(centroids, z, labels, z_event)
