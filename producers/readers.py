"""File readers for replay: each turns a file into events and :class:`Reject` rows, in file order.

Over 400 lines: one reader per replay format, each short, with the shared row-to-event checks.

Formats (``--format``):

``orders-csv``
    ``customer_id,order_id,ts,amount`` plus optional ``currency,status,items,event_id``. One row
    is one order, sent as an :class:`~schemas.OrderEvent` with one line item (sku ``ORDER``,
    quantity ``items`` or 1, unit price ``amount / quantity``) so the total validates. ``ts`` is
    ISO 8601 (no offset = UTC) or epoch seconds. ``status`` defaults to ``placed``; a cancelled or
    returned row carries the refunded amount as a positive number and the ``order_id`` it undoes.
``clicks-csv``
    ``session_id,ts,type`` plus optional ``customer_id,anonymous_id,sku,query,event_id`` (one of
    the two ids is required).
``online-retail``
    The UCI Online Retail columns (``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,
    UnitPrice,CustomerID,Country``). Rows are grouped into one order per invoice; an invoice
    starting with ``C`` is a credit note, sent as status ``returned`` with absolute quantities
    and the credit note's own number as ``order_id`` (the file does not say which invoice it
    refunds). Lines with the same StockCode and price are merged. Rows without CustomerID are
    counted and listed in the rejects file, never sent. ``InvoiceDate`` is month/day/year
    (``12/1/2010 8:26``, as in the UCI file; ``day_first`` flips it) or ISO 8601, taken as UTC.
``jsonl``
    One encoded event per line, as the file sink writes them; orders and clicks may be mixed
    (a line with an ``order_id`` is an order). Ids are kept as they are.
``customers-csv``
    Customer profiles (``customer_id`` plus optional profile columns), and online-retail's one
    profile per customer (its ``Country``): :mod:`producers.profile_readers`.

Event ids are deterministic (see :mod:`producers.ids`): ``event_id`` column when present, else
derived from the source name and the record's identity: ``(order_id, status, ts)`` for an
order row, the invoice number for online-retail, the line number for a click row. Two rows of
one file with the same identity are a duplicate: the second is rejected, naming the first.

Nothing is dropped silently: every bad row becomes a :class:`Reject` with its line number (the
physical line where the record starts; the header is line 1) and a reason. Blank lines are not
rows. Readers do no network I/O.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO, get_args

from producers.errors import SourceError
from producers.ids import event_id
from schemas import ClickEvent, CustomerProfile, LineItem, OrderEvent, SchemaError, decode
from schemas.events import MAX_ITEMS_PER_ORDER, ClickType

STATUSES = frozenset({"placed", "cancelled", "returned"})
#: Every click type the schema knows (``identify`` included: it needs both ids).
CLICK_TYPES = frozenset(get_args(ClickType))
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_ID = 128
#: Epoch values above this are milliseconds (year 5138 in seconds): named in the reason.
_EPOCH_MS_THRESHOLD = 1e11

Event = OrderEvent | ClickEvent | CustomerProfile


@dataclass(frozen=True)
class Reject:
    """A row that was not sent: where it is, why, and its fields as read."""

    line: int
    reason: str
    fields: tuple[str, ...] = ()
    #: ``False`` for rows that are reported but are not errors (UCI rows without CustomerID).
    bad: bool = True


@dataclass
class ReadStats:
    rows: int = 0
    rejected: int = 0
    #: Rows reported but not errors (online-retail rows without CustomerID).
    unsent: int = 0
    notes: dict[str, int] = field(default_factory=dict)


# -- shared helpers --------------------------------------------------------------------------------


def csv_rows(text: TextIO) -> Iterator[tuple[int, list[str]]]:
    """``(line where the record starts, fields)``, skipping blank lines; the header first."""
    reader = csv.reader(text)
    prev = 0
    for row in reader:
        start = prev + 1
        prev = reader.line_num
        if row and any(row):
            yield start, row


def parse_map(pairs: Iterable[str]) -> dict[str, str]:
    """``["customer_id=CustID", ...]`` -> ``{"customer_id": "CustID"}`` (target = source)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise SourceError(f"--map {pair!r}: expected COLUMN=SOURCE_COLUMN")
        mapping[target.strip()] = source.strip()
    return mapping


