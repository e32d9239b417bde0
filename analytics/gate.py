"""The gate an automatic retrain must pass before it replaces the live model.

A drift-triggered retrain (``segstream train --gate``) runs unattended, so it must not swap in
a model that is worse or that relabels the customers for nothing. It is promoted only when,
measured on the same customers (the state it was trained on, at the same as-of):

1. **silhouette**: its silhouette is not below the current model's by more than
   ``settings.scoring.gate_silhouette_margin`` (0.05);
2. **smallest segment**: every one of its segments holds at least
   ``gate_min_segment_share`` of the customers (0.02): no segment of a handful of outliers;
3. **label stability**: at least ``gate_min_stability`` of the customers (0.7) get the same
   segment *name* from it as from the current model. Names, not ids: ids are ordered by size
   and mean nothing across models, while names are what the storefront and the platform read.

Otherwise the model is stored, not promoted, and the result (every check, its value and its
bound) is kept beside it, so ``segstream models list`` says why. Without a current K-means
model (rules-v1 live) only the segment-share check applies.

Both silhouettes are computed by :func:`analytics.training.silhouette_by_k` on one seeded sample
of the customers, each labelling in its own model's scaled space (nearest centroid, no
hysteresis): the same definition ``segstream train`` stores per k. :func:`evaluate` is pure
(numbers in, verdict out); :func:`measure` computes the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segstream.settings import ScoringSettings
from worker.segmentation.errors import TrainingError
from worker.segmentation.model import SegmentModel

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class GateBounds:
    """The gate's three thresholds (``settings.scoring.gate_*``, ``SEGSTREAM_RETRAIN_GATE_*``)."""

    silhouette_margin: float = 0.05
    min_segment_share: float = 0.02
    min_stability: float = 0.7

    @classmethod
    def of(cls, scoring: ScoringSettings) -> GateBounds:
        return cls(
            scoring.gate_silhouette_margin,
            scoring.gate_min_segment_share,
            scoring.gate_min_stability,
        )


@dataclass(frozen=True)
class GateMeasures:
    """What the gate judges, measured on the same customers."""

    customers: int
    silhouette_new: float
    min_segment_share: float
    #: ``None`` without a current K-means model.
    current_version: str | None = None
    silhouette_current: float | None = None
    stability: float | None = None


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    bound: float
    passed: bool
    text: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[GateCheck, ...]
    measures: GateMeasures
    bounds: GateBounds

    @property
    def reason(self) -> str:
        """The failed checks in words ('' when it passed)."""
        return "; ".join(c.text for c in self.checks if not c.passed)

    def summary(self) -> str:
        if self.passed:
            return "passed: " + "; ".join(c.text for c in self.checks)
        return "failed: " + self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "summary": self.summary(),
            "checks": [asdict(c) for c in self.checks],
            "measures": asdict(self.measures),
            "bounds": asdict(self.bounds),
        }


def evaluate(m: GateMeasures, bounds: GateBounds) -> GateResult:
    """The verdict on ``m`` (module docstring); pure."""
    checks: list[GateCheck] = []
    if m.silhouette_current is not None:
        floor = m.silhouette_current - bounds.silhouette_margin
        ok = m.silhouette_new >= floor
        checks.append(GateCheck(
            "silhouette", m.silhouette_new, floor, ok,
            f"silhouette {m.silhouette_new:.3f} {'>=' if ok else '<'} {floor:.3f} "
            f"(current {m.silhouette_current:.3f} - margin {bounds.silhouette_margin:g})",
        ))  # fmt: skip
    ok = m.min_segment_share >= bounds.min_segment_share
    checks.append(GateCheck(
        "min_segment_share", m.min_segment_share, bounds.min_segment_share, ok,
        f"smallest segment {m.min_segment_share:.1%} {'>=' if ok else '<'} "
        f"{bounds.min_segment_share:.1%}",
    ))  # fmt: skip
    if m.stability is not None:
        ok = m.stability >= bounds.min_stability
        checks.append(GateCheck(
            "stability", m.stability, bounds.min_stability, ok,
            f"label stability {m.stability:.1%} {'>=' if ok else '<'} "
            f"{bounds.min_stability:.1%} (customers keeping their segment name vs "
            f"{m.current_version})",
        ))  # fmt: skip
    return GateResult(all(c.passed for c in checks), tuple(checks), m, bounds)


def label_stability(current: Sequence[str], new: Sequence[str]) -> float:
    """Share of customers whose segment name is the same under both models (1.0 for none)."""
    if len(current) != len(new):
        raise ValueError(f"{len(current)} current names vs {len(new)} new names")
    if not current:
        return 1.0
    return sum(a == b for a, b in zip(current, new, strict=True)) / len(current)


def smallest_share(labels: np.ndarray, k: int) -> float:
    """Share of the customers in the smallest of ``k`` segments (an empty segment counts, 0)."""
    if len(labels) == 0:
        return 0.0
    return float(np.bincount(labels, minlength=k).min() / len(labels))


def silhouette(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of one labelling (0 when fewer than two segments are used)."""
    from analytics.training import silhouette_by_k

    used, compact = np.unique(labels, return_inverse=True)
    if len(used) < 2:
        return 0.0
    return silhouette_by_k(z, {len(used): compact.astype(np.int64)})[len(used)]


def measure(
    model: SegmentModel,
    labels: np.ndarray,
    features: pd.DataFrame,
    current: SegmentModel | None,
    *,
    seed: int = 0,
    sample: int = 20_000,
    categories: pd.DataFrame | None = None,
) -> GateMeasures:
    """The gate's numbers for a new ``model`` against ``current`` on the same customers.

    ``labels``/``features``/``categories``: what :func:`analytics.training.train` returns
    (segment id of every training row, the feature frame in real units, every known feature,
    and the categorical columns; needed only when a model has categorical features).
    ``current``: the live :class:`SegmentModel`, or ``None``. Silhouettes are in each model's
    own space, categorical columns included.
    """
    from analytics.frames import categorical_values
    from worker.segmentation.assign import assign

    def cats(m: SegmentModel, index: np.ndarray | None = None) -> dict[str, list[object]] | None:
        if not m.categorical:
            return None
        if categories is None:
            raise TrainingError(f"model {m.version} has categorical features: give categories")
        part = categories if index is None else categories.iloc[index]
        return categorical_values(part, m.categorical_names)

    n = len(labels)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    x_new = np.asarray(features[list(model.feature_names)], dtype=np.float64)
    z_new = model.encode(x_new[rows], cats(model, rows))
    sil_new = silhouette(z_new, labels[rows])
    share = smallest_share(labels, model.k)
    if current is None:
        return GateMeasures(n, sil_new, share)
    x_cur = np.asarray(features[list(current.feature_names)], dtype=np.float64)
    cur_ids = assign(current, x_cur, margin=0.0, categories=cats(current)).segment_ids
    sil_cur = silhouette(current.encode(x_cur[rows], cats(current, rows)), cur_ids[rows])
    stability = label_stability(
        [current.names[i] for i in cur_ids], [model.names[i] for i in labels]
    )
    return GateMeasures(n, sil_new, share, current.version, sil_cur, stability)
