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

    #: Placed orders counted (count.lua drained their lines). Redelivered, replayed and
    #: forgotten customers' orders never reach it: the state script skips them.
    applied: int = 0
    #: Merges of the top lists written.
    merges: int = 0

    def expose(self, out: Exposition) -> None:
        for name, help_text, value in (
            ("purchases", "Purchases counted into the recommendation lists.", self.applied),
            ("merges", "Merges of the recommendation top lists written.", self.merges),
            ("merge_failures", "Merges of the top lists that failed (and were retried).",
             self.failures),
        ):  # fmt: skip
            out.counter(f"segstream_recommend_{name}_total", help_text, value)
