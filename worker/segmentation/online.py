"""Online clustering: centroids seeded from the batch model that follow drift, ids kept stable.

:class:`OnlineKMeans` is a river clusterer (``river.base.Clusterer``: ``learn_one`` /
``predict_one`` on dicts, constructor arguments stored under their own names) with a
vectorised ``learn_many`` for the worker's batches. It works in the batch model's scaled space.

How batch and online combine (see docs/segmentation.md):

1. ``segstream train`` fits K-means; the worker seeds :class:`OnlineKMeans` with its centroids.
2. For every batch, the worker assigns customers with the *online* centroids and hysteresis
   (:func:`worker.segmentation.assign.assign` with ``centroids=online.centers_``), then calls
   ``learn_many(z, assigned_ids)``: centroid ``i`` moves only towards points assigned to ``i``
   (``c_i += a * (z - c_i)`` per point, ``a`` = ``learning_rate``), so ids and names never
   permute, unlike a clusterer that re-discovers clusters.
3. Drift = how far each centroid moved from where training put it, in standard units
   (Euclidean distance in scaled space): :meth:`OnlineKMeans.drift` gives max and mean. Above
   ``settings.scoring.drift_bound`` :attr:`DriftReport.exceeded` is True: the worker reports
   it and a retrain (``segstream train``) can be triggered; the new model re-seeds the online one.

The state (:meth:`to_dict` / :meth:`from_dict`) is JSON-safe so the worker can keep it in Redis
and resume after a restart. Pure: numpy and river only.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import base

from worker.segmentation.model import SegmentModel


@dataclass(frozen=True)
class DriftReport:
    """Centroid displacement since training, standard units."""

    per_segment: tuple[float, ...]
    max: float
    mean: float
    bound: float
    exceeded: bool


class OnlineKMeans(base.Clusterer):
    """K-means centroids updated online, each only from the points assigned to it.

    Parameters
    ----------
    centers
        Initial centroids (``k`` lists of ``d`` floats, scaled space), usually a batch model's.
    feature_names
        Names of the ``d`` features (keys of the dicts ``learn_one`` / ``predict_one`` take).
    learning_rate
        Weight of one point in the update of its centroid (exponential forgetting).
    model_version
        Version of the batch model the centers come from.

    Examples
    --------
    >>> m = OnlineKMeans([[0.0, 0.0], [4.0, 4.0]], ("a", "b"), learning_rate=0.5)
    >>> m.predict_one({"a": 3.0, "b": 3.0})
    1
    >>> m.learn_one({"a": 6.0, "b": 4.0})
    >>> m.centers_[1].tolist()
    [5.0, 4.0]
    >>> round(m.drift().max, 3)
    1.0
    """

    def __init__(
        self,
        centers: Sequence[Sequence[float]],
        feature_names: Sequence[str],
        learning_rate: float = 0.01,
        model_version: str = "",
    ) -> None:
        # river convention: constructor arguments kept as given (so ``clone()`` re-seeds);
        # learned state carries a trailing underscore.
        self.centers = [list(map(float, c)) for c in centers]
        self.feature_names = tuple(feature_names)
        self.learning_rate = learning_rate
        self.model_version = model_version
        self.initial_ = np.asarray(self.centers, dtype=np.float64)
        self.centers_ = self.initial_.copy()
        self.counts_ = np.zeros(len(self.centers_), dtype=np.int64)
        if self.centers_.ndim != 2 or self.centers_.shape[1] != len(self.feature_names):
            raise ValueError(
                f"centers shape {self.centers_.shape} vs {len(feature_names)} features"
            )

    @classmethod
    def from_model(cls, model: SegmentModel, learning_rate: float = 0.01) -> OnlineKMeans:
        return cls(model.centroids.tolist(), model.feature_names, learning_rate, model.version)

    def _vec(self, x: dict[Hashable, Any]) -> np.ndarray:
        return np.array([float(x[f]) for f in self.feature_names])

    def predict_one(self, x: dict[Hashable, Any]) -> int:
        """Nearest centroid (no hysteresis) of a scaled feature dict."""
        d = ((self.centers_ - self._vec(x)) ** 2).sum(axis=1)
        return int(d.argmin())

    def learn_one(self, x: dict[Hashable, Any], segment: int | None = None) -> None:
        """Move the centroid of ``segment`` (default: the nearest) towards ``x``."""
        i = self.predict_one(x) if segment is None else segment
        self.centers_[i] += self.learning_rate * (self._vec(x) - self.centers_[i])
        self.counts_[i] += 1

    def learn_many(self, z: np.ndarray, segment_ids: np.ndarray) -> None:
        """Batch form of ``learn_one`` over scaled rows ``z`` with their assigned ids.

        For ``n`` points of one segment with mean ``m`` the centroid moves to
        ``c + (1 - (1 - a)**n) * (m - c)``: the same total weight as ``n`` sequential updates,
        given to the batch mean (order within a batch carries no meaning here).
        """
        z = np.atleast_2d(z)
        ids = np.asarray(segment_ids, dtype=np.int64)
        k = len(self.centers_)
        n = np.bincount(ids, minlength=k)
        if n.sum() == 0:
            return
        sums = np.zeros_like(self.centers_)
        np.add.at(sums, ids, z)
        hit = n > 0
        means = sums[hit] / n[hit, None]
        weight = 1.0 - (1.0 - self.learning_rate) ** n[hit]
        self.centers_[hit] += weight[:, None] * (means - self.centers_[hit])
        self.counts_ += n

    def drift(self, bound: float = float("inf")) -> DriftReport:
        """Displacement of every centroid since seeding (standard units) against ``bound``."""
        per = np.sqrt(((self.centers_ - self.initial_) ** 2).sum(axis=1))
        mx = float(per.max()) if len(per) else 0.0
        return DriftReport(tuple(map(float, per)), mx, float(per.mean()), bound, mx > bound)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "feature_names": list(self.feature_names),
            "learning_rate": self.learning_rate,
            "initial": self.initial_.tolist(),
            "centers": self.centers_.tolist(),
            "counts": self.counts_.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnlineKMeans:
        m = cls(
            data["initial"], data["feature_names"], data["learning_rate"], data["model_version"]
        )
        m.centers_ = np.asarray(data["centers"], dtype=np.float64)
        m.counts_ = np.asarray(data["counts"], dtype=np.int64)
        return m
