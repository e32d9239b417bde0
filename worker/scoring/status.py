"""The scoring status in Redis (``{prefix}:scoring``) and the online model's state, throttled.

Written at most every :data:`STATUS_EVERY_S` after rounds; a skipped write leaves the status
stale, and the idle loop (or a stop) writes it then.
"""

from __future__ import annotations

from segstream.settings import Settings
from worker.clock import Clock
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.models import ModelHolder
from worker.scoring.ports import ScoringStorePort

#: Drift status and the online model's state are written to Redis at most this often (s).
STATUS_EVERY_S = 1.0


class StatusWriter:
    """Saves model version, drift and the online model's state; time from ``clock``."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        store: ScoringStorePort,
        metrics: ScoringMetrics,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.store = store
        self.metrics = metrics
        self.clock = clock
        #: When the status was last written (``clock.monotonic()``); never: -inf.
        self.saved_at = float("-inf")
        #: A write was skipped (throttled) since the last one.
        self.stale = False

    async def save(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self.saved_at < STATUS_EVERY_S:
            self.stale = True
            return
        self.saved_at = now
        self.stale = False
        m = self.metrics
        status = {
            "model_version": self.holder.version,
            "drift_max": m.drift_max,
            "drift_mean": m.drift_mean,
            "drift_bound": self.settings.scoring.drift_bound,
            "drift_exceeded": int(m.drift_exceeded),
            "drift_mix": m.drift_mix,
            "drift_ready": int(m.drift_ready),
            "emerging_groups": m.emerging_groups,
            "retrain_proposal": m.retrain_proposal,
            "updated_ms": self.clock.time_ms(),
        }
        await self.store.save_status(self.holder.version, self.holder.online_json(), status)
