"""A small seeded dataset in the report's input shapes, for tests and for trying the report out.

:func:`sample_inputs` returns (state, model, changes) for ``n`` customers drawn from a few
personas with known segments: the state follows the export contract, the model dict has the
fields :mod:`analytics.report.model_view` reads (its elbow/silhouette scores come from real K-means
fits on the sample), and the changes are consistent with the state (each customer's last change
lands in their current segment). Same seed, same data.

Every customer also carries the categorical attribute columns
(:data:`worker.core.attributes.ATTRIBUTE_COLUMNS`), drawn per persona from their own generator
(so the RFM columns are those of the same seed without attributes), some of them unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from worker.core.attributes import Attributes

__all__ = ["MODEL_FEATURES", "sample_inputs"]

MODEL_FEATURES = ["recency_days", "frequency", "monetary", "tenure_days"]


@dataclass(frozen=True)
class _Persona:
    name: str
    weight: float
    orders: tuple[float, float]  # Poisson mean, minimum
    aov: float  # median order value
    recency: tuple[float, float]  # uniform days since last order
    sessions: float  # mean sessions
    rule: str


_PERSONAS = (
    _Persona("Champions", 0.15, (9.0, 4), 120.0, (0, 20), 25.0,
             "frequency ≥ 4 orders and recency ≤ 30 days and net revenue in the top quintile"),
    _Persona("Loyal", 0.20, (5.0, 2), 70.0, (10, 60), 15.0,
             "frequency ≥ 2 orders and recency ≤ 60 days"),
    _Persona("New", 0.20, (1.0, 1), 55.0, (0, 25), 5.0,
             "tenure ≤ 30 days with a single order"),
    _Persona("At risk", 0.20, (4.0, 2), 90.0, (90, 170), 8.0,
             "frequency ≥ 2 orders and recency > 90 days"),
    _Persona("Hibernating", 0.25, (1.0, 1), 40.0, (100, 360), 3.0,
             "a single order over 90 days ago"),
)  # fmt: skip


def sample_inputs(
    n: int = 400, seed: int = 7, as_of: datetime | None = None
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """(state, model artifact dict, segment changes) for ``n`` seeded customers."""
    rng = np.random.default_rng(seed)
    as_of = as_of or datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    weights = np.array([p.weight for p in _PERSONAS])
    picks = rng.choice(len(_PERSONAS), size=n, p=weights / weights.sum())
    rows = []
    for i, index in enumerate(picks):
        p = _PERSONAS[index]
        frequency = max(int(p.orders[1]), int(rng.poisson(p.orders[0])))
        aov = float(np.round(p.aov * rng.lognormal(0.0, 0.35), 2))
        recency = float(rng.uniform(*p.recency))
        if p.name == "New":
            tenure = recency + float(rng.uniform(0, 5))
        else:
            tenure = recency + float(rng.uniform(30, 400)) * (frequency > 1)
        sessions = int(rng.poisson(p.sessions)) + frequency
        product_views = int(sessions * rng.uniform(1.5, 4.0))
        abandoned = int(rng.poisson(0.25 * sessions / max(frequency, 1)))
        rows.append(
            {
                "customer_id": f"C{i:05d}",
                "frequency": frequency,
                "monetary": round(aov * frequency, 2),
                "first_order_ts": as_of - timedelta(days=tenure),
                "last_order_ts": as_of - timedelta(days=recency),
                "items": frequency * int(rng.integers(1, 4)),
                "last_seen_ts": as_of - timedelta(days=recency * rng.uniform(0, 1)),
                "sessions": sessions,
                "page_views": sessions * int(rng.integers(2, 6)),
                "product_views": product_views,
                "add_to_carts": frequency + abandoned,
                "checkout_starts": frequency + int(abandoned * rng.uniform(0, 1)),
                "abandoned_carts": abandoned,
                "segment": p.name,
            }
        )
    # Browsers with no order yet: present in the state, not segmented by RFM.
    for j in range(max(1, n // 10)):
        sessions = int(rng.integers(1, 6))
        rows.append(
            {
                "customer_id": f"B{j:05d}", "frequency": 0, "monetary": 0.0,
                "first_order_ts": pd.NaT, "last_order_ts": pd.NaT, "items": 0,
                "last_seen_ts": as_of - timedelta(days=float(rng.uniform(0, 60))),
                "sessions": sessions, "page_views": 3 * sessions,
                "product_views": 2 * sessions, "add_to_carts": int(rng.integers(0, 2)),
                "checkout_starts": 0, "abandoned_carts": int(rng.integers(0, 2)), "segment": None,
            }
        )  # fmt: skip
    personas = [_PERSONAS[i].name for i in picks] + [None] * (len(rows) - len(picks))
    attribute_rng = np.random.default_rng([seed, 1])
    for row, persona in zip(rows, personas, strict=True):
        row.update(_attributes(persona, attribute_rng).columns(as_of))
    state = pd.DataFrame(rows)
    state["aov"] = state["monetary"] / state["frequency"].where(state["frequency"] > 0)
    state["recency_days"] = (as_of - state["last_order_ts"]).dt.total_seconds() / 86400
    state["tenure_days"] = (as_of - state["first_order_ts"]).dt.total_seconds() / 86400
    state["views_per_order"] = (state["page_views"] + state["product_views"]) / state[
        "frequency"
    ].clip(lower=1)
    for column in ("first_order_ts", "last_order_ts", "last_seen_ts"):
        state[column] = pd.to_datetime(state[column], utc=True)
    model = _model(state, rng)
    changes = _changes(state, rng, as_of, model["version"])
    return state, model, changes


#: Persona (None: browsers without an order) -> (unknown share, countries, birth years,
#: favourite categories, devices): the demographics and categories each persona leans to.
_LEANINGS: dict[str | None, tuple[float, dict[str, float], tuple[int, int], dict[str, float],
                                  dict[str, float]]] = {
    "Champions": (0.1, {"DE": 0.62, "AT": 0.14, "FR": 0.12, "NL": 0.12}, (1982, 1991),
                  {"electronics": 0.55, "home": 0.25, "books": 0.2},
                  {"desktop": 0.6, "mobile": 0.3, "tablet": 0.1}),
    "Loyal": (0.15, {"DE": 0.35, "FR": 0.3, "NL": 0.2, "AT": 0.15}, (1970, 2000),
              {"home": 0.4, "fashion": 0.3, "books": 0.3}, {"mobile": 0.55, "desktop": 0.45}),
    "New": (0.25, {"FR": 0.45, "DE": 0.25, "NL": 0.2, "IT": 0.1}, (2000, 2007),
            {"fashion": 0.6, "beauty": 0.25, "electronics": 0.15},
            {"mobile": 0.85, "desktop": 0.15}),
    "At risk": (0.2, {"NL": 0.45, "DE": 0.25, "FR": 0.2, "AT": 0.1}, (1960, 1980),
                {"home": 0.5, "garden": 0.3, "books": 0.2}, {"desktop": 0.5, "mobile": 0.5}),
    "Hibernating": (0.5, {"DE": 0.3, "FR": 0.3, "NL": 0.2, "IT": 0.2}, (1950, 1995),
                    {"books": 0.4, "home": 0.3, "fashion": 0.3},
                    {"mobile": 0.5, "desktop": 0.4, "tablet": 0.1}),
    None: (0.7, {"DE": 0.4, "FR": 0.3, "IT": 0.3}, (1985, 2006), {},
           {"mobile": 0.8, "desktop": 0.2}),
}  # fmt: skip


def _attributes(persona: str | None, rng: np.random.Generator) -> Attributes:
    """A customer's profile and summaries, each value unknown with the persona's share."""
    unknown, countries, born, categories, devices = _LEANINGS[persona]

    def pick(shares: dict[str, float]) -> str | None:
        if not shares or rng.random() < unknown:
            return None
        return str(
            rng.choice(list(shares), p=np.array(list(shares.values())) / sum(shares.values()))
        )

    country = pick(countries)
    favourite = pick(categories)
    viewed = pick(categories) or pick({"books": 1.0, "fashion": 1.0})
    device = pick(devices)
    return Attributes(
        country=country,
        region=None if country is None or rng.random() < 0.3 else f"{country}-{rng.integers(1, 4)}",
        birth_year=None if rng.random() < unknown else int(rng.integers(born[0], born[1] + 1)),
        gender=pick({"female": 0.5, "male": 0.47, "diverse": 0.03}),
        signup_channel=pick({"web": 0.5, "app": 0.35, "store": 0.15}),
        loyalty_tier=pick(
            {"gold": 0.8, "silver": 0.2}
            if persona == "Champions"
            else {"bronze": 0.6, "silver": 0.3, "gold": 0.1}
        ),
        marketing_consent=None if rng.random() < unknown else bool(rng.random() < 0.6),
        spend_by_category=()
        if favourite is None
        else ((favourite, int(rng.integers(2000, 90000))),),
        views_by_category=() if viewed is None else ((viewed, int(rng.integers(3, 60))),),
        clicks_by_device=() if device is None else ((device, int(rng.integers(2, 40))),),
    )


def _model(state: pd.DataFrame, rng: np.random.Generator) -> dict[str, Any]:
    """A dict in the layout of :meth:`worker.segmentation.model.SegmentModel.to_dict`."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    buyers = state[state["segment"].notna()]
    logged = np.log1p(buyers[MODEL_FEATURES].to_numpy(dtype=float))
    mean, std = logged.mean(axis=0), logged.std(axis=0)
    z = (logged - mean) / std
    scores = []
    for k in range(2, 9):
        km = KMeans(n_clusters=k, n_init=4, random_state=int(rng.integers(0, 2**31))).fit(z)
        sizes = np.bincount(km.labels_, minlength=k)
        scores.append(
            {"k": k, "inertia": float(km.inertia_),
             "silhouette": float(silhouette_score(z, km.labels_)),
             "min_share": float(sizes.min() / len(z))}
        )  # fmt: skip
    names = [p.name for p in _PERSONAS]
    labels = buyers["segment"].to_numpy()
    centroids = [z[labels == name].mean(axis=0).round(4).tolist() for name in names]
    profiles = [
        {"id": i, "name": p.name, "rules": p.rule, "size": int((labels == p.name).sum())}
        for i, p in enumerate(_PERSONAS)
    ]
    return {
        "format": 1,
        "kind": "kmeans",
        "version": "km-20260630T0000-5a5a",
        "created_at": "2026-06-30T00:00:00+00:00",
        "as_of": "2026-06-30T00:00:00+00:00",
        "k": len(names),
        "feature_names": MODEL_FEATURES,
        "scaler": {
            "transform": "log1p",
            "mean": mean.round(6).tolist(),
            "std": std.round(6).tolist(),
        },
        "centroids": centroids,
        "names": names,
        "seed": 0,
        "training_size": len(buyers),
        "k_rule": f"k={len(names)}: one segment per persona of the sample",
        "scores": scores,
        "profiles": profiles,
        "extra": {"population": {"recency_median": float(buyers["recency_days"].median())}},
    }


