"""Drift of the online centroids: the check after each round, the notice, the retrain child.

Above ``settings.scoring.drift_bound`` the worker warns, publishes a ``drift`` notice on the control
topic (once per version per cooldown, across workers: a Redis claim), and with
``--retrain-on-drift`` starts ``segstream train --from redis --gate`` as a child process (once
per cooldown across workers). The child promotes the new model only if it passes the retrain
gate against the live one (``settings.scoring.gate_*``, docs/segmentation.md "Model
lifecycle"); otherwise it stores it unpromoted with the reason, shown by ``segstream models
list``. A promoted model is picked up like any other (the ``model:current`` poll).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from datetime import UTC, datetime

from segstream.settings import Settings
from worker.scoring import control
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.models import ModelHolder
from worker.scoring.ports import ChangePublisherPort, ScoringStorePort

log = logging.getLogger(__name__)


class DriftWatch:
    """Checks the online model's drift and acts once when it first exceeds the bound."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        store: ScoringStorePort,
        publisher: ChangePublisherPort,
        metrics: ScoringMetrics,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.store = store
        self.publisher = publisher
        self.metrics = metrics

    async def check(self) -> None:
        """Record the drift; the first time it exceeds the bound: warn, notice, retrain.

        1. no online model (rules-v1): nothing to do;
        2. drift max and mean go into the metrics (and so the status);
        3. over the bound and not yet reported for this model: warn, claim and publish the
           notice, claim and start the retrain.
        """
        s = self.settings
        report = self.holder.drift(s.scoring.drift_bound)
        if report is None:
            return
        m = self.metrics
        m.drift_max, m.drift_mean = report.max, report.mean
        if not report.exceeded or m.drift_exceeded:
            return
        m.drift_exceeded = True
        version = self.holder.version
        log.warning("online centroids of %s drifted %.3f standard units (bound %.3f)",
                    version, report.max, report.bound)  # fmt: skip
        if await self.store.claim(f"drift:notice:{version}", s.scoring.retrain_cooldown_s):
            notice = control.encode(
                "drift", version=version, max=report.max, mean=report.mean,
                bound=report.bound, per_segment=list(report.per_segment),
                at=datetime.now(UTC).isoformat(),
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self.publisher.notice(notice)
                m.drift_notices += 1
        if s.scoring.retrain_on_drift and await self.store.claim(
            "retrain:lock", s.scoring.retrain_cooldown_s
        ):
            self.start_retrain()

    def start_retrain(self) -> subprocess.Popen[bytes]:
        """``segstream train --from redis --gate`` as a child process (it promotes the new
        model only if it passes the gate; the gate's bounds reach it with the settings)."""
        cmd = [sys.executable, "-m", "segstream", "train", "--from", "redis", "--gate"]
        log.warning("drift above bound: starting %s", " ".join(cmd[2:]))
        self.metrics.retrains += 1
        return subprocess.Popen(
            cmd, env=self.settings.to_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
