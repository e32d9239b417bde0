"""``segment_profile`` rows of a model version: name, size, share, centroid in real units. Pure.

Written once per model version, the first time a change names it (the sink loads the artifact
then). ``size``/``share`` are the segment's customers in the model's training data; current
sizes are ``customer_segment`` and, over time, the ``daily_segment_size`` view. The rule-based
``rules-v1`` has no centroids: its rows carry the names only.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, NamedTuple

from sinks.sql.changes import feature_columns
from worker.segmentation.model import SegmentModel
from worker.segmentation.rules import RULE_NAMES, RULES_VERSION


class ProfileRow(NamedTuple):
    model_version: str
    segment: str
    segment_index: int
    size: int | None
    share: float | None
    centroid: str | None
    recency_days: float | None
    frequency: float | None
    monetary: float | None
    aov: float | None
    sessions: float | None
    trained_at: datetime | None
    first_seen_at: datetime


PROFILE_COLUMNS: tuple[str, ...] = ProfileRow._fields


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _when(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def model_profile_rows(model: SegmentModel, now: datetime) -> list[ProfileRow]:
    """One row per segment of a K-means model (centroids mapped back to real units)."""
    real = model.centroids_real().tolist()
    rows = []
    for i, name in enumerate(model.names):
        centroid = {
            f: v for f, v in zip(model.feature_names, real[i], strict=True) if math.isfinite(v)
        }
        profile = model.profiles[i] if i < len(model.profiles) else {}
        size = _number(profile.get("size"))
        rows.append(
            ProfileRow(
                model.version,
                name,
                i,
                None if size is None else int(size),
                _number(profile.get("share")),
                json.dumps(centroid, sort_keys=True),
                *feature_columns(centroid),
                _when(model.created_at),
                now,
            )
        )
    return rows


def rules_profile_rows(now: datetime) -> list[ProfileRow]:
    """The rule-based segments: names only (rules have edges, not centroids)."""
    return [
        ProfileRow(
            RULES_VERSION, name, i, None, None, None, None, None, None, None, None, None, now
        )
        for i, name in enumerate(RULE_NAMES)
    ]
