"""The failures a part of the worker counted, and the latest one as ``/health`` shows it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from segstream.redact import redact


@dataclass
class FailureNotes:
    """Attempts that raised (each retried) and the last one's text, credentials redacted."""

    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def note_error(self, text: str) -> None:
        self.failures += 1
        self.last_error = redact(text)
        self.last_error_at = time.time()
