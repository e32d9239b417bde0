"""What a campaign is and which arm a customer gets: pure, no Kafka, no Redis.

A campaign targets one segment. Every customer who is in the segment when the campaign is
created, or enters it while the campaign runs, is *assigned* once: to the **holdout** (left
alone, the control group) with probability ``holdout``, else to the **treatment** (messaged).

The arm is a pure function of the campaign's name and the customer id: the first 8 bytes of
BLAKE2b over both, read as an integer and scaled to ``[0, 1)``, below ``holdout`` means holdout.
Never Python's ``hash()`` (salted per process): the same customer gets the same arm in every
process, after every restart and every replay, and anyone can recompute it
(:func:`arm_of`). BLAKE2b's output is uniform, so the holdout share is ``holdout`` up to
binomial noise, independent of anything about the customer (the arms are comparable).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "ARMS",
    "HOLDOUT",
    "TREATMENT",
    "Assignment",
    "Campaign",
    "CampaignInvalid",
    "arm_of",
    "unit_of",
]

TREATMENT = "treatment"
HOLDOUT = "holdout"
ARMS: tuple[str, str] = (TREATMENT, HOLDOUT)
Arm = Literal["treatment", "holdout"]

#: Campaign names: safe as a Redis hash field, a CSV cell and inside the stored ``|`` record.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_DESCRIPTION = 500


class CampaignInvalid(ValueError):
    """A campaign definition or a stored record that cannot be one (the text says why)."""


def unit_of(campaign: str, customer_id: str) -> float:
    """The customer's uniform draw in ``[0, 1)`` for ``campaign`` (BLAKE2b, 64 bits)."""
    digest = hashlib.blake2b(
        f"{campaign}\x00{customer_id}".encode(), digest_size=8, person=b"segstream-arm"
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def arm_of(campaign: str, customer_id: str, holdout: float) -> Arm:
    """``"holdout"`` when the customer's draw is below ``holdout``, else ``"treatment"``."""
    return "holdout" if unit_of(campaign, customer_id) < holdout else "treatment"


@dataclass(frozen=True)
class Campaign:
    """One campaign as the registry keeps it (times are epoch ms; ``stopped_ms`` None = running)."""

    name: str
    segment: str
    holdout: float
    created_ms: int
    description: str = ""
    stopped_ms: int | None = None

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise CampaignInvalid(
                f"campaign name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-' "
                "(starting with a letter or digit)"
            )
        if not self.segment or len(self.segment) > 128:
            raise CampaignInvalid("the segment must be a segment name of 1-128 characters")
        if not 0.0 < self.holdout < 1.0:
            raise CampaignInvalid(
                f"holdout must be between 0 and 1 (exclusive), got {self.holdout}"
            )
        if len(self.description) > MAX_DESCRIPTION:
            raise CampaignInvalid(f"the description is longer than {MAX_DESCRIPTION} characters")

    @property
    def running(self) -> bool:
        return self.stopped_ms is None

    def running_at(self, ms: int) -> bool:
        """Whether a customer entering the segment at ``ms`` is assigned."""
        return self.created_ms <= ms and (self.stopped_ms is None or ms < self.stopped_ms)

    def arm(self, customer_id: str) -> Arm:
        return arm_of(self.name, customer_id, self.holdout)

    def enters(self, segment: str, at_ms: int) -> bool:
        """A customer entering ``segment`` at ``at_ms`` (a segment change) is assigned."""
        return segment == self.segment and self.running_at(at_ms)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Campaign:
        try:
            data: Any = json.loads(raw)
            if not isinstance(data, dict):
                raise CampaignInvalid("a campaign record must be a JSON object")
            stopped = data.get("stopped_ms")
            return cls(
                name=str(data["name"]),
                segment=str(data["segment"]),
                holdout=float(data["holdout"]),
                created_ms=int(data["created_ms"]),
                description=str(data.get("description") or ""),
                stopped_ms=None if stopped is None else int(stopped),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CampaignInvalid):
                raise
            raise CampaignInvalid(f"not a campaign record: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Assignment:
    """One customer's assignment to one campaign, as stored in Redis (``arm|assigned_ms|flag``).

    ``published``: the record reached the ``campaign-assignments`` topic (acknowledged).
    """

    campaign: str
    customer_id: str
    arm: Arm
    assigned_ms: int
    published: bool = False

    def stored(self) -> str:
        return f"{self.arm}|{self.assigned_ms}|{1 if self.published else 0}"

    @classmethod
    def parse(cls, campaign: str, customer_id: str, raw: str | bytes) -> Assignment:
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split("|")
        if len(parts) != 3 or parts[0] not in ARMS:
            raise CampaignInvalid(f"not an assignment record: {text[:40]!r}")
        try:
            ms = int(parts[1])
        except ValueError:
            raise CampaignInvalid(f"not an assignment time: {parts[1][:20]!r}") from None
        arm: Arm = "treatment" if parts[0] == TREATMENT else "holdout"
        return cls(campaign, customer_id, arm, ms, parts[2] == "1")

    @property
    def assignment_id(self) -> str:
        """The dedup key of the published record: the same for every republication."""
        return f"{self.campaign}:{self.customer_id}"
