"""The schema benchmark still runs (tiny sizes: this checks the code, not the speed)."""

from __future__ import annotations

import pytest

from benchmarks import bench_schemas


@pytest.mark.slow
def test_benchmark_runs_and_prints_its_conditions_and_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # main() also makes every checking candidate accept the generated records and reject each
    # invalid one before timing (SystemExit otherwise), so this covers their equivalence too.
    assert bench_schemas.main(["--events", "300", "--batch", "100", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    for expected in ("python     CPython", "cpu ", "msgspec 0.", "seed 20240501", "VERDICT: "):
        assert expected in out
    for row in ("orjson.loads alone (baseline)", "msgspec + checks (ours: decode_many)"):
        assert out.count(row) == 2  # orders and clicks
    baseline_rows = [line for line in out.splitlines() if "(baseline)" in line]
    # the baseline's ratio to itself (another candidate may also show 1.00 at these sizes)
    assert len(baseline_rows) == 2 and all(" 1.00 " in line for line in baseline_rows)


def test_benchmark_refuses_fewer_than_three_runs() -> None:
    with pytest.raises(SystemExit):
        bench_schemas.main(["--runs", "2"])
