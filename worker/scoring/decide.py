"""Assign a round of customers against the current model and build the change events (pure).

The assignment is :func:`worker.segmentation.assign.assign` (K-means, batch centroids, hysteresis
``margin``) or :meth:`RulesModel.assign` (rules-v1): one numpy expression for the whole round. A
customer's current segment is the name stored in Redis, mapped to an id of the model by name, so
hysteresis carries over a model update for segments that keep their name. A model with
categorical features also takes each customer's attribute fields, read for the round
(:func:`attribute_fields`, :mod:`worker.scoring.categories`).

No Kafka, no Redis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from schemas import SegmentChange
from worker.scoring import categories
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


def attribute_fields(model: Model) -> tuple[str, ...]:
    """The hash fields a round must read for the model's categorical features (none: ``()``)."""
    if isinstance(model, SegmentModel) and model.categorical:
        return categories.fields_for(model.categorical_names)
    return ()


def decide(
    model: Model,
    rnd: Round,
    as_of_ms: int,
    margin: float,
    attributes: Mapping[str, Sequence[bytes | str | None]] | None = None,
) -> Decision:
    """Score every customer of ``rnd`` as of ``as_of_ms`` (hysteresis ``margin``; 0 = off).

    ``attributes``: customer -> its values of :func:`attribute_fields` (a model with
    categorical features needs them; a numeric-only model ignores them).
    """
    x = feature_matrix(rnd, as_of_ms, model.feature_names)
    current = ids_from_names(model.names, rnd.segments)
    if isinstance(model, RulesModel):
        result = model.assign(x, current)
    else:
        cats = None
        if model.categorical and attributes is not None:
            wanted = model.categorical_names
            cats = categories.values(
                wanted, categories.fields_for(wanted), rnd.customer_ids, attributes, as_of_ms
            )
        result = assign(model, x, current, margin, categories=cats)
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


def change_events(
    decision: Decision,
    reasons: Mapping[str, str | None],
    as_of_ms: int,
    processing_time: datetime | None = None,
) -> list[tuple[int, SegmentChange]]:
    """``(row, SegmentChange)`` for every real change of the round.

    Reason: the one queued with the customer, else the one the state script gave its snapshot,
    else inferred from its latest event. Event time: the customer's latest event
    (``last_seen``) for order/return/clicks, the scoring time (as-of) for ``recency_decay``
    and ``model_update``.
    """
    rnd = decision.rnd
    now = processing_time or datetime.now(UTC)
    as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    rows = decision.changed_rows
    if not len(rows):
        return []
    # Plain Python values once per round: iterating numpy rows costs more than the event itself.
    seen = rnd.last_seen_ms[rows].tolist()
    last_order = rnd.last_order_ms[rows].tolist()
    x_rows = decision.x_real[rows].tolist()
    old_d = decision.old_distance[rows].tolist()
    new_d = decision.new_distance[rows].tolist()
    names = decision.feature_names
    ids, olds, news = rnd.customer_ids, rnd.segments, decision.new_segments
    why = rnd.reasons
    version = decision.model_version
    out: list[tuple[int, SegmentChange]] = []
    for i, row in enumerate(rows.tolist()):
        cid = ids[row]
        reason = (
            reasons.get(cid) or (why[row] if why else None) or infer_reason(last_order[i], seen[i])
        )
        if reason in EVENT_REASONS and seen[i] > 0:
            when = datetime.fromtimestamp(seen[i] / 1000, UTC)
        else:
            when = as_of
        od, nd = old_d[i], new_d[i]
        out.append(
            (
                row,
                SegmentChange(
                    customer_id=cid,
                    old_segment=olds[row],
                    new_segment=news[row],
                    reason=reason,  # type: ignore[arg-type]
                    model_version=version,
                    features=dict(zip(names, x_rows[i], strict=True)),
                    event_time=when,
                    processing_time=now,
                    old_distance=None if math.isnan(od) else od,
                    new_distance=None if math.isnan(nd) else nd,
                ),
            )
        )
    return out
