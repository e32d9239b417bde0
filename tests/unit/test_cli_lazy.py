"""Every subcommand named in LAZY_COMMANDS loads under its own name and answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from segstream.cli import LAZY_COMMANDS, main


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_each_lazy_command_loads_and_documents_its_env_vars(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert name in result.output


def test_a_light_command_does_not_import_scikit_learn_or_matplotlib() -> None:
    probe = (
        "import sys; from click.testing import CliRunner; from segstream.cli import main; "
        "r = CliRunner().invoke(main, ['customer', '--help']); assert r.exit_code == 0; "
        "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
