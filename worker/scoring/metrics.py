"""The scoring counters ``/scoring`` shows, and the one place a failure is recorded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScoringMetrics:
    rounds: int = 0
    catch_up_rounds: int = 0
    scored: int = 0
    changes: int = 0
    published: int = 0
    conflicts: int = 0
    missing: int = 0
    repaired: int = 0
    rescored: int = 0
    rescore_runs: int = 0
    reloads: int = 0
    retrains: int = 0
    drift_notices: int = 0
    failures: int = 0
    round_seconds_sum: float = 0.0
    drift_max: float = 0.0
    drift_mean: float = 0.0
    drift_exceeded: bool = False
    last_error: str | None = None

    def note(self, text: str) -> None:
        """Count a failure and keep its text (the latest one is shown)."""
        self.failures += 1
        self.last_error = text
