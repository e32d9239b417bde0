"""The streaming worker's process stays lean: none of the analyst side's libraries is loaded.

import-linter checks the imports written in the code; this checks the process as it runs, after
it has ingested events, scored them with the rules, loaded a trained K-means model and re-scored
everyone with it (every lazy import of those paths has happened by then). Two witnesses: Python
reports every module it imports into the worker's log (``PYTHONPROFILEIMPORTTIME``), and the
process's memory map lists every compiled extension it loaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.state_checks import wait_received
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.state import keys

pytestmark = pytest.mark.integration

#: What the offline side needs and the worker must never load (assignment is numpy). scipy is
#: not among them: the online model is river's own Pipeline + KMeans, and river.compose and
#: river.cluster import scipy (worker code itself still never does: import-linter checks that).
ANALYST_LIBRARIES = ("sklearn", "pandas", "matplotlib", "seaborn")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S+)\s*$")


def imported_modules(log: Path) -> set[str]:
    """The modules the process reported importing (``-X importtime`` lines in its log)."""
    found = set()
    for line in log.read_text(errors="replace").splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            found.add(m.group(1))
    return found


def mapped_files(pid: int) -> set[str]:
    """Every file mapped into the process's memory (shared libraries and extensions)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {parts[-1] for parts in (line.split() for line in lines) if len(parts) >= 6}


def model_versions(settings: Settings) -> set[str]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        versions = set()
        for key in client.scan_iter(match=keys.customer_pattern(settings.redis.prefix)):
            versions.add(client.hget(key, "model_version") or "")
        return versions
    finally:
        client.close()


def test_a_running_worker_loads_no_scikit_learn_pandas_matplotlib_or_seaborn(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    s = settings.with_(rescore_all=True, model_poll_s=0.5)
    worker = workers(s, env={"PYTHONPROFILEIMPORTTIME": "1"})
    worker.wait_assigned()
    events = dataset(150, 600, 200, seed=5)
    produce(s.kafka.bootstrap, records_for(s, events))
    wait_received(s, len(events))
    wait_for(lambda: model_versions(s) == {"rules-v1"}, 60, "every customer on the rules")

    trained = subprocess.run(
        [sys.executable, "-m", "segstream", "train", "--from", "redis", "--seed", "1"],
        env=s.to_env(), cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    wait_for(
        lambda: len(model_versions(s)) == 1 and "rules-v1" not in model_versions(s),
        90,
        "every customer re-scored with the trained K-means model",
    )

    mapped = mapped_files(worker.proc.pid)
    assert worker.stop() == 0, worker.tail()
    modules = imported_modules(worker.log_path)

    # the witnesses see what the worker does load, so their silence below means something
    assert {"numpy", "worker.scoring.rounds", "worker.segmentation.online"} <= modules
    assert any("/numpy/" in path for path in mapped)
    loaded = sorted(m for m in modules if m.split(".")[0] in ANALYST_LIBRARIES)
    assert loaded == [], f"the worker imported {loaded[:10]}"
    extensions = sorted(p for p in mapped if any(f"/{lib}/" in p for lib in ANALYST_LIBRARIES))
    assert extensions == [], f"the worker mapped {extensions[:10]}"
