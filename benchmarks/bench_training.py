"""Benchmark: ``segstream train`` core on 1M synthetic customers, k-range 2-10 (target <= 60 s).

Seeded feature-level customers (analytics.synthetic, 7 personas), default features.
Prints the conditions, the median of ``--runs`` training runs with its phases, and a baseline
measured in the same run: sklearn's ``silhouette_score`` called once per k on the same 20k
sample, against the one-pass :func:`silhouette_by_k` used by training.

    .venv/bin/python benchmarks/bench_training.py [--customers 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import sklearn
from sklearn.metrics import adjusted_rand_score, silhouette_score

from analytics.frames import real_matrix
from analytics.synthetic import synthetic_state
from analytics.training import silhouette_by_k, train
from worker.segmentation.features import DEFAULT_FEATURES, Scaler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--k-range", default="2-10")
    args = ap.parse_args()
    lo, hi = (int(p) for p in args.k_range.split("-"))
    print(
        f"conditions: {args.customers:,} customers, k {lo}-{hi}, seed {args.seed}, "
        f"features {DEFAULT_FEATURES}, fit sample 200k, silhouette sample 20k, n_init 3; "
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}, python "
        f"{platform.python_version()}, numpy {np.__version__}, sklearn {sklearn.__version__}"
    )
    t = time.perf_counter()
    state = synthetic_state(args.customers, seed=args.seed)
    print(f"data generated in {time.perf_counter() - t:.1f}s (not timed below)")

    totals, phases = [], []
    for run in range(args.runs):
        result = train(state, k_range=(lo, hi), seed=args.seed)
        totals.append(result.timings["total_s"])
        phases.append(result.timings)
        ari = adjusted_rand_score(state["persona"], result.labels)
        print(
            f"run {run + 1}: {result.timings['total_s']:.1f}s "
            + " ".join(f"{k}={v:.1f}" for k, v in result.timings.items() if k != "total_s")
            + f"  k={result.model.k} ARI={ari:.3f} load={os.getloadavg()[0]:.2f}"
        )
    median = statistics.median(totals)
    print(f"training median of {args.runs}: {median:.1f}s (target <= 60s: "
          f"{'PASS' if median <= 60 else 'FAIL'})")  # fmt: skip

    # Baseline in the same run: one sklearn silhouette_score call per k on the same sample.
    model = result.model
    x = real_matrix(state, model.feature_names)
    z = Scaler(model.scaler.mean, model.scaler.std).transform(x)
    idx = np.sort(np.random.default_rng(args.seed).choice(len(z), 20_000, replace=False))
    labels = {}
    for s in model.scores:
        from analytics.training import nearest

        km_labels, _ = nearest(z[idx], z[idx][: s.k])  # any labelling of k clusters will do
        labels[s.k] = km_labels
    t = time.perf_counter()
    ours = silhouette_by_k(z[idx], labels)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = {k: silhouette_score(z[idx], lab) for k, lab in labels.items()}
    t_theirs = time.perf_counter() - t
    diff = max(abs(ours[k] - theirs[k]) for k in labels)
    print(
        f"silhouette, {len(labels)} k on 20k rows: one pass {t_ours:.1f}s vs sklearn per k "
        f"{t_theirs:.1f}s (x{t_theirs / t_ours:.1f}); max |difference| {diff:.1e}"
    )


if __name__ == "__main__":
    main()
