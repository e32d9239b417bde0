"""The checked-in JSON Schema files match the models, and the generator's --check mode works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from schemas import ClickEvent, OrderEvent
from schemas.events import MAX_ORDER_TOTAL, MAX_QUANTITY, SKU_CLICK_TYPES, ClickType
from schemas.jsonschema import (
    CONTRACTS,
    DIALECT,
    GENERATOR,
    SCHEMA_DIR,
    file_name,
    main,
    stale_files,
    write_files,
)


def test_checked_in_files_are_current() -> None:
    stale = stale_files()
    assert stale == [], (
        f"JSON Schema files out of date with schemas/events.py: {', '.join(stale)}. "
        f"Run `{GENERATOR}` and commit the result."
    )


def test_one_file_per_event() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        [
            "campaign_assignment.v1.schema.json",
            "click.v1.schema.json",
            "dead_letter.v1.schema.json",
            "erase_request.v1.schema.json",
            "order.v1.schema.json",
            "profile.v1.schema.json",
            "segment_change.v1.schema.json",
        ]
    )


def test_check_mode_lists_stale_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    order_file = tmp_path / "order.v1.schema.json"
    order_file.write_text(order_file.read_text().replace("placed", "shipped"))
    (tmp_path / "click.v1.schema.json").unlink()
    capsys.readouterr()

    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"stale: {tmp_path / 'order.v1.schema.json'}" in err
    assert f"stale: {tmp_path / 'click.v1.schema.json'}" in err
    assert "dead_letter" not in err and f"`{GENERATOR}`" in err

    assert write_files(tmp_path) == ["order.v1.schema.json", "click.v1.schema.json"]
    assert main(["--check", "--dir", str(tmp_path)]) == 0


def _definition(stem: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for name, version, model in CONTRACTS:
        if name == stem:
            document = json.loads((SCHEMA_DIR / file_name(name, version)).read_text())
            return document, document["$defs"][model.__name__]
    raise AssertionError(stem)


@pytest.mark.parametrize("stem", [stem for stem, _, _ in CONTRACTS])
def test_files_describe_the_models(stem: str) -> None:
    document, definition = _definition(stem)
    model = next(model for name, _, model in CONTRACTS if name == stem)
    assert document["$schema"] == DIALECT
    assert document["$ref"] == f"#/$defs/{model.__name__}"
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = info.fields
    assert list(definition["properties"]) == [f.encode_name for f in fields]
    assert definition["required"] == [f.encode_name for f in fields if f.required]
    assert definition["properties"]["schema_version"]["enum"] == [1]
    assert definition["description"]


def test_order_schema_states_what_json_schema_cannot_check() -> None:
    _, order = _definition("order")
    total = order["properties"]["total"]
    assert total["minimum"] == 0 and total["maximum"] == MAX_ORDER_TOTAL
    assert "not expressible in JSON Schema" in total["description"]
    assert "within 0.01" in total["description"]
    assert "not more than 24h after" in order["properties"]["event_time"]["description"]
    assert order["properties"]["event_time"]["format"] == "date-time"
    assert order["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert order["properties"]["items"]["minItems"] == 1
    document, _ = _definition("order")
    item = document["$defs"]["LineItem"]["properties"]
    assert item["quantity"]["minimum"] == 1 and item["quantity"]["maximum"] == MAX_QUANTITY
    assert item["unit_price"]["minimum"] == 0
    assert OrderEvent.__name__ in document["$defs"]


def test_click_schema_expresses_its_cross_field_rules() -> None:
    _, click = _definition("click")
    assert click["anyOf"] == [
        {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
        {"required": ["anonymous_id"], "properties": {"anonymous_id": {"type": "string"}}},
    ]
    assert click["if"]["properties"]["type"]["enum"] == sorted(SKU_CLICK_TYPES)
    assert click["then"]["required"] == ["sku"]
    assert click["properties"]["type"]["enum"] == sorted(get_args(ClickType))
    assert ClickEvent.__name__ == click["title"]


def test_dead_letter_schema_says_original_is_base64() -> None:
    _, letter = _definition("dead_letter")
    assert letter["properties"]["original"]["contentEncoding"] == "base64"
