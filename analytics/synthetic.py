"""Seeded, feature-level synthetic customers with a known persona, for tests and benchmarks.

This draws customer *state* (export-contract columns) directly, not events: it is what the
segmentation tests and the 1M-customer training benchmark need, and it does not depend on the
event generator in ``producers/``. Each persona is a log-normal cloud around typical values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

#: persona -> (recency days, orders, AOV, sessions, abandoned carts), typical (median) values.
#: ``orders`` 0 means the persona never buys (window shoppers).
PERSONAS: dict[str, tuple[float, float, float, float, float]] = {
    "champions": (6.0, 14.0, 90.0, 45.0, 1.0),
    "loyal": (18.0, 7.0, 45.0, 20.0, 1.0),
    "big_spenders": (35.0, 2.0, 450.0, 8.0, 0.5),
    "new": (4.0, 1.0, 45.0, 4.0, 0.3),
    "at_risk": (140.0, 7.0, 55.0, 15.0, 1.0),
    "lost": (480.0, 1.0, 30.0, 2.0, 0.2),
    "window_shoppers": (0.0, 0.0, 0.0, 25.0, 4.0),
}
#: Spread (sigma of the log-normal) of each feature around its persona's typical value.
SPREAD = 0.25

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


def synthetic_state(
    n: int,
    seed: int = 0,
    personas: dict[str, tuple[float, float, float, float, float]] | None = None,
    spread: float = SPREAD,
    as_of: datetime = AS_OF,
) -> pd.DataFrame:
    """``n`` customers split evenly across ``personas``; column ``persona`` is the truth."""
    personas = personas or PERSONAS
    rng = np.random.default_rng(seed)
    names = list(personas)
    persona_idx = np.arange(n) % len(names)
    rng.shuffle(persona_idx)
    typical = np.array([personas[p] for p in names], dtype=np.float64)[persona_idx]

    def noisy(col: int, lo: float = 0.0) -> np.ndarray:
        return np.maximum(typical[:, col] * rng.lognormal(0.0, spread, n), lo)

    buyer = typical[:, 1] > 0
    freq = np.where(buyer, np.maximum(np.rint(noisy(1)), 1), 0).astype(np.int64)
    aov = np.where(buyer, noisy(2), 0.0)
    recency = np.where(buyer, noisy(0, 0.01), np.nan)
    # Tenure: at least the recency; repeat buyers have been around for a while.
    tenure = np.where(buyer, recency + np.where(freq > 1, 30.0 * freq, 0.0) * rng.uniform(
        0.5, 1.5, n), np.nan)  # fmt: skip
    sessions = np.rint(noisy(3, 1.0)).astype(np.int64)
    page_views = sessions * rng.integers(2, 6, n)
    add_to_carts = np.rint(noisy(4) + freq).astype(np.int64)
    abandoned = np.rint(noisy(4)).astype(np.int64)
    monetary = freq * aov
    as_of_ts = pd.Timestamp(as_of)
    last_order = as_of_ts - pd.to_timedelta(recency, unit="D")
    first_order = as_of_ts - pd.to_timedelta(tenure, unit="D")
    last_seen = as_of_ts - pd.to_timedelta(
        np.where(buyer, recency * rng.uniform(0.2, 1.0, n), rng.uniform(0, 60, n)), unit="D"
    )
    product_views = page_views // 2
    return pd.DataFrame(
        {
            "customer_id": [f"S{i}" for i in range(n)],
            "frequency": freq,
            "monetary": np.round(monetary, 2),
            "aov": np.round(aov, 2),
            "first_order_ts": first_order,
            "last_order_ts": last_order,
            "recency_days": recency,
            "tenure_days": tenure,
            "items": freq * 2,
            "last_seen_ts": last_seen,
            "sessions": sessions,
            "page_views": page_views,
            "product_views": product_views,
            "add_to_carts": add_to_carts,
            "checkout_starts": freq,
            "abandoned_carts": abandoned,
            "views_per_order": product_views / np.maximum(freq, 1),
            "persona": np.array(names)[persona_idx],
        }
    )


#: Categories of :func:`categorical_personas` (the two "loyal" twins prefer the first two).
CATEGORIES: tuple[str, ...] = ("fashion", "electronics", "home", "beauty", "sports")
#: Countries of :func:`categorical_personas`, drawn at random (noise), some missing.
COUNTRIES: tuple[str, ...] = ("DE", "FR", "GB", "NL", "ES")


def categorical_personas(n: int, seed: int = 0, purity: float = 0.9) -> pd.DataFrame:
    """:func:`synthetic_state` with the attribute columns, and two personas told apart only by
    a category: ``loyal_fashion`` and ``loyal_electronics`` share the "loyal" RFM and
    behaviour, and spend mostly (``purity``) on fashion, resp. electronics.

    Everyone else's favourite category is uniform over :data:`CATEGORIES`; window shoppers buy
    nothing, so theirs is missing. Country is noise (uniform, 5 % missing); the other
    attribute columns are empty.
    """
    from worker.core.attributes import ATTRIBUTE_COLUMNS

    personas = {name: typical for name, typical in PERSONAS.items() if name != "loyal"} | {
        "loyal_fashion": PERSONAS["loyal"],
        "loyal_electronics": PERSONAS["loyal"],
    }
    state = synthetic_state(n, seed=seed, personas=personas)
    rng = np.random.default_rng(seed + 1)
    cats = np.array(CATEGORIES, dtype=object)
    favourite = cats[rng.integers(0, len(cats), n)]
    pure = rng.random(n) < purity
    for persona, category in (("loyal_fashion", "fashion"), ("loyal_electronics", "electronics")):
        favourite[(state["persona"] == persona).to_numpy() & pure] = category
    favourite[(state["frequency"] == 0).to_numpy()] = None
    country = np.array(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), n)]
    country[rng.random(n) < 0.05] = None
    for col in ATTRIBUTE_COLUMNS:
        state[col] = None
    state["favourite_category"] = favourite
    state["country"] = country
    return state


def drifted(state: pd.DataFrame, days: float, aov_factor: float = 1.0) -> pd.DataFrame:
    """The same customers ``days`` later with no new order, and AOV scaled by ``aov_factor``."""
    out = state.copy()
    buyer = out["frequency"] > 0
    out.loc[buyer, "recency_days"] = out.loc[buyer, "recency_days"] + days
    out.loc[buyer, "tenure_days"] = out.loc[buyer, "tenure_days"] + days
    out["aov"] = out["aov"] * aov_factor
    out["monetary"] = out["monetary"] * aov_factor
    return out


__all__ = [
    "AS_OF", "CATEGORIES", "COUNTRIES", "PERSONAS", "SPREAD", "categorical_personas", "drifted",
    "synthetic_state", "timedelta",
]  # fmt: skip
