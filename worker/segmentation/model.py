"""The versioned segmentation model artifact: everything scoring needs, as plain JSON.

A model is data, not a pickled sklearn object: scaler mean/std, centroids in scaled space,
segment names and profiles, the scores of every k tried, and how it was trained. Scoring with
it is numpy only (:mod:`worker.segmentation.assign`). Pure: no I/O here (see ``artifacts*``).

Categorical features (:mod:`worker.segmentation.categorical`) are kept beside the numeric ones,
not among them: ``feature_names``, ``scaler`` and ``centroids`` stay the numeric part (what
every reader in real units, the online model and older readers of the JSON expect), and
``categorical`` (the fitted levels and weights) with ``categorical_centroids`` hold the rest.
Model space is ``[numeric z | categorical blocks]``; :meth:`SegmentModel.encode` and
:attr:`SegmentModel.all_centroids` give it whole. A model with categorical features is written
as format 2, which older code refuses instead of scoring it on its numeric part alone; a
numeric-only model is still written (and read) as format 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from worker.segmentation.categorical import KNOWN_CATEGORICAL, CategoricalEncoder
from worker.segmentation.errors import ArtifactInvalid, FeatureError
from worker.segmentation.features import KNOWN_FEATURES, Scaler

#: Bumped when the JSON layout changes incompatibly; loaders refuse newer formats.
ARTIFACT_FORMAT = 2
#: The format of a model without categorical features (readable by format-1 code).
NUMERIC_FORMAT = 1


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
    #: Categorical features, encoded after the numeric ones (empty: a numeric-only model).
    categorical: CategoricalEncoder = field(default_factory=CategoricalEncoder)
    #: ``(k, categorical.width)`` centroids of the categorical block (``None``: no such block).
    categorical_centroids: np.ndarray | None = None

    kind = "kmeans"

    def __post_init__(self) -> None:
        k, d = self.centroids.shape if self.centroids.ndim == 2 else (0, 0)
        if self.categorical_centroids is None:
            object.__setattr__(self, "categorical_centroids", np.zeros((k, 0), dtype=np.float64))
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
        problems += self._categorical_problems(k)
        if problems:
            raise ArtifactInvalid(f"model {self.version}: " + "; ".join(problems))

    def _categorical_problems(self, k: int) -> list[str]:
        cats = self.categorical_centroids
        assert cats is not None
        problems = []
        if cats.shape != (k, self.categorical.width):
            problems.append(
                f"categorical centroids shape {cats.shape} vs {self.categorical.width} columns"
            )
        unknown = set(self.categorical.names) - set(KNOWN_CATEGORICAL)
        if unknown:
            problems.append(f"unknown categorical features {sorted(unknown)}")
        both = set(self.categorical.names) & set(self.feature_names)
        if both or len(set(self.categorical.names)) != len(self.categorical.names):
            problems.append("a feature is named twice")
        if not np.all(np.isfinite(cats)):
            problems.append("non-finite categorical centroid")
        return problems

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def categorical_names(self) -> tuple[str, ...]:
        """The categorical features' names (empty for a numeric-only model)."""
        return self.categorical.names

    @property
    def all_feature_names(self) -> tuple[str, ...]:
        """Numeric then categorical feature names (what ``--features`` named)."""
        return (*self.feature_names, *self.categorical.names)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the model-space columns: numeric features, then categorical columns."""
        return (*self.feature_names, *self.categorical.columns)

    @property
    def all_centroids(self) -> np.ndarray:
        """``(k, d + categorical width)`` centroids in model space."""
        return self.with_numeric_centroids(self.centroids)

    def with_numeric_centroids(self, numeric: np.ndarray) -> np.ndarray:
        """``numeric`` (e.g. the online model's centroids) completed by the categorical ones."""
        cats = self.categorical_centroids
        if cats is None or not cats.shape[1]:
            return numeric
        return np.hstack([np.asarray(numeric, dtype=np.float64), cats])

    def transform(self, x_real: np.ndarray) -> np.ndarray:
        """Scaled vectors of real-unit feature rows (``(n, d)`` or ``(d,)``): numeric part."""
        return self.scaler.transform(x_real)

    def encode(
        self, x_real: np.ndarray, categories: Mapping[str, Sequence[object]] | None = None
    ) -> np.ndarray:
        """Model-space rows: scaled numerics, then the categorical blocks of ``categories``
        (one value per row for each categorical feature; ignored by a numeric-only model)."""
        z = self.scaler.transform(np.atleast_2d(x_real))
        if not self.categorical:
            return z
        if categories is None:
            raise FeatureError(
                f"model {self.version} needs the categorical feature(s) "
                f"{', '.join(self.categorical.names)}, and none were given"
            )
        return np.hstack([z, self.categorical.encode(categories, len(z))])

    def centroids_real(self) -> np.ndarray:
        """Centroids mapped back to real units (geometric-mean-like, not cluster means)."""
        return self.scaler.inverse(self.centroids)

    def segment_id(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": ARTIFACT_FORMAT if self.categorical else NUMERIC_FORMAT,
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
        if self.categorical:
            cats = self.categorical_centroids
            assert cats is not None
            out["categorical"] = {
                "features": self.categorical.to_dict(),
                "centroids": cats.tolist(),
            }
        return out

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
                **_categorical_fields(data.get("categorical")),
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


def _categorical_fields(data: Any) -> dict[str, Any]:
    """``SegmentModel`` arguments of an artifact's ``categorical`` entry (absent: none)."""
    if data is None:
        return {}
    return {
        "categorical": CategoricalEncoder.from_dict(data["features"]),
        "categorical_centroids": np.asarray(data["centroids"], dtype=np.float64),
    }
