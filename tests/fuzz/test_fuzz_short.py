"""The test suite's short fuzz run: a minute of coverage-guided inputs against the decoders.

It runs ``python -m tests.fuzz`` in a child process, as a person would, and checks that the run
ended without a finding and really ran inputs: a fuzzer that failed to start, or ran only its
seeds, must not pass for a clean run. ``SEGSTREAM_FUZZ_SECONDS`` sets the duration (default 60).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.runner import ROOT, SUMMARY, parse

SECONDS = int(os.environ.get("SEGSTREAM_FUZZ_SECONDS", "60"))
#: libFuzzer runs each seed once before fuzzing; a run must go well beyond them. 20 inputs a
#: second is ~30 times slower than a quiet laptop, so only a stalled fuzzer falls below it.
MIN_RUNS_PER_SECOND = 20
SEED_COUNT = re.compile(r"^fuzz: (\d+) seed inputs", re.MULTILINE)


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.timeout(SECONDS + 600)
def test_a_short_fuzz_run_of_the_decoders_finds_nothing_and_runs_many_inputs(
    tmp_path: Path,
) -> None:
    artifacts = tmp_path / "artifacts"
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--seconds", str(SECONDS),
         "--artifacts", str(artifacts)],
        cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=SECONDS + 540,
    )  # fmt: skip
    output = run.stderr + run.stdout
    tail = output[-6000:]
    assert run.returncode == 0, f"fuzzing found something (inputs in {artifacts}):\n{tail}"
    assert list(artifacts.iterdir()) == [], tail
    stats = parse(output)
    seeds = SEED_COUNT.search(output)
    assert stats.runs is not None and seeds is not None and SUMMARY.search(output), tail
    assert stats.runs >= int(seeds.group(1)) + MIN_RUNS_PER_SECOND * SECONDS, tail
    print(run.stdout.strip())  # the runner's summary, for ``pytest -s``
