"""Export/customer rendering without Redis: as-of parsing, CSV and JSON lines, help text."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from segstream.cli import main
from segstream.errors import ConfigError
from worker.core import EXPORT_COLUMNS, CustomerState
from worker.reads import (
    COLUMNS,
    SEGMENT_COLUMNS,
    parse_as_of,
    render_customer,
    rows,
    write_csv,
    write_jsonl,
)

T = datetime(2024, 3, 1, tzinfo=UTC)
MS = int(T.timestamp() * 1000)
STATES = [
    CustomerState("C1", frequency=2, monetary_cents=2550, items=3, first_order_ms=MS,
                  last_order_ms=MS + 86_400_000, last_seen_ms=MS + 86_400_000, sessions=1,
                  page_views=2, segment="loyal", model_version="km-3", segment_seq=4),
    CustomerState("C,2", page_views=1, sessions=1, last_seen_ms=MS),  # no orders, comma in id
]  # fmt: skip


def test_parse_as_of() -> None:
    assert parse_as_of("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_as_of("2024-05-01T14:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_as_of("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_as_of(None, now=T) == T and parse_as_of("now", now=T) == T
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_as_of("yesterday")


def test_export_columns_are_the_feature_contract_then_the_segment() -> None:
    assert (*EXPORT_COLUMNS, "segment", "model_version", "segment_seq") == COLUMNS
    assert COLUMNS[-3:] == SEGMENT_COLUMNS


def test_csv_has_the_contract_columns_and_empty_cells_for_no_orders() -> None:
    buf = io.StringIO()
    assert write_csv(rows(STATES, T + timedelta(days=3)), buf) == 2
    parsed = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert tuple(parsed[0]) == COLUMNS
    assert buf.getvalue().splitlines()[0] == ",".join(COLUMNS)
    assert parsed[0]["monetary"] == "25.5" and parsed[0]["aov"] == "12.75"
    assert float(parsed[0]["recency_days"]) == pytest.approx(2.0)
    assert parsed[0]["last_order_ts"] == "2024-03-02T00:00:00.000+00:00"
    assert parsed[1]["customer_id"] == "C,2" and parsed[1]["first_order_ts"] == ""
    assert parsed[1]["recency_days"] == "" and parsed[1]["frequency"] == "0"
    scored = {k: parsed[0][k] for k in SEGMENT_COLUMNS}
    assert scored == {"segment": "loyal", "model_version": "km-3", "segment_seq": "4"}
    never_scored = {k: parsed[1][k] for k in SEGMENT_COLUMNS}
    assert never_scored == {"segment": "", "model_version": "", "segment_seq": ""}


def test_jsonl_is_one_object_per_line() -> None:
    buf = io.StringIO()
    assert write_jsonl(rows(STATES, T), buf) == 2
    lines = buf.getvalue().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [tuple(o) for o in objs] == [COLUMNS] * 2
    assert objs[1]["tenure_days"] is None and objs[0]["tenure_days"] == 0.0
    assert [o["segment"] for o in objs] == ["loyal", None]
    assert [o["model_version"] for o in objs] == ["km-3", None]
    assert [o["segment_seq"] for o in objs] == [4, None]


def test_render_customer_table_and_json() -> None:
    table = render_customer(STATES[0], T + timedelta(days=10), as_json=False)
    assert "segment" in table and "loyal" in table and "recency_days" in table
    assert "9.0000" in table
    obj = json.loads(render_customer(STATES[0], T, as_json=True))
    assert obj["segment"] == "loyal" and obj["model_version"] == "km-3"
    assert obj["segment_seq"] == 4
    assert obj["as_of"].startswith("2024-03-01T00:00:00")


@pytest.mark.parametrize("command", ["customer", "export"])
def test_every_flag_shows_its_environment_variable(command: str) -> None:
    out = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    assert "SEGSTREAM_AS_OF" in out and "SEGSTREAM_REDIS_URL" in out
    if command == "export":
        assert "SEGSTREAM_EXPORT_FORMAT" in out and "SEGSTREAM_EXPORT_OUT" in out
    else:
        assert "SEGSTREAM_JSON" in out
