"""Decode + validate throughput of the event contracts, and the library choice behind them.

Measures events/s on one core for realistic records (orders with 1-5 line items, clicks of
every type, a third of them anonymous), generated from a fixed seed, for:

* ``orjson.loads`` alone: the baseline, parsing with no types and no checks;
* msgspec with segstream's checks: ``schemas.decode_many``, the code the worker runs;
* msgspec types only: the same structs without the model checks (what the checks cost);
* pydantic v2: ``model_validate_json`` on models with the same constraints, in strict mode,
  with the cross-field checks (time bounds, total vs items, ids, sku) in a model validator.

Every candidate decodes the same records in batches of ``--batch`` (the worker's poll size),
keeps what it decoded until the batch ends, and runs with the garbage collector on, as the
worker does. Before timing, each candidate must accept every generated record and reject each
record of a small set of invalid ones, so all of them check the same things. Times are CPU
time of this process (``time.process_time``), which other load on the machine inflates less
than wall time; the wall-clock rate is printed beside it. Each figure is the median of
``--runs`` passes (at least 3), candidates interleaved within each pass; ratios are against the
baseline measured in the same run.

Run it pinned to one core: ``taskset -c 0 .venv/bin/python benchmarks/bench_schemas.py``.
pydantic is not a dependency of segstream: without it, its row says so and the rest runs.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from importlib import metadata
from typing import Annotated, Any, Literal

import msgspec
import orjson

from schemas import ClickEvent, OrderEvent, decode_many
from schemas.codec import MAX_EVENT_BYTES
from schemas.events import (
    CLICK_SCHEMA_VERSIONS,
    MAX_FUTURE_SKEW_S,
    MAX_ITEMS_PER_ORDER,
    MAX_ORDER_TOTAL,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    MIN_EVENT_TIME,
    ORDER_SCHEMA_VERSIONS,
    SKU_CLICK_TYPES,
    TOTAL_TOLERANCE,
)

TARGET_EVENTS_PER_S = 200_000
CLICK_TYPES = [
    ("page_view", 45),
    ("product_view", 25),
    ("search", 10),
    ("add_to_cart", 10),
    ("remove_from_cart", 4),
    ("checkout_start", 6),
]

# A decoder takes one batch and returns (valid, rejected) counts; it keeps its objects alive
# until it returns, like the worker keeps a batch until it is applied.
Decoder = Callable[[Sequence[bytes]], tuple[int, int]]


# --- records ------------------------------------------------------------------------------


def _when(rng: random.Random, now: datetime) -> str:
    """Within the last two years; 4 in 5 in UTC (``Z``), the rest with an offset."""
    ago = timedelta(seconds=rng.randrange(2 * 365 * 86400), microseconds=rng.randrange(10**6))
    moment = now - ago
    if rng.random() < 0.8:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.astimezone(timezone(timedelta(hours=rng.choice((-5, 1, 2, 9))))).isoformat()


def make_orders(n: int, rng: random.Random, now: datetime) -> list[bytes]:
    out = []
    for i in range(n):
        items = [
            {
                "sku": f"SKU-{rng.randrange(20_000):05d}",
                "quantity": rng.choice((1, 1, 1, 2, 2, 3, 5)),
                "unit_price": rng.randrange(99, 50_000) / 100,
            }
            for _ in range(rng.randint(1, 5))
        ]
        total = round(math.fsum(x["quantity"] * x["unit_price"] for x in items), 2)
        status = rng.choices(("placed", "cancelled", "returned"), (90, 5, 5))[0]
        record = {
            "event_id": f"evt-{i:09d}",
            "schema_version": 1,
            "customer_id": f"cust-{rng.randrange(200_000):07d}",
            "order_id": f"ord-{i:09d}",
            "event_time": _when(rng, now),
            "status": status,
            "items": items,
            "total": total,
            "currency": rng.choices(("EUR", "USD", "GBP"), (70, 20, 10))[0],
        }
        out.append(orjson.dumps(record))
    return out


def make_clicks(n: int, rng: random.Random, now: datetime) -> list[bytes]:
    types = [t for t, _ in CLICK_TYPES]
    weights = [w for _, w in CLICK_TYPES]
    out = []
    for i in range(n):
        kind = rng.choices(types, weights)[0]
        record: dict[str, Any] = {
            "event_id": f"clk-{i:09d}",
            "schema_version": 1,
            "session_id": f"sess-{rng.randrange(500_000):07d}",
            "event_time": _when(rng, now),
            "type": kind,
        }
        if rng.random() < 0.33:
            record["anonymous_id"] = f"anon-{rng.randrange(10**9):09d}"
        else:
            record["customer_id"] = f"cust-{rng.randrange(200_000):07d}"
        if kind in SKU_CLICK_TYPES or (kind == "page_view" and rng.random() < 0.3):
            record["sku"] = f"SKU-{rng.randrange(20_000):05d}"
        if kind == "search":
            record["query"] = rng.choice(("red shoes", "usb-c cable", "gift for dad", "tent"))
        out.append(orjson.dumps(record))
    return out


def invalid_orders(valid: bytes) -> list[bytes]:
    """One record per kind of rejection every candidate must make."""
    rec = orjson.loads(valid)

    def variant(**changes: Any) -> bytes:
        return orjson.dumps({**rec, **changes})

    first = rec["items"][0]
    far = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    return [
        variant(items=[{**first, "quantity": 0}, *rec["items"][1:]]),
        variant(items=[{**first, "unit_price": -1.0}, *rec["items"][1:]]),
        variant(total=rec["total"] + 0.02),
        variant(event_time="yesterday"),
        variant(event_time="2024-05-01T12:00:00"),
        variant(event_time=far),
        variant(event_time="1990-01-01T00:00:00Z"),
        variant(schema_version=9),
        variant(status="shipped"),
        variant(currency="eur"),
        variant(items=[]),
        variant(items=[{**first, "quantity": "1"}]),
        orjson.dumps({k: v for k, v in rec.items() if k != "customer_id"}),
        b"{not json",
        b"\xff\xfe",
        b" " * (MAX_EVENT_BYTES + 1),
    ]


def invalid_clicks(valid: bytes) -> list[bytes]:
    rec = orjson.loads(valid)
    rec.pop("customer_id", None)
    rec.pop("anonymous_id", None)
    return [
        orjson.dumps(rec),
        orjson.dumps({**rec, "customer_id": "c", "type": "product_view", "sku": None}),
        orjson.dumps({**rec, "customer_id": "c", "type": "teleport"}),
        orjson.dumps({**rec, "customer_id": "c", "schema_version": 2}),
        orjson.dumps({**rec, "customer_id": "c", "event_time": "2024-05-01T12:00:00"}),
    ]


# --- candidates ---------------------------------------------------------------------------


def baseline_orjson(batch: Sequence[bytes]) -> tuple[int, int]:
    loads = orjson.loads
    valid: list[tuple[int, Any]] = []
    bad = 0
    for i, data in enumerate(batch):
        try:
            valid.append((i, loads(data)))
        except orjson.JSONDecodeError:
            bad += 1
    return len(valid), bad


def ours(model: type[OrderEvent] | type[ClickEvent]) -> Decoder:
    def run(batch: Sequence[bytes]) -> tuple[int, int]:
        valid, rejected = decode_many(model, batch)
        return len(valid), len(rejected)

    return run


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _BareItem(msgspec.Struct, frozen=True, gc=False):
    sku: _Id
    quantity: int
    unit_price: float


class _BareOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    event_id: _Id
    schema_version: int
    customer_id: _Id
    order_id: _Id
    event_time: datetime
    status: Literal["placed", "cancelled", "returned"]
    items: Annotated[list[_BareItem], msgspec.Meta(min_length=1, max_length=MAX_ITEMS_PER_ORDER)]
    total: float
    currency: str = "EUR"


class _BareClick(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    event_id: _Id
    schema_version: int
    session_id: _Id
    event_time: datetime
    type: Literal[
        "page_view", "product_view", "add_to_cart", "remove_from_cart", "search", "checkout_start"
    ]
    customer_id: _Id | None = None
    anonymous_id: _Id | None = None
    sku: _Id | None = None
    query: Annotated[str, msgspec.Meta(max_length=512)] | None = None


def msgspec_types_only(kind: str) -> Decoder:
    """The same structs and declared constraints without ``__post_init__``: what the checks cost."""
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
        _BareOrder if kind == "order" else _BareClick
    )

    def run(batch: Sequence[bytes]) -> tuple[int, int]:
        decode = decoder.decode
        valid: list[tuple[int, Any]] = []
        bad = 0
        for i, data in enumerate(batch):
            if len(data) > MAX_EVENT_BYTES:
                bad += 1
                continue
            try:
                valid.append((i, decode(data)))
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                bad += 1
        return len(valid), bad

    return run


def pydantic_v2(kind: str) -> Decoder | str:
    """Equivalent pydantic models: constraints in the schema, cross-field rules in a validator.

    Strict mode, so a string is not coerced to a number (msgspec does not coerce either). The
    future bound is read once per batch, as ``decode_many`` does.
    """
    try:
        import pydantic
        from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
    except ImportError:
        return "not installed (pip install 'pydantic>=2')"

    skew = timedelta(seconds=MAX_FUTURE_SKEW_S)
    clock = {"limit": datetime.now(UTC) + skew}
    Id = Annotated[str, Field(min_length=1, max_length=128)]
    strict = ConfigDict(strict=True, frozen=True)

    def check_time(value: datetime) -> None:
        if value < MIN_EVENT_TIME or value > clock["limit"]:
            raise ValueError("event_time out of range")

    class Item(BaseModel):
        model_config = strict
        sku: Id
        quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
        unit_price: Annotated[float, Field(ge=0, le=MAX_UNIT_PRICE, allow_inf_nan=False)]

    class Order(BaseModel):
        model_config = strict
        event_id: Id
        schema_version: int
        customer_id: Id
        order_id: Id
        event_time: AwareDatetime
        status: Literal["placed", "cancelled", "returned"]
        items: Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS_PER_ORDER)]
        total: Annotated[float, Field(ge=0, le=MAX_ORDER_TOTAL, allow_inf_nan=False)]
        currency: Annotated[str, Field(pattern="^[A-Z]{3}$")] = "EUR"

        @model_validator(mode="after")
        def _checks(self) -> Order:
            if self.schema_version not in ORDER_SCHEMA_VERSIONS:
                raise ValueError("unknown schema_version")
            check_time(self.event_time)
            items_sum = math.fsum([i.quantity * i.unit_price for i in self.items])
            if abs(items_sum - self.total) > TOTAL_TOLERANCE:
                raise ValueError("total disagrees with the items")
            return self

    class Click(BaseModel):
        model_config = strict
        event_id: Id
        schema_version: int
        session_id: Id
        event_time: AwareDatetime
        type: Literal[
            "page_view", "product_view", "add_to_cart", "remove_from_cart", "search",
            "checkout_start",
        ]  # fmt: skip
        customer_id: Id | None = None
        anonymous_id: Id | None = None
        sku: Id | None = None
        query: Annotated[str, Field(max_length=512)] | None = None

        @model_validator(mode="after")
        def _checks(self) -> Click:
            if self.schema_version not in CLICK_SCHEMA_VERSIONS:
                raise ValueError("unknown schema_version")
            check_time(self.event_time)
            if self.customer_id is None and self.anonymous_id is None:
                raise ValueError("either customer_id or anonymous_id is required")
            if self.sku is None and self.type in SKU_CLICK_TYPES:
                raise ValueError("sku required")
            return self

    model: type[BaseModel] = Order if kind == "order" else Click
    error = pydantic.ValidationError

    def run(batch: Sequence[bytes]) -> tuple[int, int]:
        clock["limit"] = datetime.now(UTC) + skew
        validate = model.model_validate_json
        valid: list[tuple[int, Any]] = []
        bad = 0
        for i, data in enumerate(batch):
            if len(data) > MAX_EVENT_BYTES:
                bad += 1
                continue
            try:
                valid.append((i, validate(data)))
            except error:
                bad += 1
        return len(valid), bad

    return run


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    decoder: Decoder | None
    note: str = ""
    cpu_rates: list[float] | None = None
    wall_rates: list[float] | None = None


def _batches(records: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _one_pass(decoder: Decoder, batches: list[Sequence[bytes]], n: int) -> tuple[float, float]:
    gc.collect()
    cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
    for batch in batches:
        decoder(batch)
    cpu, wall = time.process_time_ns() - cpu0, time.perf_counter_ns() - wall0
    return n / (cpu / 1e9), n / (wall / 1e9)


def _check_equivalent(row: Row, records: Sequence[bytes], invalid: Sequence[bytes]) -> None:
    assert row.decoder is not None
    valid, rejected = row.decoder(records)
    if (valid, rejected) != (len(records), 0):
        raise SystemExit(f"{row.name}: rejected {rejected} of the generated valid records")
    if row.name.startswith(("orjson", "msgspec types")):
        return  # these check less on purpose
    for data in invalid:
        if row.decoder([data]) != (0, 1):
            raise SystemExit(f"{row.name}: accepted an invalid record: {data[:120]!r}")


def measure(
    title: str,
    records: Sequence[bytes],
    invalid: Sequence[bytes],
    rows: list[Row],
    batch: int,
    runs: int,
) -> None:
    batches = _batches(records, batch)
    live = [r for r in rows if r.decoder is not None]
    for row in live:
        _check_equivalent(row, records, invalid)
        row.cpu_rates, row.wall_rates = [], []
        _one_pass(row.decoder, batches, len(records))  # type: ignore[arg-type]  # warm-up
    for run in range(runs):
        for k in range(len(live)):  # rotate the order so no candidate always runs first
            row = live[(run + k) % len(live)]
            cpu_rate, wall_rate = _one_pass(row.decoder, batches, len(records))  # type: ignore[arg-type]
            row.cpu_rates.append(cpu_rate)  # type: ignore[union-attr]
            row.wall_rates.append(wall_rate)  # type: ignore[union-attr]
    base = statistics.median(rows[0].cpu_rates or [math.nan])
    print(f"\n{title}: {len(records):,} records in batches of {batch:,}, {runs} runs")
    print(f"  {'candidate':44s} {'events/s (CPU)':>14s} {'min-max':>17s} {'x baseline':>10s} "
          f"{'events/s (wall)':>15s}")  # fmt: skip
    for row in rows:
        if row.cpu_rates is None:
            print(f"  {row.name:44s} {row.note}")
            continue
        med = statistics.median(row.cpu_rates)
        spread = f"{min(row.cpu_rates) / 1e3:.0f}k-{max(row.cpu_rates) / 1e3:.0f}k"
        wall = statistics.median(row.wall_rates or [math.nan])
        print(f"  {row.name:44s} {med:14,.0f} {spread:>17s} {med / base:10.2f} {wall:15,.0f}")


def conditions(args: argparse.Namespace) -> None:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    versions = []
    for dist in ("msgspec", "orjson", "pydantic", "pydantic-core"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    print("bench_schemas: decode + validate throughput on one core")
    print(f"  python     {platform.python_implementation()} {platform.python_version()} "
          f"({platform.machine()}, {platform.system()})")  # fmt: skip
    print(f"  cpu        {cpu}; {os.cpu_count()} logical CPUs; this process may run on {cores}")
    if len(cores) != 1:
        print("  WARNING    not pinned to one core: run under `taskset -c 0`")
    if hasattr(os, "getloadavg"):
        print(f"  load avg   {os.getloadavg()[0]:.2f} (other load slows the wall-clock column)")
    print(f"  libraries  {', '.join(versions)}")
    print(f"  workload   seed {args.seed}, {args.events:,} orders (1-5 items) and {args.events:,} "
          f"clicks, batches of {args.batch:,}, {args.runs} runs, gc enabled")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="records of each kind")
    parser.add_argument("--batch", type=int, default=5000, help="records per decode_many call")
    parser.add_argument("--runs", type=int, default=5, help="timed passes (median; >= 3)")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when ours is below the 200k/s target"
    )
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3: the figures are medians")
    if args.events < 1 or args.batch < 1:
        parser.error("--events and --batch must be positive")

    conditions(args)
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    orders = make_orders(args.events, rng, now)
    clicks = make_clicks(args.events, rng, now)
    results: dict[str, dict[str, float]] = {}
    for kind, records, invalid, model in (
        ("orders", orders, invalid_orders(orders[0]), OrderEvent),
        ("clicks", clicks, invalid_clicks(clicks[0]), ClickEvent),
    ):
        pyd = pydantic_v2(kind.rstrip("s"))
        rows = [
            Row("orjson.loads alone (baseline)", baseline_orjson),
            Row("msgspec + checks (ours: decode_many)", ours(model)),
            Row("msgspec types only, no checks", msgspec_types_only(kind.rstrip("s"))),
            Row(
                "pydantic v2 model_validate_json + checks",
                None if isinstance(pyd, str) else pyd,
                note=pyd if isinstance(pyd, str) else "",
            ),
        ]
        measure(kind, records, invalid, rows, args.batch, args.runs)
        results[kind] = {
            key: statistics.median(row.cpu_rates)
            for key, row in zip(("baseline", "ours", "bare", "pydantic"), rows, strict=True)
            if row.cpu_rates
        }

    ours_min = min(results[k]["ours"] for k in results)
    met = ours_min >= TARGET_EVENTS_PER_S
    parts = [
        f"msgspec (ours) decodes+validates orders at {results['orders']['ours']:,.0f}/s and "
        f"clicks at {results['clicks']['ours']:,.0f}/s on one core: the "
        f"{TARGET_EVENTS_PER_S // 1000}k/s target is {'met' if met else 'NOT met'}"
    ]
    if all("pydantic" in results[k] for k in results):
        ratios = [results[k]["ours"] / results[k]["pydantic"] for k in ("orders", "clicks")]
        faster = all(r > 1 for r in ratios)
        parts.append(
            f"{ratios[0]:.1f}x / {ratios[1]:.1f}x pydantic v2 with the same checks"
            f" -> {'keep msgspec' if faster else 'reconsider: pydantic is faster here'}"
        )
    else:
        parts.append("pydantic not measured")
    print(f"\nVERDICT: {'; '.join(parts)}")
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
