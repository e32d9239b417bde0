"""Versioned event contracts: orders and clicks in, segment changes and dead letters out.

Over 400 lines: every event contract and its checks in one file, read by producer teams whole.

The models are msgspec ``Struct``s because decoding and validating straight from JSON bytes in C
is what lets one core keep up with the stream (``benchmarks/bench_schemas.py`` measured msgspec
against pydantic v2 on the same records). Checks that types alone cannot express (prices,
totals, time bounds, versions) run in ``__post_init__`` and raise :class:`FieldProblem`, which
:mod:`schemas.codec` turns into a :class:`~schemas.errors.SchemaError` naming the full field
path. ``__post_init__`` also runs when a model is built in code, so a producer cannot build an
event that a consumer would reject; the length/pattern/size constraints declared with
``msgspec.Meta`` are checked only when decoding, as msgspec does everywhere.

These checks are on the hot path of every record: keep them to comparisons and arithmetic, and
read the clock through :func:`batch_clock`, not once per event. The input structs are
``gc=False``: they hold strings, numbers, times and a list of line items, so they cannot be
part of a reference cycle, and objects the collector does not track keep its passes over a
decoded batch short.

This module does no I/O and imports neither Kafka nor Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Annotated, ClassVar, Literal

import msgspec

#: The versions of each input event this code understands. A new version is added here, never
#: by changing the meaning of an old one.
ORDER_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
CLICK_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
#: The version of the events segstream writes (``SegmentChange``, ``DeadLetter``).
CURRENT_SCHEMA_VERSION = 1
OUTPUT_SCHEMA_VERSIONS: frozenset[int] = frozenset({CURRENT_SCHEMA_VERSION})

#: Events stamped further than this ahead of the wall clock are rejected: clocks drift by
#: seconds, not days, and a far-future time would freeze a customer's recency at zero.
MAX_FUTURE_SKEW_S = 24 * 3600.0
_MAX_FUTURE_SKEW = timedelta(seconds=MAX_FUTURE_SKEW_S)
#: Nothing before this is a plausible e-commerce event (and it catches seconds-vs-ms mix-ups).
MIN_EVENT_TIME = datetime.fromisoformat("1995-01-01T00:00:00+00:00")
#: A difference between the order total and its items above this (one cent) is an error; the
#: extra 1e-9 absorbs binary floating point (3 x 19.99 is 59.970000000000006).
TOTAL_TOLERANCE = 0.01 + 1e-9
MAX_ITEMS_PER_ORDER = 1000
#: How far a left-to-right float sum of at most MAX_ITEMS_PER_ORDER non-negative terms can be
#: from the correctly rounded one, relative to the sum ((n - 1) x 2**-53 is 1.1e-13), rounded up
#: generously; the total check falls back to ``math.fsum`` within this of its tolerance.
_SUM_ERROR_BOUND = 1e-12
MAX_QUANTITY = 100_000
MAX_ORDER_TOTAL = 10_000_000.0
#: One unit cannot cost more than a whole order may. The bound also keeps the items' sum finite
#: (at most 1000 x 100000 x 1e7), so no record can make the total check overflow.
MAX_UNIT_PRICE = MAX_ORDER_TOTAL

OrderStatus = Literal["placed", "cancelled", "returned"]
ClickType = Literal[
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "search",
    "checkout_start",
    "identify",
]
#: Click types that link a visitor to a customer (login, checkout): both ids are required
#: (worker/identity merges what the ``anonymous_id`` did into the ``customer_id``).
IDENTIFY_CLICK_TYPES: frozenset[str] = frozenset({"identify"})
ChangeReason = Literal["order", "return", "clicks", "recency_decay", "model_update"]
#: Click types that concern one product and so must name its ``sku``.
SKU_CLICK_TYPES: frozenset[str] = frozenset({"product_view", "add_to_cart", "remove_from_cart"})
#: Bounds of a category or device name: it becomes a ``name=count`` pair of a summary in the
#: customer hash (worker/core/attributes.py), which joins pairs with ``,`` and ``=``.
MAX_LABEL_CHARS = 32
LABEL_FORBIDDEN = "=,"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Checked in ``OrderEvent.__post_init__``, not with ``Meta(pattern=...)``: msgspec runs a Python
# regex per value, as much as a fifth of an order's whole decode. The pattern stays in the schema.
Currency = Annotated[
    str,
    msgspec.Meta(
        description="ISO 4217 code: three capital letters A-Z, e.g. EUR.",
        extra_json_schema={"pattern": "^[A-Z]{3}$", "minLength": 3, "maxLength": 3},
    ),
]
# Checked in the models' ``__post_init__`` (only when present), not with ``Meta``: see Currency.
Label = Annotated[
    str,
    msgspec.Meta(
        description=f"1 to {MAX_LABEL_CHARS} characters, none of '=' and ','.",
        extra_json_schema={"minLength": 1, "maxLength": MAX_LABEL_CHARS, "pattern": "^[^=,]+$"},
    ),
]
_DATE_TIME = {"format": "date-time"}
InputTime = Annotated[
    datetime,
    msgspec.Meta(
        description=(
            "Event time, RFC 3339 with a UTC offset (Z or +hh:mm; a time without one is "
            f"rejected); not before {MIN_EVENT_TIME.date()} and not more than "
            f"{MAX_FUTURE_SKEW_S / 3600:.0f}h after the moment it is validated."
        ),
        extra_json_schema=_DATE_TIME,
    ),
]
OutputTime = Annotated[
    datetime,
    msgspec.Meta(
        description="RFC 3339 with a UTC offset; a time without one is rejected.",
        extra_json_schema=_DATE_TIME,
    ),
]


def _version_field(supported: frozenset[int]) -> msgspec.Meta:
    return msgspec.Meta(
        description="Version of this event's contract; an unknown version is rejected.",
        extra_json_schema={"enum": sorted(supported)},
    )


class FieldProblem(ValueError):
    """Raised inside a model's checks; ``field`` is relative to the struct being checked.

    msgspec wraps it in a ``ValidationError`` (as ``__cause__``) and appends the struct's path;
    :mod:`schemas.codec` joins the two into one :class:`~schemas.errors.SchemaError`.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TimeBounds:
    """The accepted event times, ``[MIN_EVENT_TIME, now + MAX_FUTURE_SKEW_S]``, for one clock read.

    ``by_tz`` holds the two bounds expressed in each fixed UTC offset seen so far, keyed by that
    ``tzinfo``. CPython compares two datetimes sharing a ``tzinfo`` field by field (~20 ns) but
    otherwise converts both to UTC (~1.5 us, more than all other checks of an event together);
    msgspec reuses one ``tzinfo`` object per offset, so after the first event of an offset
    every comparison is the fast one, with the same result.
    """

    __slots__ = ("by_tz", "limit")

    def __init__(self, limit: datetime) -> None:
        self.limit = limit
        self.by_tz: dict[tzinfo | None, tuple[datetime, datetime]] = {UTC: (MIN_EVENT_TIME, limit)}

    @classmethod
    def now(cls) -> TimeBounds:
        return cls(datetime.now(UTC) + _MAX_FUTURE_SKEW)

    def learn(self, value: datetime) -> tuple[datetime, datetime]:
        """The bounds for ``value``'s ``tzinfo``, remembered if it is a fixed offset."""
        tz = value.tzinfo
        if tz is None or value.utcoffset() is None:  # naive, in Python's own terms
            raise FieldProblem("event_time", "must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)")
        if not isinstance(tz, timezone):  # e.g. a ZoneInfo built in code: compare instants
            return MIN_EVENT_TIME, self.limit
        pair = (MIN_EVENT_TIME.astimezone(tz), self.limit.astimezone(tz))
        self.by_tz[tz] = pair
        return pair


