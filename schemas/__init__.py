"""segstream event and state contracts: versioned, validated, no I/O."""

from schemas.codec import (
    MAX_EVENT_BYTES,
    decode,
    decode_click,
    decode_many,
    decode_order,
    decode_profile,
    encode,
)
from schemas.errors import SchemaError, SegstreamError
from schemas.events import (
    ClickEvent,
    DeadLetter,
    FieldProblem,
    LineItem,
    OrderEvent,
    SegmentChange,
    batch_clock,
)
from schemas.profile import PROFILE_SCHEMA_VERSIONS, CustomerProfile

__all__ = [
    "MAX_EVENT_BYTES",
    "PROFILE_SCHEMA_VERSIONS",
    "ClickEvent",
    "CustomerProfile",
    "DeadLetter",
    "FieldProblem",
    "LineItem",
    "OrderEvent",
    "SchemaError",
    "SegmentChange",
    "SegstreamError",
    "batch_clock",
    "decode",
    "decode_click",
    "decode_many",
    "decode_order",
    "decode_profile",
    "encode",
]
