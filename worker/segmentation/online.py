"""The online model: a river pipeline seeded from the batch model, its drift, emerging groups.

What it is. ``compose.Pipeline(FuncTransformer(scale), cluster.KMeans)``: the transformer maps a
real-unit feature dict to the batch model's scaled space (``log1p``, the artifact's mean and
std), and river's incremental k-means, whose centres are set from the batch centroids, moves the
nearest centre towards each point (``halflife`` = the learning rate). River's centre ``i`` is the
batch model's segment ``i``: keys are never renumbered, so ids and names stay stable.

What assigns. The batch model (docs/segmentation.md "What assigns", with the measurements): the
online model only *watches* the stream for drift and for emerging groups.

Drift: the stream against itself, in sampling spreads. The worker scores only the customers an
event changed, just after the event (recency near 0 for an order), so the scored stream is never
a sample of the training population, and online centres moved towards it even on steady traffic
(the old read-out, "displacement from the batch centroids", passed 0.5 std units within minutes
on the demo's unchanged personas). So drift compares like with like:

- *reference*: each centre once it has learned ``3 / learning_rate`` points after seeding (the
  seed's pull has then faded to e^-3 = 5 %), and the segment shares of the batch assignments
  (exponentially weighted, rate ``learning_rate / k``) once ``3 k / learning_rate`` scorings
  were seen: the stream as it looked right after training;
- *recent*: the same two statistics now (exponential windows of ``1 / learning_rate`` points
  per centre, ``k / learning_rate`` scorings for the shares);
- *unit*: the sampling spread of the difference under no change, derived from the training
  data: an exponentially weighted mean with rate ``a`` of points with variance ``s2`` has
  variance ``a / (2 - a) * s2``, two of them (reference and recent) twice that; ``s2`` is the
  segment's within-segment variance at training (:func:`calibrate`, summed over features), and
  ``p (1 - p)`` for a share ``p``;
- per segment, drift = the larger of the centre's and the share's distance in those spreads;
  the report's ``max`` is the largest, compared with ``settings.scoring.drift_bound``.

A model trained before this calibration existed (or written by hand) has no ``extra["online"]``:
its centres are compared with the batch centroids from the first point, in the same spreads with
a within-segment variance of 1 per feature (the whole population's), and there is no share or
emerging-group test.

Emerging groups (:mod:`.emerging`): scored customers far from every batch centroid that gather
in one region. Either finding proposes a retrain (``DriftReport.retrain_proposed``).

Cost. River learns one dict at a time (about 11 us a point for k = 8, d = 4), so a round teaches
it a seeded sample of at most ``teach`` (<= :data:`LEARN_PER_ROUND`) customers, and the emerging
groups as many far points; the worker sets ``teach`` by a rate (worker/scoring/drift.py,
``LearnBudget``). The shares and the far-point counts use every customer of the round
(vectorised).

State: :meth:`OnlineModel.to_dict` / :meth:`OnlineModel.from_dict` (JSON, ``format`` 2). A
format-1 state (the hand-written ``OnlineKMeans`` of before) is migrated: its centres and counts
are kept, the references start afresh.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import cluster, compose

from worker.segmentation.emerging import EmergingGroup, EmergingGroups
from worker.segmentation.model import SegmentModel

#: Layout of :meth:`OnlineModel.to_dict` (1 = the hand-written OnlineKMeans before it).
ONLINE_FORMAT = 2
#: Weight of one point in the update of its centre (river's ``halflife``).
LEARNING_RATE = 0.01
#: At most this many customers of a round are taught to river (a seeded sample).
LEARN_PER_ROUND = 64
#: Quantile of the training customers' nearest-centroid distances above which a point is far.
FAR_QUANTILE = 0.99
#: Total variation distance of the segment mix above which it has drifted (a share of the
#: recent scorings that changed segment).
MIX_BOUND = 0.25


@dataclass(frozen=True)
class DriftReport:
    """Drift per segment in sampling spreads (see the module docstring), emerging groups."""

    per_segment: tuple[float, ...]
    max: float
    mean: float
    bound: float
    exceeded: bool
    #: Each centre's displacement from its reference, standard units (0 until it has one).
    displacement: tuple[float, ...] = ()
    #: Each segment's share of recent scorings minus its reference share (0 before one).
    share: tuple[float, ...] = ()
    #: Total variation distance between the recent and the reference shares, and its bound.
    mix: float = 0.0
    mix_bound: float = float("inf")
    #: False while no reference exists yet (nothing to compare).
    ready: bool = True
    emerging: tuple[EmergingGroup, ...] = ()

    @property
    def retrain_proposed(self) -> bool:
        return self.exceeded or bool(self.emerging)


def calibrate(
    centroids: np.ndarray,
    z: np.ndarray,
    labels: np.ndarray,
    z_event: np.ndarray | None = None,
    quantile: float = FAR_QUANTILE,
) -> dict[str, Any]:
    """What the online model needs of the training data (stored as ``extra["online"]``).

    ``z``: the training rows in scaled space, ``labels`` their segments; ``z_event``: the same
    customers as they looked at their latest event (what the stream scores), if known.

    - ``segment_var``: per segment and feature, the variance of its members (k x d);
    - ``far_distance``: the ``quantile`` of the nearest-centroid distances of ``z_event`` (else
      ``z``): above it a scored customer is far from every segment;
    - ``shares``: each segment's share of the training customers.
    """
    centroids = np.asarray(centroids, dtype=np.float64)
    k, d = centroids.shape
    var = np.ones((k, d))
    for i in range(k):
        members = z[labels == i]
        if len(members) >= 2:
            var[i] = members.var(axis=0)
    rows = z if z_event is None else z_event
    near = np.sqrt(((rows[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2).min(axis=1))
    shares = np.bincount(labels, minlength=k) / max(len(labels), 1)
    return {
        "segment_var": var.tolist(),
        "far_distance": float(np.quantile(near, quantile)),
        "far_quantile": quantile,
        "far_rows": "latest event" if z_event is not None else "training as-of",
        "shares": shares.tolist(),
    }


def _scaler(
    names: Sequence[str], mean: np.ndarray, std: np.ndarray
) -> Callable[[dict[Hashable, Any]], dict[Hashable, Any]]:
    """The batch model's scaling of one feature dict (``z = (log1p(max(x, 0)) - mean) / std``)."""
    cols = [(n, float(m), float(s)) for n, m, s in zip(names, mean, std, strict=True)]

    def scale(x: dict[Hashable, Any]) -> dict[Hashable, Any]:
        return {n: (math.log1p(max(float(x[n]), 0.0)) - m) / s for n, m, s in cols}

    return scale


