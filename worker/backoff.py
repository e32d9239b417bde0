"""How long to wait before retry N of anything that failed (Redis, the broker, a batch)."""

from __future__ import annotations

#: First wait, growth factor, cap (seconds).
BACKOFF_FIRST_S = 0.05
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 2.0


def backoff(attempt: int) -> float:
    """The wait before retry ``attempt`` (the exponent is capped: 2.0**1024 overflows)."""
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * BACKOFF_FACTOR ** min(attempt, 32)))
