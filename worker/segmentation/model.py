"""The versioned segmentation model artifact: everything scoring needs, as plain JSON.

A model is data, not a pickled sklearn object: scaler mean/std, centroids in scaled space,
segment names and profiles, the scores of every k tried, and how it was trained. Scoring with
it is numpy only (:mod:`worker.segmentation.assign`). Pure: no I/O here (see ``artifacts*``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from worker.segmentation.errors import ArtifactInvalid
from worker.segmentation.features import KNOWN_FEATURES, Scaler

#: Bumped when the JSON layout changes incompatibly; loaders refuse newer formats.
ARTIFACT_FORMAT = 1


def make_version(created: datetime, content: str) -> str:
    """``km-<UTC yyyymmddTHHMM>-<4 hex of a hash of the content>``, e.g. ``km-20261127T0102-3f2a``.

    ``content`` is the artifact JSON without its version, so two different models trained in
    the same minute get different versions (barring a 1-in-65536 collision, which
    :meth:`FileModelStore.save` refuses rather than overwrites).
    """
    digest = hashlib.sha1(content.encode()).hexdigest()[:4]
    return f"km-{created.astimezone(UTC):%Y%m%dT%H%M}-{digest}"


@dataclass(frozen=True)
class KScore:
    """How well one k did: inertia over all rows, silhouette on a seeded sample, smallest share."""

    k: int
    inertia: float
    silhouette: float
    min_share: float


@dataclass(frozen=True)
class SegmentModel:
    """A trained K-means segmentation (see module docstring)."""

    version: str
    created_at: str
    feature_names: tuple[str, ...]
    scaler: Scaler
    #: ``(k, d)`` centroids in scaled (log1p + standardised) space.
    centroids: np.ndarray
    names: tuple[str, ...]
    seed: int
    training_size: int
    as_of: str
    hysteresis_margin: float = 0.1
    scores: tuple[KScore, ...] = ()
    k_rule: str = ""
    #: One dict per segment, real units (see :mod:`analytics.profiles`).
    profiles: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    kind = "kmeans"

    def __post_init__(self) -> None:
        k, d = self.centroids.shape if self.centroids.ndim == 2 else (0, 0)
        problems = []
        if k < 1 or d != len(self.feature_names):
            problems.append(
                f"centroids shape {self.centroids.shape} vs {len(self.feature_names)} features"
            )
        if len(self.names) != k:
            problems.append(f"{len(self.names)} names for {k} centroids")
        if len(set(self.names)) != len(self.names):
            problems.append(f"segment names not unique: {self.names}")
        if self.scaler.mean.shape != (d,) or self.scaler.std.shape != (d,):
            problems.append("scaler shape does not match the features")
        unknown = set(self.feature_names) - set(KNOWN_FEATURES)
        if unknown:
            problems.append(f"unknown features {sorted(unknown)}")
        if not np.all(np.isfinite(self.centroids)):
            problems.append("non-finite centroid")
        if problems:
            raise ArtifactInvalid(f"model {self.version}: " + "; ".join(problems))

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def transform(self, x_real: np.ndarray) -> np.ndarray:
        """Scaled vectors of real-unit feature rows (``(n, d)`` or ``(d,)``)."""
        return self.scaler.transform(x_real)

    def centroids_real(self) -> np.ndarray:
        """Centroids mapped back to real units (geometric-mean-like, not cluster means)."""
        return self.scaler.inverse(self.centroids)

    def segment_id(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "kind": self.kind,
            "version": self.version,
            "created_at": self.created_at,
            "as_of": self.as_of,
            "k": self.k,
            "feature_names": list(self.feature_names),
            "scaler": {"transform": "log1p", "mean": self.scaler.mean.tolist(),
                       "std": self.scaler.std.tolist()},
            "centroids": self.centroids.tolist(),
            "names": list(self.names),
            "seed": self.seed,
            "training_size": self.training_size,
            "hysteresis_margin": self.hysteresis_margin,
            "k_rule": self.k_rule,
            "scores": [vars(s) for s in self.scores],
            "profiles": list(self.profiles),
            "extra": self.extra,
        }  # fmt: skip

    def with_content_version(self, created: datetime) -> SegmentModel:
        """This model renamed to :func:`make_version` of its own content."""
        return replace(self, version=make_version(created, replace(self, version="-").to_json()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SegmentModel:
        try:
            if data.get("format", 0) > ARTIFACT_FORMAT or data.get("kind") != cls.kind:
                raise ArtifactInvalid(
                    f"{source}: format {data.get('format')} kind {data.get('kind')!r} is not a "
                    f"kmeans artifact this code can read (format <= {ARTIFACT_FORMAT})"
                )
            return cls(
                version=str(data["version"]),
                created_at=str(data["created_at"]),
                as_of=str(data["as_of"]),
                feature_names=tuple(data["feature_names"]),
                scaler=Scaler(
                    mean=np.asarray(data["scaler"]["mean"], dtype=np.float64),
                    std=np.asarray(data["scaler"]["std"], dtype=np.float64),
                ),
                centroids=np.asarray(data["centroids"], dtype=np.float64),
                names=tuple(data["names"]),
                seed=int(data["seed"]),
                training_size=int(data["training_size"]),
                hysteresis_margin=float(data.get("hysteresis_margin", 0.1)),
                k_rule=str(data.get("k_rule", "")),
                scores=tuple(KScore(**s) for s in data.get("scores", [])),
                profiles=tuple(data.get("profiles", [])),
                extra=dict(data.get("extra", {})),
            )
        except ArtifactInvalid:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactInvalid(f"{source}: not a valid model artifact ({exc!r})") from exc

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<json>") -> SegmentModel:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ArtifactInvalid(f"{source}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ArtifactInvalid(f"{source}: top level is not an object")
        return cls.from_dict(data, source)
