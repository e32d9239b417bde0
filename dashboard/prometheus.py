"""A tiny reader of the Prometheus text format (0.0.4), enough for the worker's ``/metrics``.

The dashboard needs a handful of series, so it reads samples, not families: ``name{labels}
value`` lines, comments skipped, label values unescaped. A line it cannot read is skipped (the
worker writes the format correctly; a line added by some proxy must not blank the page).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["Sample", "Samples", "parse", "total", "value"]

#: One sample: its labels and value.
Sample = tuple[dict[str, str], float]
#: Metric name -> its samples, in the order they were written.
Samples = dict[str, list[Sample]]

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> Samples:
    """Every sample of ``text``, by metric name."""
    out: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            number = float(m["value"])
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _PAIR.findall(m["labels"] or "")}
        out.setdefault(m["name"], []).append((labels, number))
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The first sample of ``metric`` whose labels include ``labels``; ``None`` if none does."""
    for have, number in samples.get(metric, ()):
        if _matches(have, labels):
            return number
    return None


def total(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The sum of ``metric``'s samples matching ``labels`` (NaN skipped); ``None`` if none does."""
    found = [n for have, n in samples.get(metric, ()) if _matches(have, labels)]
    return sum(n for n in found if not math.isnan(n)) if found else None


def _matches(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in wanted.items())


def _unescape(text: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], text)
