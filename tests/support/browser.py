"""Debian's Chromium for the browser tests: found, or installed with apt-get where missing.

Never a downloaded browser (no ``playwright install``): the report test runs the ``chromium``
binary itself, the dashboard test drives it with Playwright through ``executable_path``. Where
it is missing and we are root, ``apt-get install -y chromium`` runs (``apt-get update`` first
only if that fails), the same step ``./dev test`` takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["PLAYWRIGHT_ARGS", "chromium_path", "find_chromium"]

#: Flags for Chromium driven by Playwright: headless, no sandbox (root in a container), and
#: nothing that would reach the network on its own.
PLAYWRIGHT_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _apt_install_chromium() -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=600", "chromium"]
    log = []
    for step in (install, ["apt-get", "update", "-o", "DPkg::Lock::Timeout=600"], install):
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=1500)
        log.append(f"$ {' '.join(step)} -> {done.returncode}\n{done.stderr[-2000:]}")
        if step is install and done.returncode == 0:
            break
    return "\n".join(log)


def chromium_path() -> str:
    """Path of a headless-capable Chromium; raises AssertionError saying what to do if none."""
    found = find_chromium()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        log = _apt_install_chromium()
        found = find_chromium()
        if found is None:
            raise AssertionError(f"could not install chromium with apt-get:\n{log}")
    if found is None:
        raise AssertionError(
            "chromium is missing and we are not root: run `apt-get install -y chromium`"
        )
    return found
