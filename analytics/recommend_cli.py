"""``segstream recommend ID`` and ``segstream recommend evaluate`` (docs/recommendations.md).

``recommend ID`` reads one customer's list in one round trip (worker/recommend/read.py); it
loads no analyst library. ``recommend evaluate`` scores segstream's recommender and two
baselines offline on a jsonl file (analytics/recommend_eval.py), imported only when asked for.
A first argument that is not a subcommand is a customer id (``recommend show ID`` spells it
out, for an id that is a subcommand's name).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson

from segstream.errors import ConfigError
from segstream.options import env_option, settings_options, var_option
from segstream.settings import Settings
from worker.connect import keyspace, sync_redis
from worker.preflight import checks_access
from worker.recommend.rank import BOOST
from worker.recommend.read import recommend as read_recommendations


class _DefaultShow(click.Group):
    """``segstream recommend C42`` means ``segstream recommend show C42``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("recommend", cls=_DefaultShow)
def recommend() -> None:
    """A customer's recommendations (ID), or their offline evaluation (evaluate)."""


_TOP = var_option("SEGSTREAM_RECOMMEND_TOP", "--top", type=click.IntRange(1, 1000), default=10,
                  help="How many skus to list.")  # fmt: skip


@recommend.command("show")
@click.argument("customer_id")
@_TOP
@click.option("--json", "as_json", is_flag=True, envvar="SEGSTREAM_JSON", show_envvar=True,
              help="Print one JSON object instead of a table.")  # fmt: skip
@settings_options
@checks_access(redis=True)
def show(customer_id: str, top: int, as_json: bool, settings: Settings) -> None:
    """Print a customer's top N skus: rank, sku, category, score, reason."""
    space = keyspace(settings.redis, settings.redis.prefix)
    with sync_redis(settings.redis) as client:
        got = read_recommendations(client, space, customer_id, top)
    if as_json:
        doc = {"customer_id": customer_id, "segment": got.segment, "favourite": got.favourite,
               "items": got.rows()}  # fmt: skip
        click.echo(orjson.dumps(doc).decode())
        return
    click.echo(f"customer {customer_id}: segment {got.segment or '-'}, "
               f"favourite category {got.favourite or '-'}")  # fmt: skip
    if not got.picks:
        click.echo("no recommendations yet (no orders counted in this prefix)")
        return
    rows = [(str(r["rank"]), r["sku"], r["category"] or "-", f"{r['score']:.3f}", r["reason"])
            for r in got.rows()]  # fmt: skip
    head = ("rank", "sku", "category", "score", "reason")
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--split-at {text!r} is not an ISO 8601 time") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@recommend.command("evaluate")
@var_option("SEGSTREAM_RECOMMEND_FILE", "--file", "paths", required=True, multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            help="Events in the jsonl replay format (orders with line items, clicks); repeat "
                 "for several files (orders.jsonl, clicks.jsonl).")  # fmt: skip
@var_option("SEGSTREAM_RECOMMEND_SPLIT_AT", "--split-at", "split_at", required=True,
            help="Learn from the events before this time, score the purchases after it "
                 "(ISO 8601, UTC if no offset).")  # fmt: skip
@_TOP
@var_option("SEGSTREAM_RECOMMEND_MODEL", "--model", type=click.Choice(["train", "rules"]),
            default="train", help="Segments at the split: a K-means model trained there, or "
            "the RFM rules.")  # fmt: skip
@env_option("recommend_half_life_days", "--half-life-days", type=float,
            help="Half-life of a purchase's weight (as the worker counts).")  # fmt: skip
@env_option("recommend_top_max", "--top-max", type=int,
            help="Length of the merged lists (as the worker keeps them).")  # fmt: skip
@var_option("SEGSTREAM_RECOMMEND_SEED", "--seed", type=int, default=0,
            help="Seed of the K-means training.")  # fmt: skip
def evaluate_command(
    paths: tuple[str, ...],
    split_at: str,
    top: int,
    model: str,
    recommend_half_life_days: float,
    recommend_top_max: int,
    seed: int,
) -> None:
    """Hit rate@N and NDCG@N of segstream's recommender and two baselines on EVENTS."""
    from analytics.recommend_eval import evaluate, read_events, render

    events, skipped = [], 0
    for path in paths:
        got, bad = read_events(path)
        events += got
        skipped += bad
    named = ", ".join(paths)
    if not events:
        raise ConfigError(f"{named}: no orders or clicks in it")
    kwargs: dict[str, Any] = {"top": top, "model": model, "seed": seed, "boost": BOOST}
    result = evaluate(events, _time(split_at), half_life_days=recommend_half_life_days,
                      top_max=recommend_top_max, **kwargs)  # fmt: skip
    if result.customers == 0:
        raise ConfigError(f"no purchase at or after {split_at} in {named}: nothing to score")
    if skipped:
        click.echo(f"({skipped} lines that are not orders or clicks skipped)")
    click.echo(render(result))