def _changes(
    state: pd.DataFrame, rng: np.random.Generator, as_of: datetime, version: str
) -> pd.DataFrame:
    names = [p.name for p in _PERSONAS]
    start = as_of - timedelta(days=60)
    rows: list[tuple[str, str | None, str, str, datetime]] = []
    for customer, segment in state[state["segment"].notna()][["customer_id", "segment"]].values:
        first_at = start + timedelta(days=float(rng.uniform(0, 20)))
        first = segment if rng.random() < 0.6 else names[int(rng.integers(len(names)))]
        rows.append((customer, None, first, "order", first_at))
        if first != segment:
            moved_at = first_at + timedelta(days=float(rng.uniform(1, 39)))
            reason = "recency_decay" if segment in ("At risk", "Hibernating") else "order"
            rows.append((customer, first, segment, reason, moved_at))
    changes = pd.DataFrame(
        rows, columns=["customer_id", "old_segment", "new_segment", "reason", "event_time"]
    )
    changes["event_time"] = pd.to_datetime(changes["event_time"], utc=True)
    delays = rng.uniform(0.05, 2.0, size=len(changes))
    processed = changes["event_time"] + pd.to_timedelta(delays, unit="s")
    changes["processing_time"] = processed.dt.floor("ms")
    changes["model_version"] = version
    return changes.sort_values("event_time").reset_index(drop=True)
