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


def test_export_csv_equals_pandas_and_uses_scan_not_keys(
    redis_url: str, redis_prefix: str, redis_client: object, tmp_path: Path
):
    events = orders(250, 3000, seed=4)
    load(redis_url, redis_prefix, [*events, *clicks(280, 300)])
    keys_before = redis_client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)  # type: ignore[attr-defined]
    out = tmp_path / "export.csv"
    flags = ["--redis-url", redis_url, "--redis-prefix", redis_prefix, "--as-of", AS_OF]
    res = CliRunner().invoke(main, ["export", *flags, "--out", str(out)])
    assert res.exit_code == 0, res.output
    keys_after = redis_client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)  # type: ignore[attr-defined]
    assert keys_after == keys_before
    got = {r["customer_id"]: r for r in csv.DictReader(out.open())}
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
):
    events = orders(20, 100, seed=8)
    load(redis_url, redis_prefix, events)
    redis_client.hset(f"{redis_prefix}:c:{{C00003}}", mapping={"segment": "champions"})  # type: ignore[attr-defined]
    flags = ["--redis-url", redis_url, "--redis-prefix", redis_prefix, "--as-of", AS_OF]
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--format", "jsonl", *flags])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == len(pandas_rfm(events))
    one = runner.invoke(main, ["customer", "C00003", "--json", *flags])
    assert one.exit_code == 0, one.output
    obj = json.loads(one.stdout)
    assert obj["segment"] == "champions"
    assert obj == {**next(x for x in lines if x["customer_id"] == "C00003"), **{
        "segment": "champions", "model_version": None, "as_of": obj["as_of"]}}  # fmt: skip
    table = runner.invoke(main, ["customer", "C00003", *flags])
    assert table.exit_code == 0 and "champions" in table.stdout
    missing = runner.invoke(main, ["customer", "nobody", *flags])
    assert missing.exit_code == 1 and "no state for customer 'nobody'" in missing.output
    assert io.StringIO(missing.output).read().count("Traceback") == 0