def header_columns(
    rows: Iterator[tuple[int, list[str]]],
    required: tuple[str, ...],
    optional: tuple[str, ...],
    column_map: Mapping[str, str],
    fmt: str,
) -> tuple[dict[str, int], int]:
    """Read the header; map each known column to its index (``-1`` when an optional is absent)."""
    unknown = sorted(set(column_map) - set(required) - set(optional))
    if unknown:
        known = ", ".join(required + optional)
        raise SourceError(f"--map names unknown column(s) {', '.join(unknown)} for {fmt}: {known}")
    try:
        _, header = next(rows)
    except StopIteration:
        raise SourceError(f"empty file: expected a {fmt} header") from None
    where = {name.strip(): i for i, name in enumerate(header)}
    index: dict[str, int] = {}
    missing = []
    for name in required + optional:
        src = column_map.get(name, name)
        if src in where:
            index[name] = where[src]
        elif name in required:
            missing.append(src if src == name else f"{src} (for {name})")
        else:
            index[name] = -1
    if missing:
        found = ", ".join(header)
        raise SourceError(f"{fmt}: missing column(s) {', '.join(missing)}; the header has: {found}")
    return index, len(header)


def parse_ts(text: str) -> datetime:
    """ISO 8601 (no offset means UTC) or epoch seconds -> aware UTC datetime, else ValueError."""
    s = text.strip()
    if not s:
        raise ValueError("missing timestamp")
    try:
        seconds = float(s)
    except ValueError:
        try:
            value = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(
                f"unparsable timestamp {s!r}: expected ISO 8601 or epoch seconds"
            ) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not math.isfinite(seconds):
        raise ValueError(f"unparsable timestamp {s!r}")
    if abs(seconds) > _EPOCH_MS_THRESHOLD:
        raise ValueError(f"timestamp {s} looks like epoch milliseconds; expected epoch seconds")
    return datetime.fromtimestamp(seconds, UTC)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"non-numeric {what} {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"non-numeric {what} {text.strip()!r}")
    return value


def check_id(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"missing {what}")
    if len(value) > _MAX_ID:
        raise ValueError(f"{what} longer than {_MAX_ID} characters")
    return value


def field_at(row: list[str], index: int) -> str:
    return row[index].strip() if index >= 0 else ""


