"""The model lifecycle's pure parts: the promotion history as an undo stack (what a rollback
goes to), the registry rows ``segstream models list`` prints, and a worker's model holder
following the live pointer back to an older version."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
from click.testing import CliRunner

from analytics.models_cli import ModelRow, registry_rows, silhouette_of, status_of
from segstream.cli import main
from worker.scoring.models import ModelHolder
from worker.segmentation.features import Scaler
from worker.segmentation.lifecycle import Promotion, live_stack, rollback_target
from worker.segmentation.model import KScore, SegmentModel

AT = datetime(2026, 11, 27, tzinfo=UTC).isoformat()


def moves(*steps: tuple[str, str]) -> list[Promotion]:
    """(action, version) steps -> records with ``previous`` filled as the store fills it."""
    out: list[Promotion] = []
    live: str | None = None
    for action, version in steps:
        target = version
        if action == "rollback":
            target = rollback_target(out, live) or "?"
        out.append(Promotion(target, live, action, AT))
        live = target
    return out


def model(version: str, k: int = 2, sil: float = 0.5) -> SegmentModel:
    return SegmentModel(
        version=version, created_at=AT, feature_names=("aov",),
        scaler=Scaler(mean=np.zeros(1), std=np.ones(1)),
        centroids=np.arange(k, dtype=np.float64).reshape(k, 1),
        names=tuple(f"s{i}" for i in range(k)), seed=0, training_size=100 * k, as_of=AT,
        scores=(KScore(k, 1.0, sil, 0.2), KScore(k + 1, 1.0, sil - 0.1, 0.1)),
    )  # fmt: skip


# -- history and rollback -------------------------------------------------------------------
def test_rollback_goes_to_the_previously_live_version_then_further_back_then_nowhere() -> None:
    history = moves(("train", "A"), ("train", "B"), ("promote", "C"))
    assert live_stack(history, "C") == ["A", "B", "C"]
    assert rollback_target(history, "C") == "B"
    history = moves(("train", "A"), ("train", "B"), ("promote", "C"), ("rollback", ""))
    assert history[-1] == Promotion("B", "C", "rollback", AT)
    assert rollback_target(history, "B") == "A"
    history = moves(("train", "A"), ("train", "B"), ("promote", "C"), ("rollback", ""),
                    ("rollback", ""))  # fmt: skip
    assert live_stack(history, "A") == ["A"] and rollback_target(history, "A") is None


def test_promoting_an_older_version_is_undone_by_one_rollback() -> None:
    history = moves(("train", "A"), ("train", "B"), ("promote", "A"))
    assert rollback_target(history, "A") == "B"
    history = moves(("train", "A"), ("train", "B"), ("promote", "A"), ("rollback", ""))
    assert history[-1].version == "B" and rollback_target(history, "B") == "A"


def test_promoting_the_live_version_again_adds_no_step() -> None:
    history = moves(("train", "A"), ("train", "B"), ("promote", "B"))
    assert live_stack(history, "B") == ["A", "B"]


def test_a_pointer_moved_outside_the_history_counts_as_promoted_last() -> None:
    assert live_stack([], "A") == ["A"] and rollback_target([], "A") is None
    history = moves(("train", "A"), ("train", "B"))
    assert rollback_target(history, "X") == "B"  # e.g. set by hand, or before the history
    assert rollback_target([], None) is None


def test_a_promotion_interrupted_before_the_pointer_moved_is_not_rolled_back_to() -> None:
    """The record is written first; if the pointer never moved, that version never was live."""
    history = [*moves(("train", "A"), ("train", "B")), Promotion("C", "B", "promote", AT)]
    assert live_stack(history, "B") == ["A", "B"]  # the pointer is the truth
    assert rollback_target(history, "B") == "A"


def test_a_history_record_round_trips_and_junk_is_skipped() -> None:
    p = Promotion("km-2", "km-1", "rollback", AT, "note")
    assert Promotion.from_json(p.to_json()) == p
    for junk in (b"", b"{}", b"[1]", b'{"version": 3}', b"not json", b'{"version": ""}'):
        assert Promotion.from_json(junk) is None


# -- models list ----------------------------------------------------------------------------------
FAILED = {"passed": False, "reason": "label stability 40.0% < 70.0% (...)"}


def test_status_says_live_was_live_or_why_a_candidate_was_not_promoted() -> None:
    assert status_of(True, True, None) == "live"
    assert status_of(True, False, {"passed": True}) == "live (gate passed)"
    assert status_of(False, False, FAILED) == (
        "not promoted: gate failed: label stability 40.0% < 70.0% (...)"
    )
    assert status_of(False, True, FAILED).startswith("not promoted")  # promoted by hand once
    assert status_of(False, True, None) == "was live"
    assert status_of(False, False, {"passed": True}) == "candidate (gate passed, not live)"
    assert status_of(False, False, None) == "stored, never live"


def test_registry_rows_merge_redis_and_files_oldest_first() -> None:
    rows = registry_rows(
        {"km-1": model("km-1"), "km-2": model("km-2", k=3, sil=0.4), "km-4": "not JSON"},
        {"km-1": model("km-1"), "km-3": model("km-3")},
        live="km-2", file_current="km-1", gates={"km-3": FAILED},
        history=moves(("train", "km-1"), ("train", "km-2")),
    )  # fmt: skip
    assert [r.version for r in rows] == ["km-1", "km-2", "km-3", "km-4"]
    one, two, three, four = rows
    assert one == ModelRow("km-1", AT, 2, 0.5, 200, "redis+files", False, True, "was live")
    assert (two.live, two.k, two.silhouette, two.size, two.status) == (True, 3, 0.4, 300, "live")
    assert three.where == "files" and three.status.startswith("not promoted: gate failed")
    assert four.k is None and four.status.startswith("unreadable: not JSON")


def test_the_silhouette_shown_is_the_one_of_the_models_own_k() -> None:
    assert silhouette_of(model("m", k=3, sil=0.31)) == 0.31
    assert silhouette_of(SegmentModel(**{**vars(model("m")), "scores": ()})) is None


def test_models_has_the_four_lifecycle_commands() -> None:
    result = CliRunner().invoke(main, ["models", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("list", "show", "promote", "rollback"):
        assert name in result.output
    for name in ("promote", "rollback"):
        sub = CliRunner().invoke(main, ["models", name, "--help"])
        assert sub.exit_code == 0 and "--rescore" in sub.output


def test_train_documents_the_gate_flags_and_their_variables() -> None:
    result = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("--gate", "SEGSTREAM_TRAIN_GATE", "SEGSTREAM_RETRAIN_GATE_MIN_STABILITY",
                 "SEGSTREAM_RETRAIN_GATE_SILHOUETTE_MARGIN",
                 "SEGSTREAM_RETRAIN_GATE_MIN_SEGMENT_SHARE"):  # fmt: skip
        assert text in result.output


# -- a worker follows the pointer, back as well as forward -----------------------------------
class Pointer:
    """A ModelSource whose ``model:current`` the test moves."""

    prefix = "t"

    def __init__(self, *models: SegmentModel) -> None:
        self.models = {m.version: m.to_json().encode() for m in models}
        self.current: str | None = None

    async def current_version(self) -> str | None:
        return self.current

    async def model_json(self, version: str) -> bytes | None:
        return self.models.get(version)

    async def online_state(self, version: str) -> bytes | None:
        return None


def test_a_worker_follows_a_rollback_to_an_older_version() -> None:
    older, newer = model("km-20260101T0000-aaaa"), model("km-20261231T0000-bbbb", k=3)
    pointer = Pointer(older, newer)
    holder = ModelHolder(pointer)

    async def follow(version: str | None) -> tuple[bool, str]:
        pointer.current = version
        changed = await holder.refresh()
        return changed, holder.version

    assert asyncio.run(follow(newer.version)) == (True, newer.version)
    assert asyncio.run(follow(older.version)) == (True, older.version)  # rollback: older
    assert holder.model.names == older.names and holder.reloads == 2
    assert asyncio.run(follow(older.version)) == (False, older.version)
    assert asyncio.run(follow(newer.version)) == (True, newer.version)
