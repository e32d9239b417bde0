"""``segstream models list | show V | promote V | rollback``: the model registry and its lifecycle.

The registry is what ``segstream train`` stores (docs/segmentation.md, "Model lifecycle"): the
versions in Redis (``{prefix}:model:<v>``, where workers load them) and in ``--model-dir``,
which one is live (``{prefix}:model:current``, what every worker polls), the promotion history
(``{prefix}:models:history``) and the gate results of gated trainings
(``{prefix}:models:gate``). ``promote`` and ``rollback`` move the live pointer (and the model
directory's ``current`` when it holds that version); running workers follow it within
``model_poll_s``, to an older version as readily as to a newer one, and ``--rescore`` also asks
them to re-score every customer (``segstream rescore``). A rollback undoes the last promotion;
rolling back again goes one promotion further back, and past the first one there is nothing to
roll back to (an error, nothing changed).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from segstream.errors import ModelError
from segstream.options import settings_options
from segstream.settings import Settings
from worker.preflight import checks_access
from worker.segmentation.errors import ArtifactInvalid
from worker.segmentation.lifecycle import Promotion
from worker.segmentation.model import SegmentModel


@dataclass(frozen=True)
class ModelRow:
    """One version as ``models list`` shows it."""

    version: str
    created_at: str
    k: int | None
    silhouette: float | None
    size: int | None
    #: ``redis``, ``files`` or ``redis+files``.
    where: str
    live: bool
    file_current: bool
    status: str


def silhouette_of(model: SegmentModel) -> float | None:
    """The silhouette stored for the model's own k (training sample), if any."""
    return next((s.silhouette for s in model.scores if s.k == model.k), None)


def status_of(live: bool, was_live: bool, gate: Mapping[str, Any] | None) -> str:
    """What a version is: live, formerly live, a candidate that failed its gate, or stored."""
    if live:
        return "live" + (" (gate passed)" if gate and gate.get("passed") else "")
    if gate is not None and not gate.get("passed"):
        return f"not promoted: gate failed: {gate.get('reason', '?')}"
    if was_live:
        return "was live"
    if gate is not None:
        return "candidate (gate passed, not live)"
    return "stored, never live"


def model_row(
    version: str,
    model: SegmentModel | None,
    *,
    where: str,
    live: bool,
    file_current: bool,
    was_live: bool,
    gate: Mapping[str, Any] | None,
    problem: str = "",
) -> ModelRow:
    """The row of one version (``model`` None when it could not be read: ``problem`` says why)."""
    status = status_of(live, was_live, gate)
    if model is None:
        return ModelRow(version, "?", None, None, None, where, live, file_current,
                        f"unreadable: {problem}; {status}")  # fmt: skip
    return ModelRow(
        version, model.created_at, model.k, silhouette_of(model), model.training_size, where,
        live, file_current, status,
    )  # fmt: skip


