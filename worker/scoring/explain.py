"""``segstream customer ID --explain``: why a customer is in its segment.

Features in real units as of the time its segment was computed (``seg_as_of``; ``--as-of``
overrides), the distance to every centroid of the current model, the hysteresis margin, the
nearest and the current segment, and a sentence. For a model with categorical features, each
one's value, the level it is encoded as, and its share of the squared distance to the assigned
centroid and to the runner-up (with every numeric feature's share beside them). Before any
K-means model: the rules-v1 R/F/M scores and the grid cell that named the segment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from segstream.settings import Settings
from worker.connect import sync_redis
from worker.scoring import categories
from worker.scoring.vectors import READ_FIELDS, feature_matrix, parse
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.assign import explain
from worker.segmentation.errors import ArtifactNotFound
from worker.segmentation.rules import RulesModel
from worker.state import keys
from worker.state.errors import CustomerNotFound


def explanation(
    settings: Settings, customer_id: str, as_of: datetime | None = None
) -> dict[str, Any]:
    """Everything ``--explain`` prints, as a dict (JSON-safe)."""
    client = sync_redis(settings.redis)
    try:
        key = keys.customer(settings.redis.prefix, customer_id)
        attr_fields = tuple(categories.SOURCES.values())
        reply: Any = client.hmget(key, [*READ_FIELDS, "seg_as_of", *attr_fields])
        attrs = reply[len(READ_FIELDS) + 1 :]
        del reply[len(READ_FIELDS) + 1 :]
        seg_as_of = reply.pop()
        rnd = parse([customer_id], [reply])
        if not len(rnd):
            raise CustomerNotFound(
                f"no state for customer {customer_id!r} under prefix {settings.redis.prefix!r}"
            )
        if as_of is None:
            as_of = (
                datetime.fromtimestamp(int(seg_as_of) / 1000, UTC)
                if seg_as_of is not None
                else datetime.now(UTC)
            )
        as_of_ms = int(as_of.timestamp() * 1000)
        try:
            model: Any = RedisModelStore(client, settings.redis.prefix).load()
        except ArtifactNotFound:
            model = RulesModel()
    finally:
        client.close()
    x = feature_matrix(rnd, as_of_ms, model.feature_names)[0]
    current = rnd.segments[0]
    out: dict[str, Any] = {
        "customer_id": customer_id,
        "as_of": as_of.isoformat(timespec="milliseconds"),
        "stored_segment": current,
        "stored_model_version": rnd.model_versions[0],
        "segment_seq": rnd.seqs[0],
        "model_version": model.version,
        "features": {f: float(v) for f, v in zip(model.feature_names, x, strict=True)},
    }
    if isinstance(model, RulesModel):
        r, f, m = (int(v) for v in model.scores(x)[0])
        seg = model.names[int(model.assign(x.reshape(1, -1)).segment_ids[0])]
        out.update(
            scores={"R": r, "F": f, "M": m, "FM": int((f + m) / 2 + 0.5)},
            assigned=seg,
            margin=None,
            why=(
                f"Segment '{seg}' under rules-v1: no order, so no RFM scores"
                if f == 0
                else f"Segment '{seg}' under rules-v1: R={r} (recency), F={f}, M={m}, "
                f"FM={int((f + m) / 2 + 0.5)} -> the (R, FM) cell of the RFM grid"
            ),
        )
        return out
    cats = None
    if model.categorical:
        names = model.categorical_names
        got = categories.values(names, attr_fields, [customer_id], {customer_id: attrs}, as_of_ms)
        cats = {name: got[name][0] for name in names}
    ex = explain(
        model, x, current=current, margin=settings.scoring.hysteresis_margin, categories=cats
    )
    out.update(
        scaled=ex.scaled,
        distances=ex.distances,
        nearest=ex.nearest,
        assigned=ex.assigned,
        margin=ex.margin,
        why=ex.sentence,
    )
    if model.categorical:
        out.update(
            runner_up=ex.runner_up,
            categories=ex.categories,
            levels=ex.levels,
            contributions=ex.contributions,
        )
    return out


def render(info: dict[str, Any]) -> str:
    lines = [
        f"customer {info['customer_id']}  as of {info['as_of']}  model {info['model_version']}"
    ]
    lines.append(
        f"stored segment: {info['stored_segment']} (model {info['stored_model_version']}, "
        f"seq {info['segment_seq']})"
    )
    lines.append("features (real units):")
    lines += [f"  {k:<16} {v:12.4f}" for k, v in info["features"].items()]
    if "distances" in info:
        lines.append(f"distance to each centroid (standard units; margin {info['margin']:.0%}):")
        for name, d in sorted(info["distances"].items(), key=lambda kv: kv[1]):
            mark = "  <- nearest" if name == info["nearest"] else ""
            mark += "  (current)" if name == info["stored_segment"] else ""
            lines.append(f"  {name:<20} {d:8.3f}{mark}")
        if "contributions" in info:
            lines += _contribution_lines(info)
    else:
        lines.append("scores: " + ", ".join(f"{k}={v}" for k, v in info["scores"].items()))
    lines.append(f"why: {info['why']}")
    return "\n".join(lines)


def _contribution_lines(info: dict[str, Any]) -> list[str]:
    """Categorical features first (value, level, shares), then the numeric ones' shares."""
    second = info["runner_up"] or info["assigned"]
    lines = [
        f"share of the squared distance to '{info['assigned']}' (assigned) and "
        f"'{second}' (runner-up):"
    ]
    parts = info["contributions"]
    for name, level in info["levels"].items():
        value = info["categories"].get(name)
        shown = level if value is None or value == level else f"{value} -> {level}"
        p = parts[name]
        lines.append(
            f"  {name:<20} {shown:<24} {p['assigned_share']:6.1%}  vs {p['runner_up_share']:6.1%}"
        )
    for name in info["features"]:
        p = parts[name]
        lines.append(
            f"  {name:<20} {'':<24} {p['assigned_share']:6.1%}  vs {p['runner_up_share']:6.1%}"
        )
    return lines
