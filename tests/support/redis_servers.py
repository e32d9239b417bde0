"""A redis-server of a test's own, for faults the session's shared Redis must not suffer.

Pausing (SIGSTOP), stopping, restarting or filling Redis would break every other test using
the session's instance; a test that does so starts a :class:`DedicatedRedis` on a free port.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from devstack.ports import free_port, redis_answers
from devstack.processes import redis_server_binary
from tests.support.waiting import wait_for


class DedicatedRedis:
    """A redis-server only this test uses, with an append-only file so a restart keeps data."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", str(self.dir), "--protected-mode", "no",
        ]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: redis_answers(self.port), 15, "the dedicated redis-server")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()  # SIGTERM: Redis flushes the append-only file and exits
            self.proc.wait(15)
        self.proc = None
