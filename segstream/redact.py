"""Credentials out of any text segstream shows: ``redis://user:secret@host`` -> ``user:***``."""

from __future__ import annotations

import re

#: The password of a URL's user info: ``scheme://[user]:password@``.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ``***`` (the user name is kept)."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)
