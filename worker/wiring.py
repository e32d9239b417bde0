"""The one place that composes ``segstream worker``: every part built from ``Settings``.

Everything the process runs is built here and handed to what uses it, so no part builds its
own collaborators and no module holds wiring state: the state store, ingestion, the change
listener (the scoring service with its store and publisher, or a null listener when scoring is
off), the recency sweep and the web pages. The faust app (:func:`worker.app.create_app`) then
serves the pages and runs its timer and agent on the parts it is given.

Building connects to nothing: Redis and Kafka clients connect when their service starts (or on
their first request), so a worker can be built, inspected and thrown away without either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mode import ServiceT

from segstream.security import kafka_options
from segstream.settings import Settings
from worker.campaigns.service import CampaignService
from worker.erase.service import EraseService
from worker.identity.drain import OutboxDrain
from worker.identity.records import Limits
from worker.identity.stage import IdentityStage
from worker.identity.store import IdentityStateStore
from worker.ingest.listener import ChangeListener, NullListener
from worker.ingest.service import IngestService
from worker.ingest.sweep import RecencySweep
from worker.pages import Page, ingest_pages, report_page
from worker.profiles.service import ProfileService
from worker.recommend.batch import purchase_lines
from worker.recommend.service import RecommendMerger
from worker.recommend.stage import RecommendStage
from worker.recommend.store import RecommendStore

if TYPE_CHECKING:
    from worker.scoring.service import ScoringService

__all__ = ["Worker", "build_worker"]


@dataclass(frozen=True)
class Worker:
    """The parts of one worker process, built and not started."""

    settings: Settings
    ingest: IngestService
    #: Hears what ingestion changed, the sweep's crossings and control messages.
    listener: ChangeListener
    sweep: RecencySweep
    #: Started with the app in this order (stopped in reverse): ingestion first.
    services: tuple[ServiceT, ...]
    #: Web path -> page handler.
    pages: Mapping[str, Page]


def build_worker(settings: Settings) -> Worker:
    """Compose the worker for ``settings``.

    1. the state store ingestion applies batches to, with its stages: the identity stage and,
       with ``settings.recommend.enabled``, the placed orders' recommendation counts;
    2. with ``settings.scoring.enabled``, the scoring service (its Redis store and change publisher
       built here) as the change listener; else a :class:`NullListener`;
    3. ingestion, given the store and the listener;
    4. the recency sweep;
    5. the erase-requests consumer (``segstream forget`` by topic, docs/forget.md), then the
       profiles consumer (customer-profile updates, telling the listener whom to re-score),
       then the campaign consumer (arms of customers entering a campaign's segment:
       docs/campaigns.md), the recommendations merge (with recommendations on), then the
       identity outbox drain (worker/identity/drain.py);
    6. the web pages: ``/health`` (live, ready) and ``/metrics`` (with the erasure counters),
       and ``/scoring`` with scoring on.
    """
    ing = settings.ingest
    limits = Limits.of_days(
        ing.anonymous_ttl_days, ing.identity_link_ttl_days, ing.anonymous_max_events
    )
    # the state store + the identity stage after each apply (docs/state.md, "Anonymous visitors")
    # + the placed orders' recommendation counts, when enabled (docs/recommendations.md)
    recommend = [] if not settings.recommend.enabled else [
        RecommendStage(RecommendStore(settings.redis, settings.redis.prefix, settings.recommend))
    ]  # fmt: skip
    state = IdentityStateStore(
        settings.redis,
        settings.redis.prefix,
        limits,
        later=recommend,
        lines_of=purchase_lines if recommend else None,
    )
    scoring: ScoringService | None = None
    listener: ChangeListener = NullListener()
    if settings.scoring.enabled:

        def behind() -> int:
            # scoring asks only once running, and ingestion is built right below
            return ingest.behind()

        scoring = listener = build_scoring(settings, behind)
    ingest = IngestService(settings, store=state, listener=listener)
    sweep = RecencySweep(
        settings.redis,
        settings.redis.prefix,
        settings.ingest.recency_thresholds_days,
        first_window_s=settings.ingest.sweep_interval_s,
    )
    erase = EraseService(settings)
    profiles = ProfileService(settings, listener=listener)
    campaigns = CampaignService(settings)
    extra = [erase.metrics.expose, profiles.metrics.expose, campaigns.metrics.expose]
    extra += [stage.metrics.expose for stage in recommend]
    pages = ingest_pages(ingest, started_at=time.time(), extra_metrics=extra)
    services: tuple[ServiceT, ...] = (ingest,)
    if scoring is not None:
        pages["/scoring"] = report_page(scoring)
        services = (ingest, scoring)
    drain = OutboxDrain(IdentityStage(settings.redis, settings.redis.prefix, limits))
    # the merged recommendation lists, rewritten after purchases were counted
    merger = [RecommendMerger(settings, stage) for stage in recommend]
    services = (*services, erase, profiles, campaigns, *merger, drain)
    return Worker(settings, ingest, listener, sweep, services, pages)


def build_scoring(settings: Settings, behind: Callable[[], int]) -> ScoringService:
    """The scoring service with its Redis store and its segment-changes publisher.

    ``behind`` is ingestion's backlog (how many records it has still to fetch). Scoring is
    imported only here, so a state-only worker does not load the segmentation libraries.
    """
    from worker.scoring.publisher import ChangePublisher
    from worker.scoring.service import ScoringService
    from worker.scoring.store import ScoringStore

    store = ScoringStore(settings.redis, settings.redis.prefix)
    publisher = ChangePublisher(
        settings.kafka.bootstrap,
        settings.kafka.segment_changes_topic,
        settings.kafka.control_topic,
        client_id=f"segstream-scoring-{settings.kafka.group_id}",
        client=kafka_options(settings.kafka),
    )
    return ScoringService(settings, store, publisher, behind=behind)
