"""``segstream train`` and ``segstream segments``: train a model, print a model's segments.

Over 400 lines: train's flags, each with its variable and help, beside the printers of its result.

Every flag falls back to an environment variable (shown in ``--help``): the common ones through
:func:`segstream.options.settings_options`, the training ones as ``SEGSTREAM_TRAIN_*``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from segstream.errors import ConfigError
from segstream.options import env_option, settings_options, var_option
from segstream.settings import Settings
from worker.preflight import checks_access
from worker.segmentation.categorical import KNOWN_CATEGORICAL, parse_weights
from worker.segmentation.features import DEFAULT_FEATURES, KNOWN_FEATURES
from worker.segmentation.model import SegmentModel

if TYPE_CHECKING:
    from analytics.gate import GateBounds
    from analytics.training import TrainResult
    from worker.segmentation.artifacts import FileModelStore
    from worker.segmentation.artifacts_redis import RedisModelStore

F = TypeVar("F", bound=Callable[..., Any])


def _opt(*flags: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    """:func:`segstream.options.var_option`, the variable given by keyword."""
    return var_option(env, *flags, **kwargs)


def parse_k_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(p) for p in text.split("-", 1))
    except ValueError:
        raise ConfigError(f"--k-range {text!r}: expected LOW-HIGH, e.g. 2-10") from None
    if not 2 <= lo <= hi:
        raise ConfigError(f"--k-range {text!r}: need 2 <= LOW <= HIGH")
    return lo, hi


def parse_as_of(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--as-of {text!r}: expected ISO 8601, e.g. 2026-11-01T00:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.command("train")
@settings_options
@_opt(
    "--from",
    "source",
    env="SEGSTREAM_TRAIN_FROM",
    type=click.Choice(["redis"]),
    default=None,
    help="Train on the customer state in Redis (--redis-url, --redis-prefix).",
)
@_opt(
    "--file",
    "orders_file",
    env="SEGSTREAM_TRAIN_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="Train on a generic orders CSV: customer_id,order_id,ts,amount[,currency,status].",
)
@_opt(
    "--export",
    "export_file",
    env="SEGSTREAM_TRAIN_EXPORT",
    type=click.Path(dir_okay=False),
    default=None,
    help="Train on an export file (CSV/JSON lines with the contract columns).",
)
@_opt(
    "--k",
    "k_text",
    env="SEGSTREAM_TRAIN_K",
    default="auto",
    show_default=True,
    help="Number of segments, or 'auto' to choose it in --k-range.",
)
@_opt(
    "--k-range",
    env="SEGSTREAM_TRAIN_K_RANGE",
    default="2-10",
    show_default=True,
    help="Range of k tried with --k auto.",
)
@_opt(
    "--seed",
    env="SEGSTREAM_TRAIN_SEED",
    type=int,
    default=0,
    show_default=True,
    help="Seed of K-means and of the samples.",
)
@_opt(
    "--as-of",
    env="SEGSTREAM_TRAIN_AS_OF",
    default=None,
    help="As-of time (ISO 8601 UTC) for recency/tenure. Default: now for --from redis, the "
    "newest order for --file, the file's own recency for --export.",
)
@_opt(
    "--features",
    env="SEGSTREAM_TRAIN_FEATURES",
    default=",".join(DEFAULT_FEATURES),
    show_default=True,
    help=f"Comma-separated model features, numeric: {', '.join(KNOWN_FEATURES)}; "
    f"categorical: {', '.join(KNOWN_CATEGORICAL)} (docs/segmentation.md, 'Categorical "
    "features').",
)
@_opt(
    "--feature-weights",
    env="SEGSTREAM_TRAIN_FEATURE_WEIGHTS",
    default="",
    help="Per-feature weights, e.g. country=2,aov=0.5: the feature counts that many times as "
    "far in distances (default 1: a categorical feature weighs about one standardised "
    "numeric feature).",
)
@_opt(
    "--out",
    "out_dir",
    env="SEGSTREAM_TRAIN_OUT",
    default=None,
    help="Directory for plots and the profile table. Default: <model-dir>/<version>/.",
)
@_opt(
    "--publish/--no-publish",
    env="SEGSTREAM_TRAIN_PUBLISH",
    default=None,
    help="Also store the model in Redis as the current one. Default: yes with --from redis.",
)
@env_option(
    "hysteresis_margin",
    "--hysteresis-margin",
    type=float,
    help="Default hysteresis margin stored in the model.",
)
@_opt(
    "--gate/--no-gate",
    "gate",
    env="SEGSTREAM_TRAIN_GATE",
    default=False,
    show_default=True,
    help="Promote the new model only if it passes the retrain gate against the current one "
    "(silhouette, smallest segment, label stability); else store it unpromoted with the "
    "reason. A drift-triggered retrain passes it.",
)
@env_option(
    "retrain_gate_silhouette_margin",
    "--gate-silhouette-margin",
    type=float,
    help="Gate: silhouette at most this much below the current model's.",
)
@env_option(
    "retrain_gate_min_segment_share",
    "--gate-min-segment-share",
    type=float,
    help="Gate: every segment at least this share of the customers.",
)
@env_option(
    "retrain_gate_min_stability",
    "--gate-min-stability",
    type=float,
    help="Gate: at least this share of customers keeping their segment name.",
)
@checks_access(redis=True)
def train_command(
    settings: Settings,
    source: str | None,
    orders_file: str | None,
    export_file: str | None,
    k_text: str,
    k_range: str,
    seed: int,
    as_of: str | None,
    features: str,
    feature_weights: str,
    out_dir: str | None,
    publish: bool | None,
    hysteresis_margin: float,
    gate: bool,
    retrain_gate_silhouette_margin: float,
    retrain_gate_min_segment_share: float,
    retrain_gate_min_stability: float,
) -> None:
    """Train a K-means segmentation model, choose k, name segments, store the artifact.

    With ``--gate`` the model is promoted (made current) only if it passes the retrain gate
    against the current model (docs/segmentation.md, "Model lifecycle"); otherwise it is stored
    as a candidate, with the reason, and the current model stays.
    """
    from analytics import sources
    from analytics.plots import plot_k_scores
    from analytics.training import train
    from segstream.redact import redact
    from worker.segmentation.artifacts import FileModelStore

    chosen_sources = [s for s in (source, orders_file, export_file) if s]
    if len(chosen_sources) != 1:
        raise ConfigError("give exactly one of --from redis, --file ORDERS.csv, --export FILE")
    when = parse_as_of(as_of)
    weights = parse_weights(feature_weights)
    if source == "redis":
        state = sources.state_from_redis(settings.redis, settings.redis.prefix, when)
        where = f"Redis {redact(settings.redis.url)} prefix {settings.redis.prefix}"
    elif orders_file:
        state = sources.state_from_orders(orders_file, when)
        where = orders_file
    else:
        assert export_file is not None
        state = sources.state_from_export(export_file)
        where = export_file
    k = None if k_text == "auto" else _int_k(k_text)
    names = tuple(f.strip() for f in features.split(",") if f.strip())
    result = train(
        state,
        k=k,
        k_range=parse_k_range(k_range),
        seed=seed,
        features=names,
        as_of=when,
        hysteresis_margin=hysteresis_margin,
        feature_weights=weights,
    )
    model = result.model
    files = FileModelStore(settings.model_dir)
    publishing = bool(publish or (publish is None and source == "redis"))
    redis_store = None
    if publishing:
        from worker.segmentation.artifacts_redis import RedisModelStore

        redis_store = RedisModelStore.from_settings(settings.redis)
    out = Path(out_dir) if out_dir else Path(settings.model_dir) / model.version
    verdict: dict[str, Any] | None = None
    if gate:
        from analytics.gate import GateBounds

        bounds = GateBounds(
            retrain_gate_silhouette_margin,
            retrain_gate_min_segment_share,
            retrain_gate_min_stability,
        )
        verdict = gate_verdict(result, redis_store, files, bounds, seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gate.json").write_text(json.dumps(verdict, indent=1, sort_keys=True) + "\n")
    promote = verdict is None or bool(verdict["passed"])
    path = files.save(model, make_current=promote)
    if redis_store is not None:
        try:
            redis_store.save(
                model, make_current=promote, action="retrain" if gate else "train",
                gate=verdict, note="" if verdict is None else str(verdict["summary"]),
            )  # fmt: skip
        finally:
            redis_store.close()
        state = "current" if promote else "stored, not promoted"
        click.echo(f"published to Redis {settings.redis.prefix}:model:{model.version} ({state})")
    elbow, sil = plot_k_scores(model, out)
    profiles_csv = out / "profiles.csv"
    import pandas as pd

    pd.DataFrame(list(model.profiles)).to_csv(profiles_csv, index=False)
    click.echo(f"trained on {model.training_size} customers from {where}")
    print_scores(model)
    click.echo(model.k_rule)
    print_segments(model)
    t = result.timings
    if verdict is not None:
        click.echo(f"gate {verdict['summary']}")
        if not promote:
            click.echo(f"model {model.version} NOT promoted: {verdict['reason']}")
    click.echo(
        f"model {model.version} -> {path} ({'current' if promote else 'candidate'}); "
        f"plots {elbow}, {sil}; "
        f"profiles {profiles_csv}; took {t['total_s']:.1f}s "
        f"(k-means {t['kmeans_s']:.1f}s, silhouette {t['silhouette_s']:.1f}s)"
    )


def gate_verdict(
    result: TrainResult,
    redis_store: RedisModelStore | None,
    files: FileModelStore,
    bounds: GateBounds,
    seed: int,
) -> dict[str, Any]:
    """The gate's result (as stored) for ``result`` against the model it would replace.

    That is the live model in Redis when the new one is published there, else the model
    directory's current one; without any, only the segment-share check applies.
    """
    from analytics.gate import evaluate, measure
    from worker.segmentation.errors import ArtifactNotFound

    current: SegmentModel | None
    try:
        current = (redis_store or files).load()
    except ArtifactNotFound:
        current = None
    measures = measure(
        result.model, result.labels, result.features, current, seed=seed,
        categories=result.categories,
    )  # fmt: skip
    return evaluate(measures, bounds).to_dict()


def _int_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise ConfigError(f"--k {text!r}: expected 'auto' or an integer >= 1") from None
    if k < 1:
        raise ConfigError(f"--k {text!r}: expected 'auto' or an integer >= 1")
    return k


def print_scores(model: SegmentModel) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="k scores")
    for col in ("k", "inertia", "silhouette", "smallest segment"):
        table.add_column(col, justify="right")
    for s in sorted(model.scores, key=lambda s: s.k):
        mark = " *" if s.k == model.k else ""
        table.add_row(
            f"{s.k}{mark}", f"{s.inertia:,.0f}", f"{s.silhouette:.3f}", f"{s.min_share:.1%}"
        )
    Console().print(table)


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_segments(model: SegmentModel) -> None:
    """The model's segment profiles as a rich table (real units)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"segments of model {model.version} (k={model.k}, "
                  f"{model.training_size:,} customers)")  # fmt: skip
    columns = (
        ("id", "id", "d"), ("name", "name", "s"), ("size", "size", ","), ("share", "share", ".1%"),
        ("revenue", "revenue_share", ".1%"), ("recency d (med)", "recency_days_median", ".0f"),
        ("orders (med)", "frequency_median", ".1f"), ("orders (mean)", "frequency_mean", ".1f"),
        ("monetary (med)", "monetary_median", ",.0f"), ("AOV (med)", "aov_median", ",.0f"),
        ("sessions (mean)", "sessions_mean", ".1f"),
        ("abandoned (mean)", "abandoned_carts_mean", ".1f"),
    )  # fmt: skip
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title == "name" else "right")
    for p in model.profiles:
        table.add_row(*(_num(p.get(key), fmt) for _, key, fmt in columns))
    # Wide enough for the table when piped (rich assumes 80 columns without a terminal).
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    population = model.extra.get("population", {})
    if population:
        console.print(
            "naming reference (buyers): F = median orders {frequency_median:.1f}, "
            "M75 = {monetary_p75:,.0f}, A = median AOV {aov_median:,.0f}".format(**population)
        )
    for p in model.profiles:
        console.print(f"  {p.get('name')}: {p.get('rule', '')}")
        if p.get("composition"):  # who is in it (analytics.composition); older models have none
            console.print(f"    who: {p['composition']}", markup=False, highlight=False)
    for name, tops in zip(model.names, model.extra.get("categorical_profiles", []), strict=False):
        text = ", ".join(f"{f} {t['top']} ({t['share']:.0%})" for f, t in tops.items())
        console.print(f"  {name}: most common {text}")


@click.command("segments")
@settings_options
@_opt(
    "--version",
    "version",
    env="SEGSTREAM_MODEL_VERSION",
    default=None,
    help="Model version to show. Default: the current one.",
)
@_opt(
    "--from-redis/--from-files",
    "from_redis",
    env="SEGSTREAM_SEGMENTS_FROM_REDIS",
    default=False,
    help="Read the model from Redis instead of --model-dir.",
)
def segments_command(settings: Settings, version: str | None, from_redis: bool) -> None:
    """Print the segment profiles of a model (default: the current one)."""
    if from_redis:
        from worker.segmentation.artifacts_redis import RedisModelStore

        store = RedisModelStore.from_settings(settings.redis)
        try:
            model = store.load(version)
        finally:
            store.close()
    else:
        from worker.segmentation.artifacts import FileModelStore

        model = FileModelStore(settings.model_dir).load(version)
    print_segments(model)
    click.echo(model.k_rule)
