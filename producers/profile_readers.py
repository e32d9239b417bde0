"""File readers that produce customer profiles (:class:`schemas.CustomerProfile`).

``customers-csv``
    ``customer_id`` plus any of ``event_time,country,region,birth_year,gender,signup_channel,
    loyalty_tier,marketing_consent,event_id``. One row is one profile update: an empty cell (or
    a column the file lacks) changes nothing, the cell ``null`` clears the attribute, anything
    else sets it. ``country`` is an ISO 3166-1 alpha-2 code or an English name
    (:mod:`producers.countries`); ``marketing_consent`` is true/false, yes/no, y/n or 1/0;
    ``event_time`` is ISO 8601 (no offset = UTC) or epoch seconds. A row without an
    ``event_time`` is stamped with the **file's modification time**, not the time of the
    replay: replaying the same file again then gives the same events (same ids, same times),
    and an old file replayed late cannot win over updates made since it was written.
    Event ids: the ``event_id`` column, else derived from the source name and the line.
``online-retail`` (profiles)
    Beside its orders, the UCI file gives one profile per customer: their ``Country``
    (English names, :func:`producers.countries.country_code`: "EIRE" is IE, "Channel Islands",
    "European Community" and "Unspecified" give a profile without a country), stamped with
    their first invoice's time. Rows the order reader rejects are skipped here (they are
    reported once, there); a name that is no country rejects that customer's profile, saying so.

Every bad row becomes a :class:`~producers.readers.Reject` with its line and reason, as in the
other readers. No network I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producers.countries import UnknownCountry, country_code
from producers.ids import event_id
from producers.readers import (
    ReadStats,
    Reject,
    SeenIds,
    check_id,
    field_at,
    header_columns,
    model_problem,
    parse_retail_date,
    parse_ts,
    retail_customer_id,
)
from schemas import CustomerProfile

__all__ = ["CUSTOMER_OPTIONAL", "CUSTOMER_REQUIRED", "read_customers_csv", "read_retail_profiles"]

CUSTOMER_REQUIRED = ("customer_id",)
CUSTOMER_OPTIONAL = (
    "event_time",
    "country",
    "region",
    "birth_year",
    "gender",
    "signup_channel",
    "loyalty_tier",
    "marketing_consent",
    "event_id",
)
#: The cell that clears an attribute (an empty cell changes nothing).
CLEAR = "null"
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_TEXT = ("region", "gender", "signup_channel", "loyalty_tier")


def _consent(text: str) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"marketing_consent {text!r} is not true/false, yes/no or 1/0")


def _year(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"birth_year {text!r} is not a whole number") from None


def read_customers_csv(
    rows: Iterator[tuple[int, list[str]]],
    stats: ReadStats,
    source: str,
    column_map: Mapping[str, str],
    default_time: datetime,
) -> Iterator[CustomerProfile | Reject]:
    """Profiles from a ``customers-csv`` file; ``default_time`` stamps rows without a time."""
    col, width = header_columns(
        rows, CUSTOMER_REQUIRED, CUSTOMER_OPTIONAL, column_map, "customers-csv"
    )
    need = max(col.values()) + 1
    seen = SeenIds()
    for line, row in rows:
        stats.rows += 1
        try:
            if len(row) < need:
                raise ValueError(f"expected {width} columns, got {len(row)}")
            customer = check_id(row[col["customer_id"]].strip(), "customer_id")
            ts = field_at(row, col["event_time"])
            when = parse_ts(ts) if ts else default_time
            values: dict[str, Any] = {}
            parsers: list[tuple[str, Callable[[str], Any]]] = [
                ("country", country_code),
                ("birth_year", _year),
                ("marketing_consent", _consent),
                *((name, str) for name in _TEXT),
            ]
            for name, parse in parsers:
                cell = field_at(row, col[name])
                if cell:
                    values[name] = None if cell.lower() == CLEAR else parse(cell)
            if "country" in values and values["country"] is None:
                cell = field_at(row, col["country"])
                if cell.lower() != CLEAR:  # a name standing for no single country
                    raise ValueError(f"Country {cell!r} names no single country; use null")
            eid = field_at(row, col["event_id"]) or event_id(source, "profile", line)
            seen.check(check_id(eid, "event_id"), line)
            profile = CustomerProfile(
                event_id=eid, schema_version=1, customer_id=customer, event_time=when, **values
            )
        except ValueError as exc:
            stats.rejected += 1
            yield Reject(line, model_problem(exc), tuple(row))
            continue
        yield profile


@dataclass
class _First:
    line: int
    when: datetime
    country: str
    fields: tuple[str, ...]


def read_retail_profiles(
    rows: Iterator[tuple[int, list[str]]],
    stats: ReadStats,
    source: str,
    column_map: Mapping[str, str],
    day_first: bool = False,
) -> Iterator[CustomerProfile | Reject]:
    """One profile per customer of an Online Retail file (see the module docstring), in time
    order. ``stats`` counts the profiles' rejects only (the rows are the order reader's)."""
    required = ("InvoiceDate", "CustomerID")
    mine = {k: v for k, v in column_map.items() if k in (*required, "Country")}
    col, _ = header_columns(rows, required, ("Country",), mine, "online-retail")
    first: dict[str, _First] = {}
    for line, row in rows:
        try:
            customer = retail_customer_id(row[col["CustomerID"]])
            if not customer or len(customer) > 128:
                continue
            when = parse_retail_date(row[col["InvoiceDate"]], day_first)
        except (ValueError, IndexError):
            continue  # the order reader reports this row
        known = first.get(customer)
        if known is None or when < known.when:
            first[customer] = _First(line, when, field_at(row, col["Country"]), tuple(row))
    for customer, f in sorted(first.items(), key=lambda item: (item[1].when, item[1].line)):
        try:
            code = country_code(f.country)
            values: dict[str, Any] = {} if code is None else {"country": code}
            profile = CustomerProfile(
                event_id=event_id(source, "profile", customer), schema_version=1,
                customer_id=customer, event_time=f.when, **values,
            )  # fmt: skip
        except (UnknownCountry, ValueError) as exc:
            stats.rejected += 1
            reason = f"{model_problem(exc)}: the profile of customer {customer} is not sent"
            yield Reject(f.line, reason, f.fields)
            continue
        yield profile
