"""What this process counted while applying profile updates (``/metrics``: :meth:`expose`).

Redis holds the authoritative, all-process counts in ``{prefix}:counters`` (``profiles_*``:
profile.lua, docs/state.md); these are this process's alone, as the ingest and erase metrics
are. No counter and no log line at INFO or above names a customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.side_consumer import SideMetrics

if TYPE_CHECKING:
    from worker.exposition import Exposition


@dataclass
class ProfileMetrics(SideMetrics):
    """Counters of the profiles consumer."""

    #: Records read from the profiles topic (valid or not, redeliveries included).
    records: int = 0
    #: Updates merged into a customer's profile by this process.
    applied: int = 0
    #: Of those, updates that changed a stored value (the rest lost to a later or larger one).
    changed: int = 0
    #: Records skipped as already applied (a redelivery below the fence).
    fenced: int = 0
    #: Updates of forgotten customers stamped before their erasure (dropped).
    suppressed: int = 0
    #: Batches applied record by record because Redis kept refusing them whole.
    isolated_batches: int = 0

    def expose(self, out: Exposition) -> None:
        """Add the families to ``out`` (a ``MetricsSource`` for worker.pages)."""
        for name, help_text, value in (
            ("records", "Records read from the profiles topic.", self.records),
            ("applied", "Profile updates merged into customers' profiles.", self.applied),
            ("changed", "Profile updates that changed a stored value.", self.changed),
            ("fenced", "Profile records skipped as already applied.", self.fenced),
            ("suppressed", "Profile updates of forgotten customers dropped.", self.suppressed),
            ("dead_lettered", "Profile records sent to the dead-letter topic.", self.dead_lettered),
            (
                "isolated_batches",
                "Profile batches applied record by record after repeated refusals.",
                self.isolated_batches,
            ),
            ("failures", "Profile batch attempts that failed (and were retried).", self.failures),
        ):
            out.counter(f"segstream_profiles_{name}_total", help_text, value)
