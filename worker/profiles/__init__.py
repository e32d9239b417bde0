"""Customer profiles: the profiles-topic consumer, its Lua merge and the merge rule in Python.

``batch`` decodes a fetch, ``store`` applies it (``profile.lua``, one call per space),
``merge`` is the same last-write-wins rule as pure functions, ``service`` is the consumer the
worker runs, ``metrics`` its counters. Storage contract: :mod:`worker.core.attributes`.
"""
