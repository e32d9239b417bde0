"""The test suite's own rules: helpers live in ``tests/support``, unit tests stay off the network.

A test module that imports another test module runs that module's fixtures and tests' imports
in every importer and hides a shared helper where a newcomer would not look for it; shared
helpers belong in ``tests/support`` and shared fixtures in ``tests/conftest.py``.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts)


def imported_test_modules(source: str) -> list[str]:
    """Every module named ``test_*`` (or a conftest) under ``tests`` that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_test_module(node.module):
                found.append(node.module)
            elif node.module.split(".")[0] == "tests":
                found += [f"{node.module}.{a.name}" for a in node.names
                          if _is_test_module(f"{node.module}.{a.name}")]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append("." * node.level + (node.module or ""))  # relative: never needed
    return found


def test_no_test_module_imports_another_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if (imports := imported_test_modules(path.read_text()))
    }
    assert not offenders, f"move the shared helpers to tests/support: {offenders}"


def test_the_import_check_sees_every_way_of_importing_a_test_module() -> None:
    bad = [
        "from tests.integration.test_worker import produce",
        "from tests.integration import test_worker",
        "import tests.unit.test_reads",
        "from tests.fuzz.test_mutator import x",
        "from .test_worker import produce",
        "def f():\n    from tests.integration.test_redis_io import SLOW\n",
    ]
    good = ["from tests.support.producing import produce", "from tests.fuzz.runner import parse"]
    assert all(imported_test_modules(src) for src in bad)
    assert not any(imported_test_modules(src) for src in good)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_unit_test_cannot_open_a_network_socket(family: socket.AddressFamily) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(OSError, match="unit tests open no network sockets"):
            sock.connect((host, 9))
        with pytest.raises(OSError, match="unit tests open no network sockets"):
            sock.bind((host, 0))
    with pytest.raises(OSError, match="unit tests open no network sockets"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_unit_test_can_still_use_unix_sockets() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"


def test_this_module_is_in_the_unit_tier(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
