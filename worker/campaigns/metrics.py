"""What this process counted while assigning campaign arms (``/metrics``: :meth:`expose`).

No counter and no log line at INFO or above names a customer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segstream.redact import redact

if TYPE_CHECKING:
    from worker.exposition import Exposition


@dataclass
class CampaignMetrics:
    #: Segment-change records read (tombstones and bad records included).
    changes: int = 0
    #: Assignments recorded or found already recorded for customers entering a segment.
    assigned: int = 0
    #: Assignment records acknowledged by the broker (republications included).
    published: int = 0
    #: Records sent to the dead-letter topic (malformed, or kept failing).
    dead_lettered: int = 0
    #: Attempts that raised (an outage is retried; anything else up to poison_retries times).
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def note_error(self, text: str) -> None:
        self.failures += 1
        self.last_error = redact(text)
        self.last_error_at = time.time()

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
