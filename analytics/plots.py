"""Elbow (inertia) and silhouette plots of a model's k scores, as PNG files.

Uses ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot global state), so it works
headless and from any thread.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from worker.segmentation.model import SegmentModel


def plot_k_scores(model: SegmentModel, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``elbow.png`` and ``silhouette.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = sorted(model.scores, key=lambda s: s.k)
    ks = [s.k for s in scores]
    paths = []
    for fname, values, label in (
        ("elbow.png", [s.inertia for s in scores], "inertia (sum of squared distances)"),
        ("silhouette.png", [s.silhouette for s in scores], "mean silhouette (sample)"),
    ):
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        ax.plot(ks, values, marker="o")
        if model.k in ks:
            ax.axvline(model.k, color="tab:red", linestyle="--", label=f"chosen k={model.k}")
            ax.legend()
        ax.set_xlabel("k (number of segments)")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split(' (')[0]} by k - model {model.version}")
        ax.set_xticks(ks)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path)
        paths.append(path)
    return paths[0], paths[1]
