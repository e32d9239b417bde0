"""What this process counted for recommendations (``/metrics``: :meth:`expose`).

No counter and no log line at INFO or above names a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.failure_notes import FailureNotes

if TYPE_CHECKING:
    from worker.exposition import Exposition


@dataclass
class RecommendMetrics(FailureNotes):
    """``failures``: merges that failed (and were retried)."""

    #: Purchases counted (pop.lua applied them).
    applied: int = 0
    #: Purchases at or below their partition's fence (a redelivered batch).
    fenced: int = 0
    #: Purchases of forgotten customers, dropped.
    suppressed: int = 0
    #: Orders the customer's ``ro`` already held (a replay at new offsets).
    deduped: int = 0
    #: Merges of the top lists written.
    merges: int = 0

    def expose(self, out: Exposition) -> None:
        for name, help_text, value in (
            ("purchases", "Purchases counted into the recommendation lists.", self.applied),
            ("fenced", "Purchases skipped as already counted (redelivered).", self.fenced),
            ("suppressed", "Purchases of forgotten customers, dropped.", self.suppressed),
            ("deduped", "Orders skipped as already counted at other offsets.", self.deduped),
            ("merges", "Merges of the recommendation top lists written.", self.merges),
            ("merge_failures", "Merges of the top lists that failed (and were retried).",
             self.failures),
        ):  # fmt: skip
            out.counter(f"segstream_recommend_{name}_total", help_text, value)
