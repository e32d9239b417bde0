"""The reader process yields exactly what the in-process reader does, and reports its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.errors import SourceError
from producers.file_source import FileSource
from producers.parallel import ParallelFileSource
from producers.readers import Reject
from producers.run import RejectsWriter, pump_chunks
from schemas import encode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def send_encoded(self, kind: str, key: bytes, value: bytes) -> None:
        self.records.append((kind, key, value))

    def close(self) -> object:
        from producers.sinks import SinkResult

        return SinkResult(sent=len(self.records))


@pytest.mark.parametrize(
    "name, fmt",
    [("orders_small.csv", "orders-csv"), ("online_retail_small.csv", "online-retail"),
     ("clicks_small.csv", "clicks-csv")],
)  # fmt: skip
def test_same_records_and_rejects_as_in_process(name: str, fmt: str, tmp_path: Path) -> None:
    items = list(FileSource(FIXTURES / name, fmt))
    expected = [
        (i.kind, (i.customer_id or getattr(i, "anonymous_id", None) or "").encode(), encode(i))
        for i in items
        if not isinstance(i, Reject)
    ]
    source = ParallelFileSource(FIXTURES / name, fmt)
    sink = RecordingSink()
    rejects = RejectsWriter(tmp_path / "r.csv")
    summary = pump_chunks(source.chunks(), sink, source=name, rejects=rejects, progress=False)
    assert sink.records == expected
    bad = [i for i in items if isinstance(i, Reject) and i.bad]
    assert summary.rejected == len(bad) and summary.delivered == len(expected)
    assert source.stats.rows == sum(1 for _ in (FIXTURES / name).open()) - 1
    assert len((tmp_path / "r.csv").read_text().splitlines()) > len(bad)


def test_errors_in_the_reader_process_surface_in_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="missing column"):
        list(ParallelFileSource(path, "orders-csv").chunks())
    with pytest.raises(SourceError, match="no such file"):
        ParallelFileSource(tmp_path / "none.csv", "orders-csv")
