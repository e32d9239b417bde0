"""What this process counted while assigning campaign arms (``/metrics``: :meth:`expose`).

No counter and no log line at INFO or above names a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.side_consumer import SideMetrics

if TYPE_CHECKING:
    from worker.exposition import Exposition


@dataclass
class CampaignMetrics(SideMetrics):
    #: Segment-change records read (tombstones and bad records included).
    changes: int = 0
    #: Assignments recorded or found already recorded for customers entering a segment.
    assigned: int = 0
    #: Assignment records acknowledged by the broker (republications included).
    published: int = 0

    def expose(self, out: Exposition) -> None:
        for name, help_text, value in (
            ("changes", "Segment-change records read by the campaign consumer.", self.changes),
            ("assigned", "Campaign assignments of customers entering a segment.", self.assigned),
            ("published", "Campaign assignment records acknowledged by the broker.",
             self.published),
            ("dead_lettered", "Segment-change records the campaign consumer dead-lettered.",
             self.dead_lettered),
            ("failures", "Campaign assignment attempts that failed (and were retried).",
             self.failures),
        ):  # fmt: skip
            out.counter(f"segstream_campaign_{name}_total", help_text, value)
