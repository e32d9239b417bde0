"""Polling until a condition holds: the one way tests wait for another process to catch up.

A test never sleeps for a fixed time to let something happen; it polls the observable outcome
with a deadline, so a slow machine only makes it slower, and a failure names what never came.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """``check()``'s first truthy value, polled every ``every`` s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
