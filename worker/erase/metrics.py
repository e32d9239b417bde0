"""What this process counted while forgetting customers (``/metrics``: :meth:`expose`).

Redis holds the authoritative, all-process counts in ``{prefix}:counters`` (``erasures``,
``forgotten``, ``suppressed``: docs/forget.md); these are this process's alone. No counter and
no log line at INFO or above names a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.side_consumer import SideMetrics

if TYPE_CHECKING:
    from worker.exposition import Exposition


@dataclass
class EraseMetrics(SideMetrics):
    """Counters of the erase-requests consumer (and of ``segstream forget``'s one run)."""

    #: Erase requests read from the topic (valid or not).
    requests: int = 0
    #: Customers erased that had something stored.
    forgotten: int = 0
    #: Erasures of customers with nothing stored (already forgotten, or never seen).
    absent: int = 0
    tombstones: int = 0
    #: Tombstones published although an outbox round holding the customer was still there.
    outbox_timeouts: int = 0

    def expose(self, out: Exposition) -> None:
        """Add the families to ``out`` (a ``MetricsSource`` for worker.pages)."""
        for name, help_text, value in (
            ("requests", "Erase requests read from the erase-requests topic.", self.requests),
            ("forgotten", "Customers erased that had state in Redis.", self.forgotten),
            ("absent", "Erasures of customers with nothing stored.", self.absent),
            ("tombstones", "Tombstones published to segment-changes.", self.tombstones),
            ("dead_lettered", "Erase requests sent to the dead-letter topic.", self.dead_lettered),
            ("failures", "Erasure attempts that failed (and were retried).", self.failures),
            (
                "outbox_timeouts",
                "Tombstones published before the customer's last change was acknowledged.",
                self.outbox_timeouts,
            ),
        ):
            out.counter(f"segstream_erase_{name}_total", help_text, value)
