"""Rule-based RFM scoring, used before any K-means model exists (``model_version`` rules-v1).

As the commercial tools do (Klaviyo, Shopify, Braze): each buyer gets three scores from 1 to 5,

- R from recency (5 = most recent), F from frequency, M from monetary (5 = highest),

by comparing the value with four edges, the 20/40/60/80 % quantiles of the buyers
(:meth:`RulesModel.fit`) or, when nothing has been seen yet, fixed documented edges
(:data:`DEFAULT_EDGES`). A value equal to an edge gets the lower score, so ties (many customers
with exactly 1 order) stay together. ``FM`` = the mean of F and M rounded half up. The segment
is then read from the (R, FM) grid below, the classic RFM segment map; customers with no order
are ``window_shoppers`` (they have no RFM scores).

``new`` means a new *customer*: the R5/FM1 cell is ``new`` only when the first order is at most
:data:`NEW_TENURE_DAYS` old (``tenure_days``, the fourth feature), else ``promising``. A customer
back after months (first order long ago, lapsed, orders again) looks like a newcomer by R, F and
M alone; without the tenure check the demo showed ``hibernating -> new (order)``.

======================  ==========  ===========
segment                 R           FM
======================  ==========  ===========
champions               5           4-5
loyal                   3-4         4-5
potential_loyalists     4-5         2-3
new                     5           1    (and tenure <= 30 d; else promising)
promising               4           1
need_attention          3           3
about_to_sleep          3           1-2
cant_lose               1-2         5
at_risk                 1-2         3-4
hibernating             2           1-2  (and R 1, FM 2)
lost                    1           1
======================  ==========  ===========

Rules have no centroids, hence no distances and no hysteresis: the edges are crisp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.segmentation.assign import Assignment

RULES_VERSION = "rules-v1"
#: The features the rules read: R, F and M are scored, tenure only tells new from returning.
RULE_FEATURES: tuple[str, ...] = ("recency_days", "frequency", "monetary", "tenure_days")
#: The scored ones (R, F, M), the first columns of :data:`RULE_FEATURES`.
SCORED_FEATURES: tuple[str, ...] = RULE_FEATURES[:3]
#: Days since the first order up to which a customer of the R5/FM1 cell is ``new``.
NEW_TENURE_DAYS = 30.0

#: Edges used before any customer has been seen: recency days, orders, monetary (currency units).
DEFAULT_EDGES: dict[str, tuple[float, ...]] = {
    "recency_days": (14.0, 30.0, 60.0, 120.0),
    "frequency": (1.0, 2.0, 3.0, 5.0),
    "monetary": (50.0, 100.0, 200.0, 500.0),
}

RULE_NAMES: tuple[str, ...] = (
    "champions", "loyal", "potential_loyalists", "new", "promising", "need_attention",
    "about_to_sleep", "cant_lose", "at_risk", "hibernating", "lost", "window_shoppers",
)  # fmt: skip


def _grid() -> np.ndarray:
    """``grid[R, FM]`` -> index into :data:`RULE_NAMES` (R, FM in 1..5)."""
    g = np.full((6, 6), -1, dtype=np.int64)
    cells = {
        "champions": ([5], [4, 5]),
        "loyal": ([3, 4], [4, 5]),
        "potential_loyalists": ([4, 5], [2, 3]),
        "new": ([5], [1]),
        "promising": ([4], [1]),
        "need_attention": ([3], [3]),
        "about_to_sleep": ([3], [1, 2]),
        "cant_lose": ([1, 2], [5]),
        "at_risk": ([1, 2], [3, 4]),
        "hibernating": ([2], [1, 2]),
        "lost": ([1], [1]),
    }
    for name, (rs, fms) in cells.items():
        for r in rs:
            for fm in fms:
                g[r, fm] = RULE_NAMES.index(name)
    g[1, 2] = RULE_NAMES.index("hibernating")
    assert (g[1:, 1:] >= 0).all()
    return g


_GRID = _grid()
_WINDOW = RULE_NAMES.index("window_shoppers")
_NEW = RULE_NAMES.index("new")
_PROMISING = RULE_NAMES.index("promising")


@dataclass(frozen=True)
class RulesModel:
    """RFM quintile rules; same ``assign``/``names``/``version`` surface as a K-means model."""

    edges: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_EDGES))
    version: str = RULES_VERSION
    feature_names: tuple[str, ...] = RULE_FEATURES
    names: tuple[str, ...] = RULE_NAMES

    kind = "rules"

    @classmethod
    def fit(cls, x_real: np.ndarray) -> RulesModel:
        """Edges = 20/40/60/80 % quantiles over the buyers of ``x_real`` (RULE_FEATURES columns;
        only the scored ones are used)."""
        buyers = x_real[x_real[:, 1] > 0][:, : len(SCORED_FEATURES)]
        if len(buyers) == 0:
            return cls()
        qs = np.quantile(buyers, [0.2, 0.4, 0.6, 0.8], axis=0)
        return cls({f: tuple(float(v) for v in qs[:, j]) for j, f in enumerate(SCORED_FEATURES)})

    def scores(self, x_real: np.ndarray) -> np.ndarray:
        """``(n, 3)`` int scores R, F, M in 1..5 (0 for customers without an order)."""
        x = np.atleast_2d(np.asarray(x_real, dtype=np.float64))
        out = np.empty((len(x), 3), dtype=np.int64)
        for j, f in enumerate(SCORED_FEATURES):
            below = np.searchsorted(np.asarray(self.edges[f]), x[:, j], side="left")
            out[:, j] = 5 - below if f == "recency_days" else 1 + below
        out[x[:, 1] <= 0] = 0
        return out

    def assign(
        self,
        x_real: np.ndarray,
        current: np.ndarray | Sequence[int] | None = None,
        margin: float | None = None,
    ) -> Assignment:
        """Segment ids from the grid; ``margin`` is accepted and ignored (no hysteresis).

        Rows without the tenure column (three columns) are never ``new``: nothing says they are.
        """
        x = np.atleast_2d(np.asarray(x_real, dtype=np.float64))
        s = self.scores(x)
        fm = np.floor((s[:, 1] + s[:, 2]) / 2 + 0.5).astype(np.int64)
        seg = np.where(s[:, 1] > 0, _GRID[s[:, 0], fm], _WINDOW)
        short = x[:, 3] <= NEW_TENURE_DAYS if x.shape[1] > 3 else np.zeros(len(x), dtype=bool)
        seg = np.where((seg == _NEW) & ~short, _PROMISING, seg)
        n = len(seg)
        cur = np.full(n, -1, np.int64) if current is None else np.asarray(current, np.int64)
        return Assignment(seg, np.empty((n, 0)), seg != cur)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "edges": self.edges}
