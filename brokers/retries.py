"""Each retry a dispatcher schedules, as a record: which event, after what answer, how long, why.

The wait itself is :meth:`agentfn.brokers.delivery.DeliveryPolicy.retry_wait`; this module makes the
dispatcher's use of it observable, so the schedule is checked from what was decided rather
than from how long a loaded machine took. Pass a :class:`RetryObserver` to
:class:`agentfn.brokers.server.BrokerServer`; :class:`RetryRecord` keeps the most recent decisions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from agentfn.brokers.delivery import RetryWait

__all__ = ["RetryObserver", "RetryRecord", "ScheduledRetry"]


@dataclass(frozen=True, slots=True)
class ScheduledRetry:
    """One retry the dispatcher decided on, before it waits."""

    trigger: str  # namespace/name
    event_id: str
    url: str  # where the retry goes: the subscriber, or the dead-letter sink
    dead_letter: bool
    retry: int  # 1 for the first retry
    status: int | None  # the answer that caused it; None when there was none
    wait: RetryWait
    at: float  # time.monotonic() when decided; the retry is not sent before at + wait

    @property
    def due(self) -> float:
        return self.at + self.wait.seconds


class RetryObserver(Protocol):
    def retry_scheduled(self, retry: ScheduledRetry) -> None:
        """Called in the event loop once per retry, before its wait; must not block."""
        ...


class RetryRecord:
    """A :class:`RetryObserver` keeping the last ``limit`` decisions, oldest first."""

    def __init__(self, limit: int = 1024) -> None:
        if limit < 1:
            raise ValueError("limit: must be >= 1")
        self._entries: deque[ScheduledRetry] = deque(maxlen=limit)

    def retry_scheduled(self, retry: ScheduledRetry) -> None:
        self._entries.append(retry)

    def __iter__(self) -> Iterator[ScheduledRetry]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def of(self, event_id: str, *, dead_letter: bool = False) -> list[ScheduledRetry]:
        """The retries of one event, to its subscriber or (``dead_letter``) to the sink."""
        return [r for r in self._entries if r.event_id == event_id and r.dead_letter is dead_letter]