def registry_rows(
    redis_models: Mapping[str, SegmentModel | str],
    file_models: Mapping[str, SegmentModel | str],
    *,
    live: str | None,
    file_current: str | None,
    history: Sequence[Promotion],
    gates: Mapping[str, Mapping[str, Any]],
) -> list[ModelRow]:
    """Every version of either store, oldest first (a str value = why it could not be read)."""
    was_live = {p.version for p in history}
    rows = []
    for version in sorted({*redis_models, *file_models}):
        places = [n for n, m in (("redis", redis_models), ("files", file_models)) if version in m]
        got = redis_models.get(version, file_models.get(version))
        if isinstance(got, str) and version in file_models:  # Redis copy unreadable: try files
            got = file_models[version]
        rows.append(model_row(
            version, got if isinstance(got, SegmentModel) else None, where="+".join(places),
            live=version == live, file_current=version == file_current,
            was_live=version in was_live, gate=gates.get(version),
            problem=got if isinstance(got, str) else "",
        ))  # fmt: skip
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_rows(rows: Sequence[ModelRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="models (* = live: workers score with it; f = --model-dir current)")
    for col in ("", "version", "trained at", "k", "silhouette", "size", "stored in", "status"):
        table.add_column(col, justify="right" if col in ("k", "silhouette", "size") else "left")
    for r in rows:
        mark = ("*" if r.live else "") + ("f" if r.file_current else "")
        table.add_row(mark, r.version, r.created_at[:19], _fmt(r.k, "d"),
                      _fmt(r.silhouette, ".3f"), _fmt(r.size, ","), r.where, r.status)  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# -- the stores ---------------------------------------------------------------------------------
class _Stores:
    """The Redis store (from ``sync_redis``) and the model directory, closed together."""

    def __init__(self, settings: Settings) -> None:
        from worker.segmentation.artifacts import FileModelStore
        from worker.segmentation.artifacts_redis import RedisModelStore

        self.settings = settings
        self.redis = RedisModelStore.from_settings(settings.redis)
        self.files = FileModelStore(settings.model_dir)

    def __enter__(self) -> _Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.close()

    def load(self, version: str) -> SegmentModel:
        """``version`` from Redis, else from the model directory."""
        from worker.segmentation.errors import ArtifactNotFound

        if self.redis.exists(version):
            return self.redis.load(version)
        if version in self.files.versions():
            return self.files.load(version)
        raise ArtifactNotFound(
            f"no model {version} in Redis {self.redis.prefix}:model:* nor in "
            f"{self.settings.model_dir} (`segstream models list` shows them)"
        )

    def _read_all(self, versions: Sequence[str], load: Any) -> dict[str, SegmentModel | str]:
        out: dict[str, SegmentModel | str] = {}
        for v in versions:
            try:
                out[v] = load(v)
            except ModelError as exc:
                out[v] = str(exc)
        return out

    def rows(self) -> list[ModelRow]:
        gates = self.redis.gate_results()
        for v in self.files.versions():  # gated trainings that were not published to Redis
            if v not in gates:
                gates.update(_file_gate(self.settings.model_dir, v))
        return registry_rows(
            self._read_all(self.redis.versions(), self.redis.load),
            self._read_all(self.files.versions(), self.files.load),
            live=self.redis.current_version(), file_current=self.files.current_version(),
            history=self.redis.history(), gates=gates,
        )  # fmt: skip

    def make_live(self, version: str, action: str) -> Promotion | None:
        """Point Redis (and the model directory, if it holds the version) at ``version``.

        A version only in the model directory is first copied to Redis, where workers load it.
        ``None`` when it is live already (no history record then).
        """
        model = self.load(version)  # also proves the artifact parses, as a worker will
        if not self.redis.exists(version):
            self.redis.save(model, make_current=False)
        if version in self.files.versions():
            with contextlib.suppress(ArtifactInvalid):  # a differing file: leave its pointer
                self.files.save(self.files.load(version), make_current=True)
        if self.redis.current_version() == version:
            return None
        return self.redis.promote(version, action=action)


def _file_gate(model_dir: str, version: str) -> dict[str, dict[str, Any]]:
    import json
    from pathlib import Path

    path = Path(model_dir) / version / "gate.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {version: data} if isinstance(data, dict) else {}


def _rescore(settings: Settings) -> None:
    from worker.scoring.cli import request_rescore

    token, version = request_rescore(settings)
    click.echo(f"rescore {token} requested: a worker re-scores every customer against {version}")


def _pickup(settings: Settings) -> str:
    return f"running workers pick it up within {settings.scoring.model_poll_s:g}s"


# -- the commands -------------------------------------------------------------------------------
@click.group("models")
def models() -> None:
    """The model registry: list, show, promote, roll back (docs/segmentation.md)."""


@models.command("list")
@settings_options
@checks_access(redis=True)
def list_command(settings: Settings) -> None:
    """Every stored model: trained at, k, silhouette, size, which is live, gate results."""
    with _Stores(settings) as stores:
        rows = stores.rows()
        stack = stores.redis.live_stack()
    if not rows:
        click.echo(f"no model in Redis ({settings.redis.prefix}) nor in {settings.model_dir}")
        return
    print_rows(rows)
    if len(stack) >= 2:
        click.echo(f"rollback would go to {stack[-2]} (live before {stack[-1]})")
    else:
        click.echo("rollback: nothing to roll back to")


@models.command("show")
@settings_options
@click.argument("version", required=False)
@checks_access(redis=True)
def show_command(settings: Settings, version: str | None) -> None:
    """One model (default: the live one): its segments, names and centroids in real units."""
    from analytics.cli import print_segments

    with _Stores(settings) as stores:
        version = version or stores.redis.current_version()
        if version is None:
            raise ModelError("no live model in Redis; give a version (`segstream models list`)")
        model = stores.load(version)
        gate = stores.redis.gate_results().get(version) or _file_gate(
            settings.model_dir, version
        ).get(version)
        history = [p for p in stores.redis.history() if p.version == version]
        live = stores.redis.current_version() == version
    sil = silhouette_of(model)
    click.echo(
        f"model {model.version}{' (live)' if live else ''}: k={model.k}, trained at "
        f"{model.created_at} on {model.training_size:,} customers as of {model.as_of}; "
        f"silhouette {_fmt(sil, '.3f')}; features {', '.join(model.feature_names)}"
    )
    click.echo(model.k_rule)
    if gate is not None:
        click.echo(f"gate {gate.get('summary', gate.get('reason', ''))}")
    for p in history:
        click.echo(f"{p.at} {p.action}: live (was {p.previous or 'none'})")
    print_segments(model)
    print_centroids(model)


def print_centroids(model: SegmentModel) -> None:
    """The centroids mapped back to real units (``expm1(z * std + mean)``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"centroids of {model.version} (real units)")
    table.add_column("segment")
    for name in model.feature_names:
        table.add_column(name, justify="right")
    for name, row in zip(model.names, model.centroids_real(), strict=True):
        table.add_row(name, *(f"{v:,.2f}" for v in row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@models.command("promote")
@settings_options
@click.argument("version")
@click.option("--rescore", is_flag=True, help="Also re-score every customer against it.")
@checks_access(kafka=True, redis=True)
def promote_command(settings: Settings, version: str, rescore: bool) -> None:
    """Make VERSION the live model (from Redis, or --model-dir: then copied to Redis)."""
    with _Stores(settings) as stores:
        record = stores.make_live(version, "promote")
        gate = stores.redis.gate_results().get(version)
    if record is None:
        click.echo(f"{version} is already live")
    else:
        click.echo(f"promoted {version} (was {record.previous or 'none'}); {_pickup(settings)}")
    if gate is not None and not gate.get("passed"):
        click.echo(f"note: {version} had failed its gate ({gate.get('reason')}); promoted by hand")
    if rescore:
        _rescore(settings)


@models.command("rollback")
@settings_options
@click.option("--rescore", is_flag=True, help="Also re-score every customer against it.")
@checks_access(kafka=True, redis=True)
def rollback_command(settings: Settings, rescore: bool) -> None:
    """Undo the last promotion: make the previously live model live again."""
    with _Stores(settings) as stores:
        current = stores.redis.current_version()
        target = stores.redis.rollback_target()
        if target is None:
            raise ModelError(
                f"nothing to roll back to: {current or 'no model'} is the first live model in "
                f"the history of {settings.redis.prefix}"
            )
        stores.make_live(target, "rollback")
    click.echo(f"rolled back {current} -> {target}; {_pickup(settings)}")
    if rescore:
        _rescore(settings)
