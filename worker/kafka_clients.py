"""Starting an aiokafka client so that a failed start leaves nothing running."""

from __future__ import annotations

import contextlib
from typing import Protocol, TypeVar

__all__ = ["started"]


class _Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


C = TypeVar("C", bound=_Startable)


async def started(client: C) -> C:
    """``client`` once started; if its start fails, it is stopped again (its background tasks
    and connections with it) and the start's own error is raised."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
    return client
