"""A tolerant, read-only view of a segmentation model artifact (a JSON dict) for the report.

The report only reads the artifact, so it accepts the spellings a model artifact may reasonably
use and turns anything it cannot use into ``None`` fields plus a list of ``problems`` that the
report prints, instead of failing: a report with a missing curve is still worth reading.

Fields read (first spelling found wins):

- version: ``version`` | ``model_version``
- features: ``feature_names`` | ``features``
- centroids in standardised units: ``centroids`` (k lists of floats, or {segment id: list})
- scaler: ``scaler`` = {``mean``, ``std`` | ``scale``, optional ``transform`` = ``log1p``}
  (lists aligned with the features), used to map centroids back to real units
- how k was chosen: ``k_rule`` (a sentence); population reference values: ``extra.population``
- names: ``names`` (list or {id: name}), else ``profiles[i].name``
- rules: ``rules`` ({id|name: text|list}) or ``profiles[i].rules`` | ``profiles[i].rule``, else
  the written naming rules of :mod:`analytics.profiles` for the segment's name
- k selection: ``k_selection`` | ``selection`` | ``scores`` | ``training`` — either
  {``k``: [...], ``inertia``: [...], ``silhouette``: [...]} or a list of {k, inertia, silhouette}
  or {str(k): {inertia, silhouette}}; the chosen k is ``k`` | ``chosen_k`` | ``n_clusters``
  (at the top level or inside the selection block), else the number of centroids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ModelView", "read_model"]


@dataclass
class ModelView:
    """What the report uses from a model artifact; ``None`` means "not in this artifact"."""

    version: str | None = None
    trained_at: str | None = None
    features: list[str] | None = None
    #: index = segment name, columns = features, values in standard units.
    centroids: pd.DataFrame | None = None
    #: index = segment name, columns = features, values in real units (from the scaler).
    centroids_real: pd.DataFrame | None = None
    names: list[str] | None = None
    #: segment name -> human-readable rule text that gave the name.
    rules: dict[str, str] = field(default_factory=dict)
    #: columns k, inertia, silhouette (either may be NaN), sorted by k.
    k_scores: pd.DataFrame | None = None
    chosen_k: int | None = None
    k_rule: str | None = None
    #: Reference values the naming rules compare with (``extra.population``), by artifact key.
    population: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rule_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, Sequence):
        return "; ".join(str(v) for v in value)
    return str(value)


def _k_scores(block: Any) -> pd.DataFrame | None:
    rows: list[dict[str, float]] = []
    if isinstance(block, Mapping) and isinstance(block.get("k"), Sequence):
        ks = list(block["k"])
        for name in ("inertia", "silhouette"):
            values = block.get(name)
            if values is not None and len(values) != len(ks):
                return None
        for i, k in enumerate(ks):
            rows.append(
                {
                    "k": float(k),
                    "inertia": _num(block.get("inertia"), i),
                    "silhouette": _num(block.get("silhouette"), i),
                }
            )
    elif isinstance(block, Sequence) and not isinstance(block, str):
        for item in block:
            if isinstance(item, Mapping) and "k" in item:
                rows.append(
                    {
                        "k": float(item["k"]),
                        "inertia": float(item.get("inertia", math.nan)),
                        "silhouette": float(item.get("silhouette", math.nan)),
                    }
                )
    elif isinstance(block, Mapping):
        for key, item in block.items():
            if _as_int(key) is not None and isinstance(item, Mapping):
                rows.append(
                    {
                        "k": float(int(key)),
                        "inertia": float(item.get("inertia", math.nan)),
                        "silhouette": float(item.get("silhouette", math.nan)),
                    }
                )
    if not rows:
        return None
    frame = pd.DataFrame(rows).sort_values("k").reset_index(drop=True)
    frame["k"] = frame["k"].astype(int)
    return frame


def _num(values: Any, i: int) -> float:
    if values is None:
        return math.nan
    value = values[i]
    return math.nan if value is None else float(value)


#: Population reference values of the naming rules: artifact key -> (symbol, meaning, unit).
REFERENCES: dict[str, tuple[str, str, str]] = {
    "recency_median": ("R", "median recency of buyers", "days"),
    "frequency_mean": ("F", "mean frequency of buyers", "orders"),
    "frequency_median": ("F", "median frequency of buyers", "orders"),
    "frequency_p75": ("F75", "75th percentile of buyers' frequency", "orders"),
    "monetary_p75": ("M75", "75th percentile of buyers' net revenue", "currency"),
    "aov_median": ("A", "median AOV of buyers", "currency"),
}


def _segmentation_rules(names: Sequence[str]) -> dict[str, str]:
    """The written rule behind each name, from the segmentation package's naming rules."""
    try:
        from analytics.profiles import NAME_RULES
    except ImportError:  # the report still works without the segmentation package
        return {}
    texts = {name: text for name, text, _ in NAME_RULES}
    out = {}
    for name in names:
        base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        if base in texts:
            suffix = "" if base == name else " (another segment matching this rule)"
            out[name] = texts[base] + suffix
    return out


