"""Every per-customer Redis key some part of the worker builds is one ``segstream forget`` deletes.

The scan reads the worker's Python and Lua sources for key builders of the per-customer shape
(``{prefix}:<family>:{<customer id>}``: ``f"{prefix}:c:{{{cid}}}"`` in Python,
``prefix .. ':c:{' .. cid`` in Lua) and fails on a family that is not in
``worker.erase.keys.CUSTOMER_KEY_FAMILIES`` (or the suppression family, which forget writes, or
a family ``TAGGED_NOT_BY_CUSTOMER`` says is tagged with something else).
"""

from __future__ import annotations

import re
from pathlib import Path

from worker.campaigns import keys as campaign_keys
from worker.erase import keys
from worker.identity import keys as identity_keys
from worker.state import keys as state_keys

WORKER = Path(__file__).resolve().parents[2] / "worker"
#: f"{prefix}:c:{{{customer_id}}}" / f"{self.prefix}:{family}:{{..." (the family a literal)
PYTHON_KEY = re.compile(r"""\{[\w.]*prefix\}:([A-Za-z0-9_]+):\{\{\{""")
#: prefix .. ':c:{' .. cid
LUA_KEY = re.compile(r"""prefix\s*\.\.\s*':([A-Za-z0-9_]+):\{'""")


def per_customer_families() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in [*WORKER.rglob("*.py"), *WORKER.rglob("*.lua")]:
        text = path.read_text(encoding="utf-8")
        for family in {*PYTHON_KEY.findall(text), *LUA_KEY.findall(text)}:
            found.setdefault(family, []).append(str(path.relative_to(WORKER.parent)))
    return found


def test_the_scan_finds_the_state_hash_and_the_fingerprints() -> None:
    found = per_customer_families()
    assert {"c", "f", "x"} <= set(found), found  # the scan cannot pass by finding nothing
    assert {"a", "l", "al"} <= set(found), found  # identity's keys (worker/identity)


def test_every_per_customer_key_family_in_the_worker_is_forgotten() -> None:
    known = {*keys.CUSTOMER_KEY_FAMILIES, keys.SUPPRESSION_FAMILY, *keys.TAGGED_NOT_BY_CUSTOMER}
    missing = {f: where for f, where in per_customer_families().items() if f not in known}
    assert not missing, (
        f"per-customer keys that `segstream forget` does not delete: {missing}; add the family "
        "to worker/erase/keys.py CUSTOMER_KEY_FAMILIES"
    )


def test_the_key_builders_agree_with_the_state_store() -> None:
    assert keys.customer_keys("ss", "C42") == [
        state_keys.customer("ss", "C42"),
        state_keys.fingerprints("ss", "C42"),
        identity_keys.linked("ss", "C42"),
        campaign_keys.assignments("ss", "C42"),
    ]
    assert keys.suppression("ss", "C42") == "ss:x:{C42}"
    assert keys.suppression_until("ss") == "ss:x:until"


def test_the_suppression_lasts_the_given_days_in_ms_and_never_zero() -> None:
    assert keys.suppression_ms(90) == 90 * 86_400_000
    assert keys.suppression_ms(0.5) == 43_200_000
    assert keys.suppression_ms(0) == 1