class SeenIds:
    """Event ids already produced from this file, to reject a duplicate row naming the first."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}

    def check(self, eid: str, line: int) -> None:
        # 64 bits of the id: a false duplicate needs a collision (p ~ 1e-8 at 1e6 rows).
        key = hash(eid)
        first = self._first.setdefault(key, line)
        if first != line:
            raise ValueError(f"duplicate of line {first} (same event id {eid})")


def model_problem(exc: ValueError) -> str:
    """The reason text of a model check failure (``FieldProblem``), or the message."""
    field_name = getattr(exc, "field", None)
    reason = getattr(exc, "reason", None)
    return f"{field_name}: {reason}" if field_name and reason else str(exc)


# -- orders-csv ------------------------------------------------------------------------------------

ORDER_REQUIRED = ("customer_id", "order_id", "ts", "amount")
ORDER_OPTIONAL = ("currency", "status", "items", "event_id", "category")


def read_orders_csv(
    rows: Iterator[tuple[int, list[str]]],
    stats: ReadStats,
    source: str,
    column_map: Mapping[str, str],
    default_currency: str = "EUR",
) -> Iterator[OrderEvent | Reject]:
    col, width = header_columns(rows, ORDER_REQUIRED, ORDER_OPTIONAL, column_map, "orders-csv")
    i_cust, i_order, i_ts, i_amount = (col[c] for c in ORDER_REQUIRED)
    i_cur, i_status, i_items, i_eid, i_cat = (col[c] for c in ORDER_OPTIONAL)
    need = max(col.values()) + 1
    seen = SeenIds()
    for line, row in rows:
        stats.rows += 1
        try:
            if len(row) < need:
                raise ValueError(f"expected {width} columns, got {len(row)}")
            customer = check_id(row[i_cust].strip(), "customer_id")
            order = check_id(row[i_order].strip(), "order_id")
            when = parse_ts(row[i_ts])
            amount = _number(row[i_amount], "amount")
            status = field_at(row, i_status).lower() or "placed"
            if status not in STATUSES:
                raise ValueError(
                    f"unknown status {status!r} (expected placed, cancelled, returned)"
                )
            if amount < 0:
                if status == "placed":
                    raise ValueError(
                        f"negative amount {amount} on a placed order: a refund is a row with "
                        "status returned or cancelled and a positive amount"
                    )
                raise ValueError(
                    f"negative amount {amount}: a {status} row carries the refunded amount "
                    "as a positive number"
                )
            currency = field_at(row, i_cur).upper() or default_currency
            if not _CURRENCY.match(currency):
                raise ValueError(f"currency {currency!r} is not a 3-letter ISO 4217 code")
            quantity = 1
            if i_items >= 0 and row[i_items].strip():
                items = _number(row[i_items], "items")
                if items != int(items) or items < 1:
                    raise ValueError(f"items must be a whole number >= 1, got {row[i_items]!r}")
                quantity = int(items)
            total = round(amount, 2)
            eid = field_at(row, i_eid) or event_id(
                source, order, status, int(when.timestamp() * 1000)
            )
            seen.check(check_id(eid, "event_id"), line)
            event = OrderEvent(
                event_id=eid,
                schema_version=1,
                customer_id=customer,
                order_id=order,
                event_time=when,
                status=status,  # type: ignore[arg-type]
                items=[
                    LineItem(
                        sku="ORDER",
                        quantity=quantity,
                        unit_price=total / quantity,
                        category=field_at(row, i_cat) or None,
                    )
                ],
                total=total,
                currency=currency,
            )
        except ValueError as exc:
            stats.rejected += 1
            yield Reject(line, model_problem(exc), tuple(row))
            continue
        yield event


# -- clicks-csv ------------------------------------------------------------------------------------

CLICK_REQUIRED = ("session_id", "ts", "type")
CLICK_OPTIONAL = ("customer_id", "anonymous_id", "sku", "query", "event_id", "category", "device")


def read_clicks_csv(
    rows: Iterator[tuple[int, list[str]]],
    stats: ReadStats,
    source: str,
    column_map: Mapping[str, str],
) -> Iterator[ClickEvent | Reject]:
    col, width = header_columns(rows, CLICK_REQUIRED, CLICK_OPTIONAL, column_map, "clicks-csv")
    i_sess, i_ts, i_type = (col[c] for c in CLICK_REQUIRED)
    i_cust, i_anon, i_sku, i_query, i_eid, i_cat, i_dev = (col[c] for c in CLICK_OPTIONAL)
    need = max(col.values()) + 1
    seen = SeenIds()
    for line, row in rows:
        stats.rows += 1
        try:
            if len(row) < need:
                raise ValueError(f"expected {width} columns, got {len(row)}")
            session = check_id(row[i_sess].strip(), "session_id")
            when = parse_ts(row[i_ts])
            kind = row[i_type].strip().lower()
            if kind not in CLICK_TYPES:
                raise ValueError(f"unknown click type {kind!r}")
            customer = field_at(row, i_cust) or None
            anonymous = field_at(row, i_anon) or None
            if customer is None and anonymous is None:
                raise ValueError("missing customer_id and anonymous_id (one is required)")
            if customer is not None:
                check_id(customer, "customer_id")
            if anonymous is not None:
                check_id(anonymous, "anonymous_id")
            sku = field_at(row, i_sku) or None
            query = field_at(row, i_query) or None
            eid = field_at(row, i_eid) or event_id(source, "line", line)
            seen.check(check_id(eid, "event_id"), line)
            event = ClickEvent(
                event_id=eid,
                schema_version=1,
                session_id=session,
                event_time=when,
                type=kind,  # type: ignore[arg-type]
                customer_id=customer,
                anonymous_id=anonymous,
                sku=sku,
                query=query,
                category=field_at(row, i_cat) or None,
                device=field_at(row, i_dev) or None,
            )
        except ValueError as exc:
            stats.rejected += 1
            yield Reject(line, model_problem(exc), tuple(row))
            continue
        yield event


# -- jsonl -----------------------------------------------------------------------------------------


def read_jsonl(text: TextIO, stats: ReadStats) -> Iterator[Event | Reject]:
    for number, raw_line in enumerate(text, start=1):
        line = raw_line.strip()
        if not line:
            continue
        stats.rows += 1
        data = line.encode("utf-8")
        is_order = b'"order_id"' in data
        # a profile names no order, no session and no click type
        is_profile = not is_order and b'"session_id"' not in data and b'"type"' not in data
        try:
            event: Event
            if is_order:
                event = decode(OrderEvent, data)
            elif is_profile:
                event = decode(CustomerProfile, data)
            else:
                event = decode(ClickEvent, data)
        except SchemaError as exc:
            stats.rejected += 1
            kind = "OrderEvent" if is_order else "CustomerProfile" if is_profile else "ClickEvent"
            yield Reject(number, f"{kind}: {exc}", (line,))
            continue
        yield event


# -- online-retail (UCI) ---------------------------------------------------------------------------

RETAIL_REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")
RETAIL_OPTIONAL = ("Description", "Country")


@dataclass
class _Invoice:
    number: str
    first_line: int
    customer: str
    when: datetime
    #: (line, fields, sku, quantity, price)
    rows: list[tuple[int, tuple[str, ...], str, int, float]] = field(default_factory=list)
    bad_line: int = 0
    problem: str = ""


def parse_retail_date(text: str, day_first: bool = False) -> datetime:
    """``12/1/2010 8:26`` (month first unless ``day_first``) or ISO 8601, as UTC."""
    s = text.strip()
    if not s:
        raise ValueError("missing InvoiceDate")
    if "/" in s:
        date_part, _, time_part = s.partition(" ")
        try:
            a, b, y = (int(p) for p in date_part.split("/"))
            month, day = (b, a) if day_first else (a, b)
            hour, minute, second = 0, 0, 0
            if time_part:
                parts = [int(p) for p in time_part.split(":")]
                hour, minute = parts[0], parts[1]
                second = parts[2] if len(parts) > 2 else 0
            return datetime(y, month, day, hour, minute, second, tzinfo=UTC)
        except (ValueError, IndexError):
            order = "day/month/year" if day_first else "month/day/year"
            raise ValueError(f"unparsable InvoiceDate {s!r} (expected {order} H:MM)") from None
    return parse_ts(s)


def retail_customer_id(text: str) -> str:
    """``17850.0`` (a spreadsheet's float) and ``17850`` are the same customer."""
    s = text.strip()
    if s.endswith(".0") and s[:-2].isdigit():
        return s[:-2]
    return s


def read_online_retail(
    rows: Iterator[tuple[int, list[str]]],
    stats: ReadStats,
    source: str,
    column_map: Mapping[str, str],
    currency: str = "GBP",
    day_first: bool = False,
) -> Iterator[OrderEvent | Reject]:
    col, width = header_columns(rows, RETAIL_REQUIRED, RETAIL_OPTIONAL, column_map, "online-retail")
    i_inv, i_sku, i_qty, i_date, i_price, i_cust = (col[c] for c in RETAIL_REQUIRED)
    need = max(col.values()) + 1
    invoices: dict[str, _Invoice] = {}
    for line, row in rows:
        stats.rows += 1
        fields = tuple(row)
        try:
            if len(row) < need:
                raise ValueError(f"expected {width} columns, got {len(row)}")
            number = row[i_inv].strip()
            if not number:
                raise ValueError("missing InvoiceNo")
            customer = retail_customer_id(row[i_cust])
            if not customer:
                stats.unsent += 1
                yield Reject(line, "missing CustomerID: counted, not sent", fields, bad=False)
                continue
            invoice = invoices.get(number)
            if invoice is not None and invoice.customer and invoice.customer != customer:
                raise ValueError(
                    f"CustomerID {customer} differs from {invoice.customer} on line "
                    f"{invoice.first_line} of invoice {number}"
                )
            sku = check_id(row[i_sku].strip(), "StockCode")
            qty_value = _number(row[i_qty], "Quantity")
            if qty_value != int(qty_value):
                raise ValueError(f"Quantity {row[i_qty].strip()!r} is not a whole number")
            quantity = int(qty_value)
            credit = number[:1].upper() == "C"
            if quantity == 0:
                raise ValueError("Quantity is 0")
            if credit and quantity > 0:
                raise ValueError(f"positive Quantity {quantity} on credit note {number}")
            if not credit and quantity < 0:
                raise ValueError(
                    f"negative Quantity {quantity} on invoice {number}, which is not a credit "
                    "note (those start with C)"
                )
            price = _number(row[i_price], "UnitPrice")
            if price < 0:
                raise ValueError(f"negative UnitPrice {price}")
            when = parse_retail_date(row[i_date], day_first)
        except ValueError as exc:
            stats.rejected += 1
            yield Reject(line, str(exc), fields)
            number = row[i_inv].strip() if len(row) > i_inv else ""
            if number and number in invoices and not invoices[number].bad_line:
                invoices[number].bad_line = line
            elif number and number not in invoices:
                invoices[number] = _Invoice(number, line, "", datetime.min, bad_line=line)
            continue
        if invoice is None:
            invoice = invoices[number] = _Invoice(number, line, customer, when)
        elif not invoice.customer:  # only bad rows so far
            invoice.customer, invoice.when = customer, when
        invoice.when = min(invoice.when, when) if invoice.rows else when
        invoice.rows.append((line, fields, sku, abs(quantity), price))

    ordered = sorted(
        (inv for inv in invoices.values() if inv.rows), key=lambda v: (v.when, v.first_line)
    )
    for invoice in ordered:
        problem = ""
        if invoice.bad_line:
            problem = f"invoice {invoice.number} not sent: its line {invoice.bad_line} is bad"
        merged: dict[tuple[str, float], int] = {}
        for _, _, sku, quantity, price in invoice.rows:
            merged[(sku, price)] = merged.get((sku, price), 0) + quantity
        if not problem and len(merged) > MAX_ITEMS_PER_ORDER:
            problem = (
                f"invoice {invoice.number} has {len(merged)} distinct lines, more than "
                f"{MAX_ITEMS_PER_ORDER}"
            )
        event: OrderEvent | None = None
        if not problem:
            items = [LineItem(sku=s, quantity=q, unit_price=p) for (s, p), q in merged.items()]
            total = round(math.fsum(q * p for (_, p), q in merged.items()), 2)
            try:
                event = OrderEvent(
                    event_id=event_id(source, "invoice", invoice.number),
                    schema_version=1,
                    customer_id=invoice.customer,
                    order_id=invoice.number,
                    event_time=invoice.when,
                    status="returned" if invoice.number[:1].upper() == "C" else "placed",
                    items=items,
                    total=total,
                    currency=currency,
                )
            except ValueError as exc:
                problem = f"invoice {invoice.number} not sent: {model_problem(exc)}"
        if event is not None:
            yield event
            continue
        for line, fields, *_ in invoice.rows:
            stats.rejected += 1
            yield Reject(line, problem, fields)
