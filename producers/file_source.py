"""A replay file as events and :class:`~producers.readers.Reject` rows: the reader its format names.

The formats are described in :mod:`producers.readers` (orders, clicks, online-retail, jsonl) and
:mod:`producers.profile_readers` (customer profiles).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from producers.errors import SourceError
from producers.profile_readers import read_customers_csv, read_retail_profiles
from producers.readers import (
    Event,
    ReadStats,
    Reject,
    csv_rows,
    read_clicks_csv,
    read_jsonl,
    read_online_retail,
    read_orders_csv,
)
from schemas import CustomerProfile

__all__ = ["FORMATS", "FileSource"]

FORMATS = ("orders-csv", "clicks-csv", "online-retail", "jsonl", "customers-csv")


class FileSource:
    """Iterate a file as events and rejects; ``stats`` is complete once iteration ends."""

    def __init__(
        self,
        path: str | Path,
        fmt: str,
        *,
        column_map: Mapping[str, str] | None = None,
        source_name: str | None = None,
        currency: str | None = None,
        day_first: bool = False,
        profiles: bool = True,
    ) -> None:
        """``profiles``: online-retail also yields one profile per customer."""
        if fmt not in FORMATS:
            raise SourceError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file")
        self.format = fmt
        self.column_map = dict(column_map or {})
        self.name = source_name or self.path.name
        self.currency = currency
        self.day_first = day_first
        self.profiles = profiles
        self.stats = ReadStats()

    def _text(self) -> TextIO:
        """The file as text, as every pass reads it (a BOM dropped, undecodable bytes replaced)."""
        return self.path.open("r", newline="", encoding="utf-8-sig", errors="replace")

    def count_rows(self) -> int:
        """Rough number of rows (newlines minus the header), for a progress bar's total."""
        lines = 0
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                lines += chunk.count(b"\n")
        return max(lines - (0 if self.format == "jsonl" else 1), 0)

    def __iter__(self) -> Iterator[Event | Reject]:
        with self._text() as text:
            if self.format == "jsonl":
                yield from read_jsonl(text, self.stats)
                return
            rows = csv_rows(text)
            if self.format == "orders-csv":
                yield from read_orders_csv(
                    rows, self.stats, self.name, self.column_map, self.currency or "EUR"
                )
            elif self.format == "clicks-csv":
                yield from read_clicks_csv(rows, self.stats, self.name, self.column_map)
            elif self.format == "customers-csv":
                mtime = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
                yield from read_customers_csv(rows, self.stats, self.name, self.column_map, mtime)
            else:
                yield from read_online_retail(
                    rows, self.stats, self.name, self.column_map,
                    self.currency or "GBP", self.day_first,
                )  # fmt: skip
                if self.profiles:
                    yield from self._retail_profiles()

    def _retail_profiles(self) -> Iterator[CustomerProfile | Reject]:
        """Online Retail's one profile per customer (a second pass over the file)."""
        with self._text() as text:
            yield from read_retail_profiles(
                csv_rows(text), self.stats, self.name, self.column_map, self.day_first
            )
