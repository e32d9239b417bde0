"""Assignment of customers to segments, vectorised over a batch, with hysteresis; explain.

Pure numpy: no sklearn call per customer, no Kafka, no Redis.

Hysteresis rule (``margin`` = ``settings.scoring.hysteresis_margin``, default 0.1): a customer whose
current segment is ``c`` moves to its nearest centroid ``j`` only when
``d_j < (1 - margin) * d_c``, i.e. the new centroid must be closer by more than ``margin`` of
the distance to the current one (Euclidean, in the model's scaled space). A customer without a
current segment (``-1``; also one whose segment name is not in this model) goes to the nearest
centroid. ``margin=0`` is plain nearest-centroid assignment (equal to the batch model's
prediction; an exact tie keeps the current segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from worker.segmentation.model import SegmentModel


class Assignment(NamedTuple):
    """Result of scoring a batch of ``n`` customers against ``k`` segments."""

    #: ``(n,)`` int64 segment id assigned (index into the model's ``names``).
    segment_ids: np.ndarray
    #: ``(n, k)`` Euclidean distances to every centroid, scaled space (``(n, 0)`` for rules).
    distances: np.ndarray
    #: ``(n,)`` bool, True where the assigned id differs from the current one.
    changed: np.ndarray


def distances(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n, k)`` Euclidean distances between scaled rows and centroids."""
    z = np.atleast_2d(z)
    d: np.ndarray = np.sqrt(((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    return d


def assign(
    model: SegmentModel,
    x_real: np.ndarray,
    current: np.ndarray | Sequence[int] | None = None,
    margin: float | None = None,
    centroids: np.ndarray | None = None,
) -> Assignment:
    """Assign each real-unit feature row; ``centroids`` overrides the model's (online path)."""
    z = model.transform(np.atleast_2d(x_real))
    cents = model.centroids if centroids is None else centroids
    dist = distances(z, cents)
    n, k = dist.shape
    nearest = dist.argmin(axis=1)
    cur = np.full(n, -1, dtype=np.int64) if current is None else np.asarray(current, np.int64)
    m = model.hysteresis_margin if margin is None else float(margin)
    valid = (cur >= 0) & (cur < k)
    rows = np.arange(n)
    d_cur = dist[rows, np.where(valid, cur, 0)]
    d_near = dist[rows, nearest]
    keep = valid & ~(d_near < (1.0 - m) * d_cur)
    seg = np.where(keep, cur, nearest)
    return Assignment(seg, dist, seg != cur)


def ids_from_names(names: Sequence[str], current: Sequence[str | None]) -> np.ndarray:
    """Current segment names (e.g. read from Redis) -> ids in ``names``; unknown/None -> -1.

    Mapping by name lets hysteresis carry over a model update when a segment keeps its name.
    """
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(c, -1) if c is not None else -1 for c in current], np.int64)


@dataclass(frozen=True)
class Explanation:
    """Why a customer is in its segment (what ``segstream customer ID --explain`` prints)."""

    model_version: str
    features: dict[str, float]
    scaled: dict[str, float]
    distances: dict[str, float]
    nearest: str
    current: str | None
    assigned: str
    margin: float
    sentence: str


def explain(
    model: SegmentModel,
    x_real: np.ndarray | Sequence[float],
    current: str | None = None,
    margin: float | None = None,
    centroids: np.ndarray | None = None,
) -> Explanation:
    """Features, distance to every centroid, margin, nearest, current, and why, in a sentence."""
    row = np.asarray(x_real, dtype=np.float64).reshape(1, -1)
    m = model.hysteresis_margin if margin is None else float(margin)
    cur_id = ids_from_names(model.names, [current])
    result = assign(model, row, cur_id, m, centroids)
    d = result.distances[0]
    order = np.argsort(d, kind="stable")
    nearest, runner_up = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
    seg = int(result.segment_ids[0])
    names = model.names
    if cur_id[0] < 0:
        why = (
            f"nearest centroid is '{names[nearest]}' (distance {d[nearest]:.3f}; next "
            f"'{names[runner_up]}' at {d[runner_up]:.3f})"
        )
        if current is not None:
            why += f"; its previous segment '{current}' is not in model {model.version}"
    elif seg == nearest:
        if seg == cur_id[0]:
            why = (
                f"stays in '{names[seg]}': it is the nearest centroid (distance {d[seg]:.3f}; "
                f"next '{names[runner_up]}' at {d[runner_up]:.3f})"
            )
        else:
            why = (
                f"moves from '{current}' to '{names[seg]}': {d[seg]:.3f} is closer than "
                f"{d[cur_id[0]]:.3f} by more than the {m:.0%} hysteresis margin "
                f"(needed < {(1 - m) * d[cur_id[0]]:.3f})"
            )
    else:
        why = (
            f"stays in '{names[seg]}' (distance {d[seg]:.3f}) although '{names[nearest]}' is "
            f"nearer ({d[nearest]:.3f}): not closer by the {m:.0%} hysteresis margin "
            f"(needs < {(1 - m) * d[seg]:.3f})"
        )
    z = model.transform(row)[0]
    return Explanation(
        model_version=model.version,
        features={f: float(v) for f, v in zip(model.feature_names, row[0], strict=True)},
        scaled={f: float(v) for f, v in zip(model.feature_names, z, strict=True)},
        distances={names[i]: float(d[i]) for i in range(len(d))},
        nearest=names[nearest],
        current=current,
        assigned=names[seg],
        margin=m,
        sentence=f"Segment '{names[seg]}' under model {model.version}: {why}.",
    )
