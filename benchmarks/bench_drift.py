"""Drift, emerging groups and what assigns, on the demo's live phase without services.

The producers' personas over 180 days (``--customers``, seed ``--seed``) -> ``worker.core`` state
-> ``analytics.training.train`` (k by the rule), then ``--ticks`` ticks of live sessions (the
demo's pace: 40 sessions a tick per 10k customers, a tick = 0.25 s of event time), scored as
the worker scores them and taught to the online model (tests/support/live_stream.py). Scenarios:
``steady`` (the generator's own traffic), ``mix`` (bargain hunters six times as active from
``--switch``), ``new_persona`` (wholesale buyers, 5 % as many as the customers, from
``--switch``).

Per scenario it prints, every ``--every`` ticks: the old read-out (each online centre's
displacement from the batch centroids, std units, max and mean: what the demo showed), the new
drift (segment spreads, max), the mix (total variation) and emerging groups; then, at the end,
what assigns best: the adjusted Rand index against the personas of every customer's segment by
the batch model (as the worker keeps it, hysteresis 0.1) and by the nearest online centre, and
how many customers the two disagree on. Baseline in the same run: the steady scenario.

    .venv/bin/python benchmarks/bench_drift.py                  # 10k customers, 480 ticks
    .venv/bin/python benchmarks/bench_drift.py --customers 3000 --scenarios steady
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import river
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support below

from analytics.frames import real_matrix
from tests.support import live_stream
from worker.segmentation.assign import distances
from worker.segmentation.online import MIX_BOUND

SCENARIOS = {
    "steady": live_stream.STEADY,
    "mix": live_stream.MIX,
    "new_persona": live_stream.NEW_PERSONA,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ticks", type=int, default=480, help="0.25 s each: 480 = the demo's 2 min")
    ap.add_argument("--switch", type=int, default=240, help="tick from which a shift applies")
    ap.add_argument("--every", type=int, default=40)
    ap.add_argument("--bound", type=float, default=1.5, help="drift bound (segment spreads)")
    ap.add_argument("--scenarios", default="steady,mix,new_persona")
    args = ap.parse_args()
    sessions = max(1, round(40 * args.customers / 10_000))
    print(
        f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, python "
        f"{platform.python_version()}, numpy {np.__version__}, river {river.__version__}"
    )
    print(
        f"customers {args.customers}, seed {args.seed}, ticks {args.ticks} x {sessions} "
        f"sessions, shift from tick {args.switch}, bound {args.bound}, mix bound {MIX_BOUND}"
    )
    t0 = time.perf_counter()
    hist = live_stream.history(args.customers, args.seed)
    model = hist.model
    print(f"history + training {time.perf_counter() - t0:.0f} s: k={model.k} {model.names}")
    print(f"far distance (p99, latest event) {model.extra['online']['far_distance']:.2f}")
    for name in args.scenarios.split(","):
        scenario = replace(SCENARIOS[name], start=args.switch)
        t1 = time.perf_counter()
        run = live_stream.run(hist, scenario, ticks=args.ticks, sessions=sessions, every=args.every)
        online = run.online
        print(f"\n== {name}: {run.scored} scorings, {time.perf_counter() - t1:.0f} s")
        print(" tick  old max/mean (std units) | drift max (spreads) | mix   | emerging | flag")
        first = None
        for (tick, report), (old_max, old_mean) in zip(run.reports, run.old, strict=True):
            old = f"{old_max:5.2f} / {old_mean:4.2f}     "
            flag = report.max > args.bound or report.mix > MIX_BOUND or bool(report.emerging)
            if flag and first is None:
                first = tick
            big = report.emerging[0] if report.emerging else None
            group = f"{big.customers} cust {big.share:.1%}" if big else "-"
            print(f" {tick:4d}  {old}  |  {report.max:5.2f}              | {report.mix:.3f} | "
                  f"{group:>8} | {'RETRAIN' if flag else ''}")  # fmt: skip
        print(f" first proposal at tick {first}" if first else " no proposal")
        rows = live_stream.final_rows(run)
        truth = rows["persona"].to_numpy()
        batch = np.array([run.segments.get(c, -1) for c in rows["customer_id"]])
        z = model.transform(real_matrix(rows, model.feature_names))
        nearest_online = distances(z, online.centers_).argmin(axis=1)
        print(f" ARI vs personas: batch (worker's segments) {adjusted_rand_score(truth, batch):.3f}"
              f", online centres {adjusted_rand_score(truth, nearest_online):.3f}; "
              f"they disagree on {np.mean(batch != nearest_online):.1%} of customers")  # fmt: skip


if __name__ == "__main__":
    main()