class OnlineModel:
    """River's k-means behind the batch model's scaling, seeded with its centroids (see module)."""

    def __init__(self, model: SegmentModel, learning_rate: float = LEARNING_RATE) -> None:
        self.model_version = model.version
        self.feature_names = tuple(model.feature_names)
        self.learning_rate = float(learning_rate)
        self.initial_ = np.asarray(model.centroids, dtype=np.float64)
        self._mean, self._std = model.scaler.mean, model.scaler.std
        k, d = self.initial_.shape
        kmeans = cluster.KMeans(n_clusters=k, halflife=self.learning_rate, seed=0)
        for i in range(k):
            kmeans.centers[i].clear()
            kmeans.centers[i].update(
                zip(self.feature_names, map(float, self.initial_[i]), strict=True)
            )
        self.pipeline = compose.Pipeline(
            ("scale", compose.FuncTransformer(_scaler(self.feature_names, self._mean, self._std))),
            ("kmeans", kmeans),
        )
        self.kmeans = kmeans
        calibration = dict(model.extra.get("online") or {})
        self.calibrated = bool(calibration)
        var = np.asarray(calibration.get("segment_var", np.ones((k, d))), dtype=np.float64)
        self.segment_var = var if var.shape == (k, d) else np.ones((k, d))
        self.counts_ = np.zeros(k, dtype=np.int64)
        self.seen = 0
        # Uncalibrated: the batch centroids are the reference from the first point.
        self.reference_ = None if self.calibrated else self.initial_.copy()
        self.has_reference_ = np.full(k, not self.calibrated)
        start = np.asarray(calibration.get("shares", np.full(k, 1.0 / k)), dtype=np.float64)
        self.shares_ = start if start.shape == (k,) else np.full(k, 1.0 / k)
        self.share_reference_: np.ndarray | None = None
        far = calibration.get("far_distance")
        self.emerging_: EmergingGroups | None = (
            EmergingGroups(self.initial_, float(far)) if far is not None else None
        )

    # -- parameters derived from the learning rate ----------------------------------------------
    @property
    def k(self) -> int:
        return int(self.initial_.shape[0])

    @property
    def burn_in(self) -> int:
        """Points a centre learns before its reference is taken (seed's pull down to e^-3)."""
        return math.ceil(3.0 / self.learning_rate)

    @property
    def share_rate(self) -> float:
        return self.learning_rate / self.k

    @property
    def share_burn_in(self) -> int:
        return math.ceil(3.0 / self.share_rate)

    # -- river ---------------------------------------------------------------------------------
    @property
    def centers_(self) -> np.ndarray:
        """``(k, d)`` current centres, scaled space, row ``i`` = segment ``i``."""
        c = self.kmeans.centers
        return np.array([[c[i][f] for f in self.feature_names] for i in range(self.k)])

    def predict_one(self, x: dict[Hashable, Any]) -> int:
        """Nearest online centre of a real-unit feature dict (the pipeline end to end)."""
        return int(self.pipeline.predict_one(x))

    def learn_one(self, x: dict[Hashable, Any]) -> int:
        """Teach river one real-unit feature dict; returns the centre it moved."""
        z = self.pipeline["scale"].transform_one(x)
        i = int(self.kmeans.learn_predict_one(z))  # type: ignore[no-untyped-call]
        self.counts_[i] += 1
        if not self.has_reference_[i] and self.counts_[i] >= self.burn_in:
            if self.reference_ is None:
                self.reference_ = np.zeros_like(self.initial_)
            self.reference_[i] = [self.kmeans.centers[i][f] for f in self.feature_names]
            self.has_reference_[i] = True
        return i

    def learn_many(
        self,
        x_real: np.ndarray,
        segment_ids: np.ndarray,
        customer_ids: Sequence[str] | None = None,
        teach: int = LEARN_PER_ROUND,
    ) -> None:
        """A round of scored customers: real-unit rows, their assigned ids (batch model).

        Shares take every row, and so do the far points' counts; river learns a seeded sample
        of at most ``teach`` rows and the emerging groups at most ``teach`` far points (the
        seed is the count of rows seen before, so a replay of the same rounds gives the same
        model). ``teach`` is at most :data:`LEARN_PER_ROUND`.
        """
        teach = max(0, min(teach, LEARN_PER_ROUND))
        x = np.atleast_2d(np.asarray(x_real, dtype=np.float64))
        ids = np.asarray(segment_ids, dtype=np.int64)
        n = len(x)
        if n == 0:
            return
        keep = 1.0 - self.share_rate
        weight = keep**n
        self.shares_ = self.shares_ * weight + (1.0 - weight) * (
            np.bincount(ids, minlength=self.k)[: self.k] / n
        )
        if self.emerging_ is not None:
            z = (np.log1p(np.maximum(x, 0.0)) - self._mean) / self._std
            cids = None if customer_ids is None else list(customer_ids)
            self.emerging_.learn_many(z, cids, far_max=teach)
        rows = np.arange(n)
        if n > teach:
            rng = np.random.default_rng(self.seen)
            rows = np.sort(rng.choice(n, teach, replace=False))
        self.seen += n
        names = self.feature_names
        for row in x[rows].tolist():
            self.learn_one(dict(zip(names, row, strict=True)))
        if self.calibrated and self.share_reference_ is None and self.seen >= self.share_burn_in:
            self.share_reference_ = self.shares_.copy()

    # -- drift ---------------------------------------------------------------------------------
    def drift(self, bound: float = float("inf"), mix_bound: float = MIX_BOUND) -> DriftReport:
        """Drift per segment in segment spreads, and of the mix, against the bounds (module
        docstring)."""
        k = self.k
        displacement = np.zeros(k)
        centre = np.zeros(k)
        if self.reference_ is not None:
            have = self.has_reference_
            moved = np.sqrt(((self.centers_ - self.reference_) ** 2).sum(axis=1))
            spread = np.sqrt(self.segment_var.sum(axis=1))
            displacement = np.where(have, moved, 0.0)
            centre = np.where(have, moved / np.maximum(spread, 1e-12), 0.0)
        share = np.zeros(k)
        mix = 0.0
        if self.share_reference_ is not None:
            share = self.shares_ - self.share_reference_
            mix = float(np.abs(share).sum() / 2.0)
        mx = float(centre.max()) if k else 0.0
        emerging = tuple(self.emerging_.emerging()) if self.emerging_ is not None else ()
        return DriftReport(
            per_segment=tuple(map(float, centre)),
            max=mx,
            mean=float(centre.mean()) if k else 0.0,
            bound=bound,
            exceeded=mx > bound or mix > mix_bound,
            displacement=tuple(map(float, displacement)),
            share=tuple(map(float, share)),
            mix=mix,
            mix_bound=mix_bound,
            ready=bool(self.has_reference_.any()),
            emerging=emerging,
        )

    # -- state ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        ref = self.reference_
        return {
            "format": ONLINE_FORMAT,
            "model_version": self.model_version,
            "feature_names": list(self.feature_names),
            "learning_rate": self.learning_rate,
            "initial": self.initial_.tolist(),
            "centers": self.centers_.tolist(),
            "counts": self.counts_.tolist(),
            "seen": self.seen,
            "reference": None if ref is None else ref.tolist(),
            "has_reference": self.has_reference_.tolist(),
            "shares": self.shares_.tolist(),
            "share_reference": (
                None if self.share_reference_ is None else self.share_reference_.tolist()
            ),
            "emerging": None if self.emerging_ is None else self.emerging_.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], model: SegmentModel, learning_rate: float | None = None
    ) -> OnlineModel:
        """Resume from :meth:`to_dict` (format 2), or migrate a format-1 state (centres and
        counts kept, references afresh). Raises ``ValueError`` when it does not fit ``model``."""
        if tuple(data["feature_names"]) != tuple(model.feature_names):
            raise ValueError("online state is for other features")
        rate = float(data["learning_rate"]) if learning_rate is None else learning_rate
        out = cls(model, rate)
        centers = np.asarray(data["centers"], dtype=np.float64)
        if centers.shape != out.initial_.shape:
            raise ValueError(f"online centres {centers.shape} vs model {out.initial_.shape}")
        for i in range(out.k):
            out.kmeans.centers[i].update(
                zip(out.feature_names, map(float, centers[i]), strict=True)
            )
        out.counts_ = np.asarray(data["counts"], dtype=np.int64)
        if int(data.get("format", 1)) < ONLINE_FORMAT:
            return out
        out.seen = int(data["seen"])
        if data["reference"] is not None:
            out.reference_ = np.asarray(data["reference"], dtype=np.float64)
        out.has_reference_ = np.asarray(data["has_reference"], dtype=bool)
        out.shares_ = np.asarray(data["shares"], dtype=np.float64)
        if data["share_reference"] is not None:
            out.share_reference_ = np.asarray(data["share_reference"], dtype=np.float64)
        if data["emerging"] is not None:
            out.emerging_ = EmergingGroups.from_dict(data["emerging"], out.initial_)
        return out
