"""Redis memory per customer, and the speed of the one-Lua-call-per-batch write path.

Starts its own redis-server (and tansu, unused) on free ports through
``devstack.services.local_services``, never the machine's Redis. Seeded.

1. Memory: N customers (default 1M), a few events each (1-3 orders, 1 in 10 cancelled, half
   with a click session), applied through ``StateStore.apply``; ``INFO memory`` used_memory
   before/after, bytes per customer with every structure included (customer hash with its
   fingerprints, fingerprint keys, last-order index, unscored hash, fences, counters), and again
   after the segmentation step would have drained the unscored hash. One run: memory is
   deterministic for a seed.
   ``--attributes``: every customer also gets categories and a device through the real apply
   path (each order line a category, 60 % the customer's favourite of 8; the 2-click session is
   a product view and an add-to-cart with a category and the customer's device, and every
   customer, not half, has it unless ``--sessions half``)
   and a full profile, the seven contract fields of ``worker/core/attributes.py`` plus ``pt``,
   written with HSET in one pipeline per batch right after the batch's apply, as the profile
   consumer's script stores a profile written by one event: ``pt`` in its compact form (one
   time and the mask of the seven), or in the full form (seven times) with ``--pt-form full``.
   ``--sessions half`` keeps the event shape of the measurements without ``--attributes`` (half
   the customers with the session).
   ``--recommend``: every customer with at least one placed order also gets the recommendation
   field of its hash, full: ``rb`` (8 recently bought skus), 8 hashes of 3 raw bytes (24
   bytes) in the encoding of ``worker/recommend/rank.py``, written
   with HSET in the same pipeline per batch (with the profile under ``--attributes``).
2. Speed, median of R runs on a flushed Redis each time, same events: the Lua script alone
   (arguments built beforehand), ``StateStore.apply`` end to end (argument building included),
   and the baseline, a redis-py pipeline doing plain HINCRBYs for the same events (orders,
   net cents, items, or the click type's counter: no fence, no dedup, no min/max).

Run: ``.venv/bin/python benchmarks/bench_state_memory.py [--customers 1000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio

from devstack.services import local_services
from schemas import ClickEvent, LineItem, OrderEvent
from worker.core import Batch, Record, to_delta
from worker.core.attributes import PROFILE_FIELDS, PROFILE_TIMES_FIELD, encode_time, encode_times
from worker.core.rfm import CLICK_CODES, Kind
from worker.recommend.rank import BOUGHT_FIELD, BOUGHT_KEPT, bought_after
from worker.state import StateStore, keys
from worker.state.store import build_args, script_text

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TOPIC = "orders"
PARTITIONS = 8
CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery")
DEVICES = ("mobile", "desktop", "app", "tablet")
DEVICE_WEIGHTS = (0.55, 0.3, 0.1, 0.05)
COUNTRIES = ("DE", "FR", "GB", "US", "NL", "ES", "IT", "PL")
REGIONS = ("Bavaria", "Île-de-France", "Scotland", "California", "Utrecht", "Catalonia",
           "Lombardy", "Masovia")  # fmt: skip
GENDERS = ("female", "male", "non-binary")
CHANNELS = ("web", "app", "store", "referral")
TIERS = ("bronze", "silver", "gold", "platinum")


def customer_events(
    i: int, rng: random.Random, days: int, attributes: bool = False, every_session: bool = False
) -> list[OrderEvent | ClickEvent]:
    cid = f"C{i:07d}"
    out: list[OrderEvent | ClickEvent] = []
    favourite = rng.choice(CATEGORIES) if attributes else None
    for k in range(rng.randint(1, 3)):
        price = rng.randrange(500, 20000) / 100
        when = T0 + timedelta(seconds=rng.randrange(days * 86400))
        category = None
        if attributes:
            category = favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
        out.append(OrderEvent(
            event_id=f"{cid}-o{k}", schema_version=1, customer_id=cid, order_id=f"{cid}-{k}",
            event_time=when, status="placed", items=[LineItem(sku="S1", quantity=1,
            unit_price=price, category=category)], total=price))  # fmt: skip
    if rng.random() < 0.1:
        first = out[0]
        assert isinstance(first, OrderEvent)
        out.append(OrderEvent(
            event_id=f"{cid}-c", schema_version=1, customer_id=cid, order_id=first.order_id,
            event_time=first.event_time + timedelta(hours=1), status="cancelled",
            items=first.items, total=first.total))  # fmt: skip
    session = every_session or rng.random() < 0.5
    if session and attributes:
        start = T0 + timedelta(seconds=rng.randrange(days * 86400))
        device = rng.choices(DEVICES, DEVICE_WEIGHTS)[0]
        viewed = favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
        for j, kind in enumerate(("product_view", "add_to_cart")):
            out.append(ClickEvent(
                event_id=f"{cid}-k{j}", schema_version=1, session_id=f"{cid}-s",
                event_time=start + timedelta(seconds=j), type=kind,  # type: ignore[arg-type]
                customer_id=cid, sku="S1", category=viewed, device=device))  # fmt: skip
    elif session:
        start = T0 + timedelta(seconds=rng.randrange(days * 86400))
        for j, kind in enumerate(("page_view", "add_to_cart")):
            out.append(ClickEvent(
                event_id=f"{cid}-k{j}", schema_version=1, session_id=f"{cid}-s",
                event_time=start + timedelta(seconds=j), type=kind,  # type: ignore[arg-type]
                customer_id=cid, sku="S1" if kind == "add_to_cart" else None))  # fmt: skip
    return out


def profile(rng: random.Random, days: int, full_times: bool = False) -> dict[str, str]:
    """A full profile written by one event, as the contract stores it: seven values and their
    decisive time (compact ``pt``; ``full_times``: the 56-character form of the same times)."""
    values = {
        "country": rng.choice(COUNTRIES),
        "region": rng.choice(REGIONS),
        "birth_year": str(rng.randint(1950, 2006)),
        "gender": rng.choice(GENDERS),
        "signup_channel": rng.choice(CHANNELS),
        "loyalty_tier": rng.choice(TIERS),
        "marketing_consent": rng.choice("01"),
    }
    when = int((T0 + timedelta(seconds=rng.randrange(days * 86400))).timestamp() * 1000)
    fields = {PROFILE_FIELDS[name]: value for name, value in values.items()}
    if full_times:
        fields[PROFILE_TIMES_FIELD] = encode_time(when) * len(PROFILE_FIELDS)
    else:
        fields[PROFILE_TIMES_FIELD] = encode_times(dict.fromkeys(PROFILE_FIELDS, when))
    return fields


def recommend_fields(rng: random.Random, cid: str) -> dict[str, bytes]:
    """``rb`` full, as the state script stores it: 8 distinct skus of a 5,000-sku catalogue,
    each hash 3 raw bytes (rank.sku_hash)."""
    skus = [f"SKU-{n:05d}" for n in rng.sample(range(5000), BOUGHT_KEPT)]
    return {BOUGHT_FIELD: bought_after(None, skus)}


def batches(
    n_customers: int,
    batch_size: int,
    seed: int,
    days: int,
    attributes: bool = False,
    every_session: bool = False,
) -> Iterator[Batch]:
    rng = random.Random(seed)
    offsets = [0] * PARTITIONS
    records: list[Record] = []
    for i in range(n_customers):
        p = i % PARTITIONS
        for ev in customer_events(i, rng, days, attributes, every_session):
            records.append(Record(TOPIC, p, offsets[p], ev))
            offsets[p] += 1
        if len(records) >= batch_size:
            yield _batch(records)
            records = []
    if records:
        yield _batch(records)


def _batch(records: list[Record]) -> Batch:
    high: dict[tuple[str, int], int] = {}
    for r in records:
        high[(r.topic, r.partition)] = r.offset
    return Batch(records, high, {})


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


async def apply_all(
    url: str,
    prefix: str,
    bs: list[Batch] | Iterator[Batch],
    profiles: tuple[int, int, bool] | None = None,
    recommend: int | None = None,
) -> tuple[int, float]:
    """Apply every batch; ``profiles`` (seed, days, full times): then HSET each new customer's
    profile; ``recommend`` (a seed): and the full ``rb`` of each customer of the batch
    with a placed order, in the same HSET."""
    store = StateStore(url, prefix)
    client = redis.asyncio.Redis.from_url(url)
    rng = random.Random(profiles[0] if profiles else 0)
    rec_rng = random.Random(recommend or 0)
    n, t0 = 0, time.perf_counter()
    try:
        for b in bs:
            await store.apply(b)
            n += len(b.records)
            if profiles is not None or recommend is not None:
                buyers = {
                    r.event.customer_id
                    for r in b.records
                    if isinstance(r.event, OrderEvent) and r.event.status == "placed"
                }
                pipe = client.pipeline(transaction=False)
                for cid in dict.fromkeys(r.event.customer_id for r in b.records):
                    assert cid is not None
                    fields: dict[Any, Any] = {}
                    if profiles is not None:
                        fields.update(profile(rng, profiles[1], profiles[2]))
                    if recommend is not None and cid in buyers:
                        fields.update(recommend_fields(rec_rng, cid))
                    if fields:
                        pipe.hset(keys.customer(prefix, cid), mapping=fields)
                await pipe.execute()
    finally:
        await store.close()
        await client.aclose()
    return n, time.perf_counter() - t0


def lua_only(r: redis.Redis, prefix: str, bs: list[Batch]) -> float:
    script = r.register_script(script_text())
    prebuilt = [build_args(b, prefix) for b in bs]
    t0 = time.perf_counter()
    for args in prebuilt:
        script(keys=[], args=args)
    return time.perf_counter() - t0


CLICK_FIELD = {v: k for k, v in CLICK_CODES.items()}


def pipeline_baseline(r: redis.Redis, prefix: str, bs: list[Batch]) -> float:
    """Plain HINCRBYs, one pipeline (one round trip) per batch: the floor without exactness."""
    t0 = time.perf_counter()
    for b in bs:
        pipe = r.pipeline(transaction=False)
        for rec in b.records:
            d = to_delta(rec.event)
            key = keys.customer(prefix, d.customer_id or "")
            if d.kind is Kind.CLICK:
                pipe.hincrby(key, CLICK_FIELD[d.click], 1)
            else:
                sign = 1 if d.kind is Kind.PLACED else -1
                pipe.hincrby(key, "f", sign)
                pipe.hincrby(key, "m", sign * d.amount_cents)
                pipe.hincrby(key, "i", sign * d.items)
        pipe.execute()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--speed-customers", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=600, help="event times spread over this many days")
    ap.add_argument(
        "--attributes",
        action="store_true",
        help="every customer also gets categories, a device and a full profile (docstring, 1.)",
    )
    ap.add_argument(
        "--sessions",
        choices=("all", "half"),
        help="customers with the 2-click session (default: all with --attributes, else half)",
    )
    ap.add_argument(
        "--pt-form",
        choices=("compact", "full"),
        default="compact",
        help="--attributes: the profile's times compact (one event wrote it) or in full",
    )
    ap.add_argument(
        "--recommend",
        action="store_true",
        help="every customer with a placed order also gets rb full (docstring, 1.)",
    )
    a = ap.parse_args()
    every_session = (a.sessions or ("all" if a.attributes else "half")) == "all"
    load = os.getloadavg()
    print(f"# {platform.node()} {os.cpu_count()} cpus, load {load[0]:.2f} {load[1]:.2f}, "
          f"python {platform.python_version()}, seed {a.seed}, batch {a.batch}, "
          f"events over {a.days} days, {'every' if every_session else 'half the'} customer"
          f"{'' if every_session else 's'} with a click session"
          + (f", with categories, devices and profiles (pt {a.pt_form})"
             if a.attributes else "")
          + (", with rb full (24 B)" if a.recommend else ""))  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir, local_services(run_dir) as svc:
        url = svc["redis"].url
        r = redis.Redis.from_url(url)
        print(f"# redis {r.info('server')['redis_version']} at {url} (fresh, no persistence)")
        prefix = "ss"
        # -- memory --------------------------------------------------------------------------
        r.flushall()
        before = used_memory(r)
        n_events, secs = asyncio.run(
            apply_all(
                url,
                prefix,
                batches(a.customers, a.batch, a.seed, a.days, a.attributes, every_session),
                (a.seed, a.days, a.pt_form == "full") if a.attributes else None,
                a.seed + 2 if a.recommend else None,
            )
        )
        after = used_memory(r)
        buckets = list(r.scan_iter(match=keys.last_order_pattern(prefix), count=10_000))
        n_cust = sum(r.zcard(b) for b in buckets)
        assert n_cust == a.customers, n_cust
        n_fp_keys = sum(1 for _ in r.scan_iter(match=f"{prefix}:f:*", count=10_000))
        total = after - before
        sample = [keys.customer(prefix, f"C{i:07d}") for i in range(0, a.customers, 997)]
        hash_mean = statistics.mean(r.memory_usage(k) or 0 for k in sample)
        zset = sum(r.memory_usage(b) or 0 for b in buckets)
        listpacks = sum(1 for b in buckets[:2000] if r.object("encoding", b) == b"listpack")
        dirty = r.memory_usage(keys.unscored(prefix)) or 0
        print(f"memory: {a.customers} customers, {n_events} events "
              f"({n_events / a.customers:.2f}/customer), loaded in {secs:.1f}s "
              f"({n_events / secs:,.0f} events/s through StateStore.apply)")  # fmt: skip
        print(f"  used_memory before {before:,} after {after:,} -> "
              f"{total / a.customers:.1f} bytes/customer, all structures")  # fmt: skip
        print(f"  breakdown (MEMORY USAGE): customer hash ~{hash_mean:.0f} B "
              f"(encoding {r.object('encoding', sample[0])!r}), last-order index "
              f"{zset / a.customers:.1f} B/customer in {len(buckets)} hour buckets "
              f"({listpacks}/{min(len(buckets), 2000)} listpack), unscored hash "
              f"{dirty / a.customers:.1f} B/customer, {n_fp_keys} fingerprint keys")  # fmt: skip
        r.delete(keys.unscored(prefix), keys.stamp(prefix))
        drained = used_memory(r) - before
        print(f"  after the unscored hash is drained: {drained / a.customers:.1f} bytes/customer "
              f"(target <= {500 if a.attributes else 400} with everything)")  # fmt: skip
        if a.attributes or a.recommend:
            fields: tuple[str, ...] = ()
            if a.attributes:
                fields += ("ks", "kv", "kd", "pt", *PROFILE_FIELDS.values())
            if a.recommend:
                fields += (BOUGHT_FIELD,)
            lengths = [r.hmget(k, *fields) for k in sample]
            means = {f: statistics.mean(len(v[j] or b"") for v in lengths)
                     for j, f in enumerate(fields)}  # fmt: skip
            print("  mean value bytes in the hash: "
                  + ", ".join(f"{f} {m:.1f}" for f, m in means.items()))  # fmt: skip
        # -- speed ---------------------------------------------------------------------------
        bs = list(batches(a.speed_customers, a.batch, a.seed + 1, a.days))
        n = sum(len(b.records) for b in bs)
        lua, full, base = [], [], []
        for _ in range(a.runs):
            r.flushall()
            lua.append(n / lua_only(r, "sp", bs))
            r.flushall()
            full.append(n / asyncio.run(apply_all(url, "sp", bs))[1])
            r.flushall()
            base.append(n / pipeline_baseline(r, "sp", bs))
        med = statistics.median
        print(f"speed: {n} events, {len(bs)} batches, {a.speed_customers} customers, "
              f"median of {a.runs} (runs: lua {[round(x) for x in lua]}, apply "
              f"{[round(x) for x in full]}, pipeline {[round(x) for x in base]})")  # fmt: skip
        print(f"  Lua script alone           {med(lua):>10,.0f} events/s "
              f"({med(lua) / med(base):.2f}x baseline)")  # fmt: skip
        print(f"  StateStore.apply (+ args)  {med(full):>10,.0f} events/s "
              f"({med(full) / med(base):.2f}x baseline)")  # fmt: skip
        print(f"  baseline: pipeline HINCRBY {med(base):>10,.0f} events/s")
        r.close()


if __name__ == "__main__":
    main()
