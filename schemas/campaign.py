"""The campaign assignment: which arm of a campaign a customer is in (``campaign-assignments``).

One record per customer and campaign, keyed by the customer id (so a customer's records stay in
order on one partition), published by segstream when the customer is assigned
(docs/campaigns.md)::

    {"schema_version": 1, "assignment_id": "spring:C42", "campaign": "spring", "customer_id":
     "C42", "arm": "treatment", "segment": "at_risk", "holdout": 0.1,
     "assigned_at": "2026-12-06T09:00:00Z"}

The messaging service messages ``treatment`` and leaves ``holdout`` alone. Delivery is at least
once: a republication (a crash between the broker's acknowledgement and segstream recording it,
or two processes assigning the same customer at once) carries the same ``assignment_id``, the
same arm and the same ``assigned_at``, so consumers drop repeats by ``assignment_id``.

This module does no I/O and imports neither Kafka nor Redis.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.errors import SchemaError
from schemas.events import FieldProblem, Id, OutputTime

__all__ = [
    "CAMPAIGN_SCHEMA_VERSIONS",
    "CampaignAssignment",
    "decode_assignment",
    "encode_assignment",
]

CAMPAIGN_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
MAX_ASSIGNMENT_BYTES = 4096


class CampaignAssignment(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's arm in a campaign, decided once (a pure function of campaign and customer)."""

    kind: ClassVar[str] = "campaign_assignment"

    schema_version: Annotated[
        int,
        msgspec.Meta(
            description="Version of this record's contract.",
            extra_json_schema={"enum": sorted(CAMPAIGN_SCHEMA_VERSIONS)},
        ),
    ]
    assignment_id: Annotated[
        str,
        msgspec.Meta(min_length=3, max_length=200, description="'<campaign>:<customer_id>': "
                     "the same on every republication; consumers drop repeats by it."),
    ]  # fmt: skip
    campaign: Id
    customer_id: Id
    arm: Annotated[
        Literal["treatment", "holdout"],
        msgspec.Meta(description="treatment: message the customer; holdout: leave them alone."),
    ]
    segment: Annotated[Id, msgspec.Meta(description="The segment the campaign targets.")]
    holdout: Annotated[float, msgspec.Meta(ge=0.0, le=1.0, description="The holdout share.")]
    assigned_at: Annotated[
        OutputTime,
        msgspec.Meta(description="When the customer was in (or entered) the segment and the "
                     "campaign ran: impact is measured from here."),
    ]  # fmt: skip

    def __post_init__(self) -> None:
        if self.schema_version not in CAMPAIGN_SCHEMA_VERSIONS:
            raise FieldProblem("schema_version", f"unknown schema_version {self.schema_version}")
        if self.assignment_id != f"{self.campaign}:{self.customer_id}":
            raise FieldProblem("assignment_id", "must be '<campaign>:<customer_id>'")


_DECODER = msgspec.json.Decoder(CampaignAssignment)
_ENCODER = msgspec.json.Encoder()


def encode_assignment(record: CampaignAssignment) -> bytes:
    return _ENCODER.encode(record)


def decode_assignment(value: bytes | None) -> CampaignAssignment:
    """The record in ``value``, or :class:`SchemaError` (and nothing else)."""
    if value is None:
        raise SchemaError("$", "null value: an assignment is a JSON object")
    if len(value) > MAX_ASSIGNMENT_BYTES:
        raise SchemaError("$", f"oversize: {len(value)} bytes")
    try:
        return _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        raise SchemaError("$", str(exc)[:200]) from None
    except FieldProblem as exc:
        raise SchemaError("$", str(exc)[:200]) from None
    except Exception as exc:
        raise SchemaError("$", f"could not be decoded: {type(exc).__name__}") from None
