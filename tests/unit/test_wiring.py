"""``build_worker`` composes the whole worker from Settings, and building it connects to nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from segstream.settings import Settings
from worker.erase.service import EraseService
from worker.identity.drain import OutboxDrain
from worker.identity.store import IdentityStep
from worker.ingest.listener import NullListener
from worker.recommend.service import RecommendMerger
from worker.recommend.stage import RecommendStage
from worker.scoring.publisher import ChangePublisher
from worker.scoring.service import ScoringService
from worker.scoring.store import ScoringStore
from worker.state.staged import StagedStore
from worker.state.store import StateStore
from worker.wiring import build_worker

#: Nothing listens on port 1: a client that did connect would fail loudly, not reach a service.
NOWHERE = {"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:1/0"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.of(run_dir=str(tmp_path), **NOWHERE)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connect while a worker is built fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"building the worker connected: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse)


def test_a_worker_with_scoring_off_has_a_null_listener_and_only_ingestion(
    settings: Settings,
) -> None:
    worker = build_worker(settings.with_(scoring=0))
    assert type(worker.listener) is NullListener
    assert worker.ingest.listener is worker.listener
    store = worker.ingest.store
    assert isinstance(store, StagedStore) and isinstance(store.state, StateStore)
    # each batch: the state script, the identity stage, then the recommendation counts
    assert [type(stage) for stage in store.stages] == [IdentityStep, RecommendStage]
    assert worker.services[0] is worker.ingest
    assert isinstance(worker.services[-1], OutboxDrain)  # identity transfers a crash left
    assert isinstance(worker.services[-2], RecommendMerger)  # the merged top lists
    assert isinstance(worker.services[1], EraseService)
    assert set(worker.pages) == {"/health", "/health/live", "/health/ready", "/metrics"}


def test_a_worker_with_scoring_on_tells_the_scoring_service_what_changed(
    settings: Settings,
) -> None:
    worker = build_worker(settings.with_(scoring=1))
    scoring = worker.listener
    assert isinstance(scoring, ScoringService)
    assert worker.ingest.listener is scoring
    assert isinstance(scoring.store, ScoringStore)
    assert isinstance(scoring.publisher, ChangePublisher)
    assert worker.services[:2] == (worker.ingest, scoring)  # ingestion starts first
    assert isinstance(worker.services[2], EraseService)  # erase requests last
    assert set(worker.pages) == {"/health", "/health/live", "/health/ready", "/metrics", "/scoring"}


def test_a_worker_is_built_from_its_settings_alone(settings: Settings) -> None:
    s = settings.with_(scoring=1, redis_prefix="p1", group_id="g1")
    worker = build_worker(s)
    assert worker.settings is s and worker.ingest.settings is s
    assert worker.ingest.store.state.prefix == "p1"  # type: ignore[attr-defined]
    assert worker.listener.publisher.client_id == "segstream-scoring-g1"  # type: ignore[attr-defined]
    assert worker.sweep.key == "p1:sweep:last_ms"


def test_scoring_catches_up_when_the_ingestion_it_was_built_with_falls_behind(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = build_worker(settings.with_(scoring=1, catch_up_lag=100))
    scoring = worker.listener
    assert isinstance(scoring, ScoringService)
    assert worker.ingest.behind() == 0  # not connected: no partitions, no backlog
    assert not scoring.pacer.catching_up()
    monkeypatch.setattr(worker.ingest, "behind", lambda: 100)
    assert scoring.pacer.catching_up()


def test_the_faust_app_serves_the_pages_and_runs_the_services_it_is_given(
    settings: Settings,
) -> None:
    from worker.app import create_app

    worker = build_worker(settings.with_(scoring=1))
    app = create_app(worker)
    assert {"/health", "/metrics", "/scoring"} <= set(app.web.views)
    started = [s for s in app._children if s in worker.services]
    assert started == list(worker.services)
