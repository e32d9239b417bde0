"""Model features from customer state: real units in, log1p + standardised vectors out.

Pure numpy, no Kafka or Redis: the feature names, their caps and the :class:`Scaler` the
streaming worker needs. Building these features from a DataFrame of export-contract rows (pandas)
is :mod:`analytics.frames`; the worker builds the same matrix from Redis
(:mod:`worker.scoring.vectors`).

Features, in real units (what :func:`analytics.frames.real_matrix` returns, ``assign`` takes):

- ``recency_days``: days from the last order to the as-of time, capped at
  :data:`RECENCY_CAP_DAYS`. A customer with no order has no recency; it is filled with the cap
  (as lapsed as a customer can look), which keeps the vector finite and, with frequency 0,
  puts window shoppers in a corner of the space of their own.
- ``frequency``: distinct orders. ``aov``: monetary / frequency (0 without orders).
- ``monetary``: net revenue (negative nets are clipped at 0 for the transform only).
- behaviour counts (``sessions``, ``page_views``, ``add_to_carts``, ``abandoned_carts`` ...).

Every feature is non-negative and heavy-tailed, so the model sees ``log1p(x)``, standardised
with a mean and standard deviation fitted on the training data and stored in the artifact
(:class:`Scaler`); scoring is then two numpy operations, no sklearn object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Column names every team uses for a customer's state as of a time T.
EXPORT_COLUMNS: tuple[str, ...] = (
    "customer_id", "frequency", "monetary", "aov", "first_order_ts", "last_order_ts",
    "recency_days", "tenure_days", "items", "last_seen_ts", "sessions", "page_views",
    "product_views", "add_to_carts", "checkout_starts", "abandoned_carts", "views_per_order",
    "country", "region", "birth_year", "age", "age_band", "gender", "signup_channel",
    "loyalty_tier", "marketing_consent", "favourite_category", "top_viewed_category", "device",
)  # fmt: skip

#: Recency is capped here (two years); customers with no order get exactly this value.
RECENCY_CAP_DAYS = 730.0

#: The features a model may use (all non-negative after :func:`analytics.frames.feature_frame`).
KNOWN_FEATURES: tuple[str, ...] = (
    "recency_days", "frequency", "monetary", "aov", "tenure_days", "items", "sessions",
    "page_views", "product_views", "add_to_carts", "checkout_starts", "abandoned_carts",
    "views_per_order",
)  # fmt: skip

#: RFM only: recency, frequency and average order value (monetary = frequency x AOV, so
#: using both would count the same information twice).
RFM_FEATURES: tuple[str, ...] = ("recency_days", "frequency", "aov")
#: RFM plus one behaviour feature, sessions (engagement): of the sets tried, the one that agrees
#: best with the producers' personas at the k the rule picks. Abandoned carts lower the
#: agreement; views per order or tenure make the rule pick k=2 (benchmarks/RESULTS.md).
DEFAULT_FEATURES: tuple[str, ...] = (*RFM_FEATURES, "sessions")

_DAY_S = 86_400.0


@dataclass(frozen=True)
class Scaler:
    """``z = (log1p(max(x, 0)) - mean) / std``, fitted on training data, stored in the artifact."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x_real: np.ndarray) -> Scaler:
        logged = np.log1p(np.maximum(x_real, 0.0))
        std = logged.std(axis=0)
        # A constant feature carries no information; std 1 keeps it at 0 instead of NaN.
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean=logged.mean(axis=0), std=std)

    def transform(self, x_real: np.ndarray) -> np.ndarray:
        x = np.asarray(x_real, dtype=np.float64)
        z: np.ndarray = (np.log1p(np.maximum(x, 0.0)) - self.mean) / self.std
        return z

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Real units of a scaled vector (e.g. a centroid): ``expm1(z * std + mean)``."""
        real: np.ndarray = np.expm1(np.asarray(z, dtype=np.float64) * self.std + self.mean)
        return real