# The bounds of the current batch, set by ``batch_clock``. A ContextVar, not a global, so
# threads and asyncio tasks decoding at once never share (or reset) each other's bounds.
_BOUNDS: ContextVar[TimeBounds | None] = ContextVar("segstream_time_bounds", default=None)


class _IdleClock:
    """The bounds for checks outside any ``batch_clock`` block, re-read at most once a second.

    Building ``TimeBounds`` costs ~1.5 us (an aware ``datetime.now`` plus a ``timedelta``), more
    than an event built in code costs otherwise; a monotonic clock read is ~70 ns. Two threads
    may both refresh at the turn of a second: each stores a fresh reading, so either is right.
    """

    __slots__ = ("bounds", "until")

    def __init__(self) -> None:
        self.bounds = TimeBounds.now()
        self.until = time.monotonic() + 1.0

    def get(self) -> TimeBounds:
        now = time.monotonic()
        if now >= self.until:
            self.bounds = TimeBounds.now()
            self.until = now + 1.0
        return self.bounds


_IDLE = _IdleClock()


def future_limit() -> datetime:
    """The latest event time accepted right now (inside :func:`batch_clock`: the batch's)."""
    return (_BOUNDS.get() or _IDLE.get()).limit


@contextmanager
def batch_clock() -> Iterator[Callable[[], None]]:
    """Judge event times against one clock reading for a whole batch, not one per event.

    Reading the clock and converting each event time to a float cost a quarter of an order's
    validation; inside this block the check is two ``datetime`` comparisons. The block yields
    ``refresh()``, which re-reads the clock: call it every so often in a long batch. An event
    is then judged against a clock at most that stale, so one stamped within those last
    moments of the allowed skew may be rejected; nothing beyond the skew is ever accepted.
    Outside any block, checks share a reading at most a second old (``_IdleClock``).
    """

    def refresh() -> None:
        _BOUNDS.set(TimeBounds.now())

    token = _BOUNDS.set(TimeBounds.now())
    try:
        yield refresh
    finally:
        _BOUNDS.reset(token)


