"""No URL password reaches a log line, /health or an error."""

from __future__ import annotations

import pytest

from segstream.redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("at redis://user:s3cr%40t@host:6379/0 refused", "at redis://user:***@host:6379/0 refused"),
        ("rediss://:only-pass@h:1", "rediss://:***@h:1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("two: redis://a:x@h1 and kafka://b:y@h2", "two: redis://a:***@h1 and kafka://b:***@h2"),
    ],
)  # fmt: skip
def test_url_passwords_are_replaced_and_the_rest_kept(text: str, shown: str) -> None:
    assert redact(text) == shown
