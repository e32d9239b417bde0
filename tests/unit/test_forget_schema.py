"""Erase requests: what decodes, what is refused and why (the reason a dead letter carries)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.erase import (
    EraseRequest,
    decode_erase_request,
    encode_erase_request,
    erase_request,
)
from schemas.errors import SchemaError
from schemas.jsonschema import SCHEMA_DIR, render

CID = "CUST-4711"
WHEN = "2026-12-01T10:00:00Z"


def value(**fields: object) -> bytes:
    body: dict[str, object] = {"schema_version": 1, "customer_id": CID, "requested_at": WHEN}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_well_formed_request_decodes_with_its_key() -> None:
    got = decode_erase_request(CID.encode(), value(request_id="R-1"))
    assert got == EraseRequest(
        schema_version=1,
        customer_id=CID,
        requested_at=datetime(2026, 12, 1, 10, tzinfo=UTC),
        request_id="R-1",
    )


def test_an_encoded_request_decodes_back_to_itself() -> None:
    request = erase_request(CID, datetime(2026, 12, 1, tzinfo=UTC))
    assert decode_erase_request(CID.encode(), encode_erase_request(request)) == request


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        (CID.encode(), None, "$: null value"),
        (CID.encode(), b"not json", "$: not JSON"),
        (CID.encode(), b"[]", "$: wrong type: expected object, got array"),
        (CID.encode(), value(schema_version=2), "$.schema_version: unknown schema_version 2"),
        (CID.encode(), value(customer_id=...), "$.customer_id: missing required field"),
        (CID.encode(), value(customer_id=""), "$.customer_id: invalid value"),
        (CID.encode(), value(customer_id=7), "$.customer_id: wrong type"),
        (CID.encode(), value(requested_at="yesterday"), "$.requested_at: unparsable timestamp"),
        (CID.encode(), value(requested_at="2026-12-01T10:00:00"), "$.requested_at: must carry"),
        (None, value(), "$: missing key"),
        (b"", value(), "$: missing key"),
        (b"\xff\xfe", value(), "$: the record's key is not UTF-8"),
        (b"SOMEONE-ELSE", value(), "$.customer_id: differs from the record's key"),
        (CID.encode(), b"x" * 5000, "$: oversize: 5000 bytes"),
        (CID.encode(), b"[" * 40 + b"]" * 40, "$: nested too deeply"),
    ],
)
def test_a_malformed_request_is_refused_with_a_reason_that_does_not_name_the_customer(
    key: bytes | None, raw: bytes | None, reason: str
) -> None:
    with pytest.raises(SchemaError) as refused:
        decode_erase_request(key, raw)
    assert str(refused.value).startswith(reason)
    assert CID not in str(refused.value)


def test_the_checked_in_json_schema_is_the_one_the_model_generates() -> None:
    path = SCHEMA_DIR / "erase_request.v1.schema.json"
    assert path.read_text(encoding="utf-8") == render(EraseRequest)
    schema = json.loads(path.read_text())
    assert schema["$defs"]["EraseRequest"]["required"] == [
        "schema_version",
        "customer_id",
        "requested_at",
    ]