def _event_time_problem(value: datetime) -> FieldProblem:
    """Why ``value``, which is timezone-aware, failed the event-time check in the models."""
    if value < MIN_EVENT_TIME:
        return FieldProblem("event_time", f"{value.isoformat()} is before {MIN_EVENT_TIME.date()}")
    hours = f"{MAX_FUTURE_SKEW_S / 3600:.0f}h"
    return FieldProblem("event_time", f"{value.isoformat()} is more than {hours} in the future")


def _check_aware(value: datetime, field: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise FieldProblem(field, "must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)")


#: Currency codes already found well formed; at most 26**3 entries, so it cannot grow unbounded.
_GOOD_CURRENCIES: set[str] = set()


def _check_currency(code: str) -> None:
    if len(code) == 3 and code.isascii() and code.isalpha() and code.isupper():
        _GOOD_CURRENCIES.add(code)
        return
    shown = code if len(code) <= 20 else code[:19] + "…"
    raise FieldProblem(
        "currency", f"must be three capital letters A-Z (ISO 4217, e.g. EUR), got {shown!r}"
    )


#: Category and device names already found well formed (a cache like ``_GOOD_CURRENCIES``, capped
#: at ``_GOOD_LABELS_MAX`` entries: names are free text, the cache must not grow without bound).
_GOOD_LABELS: set[str] = set()
_GOOD_LABELS_MAX = 4096


def _check_label(value: str, field: str) -> None:
    if 0 < len(value) <= MAX_LABEL_CHARS and "=" not in value and "," not in value:
        if len(_GOOD_LABELS) < _GOOD_LABELS_MAX:
            _GOOD_LABELS.add(value)
        return
    shown = value if len(value) <= 40 else value[:39] + "…"
    raise FieldProblem(
        field, f"must be 1 to {MAX_LABEL_CHARS} characters without '=' or ',', got {shown!r}"
    )


def _version_problem(version: int, supported: frozenset[int]) -> FieldProblem:
    known = ", ".join(str(v) for v in sorted(supported))
    return FieldProblem("schema_version", f"unknown schema_version {version} (supported: {known})")


class LineItem(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One product line of an order; the order checks its bounds (errors name ``$.items[<i>]``)."""

    # omit_defaults: a line without a category encodes byte for byte as before the field existed.

    # No __post_init__ of its own: OrderEvent checks each line in the loop that sums them anyway,
    # which saves a Python call per line on the hot path. A bad line is reported the same way
    # whether the order was decoded or built in code; a LineItem alone is not an event.

    sku: Sku
    quantity: Annotated[
        int,
        msgspec.Meta(
            description=f"Units of this sku, 1 to {MAX_QUANTITY}.",
            extra_json_schema={"minimum": 1, "maximum": MAX_QUANTITY},
        ),
    ]
    unit_price: Annotated[
        float,
        msgspec.Meta(
            description=(f"Price of one unit in the order's currency, 0 to {MAX_UNIT_PRICE:.0f}."),
            extra_json_schema={"minimum": 0, "maximum": MAX_UNIT_PRICE},
        ),
    ]
    category: Annotated[
        Label | None,
        msgspec.Meta(description="The sku's category; the customer's spend by category uses it."),
    ] = None


def _line_problem(index: int, item: LineItem) -> FieldProblem:
    """Why ``item`` (line ``index`` of an order) failed the bounds checked in the order's loop."""
    quantity, price, where = item.quantity, item.unit_price, f"items[{index}]"
    if quantity < 1:
        return FieldProblem(f"{where}.quantity", f"must be at least 1, got {quantity}")
    if quantity > MAX_QUANTITY:
        return FieldProblem(f"{where}.quantity", f"must be at most {MAX_QUANTITY}, got {quantity}")
    if not math.isfinite(price):
        return FieldProblem(f"{where}.unit_price", "must be a finite number")
    if price < 0:
        return FieldProblem(f"{where}.unit_price", f"must not be negative, got {price}")
    return FieldProblem(f"{where}.unit_price", f"must be at most {MAX_UNIT_PRICE:.0f}, got {price}")


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An order placed, cancelled or returned, in the order's own currency.

    ``total`` is what the customer paid (``placed``) or got back (``cancelled``, ``returned``);
    it must match the sum of quantity x unit_price over the items within a cent (JSON Schema
    cannot express this check; the decoder makes it). A cancellation or return names the
    ``order_id`` it undoes and lists the items it concerns.
    """

    kind: ClassVar[str] = "order"

    event_id: Annotated[Id, msgspec.Meta(description="Unique per event; redelivery repeats it.")]
    schema_version: Annotated[int, _version_field(ORDER_SCHEMA_VERSIONS)]
    customer_id: Id
    order_id: Annotated[
        Id, msgspec.Meta(description="The order; a cancellation or return names the one it undoes.")
    ]
    event_time: InputTime
    status: OrderStatus
    items: Annotated[
        list[LineItem],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_ITEMS_PER_ORDER,
            description="The order's lines; their quantity x unit_price must sum to total.",
        ),
    ]
    total: Annotated[
        float,
        msgspec.Meta(
            description=(
                f"Amount paid or refunded, 0 to {MAX_ORDER_TOTAL:.0f}. Must equal the sum of "
                "quantity x unit_price over items within 0.01 (checked by the decoder, not "
                "expressible in JSON Schema)."
            ),
            extra_json_schema={"minimum": 0, "maximum": MAX_ORDER_TOTAL},
        ),
    ]
    currency: Currency = "EUR"

    def __post_init__(self) -> None:
        # The lines first (a bad line is the likelier root cause of a bad total). The sum is a
        # plain loop; the correctly rounded one (fsum) is computed below only when the plain one
        # is too close to the tolerance to decide, so the verdicts are fsum's, for less work.
        items_sum = 0.0
        for item in self.items:
            quantity, price = item.quantity, item.unit_price
            if not (1 <= quantity <= MAX_QUANTITY and 0.0 <= price <= MAX_UNIT_PRICE):
                raise _line_problem(self.items.index(item), item)  # NaN fails too
            items_sum += quantity * price
            category = item.category
            if category is not None and category not in _GOOD_LABELS:
                _check_label(category, f"items[{self.items.index(item)}].category")
        if self.schema_version not in ORDER_SCHEMA_VERSIONS:
            raise _version_problem(self.schema_version, ORDER_SCHEMA_VERSIONS)
        # The event-time check, inlined (a call costs as much as the check; see TimeBounds).
        when = self.event_time
        bounds = _BOUNDS.get() or _IDLE.get()
        low_high = bounds.by_tz.get(when.tzinfo) or bounds.learn(when)
        if not low_high[0] <= when <= low_high[1]:
            raise _event_time_problem(when)
        if self.currency not in _GOOD_CURRENCIES:
            _check_currency(self.currency)
        total = self.total
        if not 0.0 <= total <= MAX_ORDER_TOTAL:  # also false for NaN
            if not math.isfinite(total) or total < 0:
                raise FieldProblem("total", f"must be a non-negative number, got {total}")
            raise FieldProblem("total", f"must be at most {MAX_ORDER_TOTAL:.0f}, got {total}")
        difference = abs(items_sum - total)
        # Below half a cent the verdict is "agrees" whichever way the sum is rounded (total is at
        # most 1e7, so the plain sum is within 1e-5 of fsum's); above it, decide exactly.
        if difference > 0.005:
            if abs(difference - TOTAL_TOLERANCE) <= _SUM_ERROR_BOUND * (items_sum + 1.0):
                items_sum = math.fsum([item.quantity * item.unit_price for item in self.items])
                difference = abs(items_sum - total)
            if difference > TOTAL_TOLERANCE:
                raise FieldProblem(
                    "total",
                    f"{total} disagrees with the items, which sum to {round(items_sum, 6)} "
                    "(more than 0.01 apart)",
                )

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)

    @property
    def total_cents(self) -> int:
        return round(self.total * 100)

    @property
    def item_count(self) -> int:
        return sum(item.quantity for item in self.items)


class ClickEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One clickstream event of a known customer or an anonymous visitor.

    At least one of ``customer_id`` and ``anonymous_id`` is a string, and ``product_view``,
    ``add_to_cart`` and ``remove_from_cart`` events name their ``sku``.
    """

    kind: ClassVar[str] = "click"

    event_id: Annotated[Id, msgspec.Meta(description="Unique per event; redelivery repeats it.")]
    schema_version: Annotated[int, _version_field(CLICK_SCHEMA_VERSIONS)]
    session_id: Id
    event_time: InputTime
    type: ClickType
    customer_id: Annotated[
        Id | None,
        msgspec.Meta(description="Required unless anonymous_id is given, and for identify."),
    ] = None
    anonymous_id: Annotated[
        Id | None,
        msgspec.Meta(description="Required unless customer_id is given, and for identify."),
    ] = None
    sku: Annotated[
        Sku | None,
        msgspec.Meta(description="Required for product_view, add_to_cart, remove_from_cart."),
    ] = None
    query: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    category: Annotated[
        Label | None,
        msgspec.Meta(
            description="The sku's category (product_view, add_to_cart); views by category."
        ),
    ] = None
    device: Annotated[
        Label | None,
        msgspec.Meta(description="e.g. mobile, desktop, tablet, app; clicks by device."),
    ] = None

    def __post_init__(self) -> None:
        if self.schema_version not in CLICK_SCHEMA_VERSIONS:
            raise _version_problem(self.schema_version, CLICK_SCHEMA_VERSIONS)
        when = self.event_time  # as in OrderEvent
        bounds = _BOUNDS.get() or _IDLE.get()
        low_high = bounds.by_tz.get(when.tzinfo) or bounds.learn(when)
        if not low_high[0] <= when <= low_high[1]:
            raise _event_time_problem(when)
        if self.customer_id is None and self.anonymous_id is None:
            raise FieldProblem("customer_id", "either customer_id or anonymous_id is required")
        if self.type in IDENTIFY_CLICK_TYPES and (
            self.customer_id is None or self.anonymous_id is None
        ):
            missing = "customer_id" if self.customer_id is None else "anonymous_id"
            raise FieldProblem(missing, f"is required for an {self.type} event (it links both ids)")
        if self.sku is None and self.type in SKU_CLICK_TYPES:
            raise FieldProblem("sku", f"is required for a {self.type} event")
        if self.category is not None and self.category not in _GOOD_LABELS:
            _check_label(self.category, "category")
        if self.device is not None and self.device not in _GOOD_LABELS:
            _check_label(self.device, "device")

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)


class SegmentChange(msgspec.Struct, frozen=True, kw_only=True):
    """A customer moved from one segment to another (published to ``segment-changes``).

    ``old_segment`` is ``None`` the first time a customer is segmented. ``features`` are in real
    units (days, orders, currency), ``old_distance``/``new_distance`` in standard units of the
    model's scaled feature space. ``model_version`` is ``"rules-v1"`` before any K-means model.
    """

    kind: ClassVar[str] = "segment_change"

    customer_id: Id
    old_segment: str | None
    new_segment: str
    reason: ChangeReason
    model_version: str
    features: Annotated[
        dict[str, float],
        msgspec.Meta(description="Feature name -> value in real units (days, orders, currency)."),
    ]
    event_time: Annotated[
        OutputTime, msgspec.Meta(description="Event time of the event that caused the change.")
    ]
    processing_time: Annotated[
        OutputTime, msgspec.Meta(description="When segstream decided the change.")
    ]
    old_distance: float | None = None
    new_distance: float | None = None
    schema_version: Annotated[int, _version_field(OUTPUT_SCHEMA_VERSIONS)] = CURRENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version not in OUTPUT_SCHEMA_VERSIONS:
            raise _version_problem(self.schema_version, OUTPUT_SCHEMA_VERSIONS)
        _check_aware(self.event_time, "event_time")
        _check_aware(self.processing_time, "processing_time")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An input record the worker could not accept, kept whole with the reason.

    ``original`` holds the exact bytes received (base64 in JSON, so any bytes survive) so it can
    be fixed and replayed; ``error`` is ``"<JSON path>: <reason>"``.
    """

    kind: ClassVar[str] = "dead_letter"

    original: Annotated[bytes, msgspec.Meta(description="The record's value, byte for byte.")]
    source_topic: str
    partition: int
    offset: int
    error: Annotated[str, msgspec.Meta(description="<JSON path>: <reason>, e.g. '$.total: ...'")]
    dead_lettered_at: OutputTime
    key: Annotated[bytes | None, msgspec.Meta(description="The record's key, byte for byte.")] = (
        None
    )
    schema_version: Annotated[int, _version_field(OUTPUT_SCHEMA_VERSIONS)] = CURRENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version not in OUTPUT_SCHEMA_VERSIONS:
            raise _version_problem(self.schema_version, OUTPUT_SCHEMA_VERSIONS)
        _check_aware(self.dead_lettered_at, "dead_lettered_at")


Event = OrderEvent | ClickEvent | SegmentChange | DeadLetter
