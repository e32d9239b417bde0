"""The README's first command, small: the demo runs end to end and shows segment changes.

Also over the secured local services (``--secure``: TLS, SASL SCRAM-SHA-512, a Redis ACL user),
where every client the demo and its child commands create must carry the security settings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.ports import port_in_use

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(
    "mode", ["plain", "secure", "cluster"], ids=["plain", "secure", "redis-cluster"]
)
def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "demo"
    flags = {"plain": [], "secure": ["--secure"], "cluster": ["--redis-cluster", "3"]}[mode]
    secure = mode == "secure"
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "demo", "--customers", "300", "--days", "60",
         "--minutes", "0.15", "--out", str(out), *flags],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in text
    first = text.splitlines()[0]
    if secure:
        assert "rediss://segstream@127.0.0.1:" in first and "TLS + SASL SCRAM-SHA-512" in first
    else:
        assert "redis://127.0.0.1:" in first and "TLS" not in first
    published = re.search(r"([\d,]+) segment changes published \((.*)\)", text)
    assert published, text[-2000:]
    assert int(published.group(1).replace(",", "")) > 0
    assert "model_update" in published.group(2) and "order" in published.group(2)
    assert (out / "report" / "report.html").is_file()
    # one campaign on a trained segment, its impact measured in the report (docs/campaigns.md)
    assert "campaign demo-winback created on segment" in text, text[-3000:]
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    impact = re.search(r'<section id="impact".*?</section>', page, re.S)
    assert impact and "demo-winback" in impact.group(0)
    assert len(re.findall(r"<img ", impact.group(0))) == 2
    assert "demo-winback" in (out / "report" / "impact.csv").read_text()
    assert list((out / "models").glob("km-*.json"))
    assert "services stopped" in text
    assert "live dashboard: http://127.0.0.1:" in text
    ports = [int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", first)]
    assert len(ports) == 2 and not any(port_in_use(p) for p in ports)
