"""Emerging groups: scored customers far from every batch centroid, gathering in one place.

The batch model cannot create a segment, and centre drift does not see a group that belongs to
no segment: its customers are assigned to whichever centroid is least far, a few at a time, and
barely move it. So the far points are watched on their own:

- *far* = the distance (scaled space, standard units) to the nearest batch centroid is above
  ``threshold``, calibrated at training time as the 99th percentile of the training customers'
  nearest distances, each customer taken as it looked at its latest event (what the stream
  scores: :func:`worker.segmentation.online.calibrate`). On traffic like the training data about
  1 % of scorings are far, scattered over the space;
- far points are grouped by leader clustering: a point joins the nearest group whose centre is
  within ``radius`` (its centre moves to the running mean), else it starts a group (at most
  :data:`MAX_GROUPS`; the lightest is dropped to make room). Weights fade with every scoring
  (far or not): a group's weight is its share of the last ``window`` scorings, roughly;
- a call (a scoring round) adds at most :data:`MAX_FAR_PER_CALL` far points, a seeded sample
  each weighing ``far / MAX_FAR_PER_CALL`` when it has more: the shares stay unbiased and a
  round costs the same however many of its points are far (after a shift, or for a model
  trained on another population, nearly all are);
- a group is **emerging** when it holds at least ``min_customers`` distinct customers *and* at
  least ``min_share`` of the recent scorings. Scattered far points (steady traffic) never reach
  either; a new kind of customer does (benchmarks/RESULTS.md, 2026-12-06).

State is plain JSON (:meth:`EmergingGroups.to_dict`). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Groups kept at once (the lightest is dropped for a new one).
MAX_GROUPS = 32
#: Distinct customer ids remembered per group (enough to pass ``min_customers``).
MAX_IDS = 256
#: A far point joins a group whose centre is this close (standard units).
RADIUS = 1.5
#: Far points a call adds to groups (a seeded sample above it, weighted to stand for all).
MAX_FAR_PER_CALL = 64
#: Weights fade by ``1 - 1 / WINDOW`` per scoring: a group's share is over about this many.
WINDOW = 5000.0
#: An emerging group has at least this many distinct customers ...
MIN_CUSTOMERS = 50
#: ... and this share of the recent scorings: three times what all far points together hold on
#: traffic like the training data (1 %, by the calibration's quantile).
MIN_SHARE = 0.03


@dataclass(frozen=True)
class EmergingGroup:
    """A dense region of far points: where (scaled space), how many customers, what share."""

    center: tuple[float, ...]
    customers: int
    share: float
    #: Distance from the group's centre to the nearest batch centroid (standard units).
    distance: float


@dataclass(eq=False)  # compared by identity: list.remove must not compare centre arrays
class _Group:
    center: np.ndarray
    weight: float
    #: The weight of every point the centre is the mean of (never faded).
    seen: float
    ids: set[str]


class EmergingGroups:
    """Leader clustering of far points with fading weights (see the module docstring)."""

    def __init__(
        self,
        centroids: np.ndarray,
        threshold: float,
        radius: float = RADIUS,
        window: float = WINDOW,
        min_customers: int = MIN_CUSTOMERS,
        min_share: float = MIN_SHARE,
    ) -> None:
        self.centroids = np.asarray(centroids, dtype=np.float64)
        self.threshold = float(threshold)
        self.radius = float(radius)
        self.window = float(window)
        self.min_customers = int(min_customers)
        self.min_share = float(min_share)
        #: Faded count of every scoring seen (the denominator of a group's share).
        self.total = 0.0
        self.far = 0
        self.seen = 0
        self.groups: list[_Group] = []

    @property
    def fade(self) -> float:
        return 1.0 - 1.0 / self.window

    def nearest_distance(self, z: np.ndarray) -> np.ndarray:
        d2 = ((np.atleast_2d(z)[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        out: np.ndarray = np.sqrt(d2.min(axis=1))
        return out

    def learn_many(
        self, z: np.ndarray, customer_ids: list[str] | None = None, far_max: int = MAX_FAR_PER_CALL
    ) -> None:
        """Fade by ``len(z)`` scorings, then add the far rows of ``z`` to their groups: at
        most ``far_max`` (itself at most :data:`MAX_FAR_PER_CALL`) of them, each weighing
        ``far / far_max`` when there are more (a seeded sample)."""
        far_max = max(1, min(far_max, MAX_FAR_PER_CALL))
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        n = len(z)
        if n == 0:
            return
        fade_n = self.fade**n
        self.total = self.total * fade_n + (1.0 - fade_n) / (1.0 - self.fade)
        for g in self.groups:
            g.weight *= fade_n
        # a group whose points have all faded out of the window is gone
        self.groups = [g for g in self.groups if g.weight >= 0.5]
        self.seen += n
        far = np.flatnonzero(self.nearest_distance(z) > self.threshold)
        self.far += len(far)
        if len(far) == 0:
            return
        weight = 1.0
        if len(far) > far_max:
            weight = len(far) / far_max
            rng = np.random.default_rng(self.seen)  # seeded: a replay gives the same groups
            far = np.sort(rng.choice(far, far_max, replace=False))
        # the groups' centres as one matrix, so a point finds its group in one numpy call
        # (rebuilt only when a group is added or dropped; a join moves one row)
        centers = self._centers()
        for row in far.tolist():
            cid = customer_ids[row] if customer_ids is not None else f"#{self.seen - n + row}"
            centers = self._add(z[row], cid, centers, weight)

    def _centers(self) -> np.ndarray:
        if not self.groups:
            return np.empty((0, self.centroids.shape[1]))
        return np.stack([g.center for g in self.groups])

    def _add(self, point: np.ndarray, cid: str, centers: np.ndarray, weight: float) -> np.ndarray:
        """Add one far point of ``weight`` to its group (or a new one); returns the centres
        after it."""
        best = None
        if len(centers):
            d2 = ((centers - point) ** 2).sum(axis=1)
            i = int(d2.argmin())
            if d2[i] <= self.radius * self.radius:
                best = self.groups[i]
        if best is None:
            if len(self.groups) >= MAX_GROUPS:
                self.groups.remove(min(self.groups, key=lambda g: g.weight))
            best = _Group(point.copy(), 0.0, 0.0, set())
            self.groups.append(best)
            i = -1
        best.seen += weight
        best.center += (point - best.center) * (weight / best.seen)
        best.weight += weight
        if len(best.ids) < MAX_IDS:
            best.ids.add(cid)
        if i < 0:
            return self._centers()
        centers[i] = best.center
        return centers

    def _view(self, g: _Group) -> EmergingGroup:
        share = g.weight / self.total if self.total > 0 else 0.0
        distance = float(self.nearest_distance(g.center)[0])
        return EmergingGroup(tuple(map(float, g.center)), len(g.ids), share, distance)

    def largest(self) -> EmergingGroup | None:
        """The group with the largest recent share (``None``: no far point yet)."""
        if not self.groups:
            return None
        return self._view(max(self.groups, key=lambda g: g.weight))

    def emerging(self) -> list[EmergingGroup]:
        """Groups past both bars, largest share first."""
        views = [self._view(g) for g in self.groups]
        hits = [v for v in views if v.customers >= self.min_customers and v.share >= self.min_share]
        return sorted(hits, key=lambda v: -v.share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "radius": self.radius,
            "window": self.window,
            "min_customers": self.min_customers,
            "min_share": self.min_share,
            "total": self.total,
            "far": self.far,
            "seen": self.seen,
            "groups": [
                {"center": g.center.tolist(), "weight": g.weight, "seen": g.seen,
                 "ids": sorted(g.ids)}
                for g in self.groups
            ],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], centroids: np.ndarray) -> EmergingGroups:
        out = cls(
            centroids, float(data["threshold"]), float(data["radius"]), float(data["window"]),
            int(data["min_customers"]), float(data["min_share"]),
        )  # fmt: skip
        out.total = float(data["total"])
        out.far = int(data["far"])
        out.seen = int(data["seen"])
        out.groups = [
            _Group(np.asarray(g["center"], dtype=np.float64), float(g["weight"]), float(g["seen"]),
                   set(map(str, g["ids"])))
            for g in data["groups"]
        ]  # fmt: skip
        return out
