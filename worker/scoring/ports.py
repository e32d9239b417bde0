"""What scoring needs of Redis and of Kafka: small Protocols, so the service can be given fakes.

Only the methods scoring calls are here. :class:`~worker.scoring.store.ScoringStore` and
:class:`~worker.scoring.publisher.ChangePublisher` are the real ones; ``tests/support/fakes.py``
holds in-memory ones. A read or write is sent in one step and answered in another
(:class:`Pending`): the round runner sends the next round's read, or this round's write, and
goes on with CPU work while Redis runs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from worker.scoring.plan import OutgoingChange, WritePlan
from worker.scoring.vectors import Round

T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """A request Redis already has (it is on the wire); its reply, once awaited."""

    async def result(self) -> T_co: ...

    def abandon(self) -> None:
        """Nobody will wait for the reply (the request's connection may be dropped)."""


class ModelSource(Protocol):
    """Where :class:`~worker.scoring.models.ModelHolder` finds the current model."""

    prefix: str

    async def current_version(self) -> str | None: ...

    async def model_json(self, version: str) -> bytes | None: ...

    async def online_state(self, version: str) -> bytes | None: ...


class ScoringStorePort(ModelSource, Protocol):
    """The Redis side of scoring (see :mod:`worker.scoring.store`)."""

    async def send_read(
        self, customer_ids: Sequence[str], fields: Sequence[str]
    ) -> Pending[Round]: ...

    async def send_attributes(
        self, customer_ids: Sequence[str], fields: Sequence[str]
    ) -> Pending[dict[str, list[bytes | None]]]: ...

    async def send_write(
        self,
        model_version: str,
        as_of_ms: int,
        plan: WritePlan,
        events: Sequence[tuple[str, int, bytes]],
    ) -> Pending[tuple[list[str], str]]: ...

    async def outbox(self) -> list[tuple[str, list[tuple[str, int, bytes]]]]: ...

    async def published(self, fields: Sequence[str], changes: Sequence[OutgoingChange]) -> None: ...

    def unscored_pages(self, page: int = 1000) -> AsyncIterator[list[str]]: ...

    def customer_pages(self, page: int = 1000) -> AsyncIterator[list[str]]: ...

    async def save_status(
        self, version: str, online_json: bytes | None, status: dict[str, Any]
    ) -> None: ...

    async def claim(self, suffix: str, ttl_s: float) -> bool: ...

    async def rescore_request(self) -> str | None: ...

    async def close(self) -> None: ...


class ChangePublisherPort(Protocol):
    """The producer of segment changes and control notices (see :mod:`.publisher`)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, items: Sequence[OutgoingChange]) -> None: ...

    async def notice(self, value: bytes) -> None: ...
