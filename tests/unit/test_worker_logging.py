"""The worker's log level is the root logger's: faust's spinner must not lower it to DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: Builds the worker (ours or faust's own) for a level, sets logging up as ``Worker.execute``
#: does, and prints the root level and whether aiokafka's debug records would be built.
PROBE = """
import logging, os, sys
import faust
from worker.cli import faust_worker
app = faust.App("probe", broker="kafka://127.0.0.1:1")
level = sys.argv[2]
if sys.argv[1] == "ours":
    w = faust_worker(app, level)
else:
    w = faust.Worker(app, loglevel=level, quiet=True)
w._setup_logging()
root = logging.getLevelName(logging.getLogger().level)
debug = logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
os.write(int(sys.argv[3]), f"{root} {debug}".encode())  # faust redirects stdout/stderr
"""


def _probe(which: str, level: str) -> list[str]:
    read, write = os.pipe()
    try:
        subprocess.run(
            [sys.executable, "-c", PROBE, which, level, str(write)], capture_output=True,
            check=True, pass_fds=(write,),
        )  # fmt: skip
    finally:
        os.close(write)
    with os.fdopen(read) as answer:
        return answer.read().split()


@pytest.mark.parametrize("level", ["WARNING", "ERROR", "INFO"])
def test_root_logger_keeps_the_worker_level(level: str) -> None:
    assert _probe("ours", level) == [level, "False"]


def test_faust_spinner_would_turn_debug_on() -> None:
    """Why ``faust_worker`` drops the spinner: without that, WARNING means DEBUG at the root."""
    assert _probe("faust", "WARNING") == ["DEBUG", "True"]
