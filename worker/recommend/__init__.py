"""Recommendations from the orders stream: per segment, what its members bought lately.

``decay`` (forward-decayed counts) and ``rank`` (the ranking rule, reasons, the bought-skus
field) are pure; ``batch`` turns a fetch of the orders topic into purchases; ``store`` and the
Lua scripts keep the counts and the merged top lists in Redis; ``service`` is the worker's
consumer; ``read`` is the one-round-trip read (docs/recommendations.md).
"""
