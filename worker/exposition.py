"""Prometheus text exposition (format 0.0.4), written without a client library.

The worker's counters live in plain dataclasses that the hot path bumps with ``+= 1``; a client
library's metric objects would put a lock and a label look-up on every batch. So the numbers
stay where they are and ``/metrics`` renders them on demand through :class:`Exposition`, which
knows the format's rules (HELP and TYPE once per family, escaped label values, integers written
exactly, ``NaN``/``+Inf``) so no source has to.

A *metrics source* is any callable that adds families to an :class:`Exposition`: the ingest and
scoring metrics are two, and a part that keeps counters of its own (``segstream forget``'s, for
one) is handed to :func:`worker.pages.ingest_pages` as another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping

__all__ = ["Exposition", "Labels", "MetricsSource", "Sample"]

#: Label name -> value of one sample.
Labels = Mapping[str, str]
#: One sample of a family: its labels (``{}``: none) and its value.
Sample = tuple[Labels, float | int | bool]
#: Adds its families to the exposition it is given (called on every scrape).
MetricsSource = Callable[["Exposition"], None]

#: Prometheus metric names; label names are the same without ``:``.
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("counter", "gauge", "summary", "untyped")


class Exposition:
    """Metric families in the order they are added, rendered by :meth:`text`.

    A family name may be added once: two sources that claim the same name are a bug, refused
    with ``ValueError`` rather than rendered as an exposition Prometheus would reject.
    """

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._names: set[str] = set()

    @property
    def names(self) -> frozenset[str]:
        """The family names added so far."""
        return frozenset(self._names)

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """One family: HELP, TYPE, then its samples (a counter's name must end in ``_total``)."""
        self._declare(name, kind, help_text)
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_value(value)}")

    def counter(
        self, name: str, help_text: str, value: float, labels: Labels | None = None
    ) -> None:
        """A counter family with one sample."""
        self.family(name, "counter", help_text, [(labels or {}, value)])

    def gauge(self, name: str, help_text: str, value: float, labels: Labels | None = None) -> None:
        """A gauge family with one sample."""
        self.family(name, "gauge", help_text, [(labels or {}, value)])

    def summary(self, name: str, help_text: str, total: float, count: int) -> None:
        """A summary without quantiles: ``<name>_sum`` and ``<name>_count``."""
        self._declare(name, "summary", help_text)
        self._lines.append(f"{name}_sum {_value(total)}")
        self._lines.append(f"{name}_count {_value(count)}")

    def extend(self, other: Exposition) -> None:
        """Append ``other``'s families (each name still once)."""
        clash = self._names & other._names
        if clash:
            raise ValueError(f"metric families defined twice: {sorted(clash)}")
        self._names |= other._names
        self._lines.extend(other._lines)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n" if self._lines else ""

    def _declare(self, name: str, kind: str, help_text: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"not a Prometheus metric name: {name!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown metric type {kind!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        if name in self._names:
            raise ValueError(f"metric family {name!r} defined twice")
        self._names.add(name)
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    parts = []
    for key, value in labels.items():
        if not _LABEL.match(key) or key.startswith("__"):
            raise ValueError(f"not a Prometheus label name: {key!r}")
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{text}"')
    return "{" + ",".join(parts) + "}"


def _value(value: float | int | bool) -> str:
    """Integers exactly (``1234567``, not ``1.23457e+06``), floats round-trip, NaN and infinities
    as the format spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
