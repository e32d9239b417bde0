"""File readers: events, rejects with line numbers, deterministic ids, UCI invoice grouping."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.errors import SourceError
from producers.file_source import FileSource
from producers.readers import Reject, parse_map, parse_retail_date, parse_ts
from producers.run import RejectsWriter, pump
from producers.sinks import MemorySink
from schemas import ClickEvent, OrderEvent, decode_click, decode_order, encode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _read(path: Path, fmt: str, **kw: object) -> tuple[list[OrderEvent | ClickEvent], list[Reject]]:
    events: list[OrderEvent | ClickEvent] = []
    rejects: list[Reject] = []
    for item in FileSource(path, fmt, **kw):  # type: ignore[arg-type]
        (rejects if isinstance(item, Reject) else events).append(item)  # type: ignore[arg-type]
    return events, rejects


def test_orders_csv_events_and_fields() -> None:
    events, _ = _read(FIXTURES / "orders_small.csv", "orders-csv")
    assert [(e.customer_id, e.order_id, e.status) for e in events] == [
        ("C1", "O1", "placed"),
        ("C2", "O2", "placed"),
        ("C1", "O3", "placed"),
        ("C3", "O4", "placed"),
        ("C1", "O1", "returned"),
        ("C2", "O2", "cancelled"),
        ("C6", "O13", "placed"),
    ]
    by_order = {(e.order_id, e.status): e for e in events if isinstance(e, OrderEvent)}
    o2 = by_order[("O2", "placed")]
    assert o2.event_time == datetime(2024, 3, 1, 10, 30, tzinfo=UTC)  # +01:00 -> UTC
    assert o2.total == 100.0 and o2.currency == "EUR"  # empty currency -> default
    assert by_order[("O3", "placed")].event_time == datetime(2024, 3, 1, 17, 0, tzinfo=UTC)
    o4 = by_order[("O4", "placed")]
    assert o4.currency == "USD" and o4.event_time == datetime(2024, 3, 2, 9, 15, tzinfo=UTC)
    assert by_order[("O1", "returned")].total == 25.5
    for event in events:
        assert isinstance(event, OrderEvent)
        assert event.items[0].sku == "ORDER"
        assert decode_order(encode(event)) == event  # what we send is what the worker accepts


def test_orders_csv_every_bad_row_kind_is_rejected_with_its_line() -> None:
    _, rejects = _read(FIXTURES / "orders_small.csv", "orders-csv")
    reasons = {r.line: r.reason for r in rejects}
    assert sorted(reasons) == list(range(8, 18))
    assert "unparsable timestamp 'not-a-date'" in reasons[8]
    assert "non-numeric amount 'ten'" in reasons[9]
    assert reasons[10] == "missing customer_id"
    assert reasons[11] == "missing order_id"
    assert "negative amount -5.0 on a placed order" in reasons[12]
    assert "unknown status 'shipped'" in reasons[13]
    assert "currency 'EURO'" in reasons[14]
    assert "epoch milliseconds" in reasons[15]
    assert reasons[16] == "expected 6 columns, got 3"
    assert reasons[17].startswith("duplicate of line 4")


def test_same_file_same_ids_and_ids_depend_on_the_source_name(tmp_path: Path) -> None:
    first, _ = _read(FIXTURES / "orders_small.csv", "orders-csv")
    again, _ = _read(FIXTURES / "orders_small.csv", "orders-csv")
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert len({e.event_id for e in first}) == len(first)
    copy = tmp_path / "orders_small.csv"
    copy.write_bytes((FIXTURES / "orders_small.csv").read_bytes())
    moved, _ = _read(copy, "orders-csv")
    assert [e.event_id for e in moved] == [e.event_id for e in first]  # the name, not the path
    other, _ = _read(FIXTURES / "orders_small.csv", "orders-csv", source_name="crm-export")
    assert not {e.event_id for e in other} & {e.event_id for e in first}


def test_map_renames_columns(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Kunde,Bestellung,Datum,Betrag\nK1,B1,2024-01-05T10:00:00Z,19.99\n")
    mapping = parse_map(["customer_id=Kunde", "order_id=Bestellung", "ts=Datum", "amount=Betrag"])
    events, rejects = _read(path, "orders-csv", column_map=mapping)
    assert rejects == []
    assert [(e.customer_id, e.order_id, e.total) for e in events] == [("K1", "B1", 19.99)]  # type: ignore[union-attr]
    with pytest.raises(SourceError, match="missing column"):
        _read(path, "orders-csv")
    with pytest.raises(SourceError, match="unknown column"):
        _read(path, "orders-csv", column_map={"nope": "x"})
    with pytest.raises(SourceError, match="COLUMN=SOURCE"):
        parse_map(["customer_id"])


def test_items_column_sets_the_quantity(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("customer_id,order_id,ts,amount,items\nC1,O1,2024-01-05T10:00:00Z,10.00,3\n")
    (event,), _ = _read(path, "orders-csv")
    assert isinstance(event, OrderEvent)
    assert event.item_count == 3 and event.total == 10.0


def test_online_retail_groups_invoices_and_handles_credit_notes() -> None:
    source = FileSource(FIXTURES / "online_retail_small.csv", "online-retail")
    items = list(source)
    events = [i for i in items if isinstance(i, OrderEvent)]
    rejects = [i for i in items if isinstance(i, Reject)]
    got = {e.order_id: e for e in events}
    assert list(got) == ["536365", "536366", "536367", "C536379", "C536383", "536394"]
    inv = got["536365"]
    assert inv.customer_id == "17850" and inv.status == "placed" and inv.currency == "GBP"
    assert inv.event_time == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    assert [(i.sku, i.quantity, i.unit_price) for i in inv.items] == [
        ("85123A", 6, 2.55), ("71053", 6, 3.39), ("84406B", 8, 2.75),
    ]  # fmt: skip
    assert inv.total == 57.64
    assert got["536366"].customer_id == "17850"  # "17850.0" is the same customer
    merged = got["536367"]
    assert [(i.sku, i.quantity) for i in merged.items] == [("84879", 32), ("22745", 8)]
    assert merged.total == 70.88
    credit = got["C536379"]
    assert credit.status == "returned" and credit.total == 27.5
    assert [(i.sku, i.quantity) for i in credit.items] == [("D", 1)]  # absolute quantity
    assert got["C536383"].total == 4.65
    assert len({e.event_id for e in events}) == len(events)

    unsent = {r.line: r.reason for r in rejects if not r.bad}
    assert sorted(unsent) == [9, 12] and all("missing CustomerID" in r for r in unsent.values())
    bad = {r.line: r.reason for r in rejects if r.bad}
    assert sorted(bad) == [13, 14, 15, 16, 17]
    assert bad[13] == "invoice 536390 not sent: its line 14 is bad"
    assert "non-numeric Quantity 'abc'" in bad[14]
    assert "unparsable InvoiceDate '13/13/2010 10:19'" in bad[15]
    assert "negative Quantity -4 on invoice 536392" in bad[16]
    assert "positive Quantity 3 on credit note C536393" in bad[17]
    assert (source.stats.rows, source.stats.rejected, source.stats.unsent) == (17, 5, 2)


def test_online_retail_dates() -> None:
    assert parse_retail_date("12/1/2010 8:26") == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    assert parse_retail_date("1/12/2010 8:26", day_first=True) == datetime(
        2010, 12, 1, 8, 26, tzinfo=UTC
    )
    assert parse_retail_date("2010-12-01 08:26:00") == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    with pytest.raises(ValueError, match="month/day/year"):
        parse_retail_date("31/12/2010 8:26")


def test_parse_ts_forms() -> None:
    assert parse_ts("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_ts("2024-01-01") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_ts("1704067200") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_ts("1704067200.5") == datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    for bad in ("", "nan", "yesterday", "1704067200000"):
        with pytest.raises(ValueError):
            parse_ts(bad)


def test_clicks_csv() -> None:
    events, rejects = _read(FIXTURES / "clicks_small.csv", "clicks-csv")
    assert [(e.session_id, e.type) for e in events] == [  # type: ignore[union-attr]
        ("S1", "page_view"), ("S1", "product_view"), ("S1", "add_to_cart"), ("S2", "search"),
    ]  # fmt: skip
    search = events[3]
    assert isinstance(search, ClickEvent)
    assert search.anonymous_id == "A-77" and search.customer_id is None
    assert search.query == "red shoes"
    for event in events:
        assert decode_click(encode(event)) == event
    reasons = {r.line: r.reason for r in rejects}
    assert sorted(reasons) == [6, 7, 8]
    assert "unknown click type 'teleport'" in reasons[6]
    assert "missing customer_id and anonymous_id" in reasons[7]
    assert reasons[8] == "sku: is required for a product_view event"


def test_jsonl_keeps_ids_and_rejects_bad_lines(tmp_path: Path) -> None:
    orders, _ = _read(FIXTURES / "orders_small.csv", "orders-csv")
    clicks, _ = _read(FIXTURES / "clicks_small.csv", "clicks-csv")
    path = tmp_path / "events.jsonl"
    lines = [encode(e).decode() for e in orders[:2] + clicks[:2]]
    lines.insert(1, '{"event_id": "x", "order_id": "O", "schema_version": 1}')
    lines.insert(3, "not json")
    path.write_text("\n".join(lines) + "\n\n")
    events, rejects = _read(path, "jsonl")
    assert events == orders[:2] + clicks[:2]
    assert [r.line for r in rejects] == [2, 4]
    assert "missing required field" in rejects[0].reason
    assert "not JSON" in rejects[1].reason


def test_errors_for_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        FileSource(tmp_path / "missing.csv", "orders-csv")
    with pytest.raises(SourceError, match="unknown format"):
        FileSource(FIXTURES / "orders_small.csv", "xml")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="empty file"):
        list(FileSource(empty, "orders-csv"))


def test_pump_sends_events_keyed_by_customer_and_writes_rejects(tmp_path: Path) -> None:
    source = FileSource(FIXTURES / "orders_small.csv", "orders-csv")
    sink = MemorySink()
    rejects_path = tmp_path / "rejects.csv"
    summary = pump(
        source, sink, source="orders_small.csv", rejects=RejectsWriter(rejects_path),
        progress=False,
    )  # fmt: skip
    assert summary.events_sent == summary.delivered == 7
    assert summary.rejected == 10 and summary.rows_read == 17 and summary.failed == 0
    assert [(kind, key) for kind, key, _ in sink.records][:2] == [
        ("order", b"C1"),
        ("order", b"C2"),
    ]
    with rejects_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["line"]) for r in rows] == list(range(8, 18))
    assert rows[0]["row"] == "C4,O5,not-a-date,10.00,EUR,placed"
    text = "\n".join(summary.lines())
    assert "rows rejected 10" in text and "events/s" in text


def test_category_and_device_columns_pass_through_and_bad_ones_are_rejected(
    tmp_path: Path,
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "customer_id,order_id,ts,amount,category\n"
        "C1,O1,2025-01-02T10:00:00Z,10.50,books\n"
        "C1,O2,2025-01-03T10:00:00Z,4.00,\n"
        "C1,O3,2025-01-04T10:00:00Z,4.00,a=b\n"
    )
    events, rejects = _read(orders, "orders-csv")
    assert [e.items[0].category for e in events] == ["books", None]  # type: ignore[union-attr]
    assert [(r.line, r.reason) for r in rejects] == [
        (4, "items[0].category: must be 1 to 32 characters without '=' or ',', got 'a=b'")
    ]
    clicks = tmp_path / "clicks.csv"
    clicks.write_text(
        "session_id,ts,type,customer_id,sku,device,category\n"
        "S1,2025-01-02T10:00:00Z,product_view,C1,SKU-1,mobile,books\n"
        "S1,2025-01-02T10:01:00Z,page_view,C1,,,\n"
        f"S1,2025-01-02T10:02:00Z,page_view,C1,,{'d' * 33},\n"
    )
    events, rejects = _read(clicks, "clicks-csv")
    assert [(e.category, e.device) for e in events] == [("books", "mobile"), (None, None)]  # type: ignore[union-attr]
    assert [r.line for r in rejects] == [4] and rejects[0].reason.startswith("device: must be")
    for event in events:
        assert decode_click(encode(event)) == event


def test_clicks_csv_reads_identify_clicks_that_name_both_ids(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text(
        "session_id,ts,type,customer_id,anonymous_id\n"
        "S1,2024-01-01T00:00:00Z,identify,C1,A-1\n"
        "S2,2024-01-01T00:00:00Z,identify,,A-2\n"
    )
    events, rejects = _read(path, "clicks-csv")
    assert [(e.type, e.customer_id, e.anonymous_id) for e in events] == [  # type: ignore[union-attr]
        ("identify", "C1", "A-1")
    ]
    assert len(rejects) == 1 and "customer_id" in rejects[0].reason
