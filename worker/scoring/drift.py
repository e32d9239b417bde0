"""The online model's findings after each round: drift, emerging groups, the notice, the retrain.

What the online model learns (:meth:`DriftWatch.learn`): the customers a round scored because of
an event (``order``, ``return``, ``clicks``, or a repair whose reason was lost), not those the
recency sweep (``recency_decay``) or a rescore (``model_update``) queued: those are a slice of
the population chosen by the clock, not the stream, and would move its statistics on their own.
Customers in conflict are left out too (they are scored again on their newer state).

What it proposes (:meth:`DriftWatch.check`, docs/segmentation.md "Drift and emerging groups"):
drift above ``settings.scoring.drift_bound`` (segment spreads) or of the mix above its bound, or
an emerging group. The first time for a model, the worker warns, publishes a ``drift`` notice on
the control topic (once per version per cooldown, across workers: a Redis claim), and with
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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from segstream.settings import Settings
from worker.clock import SYSTEM_CLOCK, Clock
from worker.scoring import control
from worker.scoring.decide import Decision
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.models import ModelHolder
from worker.scoring.ports import ChangePublisherPort, ScoringStorePort
from worker.scoring.vectors import Round
from worker.segmentation.online import LEARN_PER_ROUND, DriftReport, OnlineModel

log = logging.getLogger(__name__)

#: Rows a second the online model is taught at most (:class:`LearnBudget`).
LEARN_PER_S = 500
#: Reasons whose customers the online model does not learn from (see the module docstring).
NOT_LEARNED = frozenset({"recency_decay", "model_update"})


def learned_rows(
    rnd: Round, items: Mapping[str, str | None], conflicts: set[str] | frozenset[str]
) -> np.ndarray:
    """Rows of ``rnd`` the online model learns from: scored on an event, not in conflict."""
    why = rnd.reasons
    keep = [
        cid not in conflicts and (items.get(cid) or (why[row] if why else None)) not in NOT_LEARNED
        for row, cid in enumerate(rnd.customer_ids)
    ]
    return np.flatnonzero(np.array(keep, dtype=bool))


def proposal(report: DriftReport) -> str:
    """Why a retrain is proposed, in words (empty: it is not)."""
    parts = []
    if report.max > report.bound:
        parts.append(f"segment drift {report.max:.2f} > {report.bound:.2f} segment spreads")
    if report.mix > report.mix_bound:
        parts.append(f"segment mix moved {report.mix:.0%} > {report.mix_bound:.0%}")
    if report.emerging:
        g = report.emerging[0]
        parts.append(
            f"emerging group of {g.customers}+ customers, {g.share:.1%} of recent scorings, "
            f"{g.distance:.2f} std units from the nearest segment"
        )
    return "; ".join(parts)


class LearnBudget:
    """How many rows a round may teach the online model: :data:`LEARN_PER_S` a second.

    What a round teaches river, and the far points it adds to the emerging groups, are a
    sample of at most :data:`~worker.segmentation.online.LEARN_PER_ROUND`, and a row costs
    the same in a round of 20 customers as in one of 5000. Live traffic comes in many small
    rounds (tens a second), so a cap per round alone made learning cost as much as scoring;
    with a rate the cost is bounded whatever the round rate, while a replay's large rounds,
    a few a second, still teach their full sample. Unused budget is kept up to one full
    sample. At least one row a round is taught.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, per_s: float = LEARN_PER_S) -> None:
        self.clock = clock
        self.per_s = per_s
        self.tokens = float(LEARN_PER_ROUND)
        self.at = clock.monotonic()

    def take(self, rows: int) -> int:
        """How many of ``rows`` to teach now (at least 1 of them, at most ``LEARN_PER_ROUND``)."""
        now = self.clock.monotonic()
        self.tokens = min(self.tokens + (now - self.at) * self.per_s, float(LEARN_PER_ROUND))
        self.at = now
        teach = min(rows, max(1, int(self.tokens)))
        self.tokens = max(0.0, self.tokens - teach)
        return teach


class DriftWatch:
    """Feeds the online model and acts once when it first proposes a retrain for a model."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        store: ScoringStorePort,
        publisher: ChangePublisherPort,
        metrics: ScoringMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.budget = LearnBudget(clock)

    def learn(
        self,
        online: OnlineModel,
        decisions: Sequence[tuple[Round, Decision]],
        items: Mapping[str, str | None],
        conflicts: set[str],
    ) -> None:
        """Teach ``online`` a round's event-scored customers (:func:`learned_rows`), within
        the learning budget."""
        for rnd, dec in decisions:
            if not len(rnd):
                continue
            rows = learned_rows(rnd, items, conflicts)
            if len(rows):
                ids = [rnd.customer_ids[r] for r in rows.tolist()]
                teach = self.budget.take(len(rows))
                online.learn_many(dec.x_real[rows], dec.segment_ids[rows], ids, teach)

    async def check(self) -> None:
        """Record drift and emerging groups; the first proposal for a model: warn, notice,
        retrain.

        1. no online model (rules-v1): nothing to do;
        2. drift, mix and emerging groups go into the metrics (and so the status);
        3. a retrain proposed and not yet reported for this model: warn, claim and publish the
           notice, claim and start the retrain.
        """
        s = self.settings
        report = self.holder.drift(s.scoring.drift_bound)
        if report is None:
            return
        m = self.metrics
        m.drift_max, m.drift_mean, m.drift_mix = report.max, report.mean, report.mix
        m.emerging_groups = len(report.emerging)
        m.drift_ready = report.ready
        if not report.retrain_proposed or m.drift_exceeded:
            return
        m.drift_exceeded = True
        m.retrain_proposal = why = proposal(report)
        version = self.holder.version
        log.warning("model %s: retrain proposed: %s", version, why)
        if await self.store.claim(f"drift:notice:{version}", s.scoring.retrain_cooldown_s):
            notice = control.encode(
                "drift", version=version, max=report.max, mean=report.mean,
                bound=report.bound, per_segment=list(report.per_segment), mix=report.mix,
                emerging=[vars(g) for g in report.emerging], reason=why,
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
        log.warning("retrain proposed: starting %s", " ".join(cmd[2:]))
        self.metrics.retrains += 1
        return subprocess.Popen(
            cmd, env=self.settings.to_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
