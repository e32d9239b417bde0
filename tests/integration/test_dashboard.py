"""``segstream dashboard`` end to end: a real broker, Redis and worker, events flowing, the page
opened in Debian's Chromium (driven by Playwright), every chart drawn and its numbers moving.

The screenshot is kept under the test's tmp directory and copied to ``/tmp/dashboard.png`` for
a person to look at.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devstack.ports import free_port
from schemas import LineItem, OrderEvent, encode
from segstream.settings import Settings
from tests.support.browser import PLAYWRIGHT_ARGS, chromium_path
from tests.support.producing import PacedProducer, produce
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.features import Scaler
from worker.segmentation.model import SegmentModel
from worker.state import StateReader

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Every chart of the page, by the id of its SVG.
CHARTS = ("c-sizes", "c-matrix", "c-drift", "c-changes", "c-events", "c-lag", "c-dead")
SCREENSHOT_COPY = Path("/tmp/dashboard.png")
#: A laptop screen.
VIEWPORT = (1366, 768)


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get where missing (never a downloaded browser)."""
    try:
        return chromium_path()
    except AssertionError as exc:
        pytest.fail(str(exc))


def basket_model(settings: Settings) -> SegmentModel:
    """Three segments on average order value alone (20, 80, 250), saved as the current model."""
    model = SegmentModel(
        version="km-baskets-test", created_at="2026-01-01T00:00:00+00:00",
        feature_names=("aov",), scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.log1p(np.array([[20.0], [80.0], [250.0]])),
        names=("small_baskets", "mid_baskets", "big_baskets"),
        seed=0, training_size=3, as_of="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    RedisModelStore.from_url(settings.redis.url, settings.redis.prefix).save(model)
    return model


def orders(prefix: str, customers: int, per_customer: int, seed: int) -> list[OrderEvent]:
    """Orders whose amounts move customers between the basket segments, one customer after
    another (so new customers keep arriving while the stream runs)."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC) - timedelta(hours=1)
    out = []
    for c in range(customers):
        cid = f"{prefix}{c:05d}"
        for n in range(per_customer):
            total = round(float(rng.choice([12.0, 25.0, 70.0, 95.0, 240.0, 420.0])), 2)
            out.append(
                OrderEvent(
                    event_id=f"{cid}-e{n}", schema_version=1, customer_id=cid,
                    order_id=f"{cid}-o{n}", event_time=now + timedelta(seconds=c + n),
                    status="placed", items=[LineItem(sku="S", quantity=1, unit_price=total)],
                    total=total,
                )
            )  # fmt: skip
    return out


def as_records(settings: Settings, events: list[OrderEvent], bad_every: int = 0) -> list[Any]:
    """Order records keyed by customer; with ``bad_every``, one record in that many is not JSON
    (the worker dead-letters it)."""
    topic = settings.kafka.orders_topic
    out = []
    for i, ev in enumerate(events):
        if bad_every and i % bad_every == bad_every - 1:
            out.append((topic, ev.customer_id.encode(), b"{not json"))
        out.append((topic, ev.customer_id.encode(), encode(ev)))
    return out


def segmented(settings: Settings) -> Counter[str]:
    """Customers per segment, as ``StateReader`` (what ``segstream export`` reads) sees them."""
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        return Counter(s.segment for s in reader.customers() if s.segment is not None)


class DashboardProcess:
    """``segstream dashboard`` as ops start it, on a free port, polling ``worker``."""

    def __init__(self, settings: Settings, worker: WorkerProcess, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_dir / "dashboard.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        worker_url = f"http://127.0.0.1:{worker.settings.web_port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segstream", "dashboard", "--port", str(self.port),
             "--worker-url", worker_url],
            env=settings.to_env(), cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def snapshot(self) -> dict[str, Any] | None:
        assert self.proc.poll() is None, f"the dashboard exited:\n{self.tail()}"
        try:
            with urllib.request.urlopen(self.url + "snapshot.json", timeout=2) as reply:
                data: dict[str, Any] = json.load(reply)
                return data if data else None
        except OSError:
            return None

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def dashboards(tmp_path: Path) -> Iterator[Callable[[Settings, WorkerProcess], DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(settings: Settings, worker: WorkerProcess) -> DashboardProcess:
        started.append(DashboardProcess(settings, worker, tmp_path / "logs"))
        return started[-1]

    yield start
    for dashboard in started:
        dashboard.stop()


#: In the page: for each chart, how many data marks it has and its readouts' text.
PAGE_STATE = """() => {
  const charts = {};
  for (const section of document.querySelectorAll("section.panel")) {
    const svg = section.querySelector("svg.chart");
    const marks = [...svg.querySelectorAll(".mark")].filter((m) => !m.classList.contains("slot"));
    const longest = Math.max(0, ...[...svg.querySelectorAll("path.mark")]
      .map((p) => (p.getAttribute("d") || "").split(/[ML]/).length - 1));
    charts[svg.id] = {
      marks: marks.length, points: longest, nodes: svg.childElementCount,
      readout: section.querySelector("output").textContent,
      legend: (section.querySelector(".legend") || {textContent: ""}).textContent,
      text: svg.textContent,
    };
  }
  const status = {};
  for (const b of document.querySelectorAll("ul.status b")) status[b.id] = b.textContent;
  return {tick: Number(document.body.dataset.tick || -1), charts, status};
}"""


def test_the_dashboard_draws_every_chart_and_its_numbers_change_while_events_flow(
    settings: Settings,
    workers: Callable[..., WorkerProcess],
    dashboards: Callable[[Settings, WorkerProcess], DashboardProcess],
    chromium: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    s = settings.with_(model_poll_s=0.5, dirty_repair_s=2.0, scoring_share=1.0)
    model = basket_model(s)
    worker = workers(s)
    worker.wait_assigned()

    # A history the dashboard must start from: read from Redis, not from the topic.
    history = orders("H", 120, 2, seed=1)
    produce(s.kafka.bootstrap, as_records(s, history))
    wait_for(lambda: segmented(s).total() == 120, 90, "the history scored")

    dashboard = dashboards(s, worker)
    first = wait_for(
        lambda: (
            (snap := dashboard.snapshot())
            and snap["source"]["feed_state"] == "following"
            and snap["worker"]["reachable"]
            and snap
        ),
        60,
        "the dashboard following the topic and the worker",
    )
    assert first["sizes"]["total"] == 120 and first["feed"]["seeded"] == 120
    assert first["sizes"]["current"] == dict(segmented(s))
    history_series = first["sizes"]["history"]["series"].values()
    assert sum(values[0] for values in history_series) == 120  # no false zero before the state
    assert first["worker"]["url"] == f"http://127.0.0.1:{worker.settings.web_port}"

    # Records the dashboard cannot read, and a tombstone: counted, shown, never fatal.
    topic = s.kafka.segment_changes_topic
    produce(s.kafka.bootstrap, [(topic, b"X1", b"\xff not json"), (topic, b"X2", b'{"a": 1}'),
                                (topic, b"ghost", None)])  # fmt: skip

    live = orders("L", 600, 3, seed=2)
    stream = PacedProducer(s.kafka.bootstrap, as_records(s, live, bad_every=40), per_second=60)
    stream.start()
    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(PLAYWRIGHT_ARGS))
        try:
            page = browser.new_page(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(dashboard.url)

            def drawn() -> dict[str, Any] | None:
                state: dict[str, Any] = page.evaluate(PAGE_STATE)
                charts = state["charts"]
                ok = (
                    all(charts[c]["marks"] > 0 for c in CHARTS)
                    and all(charts[c]["points"] >= 3 for c in ("c-sizes", "c-events", "c-lag"))
                    and charts["c-drift"]["marks"] == len(model.names)
                    and state["status"]["s-undecodable"] == "2"
                    and charts["c-dead"]["readout"] not in ("–", "0 total")
                )
                return state if ok else None

            before = wait_for(drawn, 90, "every chart drawn", every=0.5)
            charts = before["charts"]
            assert set(charts) == set(CHARTS)
            assert charts["c-drift"]["marks"] == 3  # one bar per segment of the model
            assert all(name in charts["c-drift"]["text"] for name in model.names)
            assert before["status"]["s-erased"] == "1"
            assert before["status"]["s-conn"] == "live"
            assert before["status"]["s-model"] == model.version

            def moved() -> dict[str, Any] | None:
                state: dict[str, Any] = page.evaluate(PAGE_STATE)
                now, then = state["charts"], before["charts"]
                changed = [
                    now["c-sizes"]["readout"] != then["c-sizes"]["readout"],
                    now["c-changes"]["legend"] != then["c-changes"]["legend"],  # total N
                    now["c-matrix"]["readout"] != then["c-matrix"]["readout"],
                    now["c-events"]["legend"] != then["c-events"]["legend"],  # received N
                    now["c-dead"]["readout"] != then["c-dead"]["readout"],
                    state["tick"] > before["tick"],
                ]
                return state if all(changed) else None

            after = wait_for(moved, 90, "the numbers of every chart to change", every=0.5)
            assert after["charts"]["c-events"]["readout"].endswith("/s")
            assert after["charts"]["c-lag"]["readout"].endswith("records")
            page.screenshot(path=str(shot))
            assert not errors, errors
            own = dashboard.url.rstrip("/")
            assert all(url.startswith(own) for url in requested), requested  # no CDN
        finally:
            browser.close()
    shutil.copyfile(shot, SCREENSHOT_COPY)
    stream.finish()

    # Once the stream is scored, the dashboard's sizes are exactly the state's.
    def in_step() -> dict[str, Any] | None:
        snap = dashboard.snapshot()
        if not snap or snap["worker"]["dead_letters"] != len(live) // 40:
            return None
        return snap if snap["sizes"]["current"] == dict(segmented(s)) else None

    wait_for(lambda: segmented(s).total() == 720, 120, "the stream scored")
    final = wait_for(in_step, 60, "the dashboard's sizes and dead letters equal to the state's")
    assert final["sizes"]["total"] == 720
    assert final["feed"]["undecodable"] == 2 and final["feed"]["erased"] == 1
    assert dashboard.proc.poll() is None and worker.alive
    assert "Traceback" not in dashboard.log_path.read_text(errors="replace"), dashboard.tail()
