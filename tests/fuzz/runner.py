"""Run the fuzz target in a child process and turn libFuzzer's output into a verdict.

A child, because a finding ends libFuzzer with ``_exit`` after writing the input: the parent
stays alive to say where the input is and how to replay it. The child's output is passed
through as it comes (a long run shows its progress) and parsed for the final statistics.

Exit status: 0 when the time ran out without a finding; libFuzzer's own non-zero status on a
finding (the crashing input is under ``--artifacts``), a timeout or an out-of-memory.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.codec import MAX_EVENT_BYTES
from tests.fuzz import seeds

ROOT = Path(__file__).resolve().parents[2]
DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
#: libFuzzer's status lines: ``#1234 NEW cov: 512 ft: 2048 corp: 300/50Kb ... exec/s: 900``.
STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.MULTILINE)
EXEC_PER_SEC = re.compile(r"^stat::average_exec_per_sec:\s+(\d+)", re.MULTILINE)
ARTIFACT = re.compile(r"Test unit written to (\S+)")
SUMMARY = re.compile(r"^fuzz: done: (\d+) runs", re.MULTILINE)


@dataclass(frozen=True)
class Stats:
    """What one run did, from libFuzzer's output (``None``: the line never came)."""

    runs: int | None
    seconds: int | None
    exec_per_sec: int | None
    coverage: int | None
    features: int | None
    corpus: int | None
    artifacts: tuple[str, ...]


def parse(output: str) -> Stats:
    done, status = DONE.search(output), STATUS.findall(output)
    rate = EXEC_PER_SEC.search(output)
    last = status[-1] if status else None
    return Stats(
        runs=int(done.group(1)) if done else None,
        seconds=int(done.group(2)) if done else None,
        exec_per_sec=int(rate.group(1)) if rate else None,
        coverage=int(last[1]) if last else None,
        features=int(last[2]) if last else None,
        corpus=int(last[3]) if last else None,
        artifacts=tuple(ARTIFACT.findall(output)),
    )


def positive(text: str) -> int:
    """An argparse type: libFuzzer reads ``-max_total_time=0`` as "forever"."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Fuzz the event and control decoders (docs/fuzzing.md).",
        epilog="Arguments after -- go to libFuzzer as they are (e.g. -- -seed=1 -jobs=2).",
    )
    parser.add_argument(
        "--seconds", type=positive, default=60, help="how long to fuzz (default 60)"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        help="keep the inputs that found new coverage here, and start from them next time "
        "(default: a temporary directory, dropped at the end)",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=ROOT / ".fuzz-artifacts",
        help="where a crashing or hanging input is written (default .fuzz-artifacts/)",
    )
    parser.add_argument("--timeout", type=positive, default=10, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=positive, default=2048)
    parser.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The child runs in the repository root: relative paths would mean something else there.
    args.corpus = args.corpus.resolve() if args.corpus else None
    args.artifacts = args.artifacts.resolve()
    return args


def run(args: argparse.Namespace) -> tuple[int, Stats]:
    """Seed, fuzz for ``args.seconds``, and return the child's exit status and statistics."""
    with tempfile.TemporaryDirectory(prefix="segstream-fuzz-") as tmp:
        work = Path(tmp)
        count = seeds.write_corpus(work / "seeds")
        dictionary = seeds.write_dictionary(work / "json.dict")
        corpus = args.corpus or work / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        args.artifacts.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "tests.fuzz.target",
            f"-max_total_time={args.seconds}",
            f"-max_len={MAX_EVENT_BYTES + 1024}",  # room for a record just over the size limit
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_limit_mb}",
            f"-artifact_prefix={args.artifacts}/",
            f"-dict={dictionary}",
            "-print_final_stats=1",
            *args.libfuzzer,
            str(corpus),  # new inputs go to the first directory
            str(work / "seeds"),
        ]  # fmt: skip
        print(f"fuzz: {count} seed inputs; {' '.join(command)}", file=sys.stderr, flush=True)
        output: list[str] = []
        with subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        ) as child:  # fmt: skip
            assert child.stdout is not None
            for line in child.stdout:
                sys.stderr.write(line)
                output.append(line)
        return child.returncode, parse("".join(output))


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    status, stats = run(args)
    rate = f"{stats.exec_per_sec} exec/s" if stats.exec_per_sec is not None else "exec/s unknown"
    print(
        f"fuzz: done: {stats.runs} runs in {stats.seconds} s ({rate}), cov {stats.coverage}, "
        f"ft {stats.features}, corpus {stats.corpus} inputs, exit status {status}"
    )
    if status != 0:
        for artifact in stats.artifacts:
            print(f"fuzz: FINDING: {artifact}; replay: python -m tests.fuzz.target {artifact}")
        if not stats.artifacts:
            print("fuzz: FAILED without writing an input; see the output above")
        return status if status > 0 else 1
    return 0
