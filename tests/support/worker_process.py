"""``segstream worker`` as a subprocess, started exactly as ops start it, for end-to-end tests.

Each worker gets the test's settings as ``SEGSTREAM_*`` variables, its own web port (for
``/health`` and ``/metrics``) and its own log file; the ``workers`` fixture (tests/conftest.py)
stops every worker a test started, SIGTERM first, SIGKILL if it hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devstack.ports import free_port
from segstream.settings import Settings
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One ``segstream worker`` process with its own web port and log file."""

    def __init__(
        self, settings: Settings, log_dir: Path, name: str, env: Mapping[str, str] | None = None
    ) -> None:
        """``env``: variables added to the worker's environment beside its settings."""
        self.settings = settings.with_(web_port=free_port())
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segstream", "worker"],
            env={**self.settings.to_env(), **(env or {})},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._terminated = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.settings.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def wait_assigned(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until this worker's ingest consumer owns at least one partition."""

        def ready() -> dict[str, Any] | None:
            assert self.alive, f"{self.name} exited early:\n{self.tail()}"
            h = self.health()
            return h if h and h.get("assigned") else None

        health: dict[str, Any] = wait_for(ready, timeout, f"{self.name} to be assigned partitions")
        return health

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM, once); :meth:`stop` waits for it."""
        if self.alive and not self._terminated:
            self.proc.terminate()
            self._terminated = True

    def stop(self) -> int | None:
        if self.alive:
            self.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def worker_pool(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes for a test; all are stopped (SIGTERM, then SIGKILL) after it."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings, name: str = "worker", env: Mapping[str, str] | None = None
    ) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / "logs", f"{name}-{len(started)}", env)
        started.append(w)
        return w

    yield start
    # all asked at once: stopped one by one, each would wait out the group's rebalance that
    # the previous one's leaving started
    for w in started:
        w.terminate()
    for w in started:
        w.stop()


def start(workers: Callable[..., WorkerProcess], settings: Settings, name: str) -> WorkerProcess:
    """A worker from the ``workers`` fixture, once its consumer owns partitions."""
    worker: WorkerProcess = workers(settings, name)
    worker.wait_assigned()
    return worker


def assert_same_worker_healthy(worker: WorkerProcess, pid: int) -> dict[str, Any]:
    """Still the process that was started, alive, saying ok, with no traceback logged."""
    assert worker.alive, f"{worker.name} exited:\n{worker.tail()}"
    assert worker.proc.pid == pid
    health = worker.health()
    assert health is not None and health["status"] == "ok", health
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, worker.tail(80)
    return health
