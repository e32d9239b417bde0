"""Segment profiles in real units, and the written rules that name a segment from its profile.

Pure (numpy/pandas). A profile summarises one segment: size, share, median and mean recency,
frequency, monetary and AOV, revenue share, behaviour means. The name comes from the profile's
medians, by the rules in :data:`NAME_RULES`, checked in order; the first that holds is the
segment's preferred name.

Recency is judged in absolute days, as retail RFM practice does (and as the sweep's recency
thresholds are): *active* = median recency <= 60 days, *lost* = >= 365 days. Value is judged
against the population of buyers (customers with at least one order): ``F`` = median frequency,
``M75`` = 75th percentile of monetary, ``A`` = median AOV; *frequent* = median frequency >=
max(3, F / 2), i.e. a repeat buyer by any standard, and not far below the typical buyer.

Names are unique within a model: segments choose in order of revenue share (most valuable
first), each taking the first rule that holds for it whose name is still free; a segment for
which every matching name is taken gets its first name with a suffix (``loyal_2``).

``new`` says something about each member, not only about the median: a short tenure. A customer
back after months looks like a newcomer by recency, frequency and value, and is assigned to the
newcomers' segment unless tenure pulls him away. So a segment may be called ``new`` only when
(:func:`new_allowed`) the model has ``tenure_days`` among its features *and* tenure separates
it: its own centre, given a long tenure (:data:`RETURNING_TENURE_DAYS`), is nearer another
segment. Measured on the producers' personas (benchmarks/RESULTS.md, 2026-12-06): with tenure at
weight 1 every returning customer still lands in the newcomers' segment (the check refuses the
name), at weight 2 none does. The default features have no tenure (with it the k rule picks
k = 2), so a default model names that segment by the next rule that holds (``promising``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: Behaviour columns summarised by their mean in every profile.
BEHAVIOUR = ("sessions", "page_views", "product_views", "add_to_carts", "abandoned_carts")
#: Median recency (days) up to which a segment is "active".
ACTIVE_DAYS = 60.0
#: Median recency (days) from which a segment is "lost".
LOST_DAYS = 365.0
#: Median tenure (days) up to which an active, one-or-two-order segment is "new".
NEW_TENURE_DAYS = 30.0
#: A segment is "frequent" from max(MIN_FREQUENT, F / 2) median orders.
MIN_FREQUENT = 3.0
#: The tenure (days) of the returning customer :func:`new_allowed` probes with.
RETURNING_TENURE_DAYS = 120.0


@dataclass(frozen=True)
class Population:
    """Reference values the naming rules compare a profile with (buyers only)."""

    frequency_median: float
    monetary_p75: float
    aov_median: float

    @classmethod
    def of(cls, features: pd.DataFrame) -> Population:
        buyers = features[features["frequency"] > 0]
        if buyers.empty:
            return cls(float("inf"), float("inf"), float("inf"))
        return cls(
            frequency_median=float(buyers["frequency"].median()),
            monetary_p75=float(buyers["monetary"].quantile(0.75)),
            aov_median=float(buyers["aov"].median()),
        )

    @property
    def frequent(self) -> float:
        return max(MIN_FREQUENT, self.frequency_median / 2)

    def to_dict(self) -> dict[str, float]:
        return dict(vars(self))


Rule = tuple[str, str, Callable[[dict[str, Any], Population], bool]]


def _v(p: dict[str, Any], key: str) -> float:
    value = p.get(key)
    return float("nan") if value is None else float(value)


def _active(p: dict[str, Any]) -> bool:
    return _v(p, "recency_days_median") <= ACTIVE_DAYS


def _frequent(p: dict[str, Any], pop: Population) -> bool:
    return _v(p, "frequency_median") >= pop.frequent


#: (name, the rule in words, predicate). Order matters: the first that holds is preferred.
NAME_RULES: tuple[Rule, ...] = (
    ("window_shoppers", "most members never ordered (buyer share < 50 %)",
     lambda p, _: p["buyer_share"] < 0.5),
    ("new", f"active (median recency <= {ACTIVE_DAYS:.0f} d), first order within "
     f"{NEW_TENURE_DAYS:.0f} d (median tenure) and at most 2 orders; only for a model whose "
     f"tenure keeps a returning customer ({RETURNING_TENURE_DAYS:.0f} d) out",
     lambda p, _: _active(p) and _v(p, "tenure_days_median") <= NEW_TENURE_DAYS
     and _v(p, "frequency_median") <= 2),
    ("champions", "active, frequent (median orders >= max(3, F/2)) and high-value "
     "(median monetary >= M75)",
     lambda p, P: _active(p) and _frequent(p, P) and _v(p, "monetary_median") >= P.monetary_p75),
    ("big_spenders", "large baskets (median AOV >= 3 x A), not lost",
     lambda p, P: _v(p, "aov_median") >= 3 * P.aov_median
     and _v(p, "recency_days_median") < LOST_DAYS),
    ("bargain_hunters", "active, frequent, small baskets (median AOV <= A / 2)",
     lambda p, P: _active(p) and _frequent(p, P) and _v(p, "aov_median") <= P.aov_median / 2),
    ("loyal", "active and frequent", lambda p, P: _active(p) and _frequent(p, P)),
    ("promising", "active, not (yet) frequent", lambda p, P: _active(p)),
    ("lost", f"no order for a year (median recency >= {LOST_DAYS:.0f} d)",
     lambda p, P: _v(p, "recency_days_median") >= LOST_DAYS),
    ("at_risk", f"frequent but lapsed (median recency > {ACTIVE_DAYS:.0f} d)",
     lambda p, P: _frequent(p, P)),
    ("hibernating", "lapsed and infrequent, not yet lost", lambda p, P: True),
)  # fmt: skip


def profile_segments(features: pd.DataFrame, labels: np.ndarray, k: int) -> list[dict[str, Any]]:
    """One dict per segment id ``0..k-1`` (see module docstring); JSON-safe (None for no data).

    ``features`` is :func:`analytics.frames.feature_frame` output (real units).
    Recency and tenure statistics are over the segment's buyers only, since customers without
    an order have none.
    """
    n = len(features)
    total_revenue = float(features["monetary"].clip(lower=0).sum())
    profiles = []
    for seg in range(k):
        part = features[labels == seg]
        buyers = part[part["frequency"] > 0]
        p: dict[str, Any] = {
            "id": seg,
            "size": len(part),
            "share": len(part) / n if n else 0.0,
            "buyer_share": len(buyers) / len(part) if len(part) else 0.0,
            "revenue_share": (
                float(part["monetary"].clip(lower=0).sum()) / total_revenue
                if total_revenue > 0
                else 0.0
            ),
        }
        for col, rows in (
            ("recency_days", buyers),
            ("tenure_days", buyers),
            ("frequency", part),
            ("monetary", part),
            ("aov", buyers),
        ):
            p[f"{col}_median"] = _stat(rows[col], "median")
            p[f"{col}_mean"] = _stat(rows[col], "mean")
        for col in BEHAVIOUR:
            p[f"{col}_mean"] = _stat(part[col], "mean")
        profiles.append(p)
    return profiles


def _stat(values: pd.Series, how: str) -> float | None:
    if values.empty:
        return None
    return float(values.median() if how == "median" else values.mean())


def new_allowed(
    centroids: np.ndarray, feature_names: Sequence[str], mean: np.ndarray, std: np.ndarray
) -> list[bool]:
    """Per segment: may it be called ``new`` (module docstring)? ``centroids`` in scaled space
    (``z = (log1p(x) - mean) / std``, the model's numeric part)."""
    names = list(feature_names)
    if "tenure_days" not in names:
        return [False] * len(centroids)
    j = names.index("tenure_days")
    long_z = (np.log1p(RETURNING_TENURE_DAYS) - mean[j]) / std[j]
    out = []
    for i, c in enumerate(np.asarray(centroids, dtype=np.float64)):
        probe = c.copy()
        probe[j] = long_z
        out.append(int(((centroids - probe) ** 2).sum(axis=1).argmin()) != i)
    return out


def matching_names(
    profile: dict[str, Any], population: Population, may_be_new: bool = False
) -> list[str]:
    """Every rule name that holds for ``profile``, in rule order (``new`` only if
    ``may_be_new``: :func:`new_allowed`)."""
    return [
        name
        for name, _, pred in NAME_RULES
        if (name != "new" or may_be_new) and pred(profile, population)
    ]


def rule_text(name: str) -> str:
    """The written rule behind a segment name (``loyal_2`` -> the rule of ``loyal``)."""
    base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
    return next((text for n, text, _ in NAME_RULES if n == base), "")


def name_segments(
    profiles: list[dict[str, Any]],
    population: Population,
    may_be_new: Sequence[bool] | None = None,
) -> list[str]:
    """Unique names for the segments, in segment id order (rules in the module docstring);
    ``may_be_new``: per segment, :func:`new_allowed` (``None``: no segment may be ``new``)."""
    allowed = list(may_be_new) if may_be_new is not None else [False] * len(profiles)
    order = sorted(range(len(profiles)), key=lambda i: (-profiles[i]["revenue_share"], i))
    taken: set[str] = set()
    names: dict[int, str] = {}
    for i in order:
        candidates = matching_names(profiles[i], population, allowed[i]) or ["segment"]
        name = next((c for c in candidates if c not in taken), None)
        if name is None:
            suffix = 2
            while f"{candidates[0]}_{suffix}" in taken:
                suffix += 1
            name = f"{candidates[0]}_{suffix}"
        taken.add(name)
        names[i] = name
    return [names[i] for i in range(len(profiles))]
