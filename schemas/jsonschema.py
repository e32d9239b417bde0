"""JSON Schema files for the event contracts, generated from the models in :mod:`schemas.events`.

``python -m schemas.jsonschema`` writes ``schemas/json/<event>.v<version>.schema.json``;
``python -m schemas.jsonschema --check`` writes nothing and exits 1 listing the files that are
missing or differ from what the models generate (a unit test runs the same check).

The files are for consumers in other languages. JSON Schema (2020-12) expresses the types,
required fields, enumerations, lengths, numeric bounds, the known ``schema_version`` and, for
clicks, "customer_id or anonymous_id" and "these types need a sku". It cannot express that an
order's ``total`` equals the sum of its items within a cent, nor the event-time bounds relative
to the current time: those are stated in ``description``s and enforced by :mod:`schemas.codec`.
A record valid against a file can therefore still be rejected by the decoder; the reverse
cannot happen.

This module only reads the models and, when asked, writes those files; it imports no broker or
store client.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from schemas.campaign import CAMPAIGN_SCHEMA_VERSIONS, CampaignAssignment
from schemas.erase import ERASE_SCHEMA_VERSIONS, EraseRequest
from schemas.events import (
    CLICK_SCHEMA_VERSIONS,
    CURRENT_SCHEMA_VERSION,
    ORDER_SCHEMA_VERSIONS,
    SKU_CLICK_TYPES,
    ClickEvent,
    DeadLetter,
    OrderEvent,
    SegmentChange,
)
from schemas.profile import PROFILE_SCHEMA_VERSIONS, CustomerProfile

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
GENERATOR = "python -m schemas.jsonschema"

#: (file stem, version, model): one file per event and version.
CONTRACTS: tuple[tuple[str, int, type[Any]], ...] = (
    ("order", max(ORDER_SCHEMA_VERSIONS), OrderEvent),
    ("click", max(CLICK_SCHEMA_VERSIONS), ClickEvent),
    ("profile", max(PROFILE_SCHEMA_VERSIONS), CustomerProfile),
    ("segment_change", CURRENT_SCHEMA_VERSION, SegmentChange),
    ("dead_letter", CURRENT_SCHEMA_VERSION, DeadLetter),
    ("erase_request", max(ERASE_SCHEMA_VERSIONS), EraseRequest),
    ("campaign_assignment", max(CAMPAIGN_SCHEMA_VERSIONS), CampaignAssignment),
)

#: The cross-field rules JSON Schema can express, added to the model's definition. The rest
#: (order total vs items, time bounds) is in the descriptions.
_RULES: dict[type[Any], dict[str, Any]] = {
    ClickEvent: {
        "anyOf": [
            {"required": ["customer_id"], "properties": {"customer_id": {"type": "string"}}},
            {"required": ["anonymous_id"], "properties": {"anonymous_id": {"type": "string"}}},
        ],
        "if": {
            "required": ["type"],
            "properties": {"type": {"enum": sorted(SKU_CLICK_TYPES)}},
        },
        "then": {"required": ["sku"], "properties": {"sku": {"type": "string"}}},
    },
}


def file_name(stem: str, version: int) -> str:
    return f"{stem}.v{version}.schema.json"


def _tidy(text: str) -> str:
    # Docstrings become descriptions: dedent them and drop reST's doubled backquotes.
    return inspect.cleandoc(text).replace("``", "`")


def build(model: type[Any]) -> dict[str, Any]:
    """The JSON Schema document for one event model."""
    generated = msgspec.json.schema(model)
    defs: dict[str, dict[str, Any]] = generated["$defs"]
    for definition in defs.values():
        if "description" in definition:
            definition["description"] = _tidy(definition["description"])
    defs[model.__name__].update(_RULES.get(model, {}))
    return {
        "$schema": DIALECT,
        "$comment": f"Generated from schemas/events.py by `{GENERATOR}`; do not edit by hand.",
        "title": model.__name__,
        **generated,
    }


def render(model: type[Any]) -> str:
    return json.dumps(build(model), indent=2, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> the exact text the models generate."""
    return {file_name(stem, version): render(model) for stem, version, model in CONTRACTS}


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the files under ``directory`` that are missing or differ from the models."""
    stale = []
    for name, text in expected_files().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every file that is missing or stale; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = stale_files(directory)
    texts = expected_files()
    for name in written:
        (directory / name).write_text(texts[name], encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=GENERATOR, description="Generate the event contracts' JSON Schema files."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale or missing"
    )
    parser.add_argument(
        "--dir", type=Path, default=SCHEMA_DIR, help=f"output directory (default: {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"stale: {args.dir / name}", file=sys.stderr)
        if stale:
            print(f"regenerate with `{GENERATOR}` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(CONTRACTS)} JSON Schema files in {args.dir} are up to date")
        return 0
    written = write_files(args.dir)
    for name in written:
        print(f"wrote {args.dir / name}")
    if not written:
        print(f"{len(CONTRACTS)} JSON Schema files in {args.dir} were already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
