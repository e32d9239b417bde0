"""Where one scoring run's time goes: a timeline of a 1M-event burst, split into ingest and tail.

``bench_worker.py --with-scoring`` gives the end-to-end ratio; this one explains it. It starts its
own broker (tansu) and Redis, pre-loads the same seeded events, runs ``segstream worker`` with
scoring on once (``bench_worker.spawn``: K-means model k=6, same settings) and every ``--every``
seconds prints: events applied, customers still ``unscored``, the scoring service's queue,
rounds, scorings and changes (its ``/scoring`` page), and the CPU seconds used so far by the
worker, redis-server and the broker. At the end:

- the two phases: **ingest** (first to last applied event) and **tail** (last applied event until
  nothing is unscored), with each process's share of a core in each: a phase in which no process
  is near a full core is waiting on something, not computing;
- redis-server's ``SLOWLOG`` for commands slower than ``--slowlog-ms``: the state script and the
  scoring read and write scripts, by name, with median and maximum wall time per call.

``--backlog`` measures the tail on its own: the events are first applied with scoring off (every
customer is left ``unscored``), then a scoring worker starts on the same state and scores the
whole backlog flat out; its phase **tail** is from the first scored customer until nothing is
unscored, and the line before the phases gives customers scored per second.

Phase boundaries are as fine as ``--every``. Not a pass/fail benchmark (there is no baseline in
it): the figures to compare are ``bench_worker.py``'s. Example:
``.venv/bin/python benchmarks/trace_scoring.py --every 0.5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from collections import defaultdict
from typing import Any

import bench_worker as bw
import redis


def script_names() -> dict[str, str]:
    """SHA-1 -> name of the Lua scripts the worker runs (EVALSHA carries only the hash)."""
    from worker.redis_io import Script
    from worker.scoring.store import READ_SCRIPT, WRITE_SCRIPT
    from worker.state.store import script_text

    scripts = {
        "state script": Script.of(script_text()),
        "scoring read": READ_SCRIPT,
        "scoring write": WRITE_SCRIPT,
    }
    return {script.sha: name for name, script in scripts.items()}


def scoring_page(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/scoring", timeout=1) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return {}


def counters(page: dict[str, Any]) -> str:
    """The scoring service's queue, rounds, scorings and changes so far ('-' before it answers)."""
    return " ".join(
        f"{label} {page.get(key, '-'):>{width}}"
        for label, key, width in (
            ("queued", "pending", 7), ("rounds", "rounds", 4), ("scored", "scored", 8),
            ("changes", "changes", 8),
        )
    )  # fmt: skip


