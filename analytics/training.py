"""Batch training: K-means for each k, scores, the k rule, profiles and names -> a model.

Pure apart from sklearn (no Kafka, no Redis, no files; plots live in :mod:`.plots`).

How it scales to a million customers inside a minute on two cores:

- the scaler is fitted on all rows; K-means for each k is fitted (``n_init`` seeded restarts)
  on a seeded sample of at most ``fit_sample`` rows (200k by default), then every row is
  assigned to its nearest centroid with numpy, so sizes, shares and inertia are over all rows;
- silhouette is computed on one seeded sample of at most ``silhouette_sample`` rows (20k), in
  one pass over the sample's pairwise distances for every k at once
  (:func:`silhouette_by_k`), instead of one ``sklearn.metrics.silhouette_score`` call per k.

The k rule (:func:`choose_k`): among the k whose smallest segment holds at least ``min_share``
of the customers (2 % by default, so no segment is a handful of outliers), take the best
silhouette; k whose silhouette is within ``tie_tolerance`` (0.01) of the best are tied, and the
tie goes to the k nearest the elbow of the inertia curve (Kneedle: the point farthest below the
chord of the normalised curve), then to the smaller k. If no k passes the share test, all are
considered and the reason says so.

Categorical features (``features`` may name any of
:data:`worker.segmentation.categorical.KNOWN_CATEGORICAL`) are fitted on the same rows
(:class:`~worker.segmentation.categorical.CategoricalEncoder`: levels, one-hot or frequency,
weights) and encoded after the scaled numerics; K-means, the silhouette and the k rule then work
on the whole model space. ``feature_weights`` multiplies a feature's columns (a numeric one's
through its scaler: ``std / weight``), so that feature counts ``weight`` times as far.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from analytics.calibration import online_calibration
from analytics.composition import describe_labels
from analytics.frames import categorical_frame, feature_frame
from analytics.profiles import (
    Population,
    name_segments,
    new_allowed,
    profile_segments,
    rule_text,
)
from worker.segmentation.categorical import (
    MAX_ONEHOT_LEVELS,
    MIN_LEVEL_COUNT,
    MIN_LEVEL_SHARE,
    MISSING,
    OTHER,
    CategoricalEncoder,
    split_features,
)
from worker.segmentation.errors import FeatureError, TrainingError
from worker.segmentation.features import DEFAULT_FEATURES, KNOWN_FEATURES, Scaler
from worker.segmentation.model import KScore, SegmentModel

_CHUNK = 65_536


def nearest(z: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid id and squared distance for every row, chunked to bound memory."""
    labels = np.empty(len(z), dtype=np.int64)
    d2min = np.empty(len(z), dtype=np.float64)
    c2 = (centroids**2).sum(axis=1)
    for start in range(0, len(z), _CHUNK):
        part = z[start : start + _CHUNK]
        d2 = (part**2).sum(axis=1)[:, None] - 2.0 * part @ centroids.T + c2[None, :]
        labels[start : start + len(part)] = d2.argmin(axis=1)
        d2min[start : start + len(part)] = np.maximum(d2.min(axis=1), 0.0)
    return labels, d2min


