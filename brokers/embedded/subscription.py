"""A Trigger's reader of the embedded log: a buffer the writer fills, the database behind it.

After each commit the writer hands the new records to every live subscription of the topic
(:meth:`SqliteSubscription.on_appended`), which buffers them (bounded). A subscription that
falls too far behind, or that starts after a restart, reads from SQLite until it has caught
up. It reaches its log through :class:`Store` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from typing import Final, Protocol

from agentfn.brokers.log import LogRecord

from agentfn._lifecycle import Closing

__all__ = ["PARTITION", "SqliteSubscription", "Store"]

#: The embedded log has one partition per topic.
PARTITION: Final = 0


class Store(Protocol):
    """What a subscription needs of the embedded log."""

    def end_of(self, topic: str) -> int:
        """The offset the next event appended to ``topic`` gets."""
        ...

    async def read_after(self, topic: str, after: int, limit: int) -> list[LogRecord]:
        """Up to ``limit`` stored records of ``topic`` past offset ``after``, in order."""
        ...

    def save_position(self, topic: str, group: str, next_offset: int) -> None:
        """Make ``next_offset`` the group's position (durable with the writer's next commit)."""
        ...

    def forget(self, subscription: SqliteSubscription) -> None:
        """``subscription`` is closed: hand it nothing more, and trim past it."""
        ...


class SqliteSubscription(Closing):
    """:class:`~agentfn.brokers.log.Subscription` of one Trigger on the embedded log.

    ``position`` is the offset of the last record the group is past; ``buffer_limit`` the
    most records held in memory before it reads from the database instead.
    """

    def __init__(
        self, store: Store, topic: str, group: str, position: int, *, buffer_limit: int
    ) -> None:
        self._store = store
        self.topic = topic
        self._group = group
        self._buffer_limit = buffer_limit
        self._position = position  # offset of the last record handed out
        self._buffer: deque[LogRecord] = deque()
        self._behind = True  # start by asking the database what is already there
        self._wakeup = asyncio.Event()
        self._closed = False
        self.committed = position + 1

    def let_go(self, partition: int) -> None:
        """Nothing to do: the embedded log has one member, whose partition never moves."""

    def assigned(self) -> frozenset[int]:
        return frozenset({PARTITION})

    def lag(self) -> int:
        return max(0, self._store.end_of(self.topic) - self.committed)

    def on_appended(self, records: list[LogRecord]) -> None:
        if self._closed:
            return
        if len(self._buffer) + len(records) > self._buffer_limit:
            # Too far behind to keep in memory: drop the buffer and read from the database.
            self._buffer.clear()
            self._behind = True
        else:
            self._buffer.extend(records)
        self._wakeup.set()

    def _take_buffered(self, max_records: int) -> list[LogRecord]:
        while self._buffer and self._buffer[0].offset <= self._position:
            self._buffer.popleft()  # already read from the database while catching up
        if self._buffer and self._buffer[0].offset != self._position + 1:
            self._buffer.clear()
            self._behind = True
            return []
        taken: list[LogRecord] = []
        while self._buffer and len(taken) < max_records:
            taken.append(self._buffer.popleft())
        if taken:
            self._position = taken[-1].offset
        return taken

    async def fetch(self, max_records: int, timeout: float) -> list[LogRecord]:
        deadline = time.monotonic() + timeout
        while not self._closed:
            if self._behind:
                records = await self._store.read_after(self.topic, self._position, max_records)
                if records:
                    self._position = records[-1].offset
                if len(records) < max_records:
                    self._behind = False  # caught up: the buffer holds whatever came since
                if records:
                    return records
            taken = self._take_buffered(max_records)
            if taken:
                return taken
            if self._behind:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        return []

    async def commit(self, offsets: Mapping[int, int]) -> None:
        next_seq = offsets.get(PARTITION)
        if next_seq is None or next_seq <= self.committed:
            return
        self.committed = next_seq
        self._store.save_position(self.topic, self._group, next_seq)

    async def aclose(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._store.forget(self)
