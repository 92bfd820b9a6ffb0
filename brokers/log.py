"""The backend seam: a durable, partitioned event log with one cursor per consumer group.

Both backends implement it: the embedded SQLite log and Kafka. The broker above it is one
piece of code: the ingress appends, and each Trigger is a consumer group that fetches, delivers
and commits. The shape is Kafka's on purpose, so the embedded broker has the delivery semantics
of Knative's Kafka Broker (at-least-once; a Trigger's offset moves only past events whose
outcome is known) and the Kafka backend is a straight mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from agentfn.events import CloudEvent

__all__ = [
    "EventLog",
    "EventTooLargeError",
    "LogRecord",
    "LogUnavailableError",
    "Subscription",
    "topic_name",
]


def topic_name(namespace: str, broker: str) -> str:
    """The log (Kafka topic) of a broker, named as Knative's Kafka Broker names it."""
    return f"knative-broker-{namespace}-{broker}"


class LogUnavailableError(RuntimeError):
    """The event log could not make an append durable, or cannot serve a consumer group.

    The ingress answers 503 and the sender retries. Not the agent runtime's
    :class:`agentfn.functions.StoreUnavailableError` (its idempotency store), which the
    broker never sees: the two packages share only :mod:`agentfn.events`.
    """


class EventTooLargeError(ValueError):
    """The log can never store this event: it is larger than a record may be (413, not 503).

    Not a :class:`LogUnavailableError`: a retry of the same event fails the same way.
    """


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One event at its place in the log."""

    partition: int
    offset: int
    event: CloudEvent


class Subscription(Protocol):
    """A consumer group's view of one topic."""

    async def fetch(self, max_records: int, timeout: float) -> list[LogRecord]:
        """The next records after those already fetched, in log order per partition.

        Waits up to ``timeout`` seconds for at least one; returns an empty list otherwise.
        """
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Make ``partition -> next offset to read`` the group's durable position."""
        ...

    def assigned(self) -> frozenset[int]:
        """The partitions this member currently owns (all of them for the embedded log)."""
        ...

    def let_go(self, partition: int) -> None:
        """The dispatcher has no delivery of ``partition`` in progress since it moved away.

        A revocation waits for events in flight on the partitions it takes; fetched events
        that never started their delivery are not waited for (the next owner delivers them
        from the committed position), and this says that nothing else is left.
        """
        ...

    def lag(self) -> int | None:
        """Events stored beyond the group's committed position in the owned partitions.

        The store backlog of a Trigger; ``None`` while it is not known yet.
        """
        ...

    async def aclose(self) -> None:
        """Leave the group; ``fetch`` returns nothing from now on."""
        ...

    async def __aenter__(self) -> Self:
        """The subscription, joined already (``subscribe``); ``aclose`` on the way out."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EventLog(Protocol):
    """Durable append, and consumer groups that read what is due and acknowledge it.

    ``async with log:`` starts it and closes it on the way out.
    """

    async def start(self) -> None: ...

    async def aclose(self) -> None:
        """Close every subscription, then the log."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def append(self, topic: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        """Store ``events`` atomically (all or none), durable when this returns.

        Raises :class:`LogUnavailableError` when the write cannot be made durable, and
        :class:`EventTooLargeError` when an event is larger than the log stores.
        """
        ...

    async def subscribe(self, topic: str, group: str) -> Subscription:
        """Join ``group`` on ``topic``; a new group starts at the end of the log."""
        ...
