"""segstream event and state contracts: versioned, validated, no I/O."""

from schemas.codec import MAX_EVENT_BYTES, decode, decode_click, decode_many, decode_order, encode
from schemas.errors import SchemaError, SegstreamError
from schemas.events import (
    ClickEvent,
    DeadLetter,
    LineItem,
    OrderEvent,
    SegmentChange,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "ClickEvent",
    "DeadLetter",
    "LineItem",
    "OrderEvent",
    "SchemaError",
    "SegmentChange",
    "SegstreamError",
    "decode",
    "decode_click",
    "decode_many",
    "decode_order",
    "encode",
]
