"""Thin adapters that fetch the report's inputs: state, model artifact, segment changes.

- state: a state export file (CSV, JSON or JSON Lines with the export contract columns) or the
  customer hashes in Redis, read through :class:`worker.state.StateReader` (SCAN + pipelined
  HGETALL);
- model: an artifact JSON file from the model directory (``current`` or a version), or a path;
- changes: the segment-changes topic read from the beginning with kafka-python, without a
  consumer group (nothing is committed, nothing rebalances).

Reading the topic is bounded: the broker's end offsets are only a lower bound (the local broker
can under-report them), so the reader consumes until it has passed them AND nothing new arrived
for ``idle_s``, or until ``timeout_s``; it counts the records it actually read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analytics.report.errors import ReportInputError
from analytics.report.tables import CHANGE_COLUMNS
from segstream.redact import redact
from worker.connect import RedisTarget

__all__ = [
    "ChangesRead",
    "assign_segments",
    "find_model_file",
    "load_model",
    "load_model_redis",
    "read_changes",
    "read_state_file",
    "read_state_redis",
]


# -- state ----------------------------------------------------------------------------------------


def read_state_file(path: str | Path) -> pd.DataFrame:
    """A state export (``.csv``, ``.json`` array/records or ``.jsonl``) as a data frame."""
    source = Path(path)
    if not source.is_file():
        raise ReportInputError(f"state file {source} does not exist")
    suffix = source.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(source, lines=True, dtype={"customer_id": str})
        elif suffix == ".json":
            frame = pd.read_json(source, dtype={"customer_id": str})
        else:
            frame = pd.read_csv(source, dtype={"customer_id": str, "segment": str})
    except (ValueError, OSError) as exc:
        raise ReportInputError(f"cannot read state file {source}: {exc}") from exc
    return frame


def read_state_redis(
    redis: RedisTarget, prefix: str, as_of: datetime, page: int = 2000
) -> pd.DataFrame:
    """Every customer hash under ``prefix`` as export-contract rows plus ``segment``.

    Rows are built by the state package's own :func:`worker.core.rfm.features`, so they equal
    what ``segstream export`` writes for the same ``as_of``.
    """
    from segstream.errors import StateError
    from worker.core.rfm import EXPORT_COLUMNS, features
    from worker.state import StateReader

    rows: list[dict[str, object]] = []
    try:
        with StateReader(redis, prefix) as reader:
            for customer in reader.customers(page):
                row = features(customer, as_of)
                row["segment"] = customer.segment
                row["model_version"] = customer.model_version
                rows.append(row)
    except StateError as exc:
        raise ReportInputError(f"cannot read customer state from Redis: {exc}") from exc
    return pd.DataFrame(rows, columns=[*EXPORT_COLUMNS, "segment", "model_version"])


# -- model ----------------------------------------------------------------------------------------


def find_model_file(model_dir: str | Path, which: str = "current") -> Path | None:
    """The artifact file for ``which`` (``current``, a version, or a path); ``None`` if absent.

    The layout is :class:`worker.segmentation.artifacts.FileModelStore`'s: ``<version>.json``
    files plus a ``current`` pointer file holding the current version.

    ``current`` is resolved, in order, from a ``current`` / ``CURRENT`` pointer file naming a
    version or file, a ``current.json`` file or symlink, else the newest ``*.json`` by name
    (versions embed their UTC creation time, so they sort by age).
    """
    direct = Path(which)
    if which != "current" and direct.suffix == ".json" and direct.is_file():
        return direct
    root = Path(model_dir)
    if not root.is_dir():
        return None
    if which != "current":
        return _version_file(root, which)
    for pointer_name in ("current", "CURRENT", "current.txt"):
        pointer = root / pointer_name
        if pointer.is_file():
            target = pointer.read_text(encoding="utf-8").strip()
            # A pointer holds one short version name or file name; anything else is not one.
            usable = 0 < len(target) < 200 and "\n" not in target and target != "current"
            found = _version_file(root, target) if usable else None
            if found is not None:
                return found
    if (root / "current.json").is_file():
        return root / "current.json"
    candidates = sorted(p for p in root.glob("*.json") if p.is_file())
    return candidates[-1] if candidates else None


def _version_file(root: Path, version: str) -> Path | None:
    for candidate in (root / f"{version}.json", root / version / "model.json", root / version):
        if candidate.is_file():
            return candidate
    return None


def load_model(model_dir: str | Path, which: str = "current") -> tuple[dict[str, Any] | None, str]:
    """(artifact dict or ``None``, where it came from / why there is none).

    ``which="none"`` skips the model. A named version that does not exist is an error; no
    ``current`` model is not (the report then says "no model trained yet").
    """
    if which.lower() == "none":
        return None, "model skipped (--model none)"
    path = find_model_file(model_dir, which)
    if path is None:
        if which == "current":
            return None, f"no model artifact in {model_dir}"
        raise ReportInputError(f"no model artifact {which!r} in {model_dir}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"model artifact {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ReportInputError(f"model artifact {path} is not a JSON object")
    return dict(data), str(path)


def load_model_redis(
    redis: RedisTarget, prefix: str, which: str = "current"
) -> tuple[dict[str, Any] | None, str]:
    """The artifact the worker uses, from the segmentation package's Redis model store.

    (artifact dict or ``None``, where it came from / why there is none.)
    """
    from redis import RedisError

    from worker.connect import redis_settings, sync_redis

    try:
        from worker.segmentation.artifacts_redis import RedisModelStore
    except ImportError:  # no segmentation package: no Redis model store either
        return None, ""
    where = redact(redis_settings(redis).url)
    client = sync_redis(redis)
    store = RedisModelStore(client, prefix)
    try:
        current = client.get(store.current_key) if which == "current" else which.encode()
        if not current:
            return None, f"no current model in Redis (prefix {prefix})"
        version = current.decode() if isinstance(current, bytes) else str(current)
        raw = client.get(store.key(version))
    except RedisError as exc:
        raise ReportInputError(f"cannot read the model from Redis {where}: {exc}") from exc
    finally:
        client.close()
    if raw is None:
        return None, f"no model {version} in Redis (prefix {prefix})"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ReportInputError(f"model {version} in Redis is not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ReportInputError(f"model {version} in Redis is not a JSON object")
    return dict(data), f"{store.key(version)} in Redis {where}"


def assign_segments(state: pd.DataFrame, model: Mapping[str, Any], as_of: datetime) -> pd.Series:
    """Segment names for a state that carries none, by the model's nearest centroid.

    Uses the segmentation package's own feature pipeline and assignment (no hysteresis: there
    is no current segment to keep), so the names are those the worker would give.
    """
    from segstream.errors import ModelError

    try:
        from analytics.frames import categorical_values, real_matrix
        from worker.segmentation.assign import assign
        from worker.segmentation.model import SegmentModel
    except ImportError as exc:
        raise ReportInputError(f"assigning segments needs worker.segmentation: {exc}") from exc

    try:
        segment_model = SegmentModel.from_dict(dict(model), source="the report's model")
        x_real = real_matrix(state, segment_model.feature_names, as_of)
        categories = categorical_values(state, segment_model.categorical_names)
        result = assign(segment_model, x_real, categories=categories)
    except ModelError as exc:
        raise ReportInputError(f"cannot assign segments with the model: {exc}") from exc
    names = np.asarray(segment_model.names, dtype=object)[result.segment_ids]
    return pd.Series(names, index=state.index, name="segment")


# -- segment changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangesRead:
    """Segment changes read from the topic, and how the read went."""

    frame: pd.DataFrame
    records: int
    rejected: int
    complete: bool
    seconds: float

    def describe(self, topic: str) -> str:
        text = f"{self.records:,} records read from {topic} in {self.seconds:.1f} s"
        if self.rejected:
            text += f", {self.rejected:,} not valid segment changes (skipped)"
        if not self.complete:
            text += ", stopped at the time limit before the end of the topic"
        return text


def read_changes(
    bootstrap: str,
    topic: str,
    *,
    idle_s: float = 2.0,
    timeout_s: float = 120.0,
    client_id: str = "segstream-report",
    client: Mapping[str, Any] | None = None,
) -> ChangesRead:
    """Every segment change on ``topic`` from the beginning (see the module docstring).

    ``client``: the consumer's TLS/SASL options (:func:`segstream.security.kafka_options`).
    """
    from analytics.topic_reads import read_whole_topic
    from schemas import SegmentChange

    rows: list[dict[str, Any]] = []
    read = read_whole_topic(
        bootstrap, topic, SegmentChange, lambda changes: rows.extend(map(_change_row, changes)),
        error=ReportInputError, client_id=client_id, idle_s=idle_s, timeout_s=timeout_s,
        client=client,
    )  # fmt: skip
    return ChangesRead(_changes_frame(rows), read.records, read.rejected, read.complete,
                       read.seconds)  # fmt: skip


def _change_row(change: Any) -> dict[str, Any]:
    return {
        "customer_id": change.customer_id,
        "old_segment": change.old_segment,
        "new_segment": change.new_segment,
        "reason": change.reason,
        "event_time": change.event_time,
        "processing_time": change.processing_time,
        "model_version": change.model_version,
    }


def _changes_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*CHANGE_COLUMNS, "model_version"])
    for column in ("event_time", "processing_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