def silhouette_by_k(z: np.ndarray, labels_by_k: Mapping[int, np.ndarray]) -> dict[int, float]:
    """Mean silhouette of ``z`` under each labelling, in one pass over pairwise distances.

    Same definition as ``sklearn.metrics.silhouette_score`` (Euclidean; a point alone in its
    cluster scores 0). For each row chunk the distances to all points are multiplied by the
    one-hot matrices of every labelling, giving each point's summed distance to each cluster.
    """
    n = len(z)
    ks = list(labels_by_k)
    offsets = np.cumsum([0] + [int(labels_by_k[k].max()) + 1 for k in ks])
    # float32 halves the memory traffic of the n x n distances, which dominate the cost; the
    # result agrees with sklearn's float64 silhouette to ~1e-5 (tested).
    onehot = np.zeros((n, offsets[-1]), dtype=np.float32)
    for j, k in enumerate(ks):
        onehot[np.arange(n), offsets[j] + labels_by_k[k]] = 1.0
    counts = onehot.sum(axis=0, dtype=np.float64)
    centre = z - z.mean(axis=0)  # distances are shift-invariant; centring helps float32
    z32 = np.ascontiguousarray(centre, dtype=np.float32)
    sq = (z32.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    totals = {k: 0.0 for k in ks}
    chunk = max(1, 8_000_000 // max(n, 1))
    for start in range(0, n, chunk):
        part = z32[start : start + chunk]
        d = part @ z32.T  # in place from here: no n-wide temporaries
        d *= -2.0
        d += sq[None, :]
        d += sq[start : start + chunk, None]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        sums = (d @ onehot).astype(np.float64)
        rows = np.arange(len(part))
        for j, k in enumerate(ks):
            lab = labels_by_k[k][start : start + chunk]
            s = sums[:, offsets[j] : offsets[j + 1]]
            c = counts[offsets[j] : offsets[j + 1]]
            own_n = c[lab]
            a = s[rows, lab] / np.maximum(own_n - 1.0, 1.0)
            other = s / np.where(c > 0, c, np.inf)[None, :]
            other[rows, lab] = np.inf
            b = other.min(axis=1)
            denom = np.maximum(a, b)
            sil = np.where((own_n > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1), 0)
            totals[k] += float(sil.sum())
    return {k: totals[k] / n for k in ks}


def elbow_k(ks: Sequence[int], inertias: Sequence[float]) -> int:
    """Kneedle elbow: the k farthest below the chord of the normalised inertia curve."""
    if len(ks) < 3:
        return int(ks[0])
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertias, float)
    span = y.max() - y.min()
    y = (y - y.min()) / span if span > 0 else np.zeros_like(y)
    chord = y[0] + (y[-1] - y[0]) * x
    return int(ks[int(np.argmax(chord - y))])


def choose_k(
    scores: Sequence[KScore], min_share: float = 0.02, tie_tolerance: float = 0.01
) -> tuple[int, str]:
    """The k rule of the module docstring; returns ``(k, reason in words)``."""
    ordered = sorted(scores, key=lambda s: s.k)
    elbow = elbow_k([s.k for s in ordered], [s.inertia for s in ordered])
    eligible = [s for s in ordered if s.min_share >= min_share]
    note = ""
    if not eligible:
        eligible = ordered
        note = f" (no k kept every segment >= {min_share:.0%}; all k considered)"
    best = max(s.silhouette for s in eligible)
    tied = [s for s in eligible if s.silhouette >= best - tie_tolerance]
    pick = min(tied, key=lambda s: (abs(s.k - elbow), s.k))
    reason = (
        f"k={pick.k}: best silhouette among k with smallest segment >= {min_share:.0%}"
        f" (silhouette {pick.silhouette:.3f}, best {best:.3f}, tie tolerance {tie_tolerance};"
        f" tied k {[s.k for s in tied]}; elbow k={elbow}){note}"
    )
    return pick.k, reason


@dataclass(frozen=True)
class TrainResult:
    model: SegmentModel
    #: Segment id of every training row (in the order of the input frame).
    labels: np.ndarray
    #: The feature frame (real units) the model was trained on.
    features: pd.DataFrame
    elbow_k: int
    timings: dict[str, float]
    #: Every known categorical column of the training rows (index of ``features``), so that a
    #: model with other categorical features can be scored on the same customers (the gate).
    categories: pd.DataFrame | None = None


def train(
    state: pd.DataFrame,
    *,
    k: int | None = None,
    k_range: tuple[int, int] = (2, 10),
    seed: int = 0,
    features: Sequence[str] = DEFAULT_FEATURES,
    as_of: datetime | None = None,
    fit_sample: int = 200_000,
    silhouette_sample: int = 20_000,
    min_share: float = 0.02,
    tie_tolerance: float = 0.01,
    n_init: int = 3,
    hysteresis_margin: float = 0.1,
    now: datetime | None = None,
    feature_weights: Mapping[str, float] | None = None,
    categorical_min_share: float = MIN_LEVEL_SHARE,
    categorical_min_count: int = MIN_LEVEL_COUNT,
    max_onehot_levels: int = MAX_ONEHOT_LEVELS,
) -> TrainResult:
    """Train a :class:`SegmentModel` on export-contract ``state`` (``k=None`` means auto)."""
    import time

    t0 = time.perf_counter()
    ks = [k] if k is not None else list(range(k_range[0], k_range[1] + 1))
    if not ks or min(ks) < 1:
        raise TrainingError(f"invalid k / k-range: {ks}")
    try:
        numeric, categorical = split_features(features, KNOWN_FEATURES)
    except FeatureError as exc:
        raise TrainingError(str(exc)) from None
    if not numeric:
        raise TrainingError("--features needs at least one numeric feature")
    weights = dict(feature_weights or {})
    stray = sorted(set(weights) - set(features))
    if stray:
        raise TrainingError(f"weight(s) for feature(s) {stray} the model does not use")
    if any(not w > 0 for w in weights.values()):
        raise TrainingError(f"feature weights must be > 0: {weights}")
    frame = feature_frame(state, as_of)
    cat_frame = categorical_frame(state)
    x_real = frame[list(numeric)].to_numpy(dtype=np.float64)
    n = len(x_real)
    if n <= max(ks):
        raise TrainingError(f"{n} customers is too few to train k up to {max(ks)}")
    scaler = Scaler.fit(x_real)
    if weights:
        w = np.array([weights.get(f, 1.0) for f in numeric], dtype=np.float64)
        scaler = Scaler(mean=scaler.mean, std=scaler.std / w)
    z = scaler.transform(x_real)
    values = {name: cat_frame[name].tolist() for name in categorical}
    encoder = CategoricalEncoder.fit(
        values, weights, categorical_min_share, categorical_min_count, max_onehot_levels
    )
    if encoder:
        z = np.hstack([z, encoder.encode(values, n)])
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, fit_sample, replace=False)) if n > fit_sample else None
    sil_idx = (
        np.sort(rng.choice(n, silhouette_sample, replace=False)) if n > silhouette_sample else None
    )
    z_fit = z if fit_idx is None else z[fit_idx]
    t_prep = time.perf_counter()

    centers: dict[int, np.ndarray] = {}
    labels_all: dict[int, np.ndarray] = {}
    inertia: dict[int, float] = {}
    min_shares: dict[int, float] = {}
    for kk in ks:
        km = KMeans(n_clusters=kk, n_init=n_init, random_state=seed).fit(z_fit)
        c = np.asarray(km.cluster_centers_, dtype=np.float64)
        lab, d2 = nearest(z, c)
        sizes = np.bincount(lab, minlength=kk)
        # Segment ids ordered by size (largest first): stable, readable ids.
        order = np.argsort(-sizes, kind="stable")
        remap = np.empty(kk, dtype=np.int64)
        remap[order] = np.arange(kk)
        centers[kk], labels_all[kk] = c[order], remap[lab]
        inertia[kk] = float(d2.sum())
        min_shares[kk] = float(sizes.min() / n)
    t_fit = time.perf_counter()
    z_sil = z if sil_idx is None else z[sil_idx]
    sil = silhouette_by_k(
        z_sil, {kk: (lab if sil_idx is None else lab[sil_idx]) for kk, lab in labels_all.items()}
    )
    t_sil = time.perf_counter()
    scores = tuple(KScore(kk, inertia[kk], sil[kk], min_shares[kk]) for kk in ks)
    if k is None:
        chosen, rule = choose_k(scores, min_share, tie_tolerance)
    else:
        chosen, rule = k, f"k={k}: fixed by the caller"
    elbow = elbow_k(ks, [inertia[kk] for kk in ks])
    labels = labels_all[chosen]
    profiles = profile_segments(frame, labels, chosen)
    population = Population.of(frame)
    may_be_new = new_allowed(centers[chosen][:, : len(numeric)], numeric, scaler.mean, scaler.std)
    names = name_segments(profiles, population, may_be_new)
    for p, name in zip(profiles, names, strict=True):
        p["name"] = name
        p["rule"] = rule_text(name)
    for p, words in zip(profiles, describe_labels(state, labels, chosen), strict=True):
        p["composition"] = words  # who is in it, in words (analytics.composition)
    created = now or datetime.now(UTC)
    d = len(numeric)
    extra = _extra(population, n, fit_idx, sil_idx, n_init, min_share)
    if weights or encoder:
        extra["feature_weights"] = {f: weights.get(f, 1.0) for f in features}
    if encoder:
        extra["categorical_profiles"] = _categorical_profiles(encoder, values, labels, chosen)
    extra["online"] = online_calibration(
        state, frame, numeric, scaler, centers[chosen][:, :d], labels, as_of
    )  # the worker's drift and emerging-group checks (analytics.calibration)
    model = SegmentModel(
        version="-",
        created_at=created.astimezone(UTC).isoformat(),
        as_of=(as_of or created).astimezone(UTC).isoformat(),
        feature_names=numeric,
        scaler=scaler,
        centroids=centers[chosen][:, :d],
        names=tuple(names),
        seed=seed,
        training_size=n,
        hysteresis_margin=hysteresis_margin,
        scores=scores,
        k_rule=rule,
        profiles=tuple(profiles),
        extra=extra,
        categorical=encoder,
        categorical_centroids=centers[chosen][:, d:],
    ).with_content_version(created)
    t_end = time.perf_counter()
    timings = {
        "prepare_s": t_prep - t0,
        "kmeans_s": t_fit - t_prep,
        "silhouette_s": t_sil - t_fit,
        "profile_s": t_end - t_sil,
        "total_s": t_end - t0,
    }
    return TrainResult(model, labels, frame, elbow, timings, cat_frame)


def _categorical_profiles(
    encoder: CategoricalEncoder,
    values: Mapping[str, list[object]],
    labels: np.ndarray,
    k: int,
) -> list[dict[str, Any]]:
    """Per segment id, per categorical feature: its most common level and that level's share."""
    out: list[dict[str, Any]] = [{} for _ in range(k)]
    for feature in encoder.features:
        codes = feature.codes(values[feature.name])
        names = (*feature.levels, OTHER, MISSING)
        for seg in range(k):
            mine = codes[labels == seg]
            if not len(mine):
                continue
            counts = np.bincount(mine, minlength=len(names))
            top = int(counts.argmax())
            out[seg][feature.name] = {
                "top": names[top], "share": float(counts[top] / len(mine))
            }  # fmt: skip
    return out


def _extra(
    population: Population,
    n: int,
    fit_idx: np.ndarray | None,
    sil_idx: np.ndarray | None,
    n_init: int,
    min_share: float,
) -> dict[str, Any]:
    return {
        "population": population.to_dict(),
        "fit_rows": n if fit_idx is None else len(fit_idx),
        "silhouette_rows": n if sil_idx is None else len(sil_idx),
        "n_init": n_init,
        "min_share": min_share,
    }
