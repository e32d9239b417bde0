"""``segstream customer`` / ``segstream export`` against the session's real Redis."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from segstream.cli import main
from tests.support.synthetic import batches, clicks, orders, pandas_rfm
from worker.preflight import PROBE_SCRIPT
from worker.state import StateStore

pytestmark = pytest.mark.integration
AS_OF = "2026-06-01T00:00:00Z"


def load(url: str, prefix: str, events: list) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        store = StateStore(url, prefix)
        for b in batches(events, "in", size=500):
            await store.apply(b)
        await store.close()

    asyncio.run(run())


def calls(client: object, command: str) -> int:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def score(client: object, prefix: str, segments: dict[str, tuple[str, str, int]]) -> None:
    """Write segments the way scoring's write script does (``write.lua``: one HSET per change)."""
    for cid, (segment, version, seq) in segments.items():
        client.hset(  # type: ignore[attr-defined]
            f"{prefix}:c:{{{cid}}}",
            mapping={"segment": segment, "segment_seq": seq, "model_version": version,
                     "seg_as_of": 1},
        )  # fmt: skip


def test_export_csv_equals_pandas_carries_the_segment_and_uses_scan_not_keys(
    redis_url: str, redis_prefix: str, redis_client: object, tmp_path: Path
) -> None:
    events = orders(250, 3000, seed=4)
    load(redis_url, redis_prefix, [*events, *clicks(280, 300)])
    scored = {"C00001": ("champions", "km-7", 3), "C00002": ("at_risk", "rules-v1", 1)}
    score(redis_client, redis_prefix, scored)
    before = {c: calls(redis_client, c) for c in ("keys", "hgetall", "hget", "hmget", "scan")}
    out = tmp_path / "export.csv"
    flags = ["--redis-url", redis_url, "--redis-prefix", redis_prefix, "--as-of", AS_OF]
    res = CliRunner().invoke(main, ["export", *flags, "--out", str(out)])
    assert res.exit_code == 0, res.output
    after = {c: calls(redis_client, c) for c in before}
    got = {r["customer_id"]: r for r in csv.DictReader(out.open())}
    # streamed by SCAN, one HGETALL per customer carries state and segment: no extra round trip
    # (the start-up permission probe runs each command once, on a scratch key)
    probe = {c: PROBE_SCRIPT.count(f"'{c.upper()}'") for c in before}
    assert after["keys"] == before["keys"]
    assert after["scan"] > before["scan"]
    assert after["hgetall"] - before["hgetall"] == len(got) + probe["hgetall"]
    assert (after["hget"], after["hmget"]) == (
        before["hget"] + probe["hget"],
        before["hmget"] + probe["hmget"],
    )
    header = next(csv.reader(out.open()))
    assert header[-3:] == ["segment", "model_version", "segment_seq"]
    for cid, (segment, version, seq) in scored.items():
        assert (got[cid]["segment"], got[cid]["model_version"]) == (segment, version)
        assert got[cid]["segment_seq"] == str(seq)
    never = [r for cid, r in got.items() if cid not in scored]
    assert never and all(
        (r["segment"], r["model_version"], r["segment_seq"]) == ("", "", "") for r in never
    )
    want = pandas_rfm(events)
    as_of_ms = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp() * 1000)
    for cid, row in want.iterrows():
        r = got[str(cid)]
        assert int(r["frequency"]) == row["frequency"]
        assert round(float(r["monetary"]) * 100) == row["monetary_cents"]
        assert float(r["aov"]) == pytest.approx(row["aov"])
        first = datetime.fromisoformat(r["first_order_ts"])
        assert int(first.timestamp() * 1000) == row["first_ms"]
        last = datetime.fromisoformat(r["last_order_ts"])
        assert int(last.timestamp() * 1000) == row["last_ms"]
        assert float(r["recency_days"]) == pytest.approx((as_of_ms - row["last_ms"]) / 86_400_000)
    no_orders = set(got) - {str(c) for c in want.index}
    assert no_orders and all(got[c]["frequency"] == "0" for c in no_orders)
    assert all(got[c]["first_order_ts"] == "" for c in no_orders)


def test_export_jsonl_to_stdout_and_customer_command(
    redis_url: str, redis_prefix: str, redis_client: object
) -> None:
    events = orders(20, 100, seed=8)
    load(redis_url, redis_prefix, events)
    score(redis_client, redis_prefix, {"C00003": ("champions", "km-7", 2)})
    flags = ["--redis-url", redis_url, "--redis-prefix", redis_prefix, "--as-of", AS_OF]
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--format", "jsonl", *flags])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == len(pandas_rfm(events))
    by_id = {x["customer_id"]: x for x in lines}
    c3 = by_id["C00003"]
    assert (c3["segment"], c3["model_version"], c3["segment_seq"]) == ("champions", "km-7", 2)
    others = [x for cid, x in by_id.items() if cid != "C00003"]
    assert all(x["segment"] is None and x["segment_seq"] is None for x in others)
    one = runner.invoke(main, ["customer", "C00003", "--json", *flags])
    assert one.exit_code == 0, one.output
    obj = json.loads(one.stdout)
    assert obj["segment"] == "champions"
    assert obj == {**c3, "as_of": obj["as_of"]}  # the same row as the export's, plus as_of
    table = runner.invoke(main, ["customer", "C00003", *flags])
    assert table.exit_code == 0 and "champions" in table.stdout
    missing = runner.invoke(main, ["customer", "nobody", *flags])
    assert missing.exit_code == 1 and "no state for customer 'nobody'" in missing.output
    assert io.StringIO(missing.output).read().count("Traceback") == 0
