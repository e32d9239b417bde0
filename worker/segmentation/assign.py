"""Assignment of customers to segments, vectorised over a batch, with hysteresis; explain.

Pure numpy: no sklearn call per customer, no Kafka, no Redis.

Hysteresis rule (``margin`` = ``settings.scoring.hysteresis_margin``, default 0.1): a customer whose
current segment is ``c`` moves to its nearest centroid ``j`` only when
``d_j < (1 - margin) * d_c``, i.e. the new centroid must be closer by more than ``margin`` of
the distance to the current one (Euclidean, in the model's scaled space). A customer without a
current segment (``-1``; also one whose segment name is not in this model) goes to the nearest
centroid. ``margin=0`` is plain nearest-centroid assignment (equal to the batch model's
prediction; an exact tie keeps the current segment).

A model with categorical features (:mod:`worker.segmentation.categorical`) takes their values
as ``categories`` (feature name -> one value per row); distances are then over the whole model
space, numeric and categorical columns alike, and ``centroids`` (the online model's) replace
only the numeric part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from worker.segmentation.categorical import level_of
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


Categories = Mapping[str, Sequence[object]]


def model_centroids(model: SegmentModel, centroids: np.ndarray | None = None) -> np.ndarray:
    """The model's centroids in model space; ``centroids`` (numeric part, or whole) instead."""
    if centroids is None:
        return model.all_centroids
    cents = np.asarray(centroids, dtype=np.float64)
    if cents.shape[1] == len(model.columns):
        return cents
    return model.with_numeric_centroids(cents)


def assign(
    model: SegmentModel,
    x_real: np.ndarray,
    current: np.ndarray | Sequence[int] | None = None,
    margin: float | None = None,
    centroids: np.ndarray | None = None,
    categories: Categories | None = None,
) -> Assignment:
    """Assign each real-unit feature row; ``centroids`` overrides the model's (online path);
    ``categories``: the categorical features' values, one per row (see module docstring)."""
    z = model.encode(np.atleast_2d(x_real), categories)
    dist = distances(z, model_centroids(model, centroids))
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
    #: Categorical feature -> the customer's value, and the level it is encoded as.
    categories: dict[str, str | None] = field(default_factory=dict)
    levels: dict[str, str] = field(default_factory=dict)
    #: Feature -> its squared-distance part and share of the squared distance to the assigned
    #: centroid and to the runner-up (the nearest other one): ``assigned_d2``,
    #: ``assigned_share``, ``runner_up_d2``, ``runner_up_share``. Every feature of the model.
    contributions: dict[str, dict[str, float]] = field(default_factory=dict)
    runner_up: str | None = None


def explain(
    model: SegmentModel,
    x_real: np.ndarray | Sequence[float],
    current: str | None = None,
    margin: float | None = None,
    centroids: np.ndarray | None = None,
    categories: Mapping[str, object] | None = None,
) -> Explanation:
    """Features, distance to every centroid, margin, nearest, current, and why, in a sentence.

    ``categories``: the customer's value of each categorical feature of the model.
    """
    row = np.asarray(x_real, dtype=np.float64).reshape(1, -1)
    m = model.hysteresis_margin if margin is None else float(margin)
    cur_id = ids_from_names(model.names, [current])
    cats = None if categories is None else {k: [v] for k, v in categories.items()}
    result = assign(model, row, cur_id, m, centroids, cats)
    d = result.distances[0]
    order = np.argsort(d, kind="stable")
    nearest, runner_up = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
    seg = int(result.segment_ids[0])
    others = [int(i) for i in order if int(i) != seg]
    second = others[0] if others else seg
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
    full = model.encode(row, cats)[0]
    parts = _contributions(model, full, model_centroids(model, centroids), seg, second)
    features = model.categorical.features
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
        categories={
            f.name: None if categories is None else level_of(categories.get(f.name))
            for f in features
        },
        levels={
            f.name: f.level_names([None if categories is None else categories.get(f.name)])[0]
            for f in features
        },
        contributions=parts,
        runner_up=names[second] if second != seg else None,
    )


def _contributions(
    model: SegmentModel, z: np.ndarray, cents: np.ndarray, assigned: int, runner_up: int
) -> dict[str, dict[str, float]]:
    """Each feature's part of the squared distance to two centroids (see :class:`Explanation`)."""
    spans = {name: slice(i, i + 1) for i, name in enumerate(model.feature_names)}
    offset = len(model.feature_names)
    spans.update(
        {name: slice(s.start + offset, s.stop + offset) for name, s in
         model.categorical.slices().items()}
    )  # fmt: skip
    sq_a = (z - cents[assigned]) ** 2
    sq_r = (z - cents[runner_up]) ** 2
    total_a, total_r = float(sq_a.sum()), float(sq_r.sum())
    out = {}
    for name, span in spans.items():
        a, r = float(sq_a[span].sum()), float(sq_r[span].sum())
        out[name] = {
            "assigned_d2": a,
            "assigned_share": a / total_a if total_a > 0 else 0.0,
            "runner_up_d2": r,
            "runner_up_share": r / total_r if total_r > 0 else 0.0,
        }
    return out
