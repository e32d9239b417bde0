"""Categorical model features: levels fitted on training data, encoded next to the numerics.

Pure numpy (the worker scores with it): no pandas, no sklearn, no Kafka, no Redis. The values
come from the export columns of :data:`worker.core.attributes.ATTRIBUTE_COLUMNS` (offline,
:mod:`analytics.frames`) or from the same hash fields read by the worker
(:mod:`worker.scoring.categories`); :func:`level_of` makes both spell a value the same way.

Encoding (docs/segmentation.md, "Categorical features"):

- **Levels.** A value is a *level* when at least :data:`MIN_LEVEL_SHARE` of the training
  customers and at least :data:`MIN_LEVEL_COUNT` of them have it; rarer values, and values never
  seen in training, are encoded as :data:`OTHER`. An absent value (``None``, NaN, ``""``) is
  :data:`MISSING`, a level of its own: never a NaN, never silently "other".
- **One-hot** while there are at most :data:`MAX_ONEHOT_LEVELS` levels: one column per level,
  plus ``(other)`` and ``(missing)``, the row's column set to ``weight * ONEHOT_SCALE``.
- **Frequency** beyond that: one column, the level's share of the training customers
  (``(other)`` = 0: rare or unseen; ``(missing)`` its own share), standardised like a numeric
  feature and multiplied by ``weight``. Many one-hot columns would make every level equally far
  from every other (K-means could only isolate levels) and cost a column each per centroid;
  one column keeps "common vs rare" and the weight of one standardised numeric feature. Levels
  with equal shares are indistinguishable: the price.

Weighting (``ONEHOT_SCALE`` = 1): a standardised numeric feature has variance 1, and two random
customers differ on it by ``sqrt(2)`` in root mean square (``E[(x - y)^2] = 2``). A one-hot
block scaled by ``s`` has variance ``s^2 * (1 - sum p_i^2)`` (``p``: level shares) and puts two
customers of different levels exactly ``s * sqrt(2)`` apart, of the same level 0 apart. With
``s = 1`` a categorical feature's variance is at most 1, reached when it is spread over many
levels (so it never carries more than one numeric feature), two different levels are as far
apart as two typical customers on a numeric feature, and its contribution to *any* squared
distance (customer to customer, customer to centroid: centroids are level shares) is at most
``2 * weight^2`` (:func:`CategoricalFeature.max_contribution`). ``s = 1/sqrt(2)`` (levels one
standard unit apart) would halve that: a feature of at most half a numeric's variance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.segmentation.errors import ArtifactInvalid, FeatureError

#: Export columns a model may use as categorical features (``worker.core.attributes``).
KNOWN_CATEGORICAL: tuple[str, ...] = (
    "country", "region", "age_band", "gender", "signup_channel", "loyalty_tier",
    "marketing_consent", "favourite_category", "top_viewed_category", "device",
)  # fmt: skip

#: A level needs at least this share of the training customers ...
MIN_LEVEL_SHARE = 0.01
#: ... and at least this many of them; rarer values are encoded as :data:`OTHER`.
MIN_LEVEL_COUNT = 10
#: More levels than this: frequency encoding instead of one-hot.
MAX_ONEHOT_LEVELS = 20
#: The one-hot block's scale at weight 1 (module docstring: why 1).
ONEHOT_SCALE = 1.0

#: The level of values rarer than the minimum, or never seen in training.
OTHER = "(other)"
#: The level of an absent value.
MISSING = "(missing)"

ONEHOT = "onehot"
FREQUENCY = "frequency"


def level_of(value: object) -> str | None:
    """A value as a level's text; ``None`` when absent (``None``, NaN, pandas NA, ``""``).

    Booleans (``marketing_consent``: ``True`` in a JSON export, ``"True"`` in a CSV read as
    text, ``"1"`` in the hash, mapped by :mod:`worker.scoring.categories`) become ``true`` /
    ``false``; integral floats lose their ``.0`` (a CSV column of numbers with gaps).
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    try:
        if value != value:  # NaN-like objects (pandas NA raises on bool())
            return None
    except (TypeError, ValueError):
        return None
    text = str(value).strip()
    if text in ("", "nan", "NaN", "<NA>", "None"):
        return None
    if text in ("True", "False"):
        return text.lower()
    return text


