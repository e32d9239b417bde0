"""Assign a round of customers against the current model and build the change events (pure).

The assignment is :func:`worker.segmentation.assign.assign` (K-means, batch centroids, hysteresis
``margin``) or :meth:`RulesModel.assign` (rules-v1): one numpy expression for the whole round. A
customer's current segment is the name stored in Redis, mapped to an id of the model by name, so
hysteresis carries over a model update for segments that keep their name.

No Kafka, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from schemas import SegmentChange
from worker.scoring.vectors import Round, feature_matrix
from worker.segmentation.assign import assign, ids_from_names
from worker.segmentation.model import SegmentModel
from worker.segmentation.rules import RulesModel

Model = SegmentModel | RulesModel
#: Reasons whose event time is the customer's latest event; the others use the scoring time.
EVENT_REASONS = frozenset({"order", "return", "clicks"})


@dataclass(frozen=True)
class Decision:
    """What scoring decided for each customer of a round (rows in ``rnd`` order)."""

    rnd: Round
    model_version: str
    feature_names: tuple[str, ...]
    #: ``(n, d)`` model features in real units.
    x_real: np.ndarray
    segment_ids: np.ndarray
    new_segments: list[str]
    #: True where the new segment differs from the stored one (a real change).
    changed: np.ndarray
    #: Distances (scaled space) to the old and the new segment's centroid; NaN when unknown.
    old_distance: np.ndarray
    new_distance: np.ndarray

    @property
    def changed_rows(self) -> np.ndarray:
        return np.flatnonzero(self.changed)


def decide(model: Model, rnd: Round, as_of_ms: int, margin: float) -> Decision:
    """Score every customer of ``rnd`` as of ``as_of_ms`` (hysteresis ``margin``; 0 = off)."""
    x = feature_matrix(rnd, as_of_ms, model.feature_names)
    current = ids_from_names(model.names, rnd.segments)
    if isinstance(model, RulesModel):
        result = model.assign(x, current)
    else:
        result = assign(model, x, current, margin)
    ids = result.segment_ids
    names = [model.names[i] for i in ids]
    changed = np.array([new != old for new, old in zip(names, rnd.segments, strict=True)], bool)
    n = len(ids)
    old_d = np.full(n, np.nan)
    new_d = np.full(n, np.nan)
    if result.distances.shape[1] and n:
        rows = np.arange(n)
        new_d = result.distances[rows, ids]
        known = current >= 0
        old_d[known] = result.distances[rows[known], current[known]]
    return Decision(
        rnd, model.version, tuple(model.feature_names), x, ids, names, changed, old_d, new_d
    )


def infer_reason(last_order_ms: int, last_seen_ms: int) -> str:
    """Reason of a re-score whose cause was not recorded (crash repair): the latest event kind."""
    return "order" if last_order_ms >= last_seen_ms else "clicks"


def _dist(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def change_events(
    decision: Decision,
    reasons: Mapping[str, str | None],
    as_of_ms: int,
    processing_time: datetime | None = None,
) -> list[tuple[int, SegmentChange]]:
    """``(row, SegmentChange)`` for every real change of the round.

    Event time: the customer's latest event (``last_seen``) for order/return/clicks, the scoring
    time (as-of) for ``recency_decay`` and ``model_update``.
    """
    rnd = decision.rnd
    now = processing_time or datetime.now(UTC)
    as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    seen = rnd.last_seen_ms
    last_order = rnd.last_order_ms
    out: list[tuple[int, SegmentChange]] = []
    for row in decision.changed_rows:
        cid = rnd.customer_ids[row]
        reason = reasons.get(cid) or infer_reason(int(last_order[row]), int(seen[row]))
        if reason in EVENT_REASONS and seen[row] > 0:
            when = datetime.fromtimestamp(int(seen[row]) / 1000, UTC)
        else:
            when = as_of
        feats = {
            f: float(v) for f, v in zip(decision.feature_names, decision.x_real[row], strict=True)
        }
        out.append(
            (
                int(row),
                SegmentChange(
                    customer_id=cid,
                    old_segment=rnd.segments[row],
                    new_segment=decision.new_segments[row],
                    reason=reason,  # type: ignore[arg-type]
                    model_version=decision.model_version,
                    features=feats,
                    event_time=when,
                    processing_time=now,
                    old_distance=_dist(decision.old_distance[row]),
                    new_distance=_dist(decision.new_distance[row]),
                ),
            )
        )
    return out
