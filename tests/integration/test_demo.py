"""The README's first command, small: the demo runs end to end and shows segment changes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.services import kafka_answers, redis_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "demo", "--customers", "300", "--days", "60",
         "--minutes", "0.15", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in text
    published = re.search(r"([\d,]+) segment changes published \((.*)\)", text)
    assert published, text[-2000:]
    assert int(published.group(1).replace(",", "")) > 0
    assert "model_update" in published.group(2) and "order" in published.group(2)
    assert (out / "report" / "report.html").is_file()
    assert list((out / "models").glob("km-*.json"))
    assert "services stopped" in text
    ports = [int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", text.splitlines()[0])]
    assert ports and not any(kafka_answers(p) or redis_answers(p) for p in ports)