def slow_scripts(r: redis.Redis, names: dict[str, str]) -> None:
    took: dict[str, list[int]] = defaultdict(list)
    for entry in r.slowlog_get(100_000):
        raw = entry["command"]
        words = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).split()
        if len(words) > 1 and words[0].lower() == "evalsha":
            took[names.get(words[1], words[1][:8])].append(int(entry["duration"]))
    for name, us in sorted(took.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:<14} {len(us):5d} calls, {sum(us) / 1e6:6.2f} s in all, median "
              f"{statistics.median(us) / 1000:6.1f} ms, max {max(us) / 1000:6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--slowlog-ms", type=float, default=5.0)
    parser.add_argument(
        "--backlog", action="store_true", help="apply with scoring off, then score the backlog"
    )
    opts = parser.parse_args()
    # what bench_worker's conditions line reads
    opts.runs, opts.tree, opts.compare_tree, opts.change_runs = 1, bw.REPO, None, 0

    from devstack.ports import free_port
    from devstack.services import local_services

    with tempfile.TemporaryDirectory(prefix="trace-scoring-") as tmp, local_services(tmp) as svc:
        bootstrap, redis_url = svc["kafka"].url, svc["redis"].url
        bw.conditions(opts, redis_url, ["scoring"])
        r = redis.Redis.from_url(redis_url)
        topics = ("bench-orders", "bench-clicks")
        extra = ["bench-dead-letter", "bench-control", "bench-segment-changes"]
        bw.create_topics(bootstrap, [*topics, *extra], 4)
        asyncio.run(bw.produce_all(bootstrap, topics, bw.make_events(
            opts.events, opts.customers, opts.seed)))  # fmt: skip
        ctx = {"bootstrap": bootstrap, "redis_url": redis_url, "topics": topics, "dir": tmp}
        backlog = apply_state_only(r, opts, ctx) if opts.backlog else 0
        r.config_set("slowlog-log-slower-than", int(opts.slowlog_ms * 1000))
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
        port = free_port()
        proc, prefix, log = bw.spawn("scoring", opts, ctx, "trace", port)
        try:
            broker = svc["kafka"].pid

            def cpu_now() -> list[float]:
                return [bw.proc_cpu_s(proc.pid), bw.redis_cpu_s(r), bw.proc_cpu_s(broker)]

            first: float | None = None
            owed_at_start = 0
            page: dict[str, Any] = {}
            marks: dict[str, tuple[float, list[float]]] = {}
            while True:
                applied = int(r.hget(f"{prefix}:counters", "received") or 0)
                owed = r.hlen(f"{prefix}:unscored")
                now = time.perf_counter()
                used = cpu_now()
                scoring = opts.backlog and owed < backlog
                if (scoring or (applied and not opts.backlog)) and first is None:
                    first, owed_at_start = now, owed  # backlog: its first round is done
                    marks["start"] = (now, used)
                if first is not None and applied >= opts.events and "ingested" not in marks:
                    marks["ingested"] = (now, used)
                if first is not None:
                    page = scoring_page(port)
                    since = [u - u0 for u, u0 in zip(used, marks["start"][1], strict=True)]
                    print(f"t={now - first:6.2f}s applied {applied:>9,} unscored {owed:>7,} "
                          f"{counters(page)}  cpu s: worker {since[0]:6.2f} redis {since[1]:6.2f} "
                          f"broker {since[2]:5.2f}", flush=True)  # fmt: skip
                if applied >= opts.events and not owed:
                    marks["done"] = (now, used)
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited with {proc.returncode}")
                time.sleep(opts.every)
        finally:
            bw.stop(proc)
            log.close()
        if opts.backlog:
            (t0, _), (t1, _) = marks["start"], marks["done"]
            print(f"\n{backlog:,} customers owed; the {owed_at_start:,} left after the first "
                  f"round scored in {t1 - t0:.2f} s: "
                  f"{owed_at_start / max(t1 - t0, 1e-9):,.0f} customers/s")  # fmt: skip
        print("\n# phases (share of one core used by each process)")
        phases = (("ingest", ("start", "ingested")), ("tail", ("ingested", "done")))
        for name, (a, b) in phases[1:] if opts.backlog else phases:
            (t0, c0), (t1, c1) = marks[a], marks[b]
            span = max(t1 - t0, 1e-9)
            who = ("worker", "redis", "broker")
            shares = ", ".join(
                f"{w} {(y - x) / span:.2f}" for w, x, y in zip(who, c0, c1, strict=True)
            )
            print(f"  {name:<7} {span:6.2f} s   {shares}")
        print(f"\n# scripts slower than {opts.slowlog_ms:g} ms (wall time, from SLOWLOG)")
        slow_scripts(r, script_names())
        keys = ("rounds", "scored", "changes", "conflicts", "repaired", "round_seconds_sum")
        print(f"\n# /scoring at the end: {json.dumps({k: page.get(k) for k in keys})}")


def apply_state_only(r: redis.Redis, opts: argparse.Namespace, ctx: dict[str, Any]) -> int:
    """Apply every event with scoring off, under the prefix and group the scoring run uses.

    Returns how many customers that left unscored (the backlog the scoring run then scores).
    """
    proc, prefix, log = bw.spawn("worker", opts, ctx, "trace")
    try:
        bw.watch(r, prefix, opts.events, proc)
    finally:
        bw.stop(proc)
        log.close()
    owed = int(r.hlen(f"{prefix}:unscored"))
    print(f"applied {opts.events:,} events with scoring off: {owed:,} customers unscored",
          flush=True)  # fmt: skip
    return owed


if __name__ == "__main__":
    main()