def split_features(
    names: Sequence[str], numeric: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``--features`` names -> (numeric ones, categorical ones), each in the order given.

    ``numeric``: the numeric features known (``worker.segmentation.features.KNOWN_FEATURES``).
    """
    unknown = [n for n in names if n not in numeric and n not in KNOWN_CATEGORICAL]
    if unknown:
        raise FeatureError(
            f"unknown feature(s) {unknown}; numeric: {', '.join(numeric)}; "
            f"categorical: {', '.join(KNOWN_CATEGORICAL)}"
        )
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise FeatureError(f"feature(s) named twice: {twice}")
    return (
        tuple(n for n in names if n in numeric),
        tuple(n for n in names if n in KNOWN_CATEGORICAL),
    )


def parse_weights(text: str | None) -> dict[str, float]:
    """``country=2,favourite_category=0.5`` -> ``{"country": 2.0, ...}`` (``--feature-weights``)."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name.strip() or not math.isfinite(weight) or weight < 0:
            raise FeatureError(
                f"feature weight {item.strip()!r}: expected NAME=WEIGHT with WEIGHT >= 0, "
                "e.g. country=2"
            )
        out[name.strip()] = weight
    return out


@dataclass(frozen=True)
class CategoricalFeature:
    """One categorical feature as fitted: its levels, encoding, weight (module docstring)."""

    name: str
    encoding: str
    #: Levels kept, most frequent first (ties by text).
    levels: tuple[str, ...]
    #: Training share of each level, of :data:`OTHER` (folded values), of :data:`MISSING`.
    shares: tuple[float, ...]
    other_share: float
    missing_share: float
    weight: float = 1.0
    #: Frequency encoding: mean and std of the encoded share over the training rows.
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.encoding not in (ONEHOT, FREQUENCY):
            raise ArtifactInvalid(f"categorical {self.name}: unknown encoding {self.encoding!r}")
        if len(self.shares) != len(self.levels) or len(set(self.levels)) != len(self.levels):
            raise ArtifactInvalid(f"categorical {self.name}: levels and shares disagree")
        if not (math.isfinite(self.weight) and self.weight >= 0 and self.std > 0):
            raise ArtifactInvalid(f"categorical {self.name}: weight/std out of range")

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the encoded columns (``country=FR``, ``country=(other)``, ``region~share``)."""
        if self.encoding == FREQUENCY:
            return (f"{self.name}~share",)
        return tuple(f"{self.name}={level}" for level in (*self.levels, OTHER, MISSING))

    @property
    def width(self) -> int:
        return 1 if self.encoding == FREQUENCY else len(self.levels) + 2

    @property
    def scale(self) -> float:
        """What one encoded unit is multiplied by (one-hot: the value of the set column)."""
        if self.encoding == FREQUENCY:
            return self.weight / self.std
        return self.weight * ONEHOT_SCALE

    def max_contribution(self) -> float:
        """Upper bound of this feature's part of any squared distance in model space.

        One-hot: two points of the simplex scaled by ``s`` are at most ``2 s^2`` apart (squared).
        Frequency: the encoded shares lie in ``[0, 1]``, so ``(scale * 1)^2``.
        """
        if self.encoding == FREQUENCY:
            return self.scale**2
        return 2.0 * self.scale**2

    def codes(self, values: Sequence[object]) -> np.ndarray:
        """Index of each value's level: ``0..L-1`` a level, ``L`` other, ``L + 1`` missing."""
        index = {level: i for i, level in enumerate(self.levels)}
        other, missing = len(self.levels), len(self.levels) + 1
        out = np.empty(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            text = level_of(value)
            out[i] = missing if text is None else index.get(text, other)
        return out

    def level_names(self, values: Sequence[object]) -> list[str]:
        """The level each value is encoded as (its text, :data:`OTHER` or :data:`MISSING`)."""
        names = (*self.levels, OTHER, MISSING)
        return [names[c] for c in self.codes(values).tolist()]

    def encode(self, values: Sequence[object]) -> np.ndarray:
        """``(n, width)`` float64 block of these values."""
        codes = self.codes(values)
        n = len(codes)
        if self.encoding == FREQUENCY:
            share = np.array([*self.shares, 0.0, self.missing_share], dtype=np.float64)
            block: np.ndarray = ((share[codes] - self.mean) * self.scale).reshape(n, 1)
            return block
        block = np.zeros((n, self.width), dtype=np.float64)
        block[np.arange(n), codes] = self.scale
        return block

    @classmethod
    def fit(
        cls,
        name: str,
        values: Sequence[object],
        weight: float = 1.0,
        min_share: float = MIN_LEVEL_SHARE,
        min_count: int = MIN_LEVEL_COUNT,
        max_onehot_levels: int = MAX_ONEHOT_LEVELS,
    ) -> CategoricalFeature:
        """Levels, shares and encoding of ``values`` (the module docstring's rules)."""
        n = len(values)
        if n == 0:
            raise FeatureError(f"categorical feature {name!r}: no training rows")
        counts = Counter(level_of(v) for v in values)
        missing = counts.pop(None, 0)
        need = max(min_count, math.ceil(min_share * n))
        kept = sorted(
            ((text, c) for text, c in counts.items() if c >= need and text is not None),
            key=lambda tc: (-tc[1], tc[0]),
        )
        levels = tuple(str(text) for text, _ in kept)
        shares = tuple(c / n for _, c in kept)
        other_share = (n - missing - sum(c for _, c in kept)) / n
        encoding = FREQUENCY if len(levels) > max_onehot_levels else ONEHOT
        feature = cls(name, encoding, levels, shares, other_share, missing / n, float(weight))
        if encoding == ONEHOT:
            return feature
        encoded = np.array([*shares, 0.0, missing / n])[feature.codes(values)]
        std = float(encoded.std())
        return cls(
            name, encoding, levels, shares, other_share, missing / n, float(weight),
            mean=float(encoded.mean()), std=std if std > 1e-12 else 1.0,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "encoding": self.encoding,
            "levels": list(self.levels),
            "shares": list(self.shares),
            "other_share": self.other_share,
            "missing_share": self.missing_share,
            "weight": self.weight,
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalFeature:
        return cls(
            name=str(data["name"]),
            encoding=str(data["encoding"]),
            levels=tuple(str(v) for v in data["levels"]),
            shares=tuple(float(v) for v in data["shares"]),
            other_share=float(data["other_share"]),
            missing_share=float(data["missing_share"]),
            weight=float(data.get("weight", 1.0)),
            mean=float(data.get("mean", 0.0)),
            std=float(data.get("std", 1.0)),
        )


@dataclass(frozen=True)
class CategoricalEncoder:
    """Every categorical feature of a model, encoded side by side after the numeric columns."""

    features: tuple[CategoricalFeature, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def width(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.columns)

    def slices(self) -> dict[str, slice]:
        """Each feature's columns within the encoder's block."""
        out, start = {}, 0
        for f in self.features:
            out[f.name] = slice(start, start + f.width)
            start += f.width
        return out

    def encode(self, values: Mapping[str, Sequence[object]], n: int) -> np.ndarray:
        """``(n, width)`` block of the features' values (``values[name]``: one per row)."""
        if not self.features:
            return np.empty((n, 0), dtype=np.float64)
        lacking = [f.name for f in self.features if f.name not in values]
        if lacking:
            raise FeatureError(f"categorical value(s) {lacking} needed by the model not given")
        blocks = []
        for f in self.features:
            column = values[f.name]
            if len(column) != n:
                raise FeatureError(f"categorical {f.name}: {len(column)} values for {n} rows")
            blocks.append(f.encode(column))
        return np.hstack(blocks)

    @classmethod
    def fit(
        cls,
        values: Mapping[str, Sequence[object]],
        weights: Mapping[str, float] | None = None,
        min_share: float = MIN_LEVEL_SHARE,
        min_count: int = MIN_LEVEL_COUNT,
        max_onehot_levels: int = MAX_ONEHOT_LEVELS,
    ) -> CategoricalEncoder:
        """One :class:`CategoricalFeature` per entry of ``values``, in its order."""
        w = weights or {}
        return cls(
            tuple(
                CategoricalFeature.fit(
                    name, column, w.get(name, 1.0), min_share, min_count, max_onehot_levels
                )
                for name, column in values.items()
            )
        )

    def to_dict(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.features]

    @classmethod
    def from_dict(cls, data: Sequence[Mapping[str, Any]]) -> CategoricalEncoder:
        return cls(tuple(CategoricalFeature.from_dict(d) for d in data))
