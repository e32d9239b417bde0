"""Running a test on a single Redis and on a Redis Cluster: the same checks, both modes.

A test module that overrides ``settings`` with :func:`on_redis` runs each of its tests twice:
on the session's single Redis, and on the session's 3-primary cluster (started the first time a
test asks for it).
"""

from __future__ import annotations

import pytest

from segstream.settings import Settings

#: The ``params`` of a ``settings`` fixture that runs its tests in both modes.
MODES = ("single", "cluster")


def on_redis(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """``settings`` as they are (``single``), or pointed at the session's cluster."""
    if request.param == "single":
        return settings
    cluster = request.getfixturevalue("redis_cluster")
    return settings.with_(redis_url=cluster.url, redis_cluster=1)
