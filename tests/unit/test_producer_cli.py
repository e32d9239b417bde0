"""The producer CLI without a broker: registration, usage errors, files out and back in."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from producers.cli import _finish
from producers.errors import DeliveryError
from producers.file_source import FileSource
from producers.readers import Reject
from producers.run import Summary
from segstream.cli import main


def test_commands_are_registered_and_every_flag_names_its_env_var() -> None:
    import click

    runner = CliRunner()
    for path in (["produce", "synthetic"], ["replay"]):
        result = runner.invoke(main, [*path, "--help"], terminal_width=250)
        assert result.exit_code == 0, result.output
        group: click.Command = main
        for name in path:
            assert isinstance(group, click.Group)
            group = group.commands[name]
        options = [p for p in group.params if isinstance(p, click.Option)]
        assert len(options) > 15
        for option in options:
            assert option.envvar and option.show_envvar, option.name
            assert f"env var: {option.envvar}" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay"], "give --file or --from-topic"),
        (["replay", "--file", "x.csv", "--from-topic", "t"], "give --file or --from-topic"),
        (["replay", "--from-topic", "t", "--start-offset", "0"], "--from-topic needs --to-topic"),
        (["replay", "--file", "x.csv", "--rate", "5", "--max-rate"], "not both"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["replay", "--file", str(tmp_path / "nope.csv"), "--kafka-bootstrap", "x:1"]
    )
    assert result.exit_code == 1
    assert "segstream: error:" in result.output and "no such file" in result.output


def test_failed_deliveries_make_the_run_fail() -> None:
    summary = Summary(source="x", events_sent=5, delivered=3, failed=2, errors=["boom"])
    with pytest.raises(DeliveryError, match="2 of 5 events were not confirmed"):
        _finish(summary)


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_synthetic_files_replay_to_the_same_events(tmp_path: Path, file_format: str) -> None:
    out = tmp_path / "out"
    args = ["produce", "synthetic", "--customers", "40", "--days", "20", "--seed", "9",
            "--start", "2025-02-01", "--out-dir", str(out), "--file-format", file_format,
            "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(main, [*args[:-5], "--out-dir", str(tmp_path / "again"),
                                      "--file-format", file_format, "--no-progress"])  # fmt: skip
    assert again.exit_code == 0
    for name in (f"orders.{file_format}", f"clicks.{file_format}", "labels.csv"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    with (out / "labels.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 40
    fmt = {"csv": ("orders-csv", "clicks-csv"), "jsonl": ("jsonl", "jsonl")}[file_format]
    orders = list(FileSource(out / f"orders.{file_format}", fmt[0]))
    clicks = list(FileSource(out / f"clicks.{file_format}", fmt[1]))
    assert not [r for r in orders + clicks if isinstance(r, Reject)]
    assert orders and clicks
    # the event ids survive the round trip through the file
    written = (out / f"orders.{file_format}").read_text()
    assert all(e.event_id in written for e in orders)