def read_model(model: Mapping[str, Any] | None) -> ModelView | None:
    """Normalise an artifact dict; ``None`` in, ``None`` out (no model trained yet)."""
    if model is None:
        return None
    view = ModelView()
    version = _first(model, "version", "model_version")
    view.version = None if version is None else str(version)
    trained = _first(model, "trained_at", "created_at")
    view.trained_at = None if trained is None else str(trained)
    features = _first(model, "feature_names", "features")
    if isinstance(features, Sequence) and not isinstance(features, str):
        view.features = [str(f) for f in features]

    profiles = model.get("profiles")
    profile_list: list[Mapping[str, Any]] = []
    if isinstance(profiles, Mapping):
        profile_list = [p for p in profiles.values() if isinstance(p, Mapping)]
    elif isinstance(profiles, Sequence) and not isinstance(profiles, str):
        profile_list = [p for p in profiles if isinstance(p, Mapping)]

    raw_centroids = model.get("centroids")
    centroid_rows: list[list[float]] = []
    centroid_ids: list[str] = []
    if isinstance(raw_centroids, Mapping):
        for key, row in raw_centroids.items():
            centroid_ids.append(str(key))
            centroid_rows.append([float(v) for v in row])
    elif isinstance(raw_centroids, Sequence):
        for i, row in enumerate(raw_centroids):
            centroid_ids.append(str(i))
            centroid_rows.append([float(v) for v in row])

    names = model.get("names")
    if isinstance(names, Mapping):
        view.names = [str(names.get(cid, names.get(_as_int(cid), cid))) for cid in centroid_ids]
    elif isinstance(names, Sequence) and not isinstance(names, str):
        view.names = [str(n) for n in names]
    elif profile_list and all("name" in p for p in profile_list):
        view.names = [str(p["name"]) for p in profile_list]
    elif centroid_ids:
        view.names = [f"segment {cid}" for cid in centroid_ids]
        view.problems.append("the artifact names no segments; showing their ids")

    rules = model.get("rules")
    if isinstance(rules, Mapping):
        for key, text in rules.items():
            name = str(key)
            index = _as_int(key)
            if view.names and index is not None and 0 <= index < len(view.names):
                name = view.names[index]
            view.rules[name] = _rule_text(text)
    for i, profile in enumerate(profile_list):
        text = _first(profile, "rules", "rule", "reason")
        if text is None:
            continue
        name = str(profile.get("name", view.names[i] if view.names and i < len(view.names) else i))
        view.rules[name] = _rule_text(text)

    if centroid_rows:
        width = {len(r) for r in centroid_rows}
        if len(width) != 1:
            view.problems.append("the artifact's centroids have different lengths; not shown")
        else:
            columns = view.features or [f"f{i}" for i in range(width.pop())]
            labels = (
                view.names if view.names and len(view.names) == len(centroid_rows) else centroid_ids
            )
            if len(columns) == len(centroid_rows[0]):
                view.centroids = pd.DataFrame(centroid_rows, index=labels, columns=columns)
            else:
                view.problems.append("the artifact's centroids and feature names disagree")
    else:
        view.problems.append("the artifact holds no centroids")

    scaler = model.get("scaler")
    if view.centroids is not None and isinstance(scaler, Mapping):
        mean, scale = scaler.get("mean"), _first(scaler, "std", "scale")
        if mean is not None and scale is not None and len(mean) == len(view.centroids.columns):
            real = view.centroids * list(scale) + list(mean)
            if scaler.get("transform") == "log1p":
                real = np.expm1(real)
            view.centroids_real = real
    if view.names and not all(n in view.rules for n in view.names):
        for name, text in _segmentation_rules(view.names).items():
            view.rules.setdefault(name, text)
    extra = model.get("extra")
    population = extra.get("population") if isinstance(extra, Mapping) else None
    if isinstance(population, Mapping):
        view.population = {
            str(k): float(v) for k, v in population.items() if isinstance(v, int | float)
        }
    k_rule = model.get("k_rule")
    view.k_rule = str(k_rule) if k_rule else None

    block = _first(model, "k_selection", "selection", "scores", "training")
    view.k_scores = _k_scores(block) if block is not None else None
    if view.k_scores is None and isinstance(block, Mapping):
        for inner in ("k_selection", "scores", "curve", "candidates"):
            if inner in block:
                view.k_scores = _k_scores(block[inner])
                if view.k_scores is not None:
                    break
    if view.k_scores is None:
        view.problems.append("the artifact holds no elbow/silhouette scores")
    chosen = _first(model, "k", "chosen_k", "n_clusters")
    if chosen is None and isinstance(block, Mapping):
        chosen = _first(block, "chosen_k", "chosen", "best_k", "n_clusters")
    view.chosen_k = _as_int(chosen)
    if view.chosen_k is None and view.centroids is not None:
        view.chosen_k = len(view.centroids)
    return view
