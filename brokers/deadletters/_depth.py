"""The depth per Trigger as the sink knows it: read from the store after every change.

Read, not counted: the store is the truth (another sink may write to the same Redis, a record
may reopen under another Trigger), so the gauge and the alarm follow what the store says.
Reads are serialised and coalesced: a read that starts after a change has completed sees it,
so once the changes stop, the last read is current; a burst of changes waiting on one read
shares the next one instead of queueing a read each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agentfn.brokers.deadletters._alerts import DepthAlarm
from agentfn.brokers.deadletters._metrics import DeadLetterMetrics, Labels
from agentfn.brokers.deadletters.store import DeadLetterStore

__all__ = ["DepthWatch"]


class DepthWatch:
    def __init__(
        self, store: DeadLetterStore, metrics: DeadLetterMetrics, alarm: DepthAlarm | None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._alarm = alarm
        self._lock = asyncio.Lock()
        self._changes = 0  # changes completed so far
        self._seen = -1  # changes the last read reflects (-1: never read)
        self.current: Mapping[Labels, int] = {}

    def changed(self) -> None:
        """Note a completed change of the store (call before :meth:`refresh`)."""
        self._changes += 1

    async def refresh(self, *, force: bool = False) -> Mapping[Labels, int]:
        """The depth after every change noted so far; ``force``: read the store regardless.

        Raises LetterStoreUnavailableError when the store cannot be read.
        """
        wanted = self._changes
        async with self._lock:
            if self._seen >= wanted and not force:
                return self.current
            seen = self._changes
            depth = {labels: n for labels, n in (await self._store.depth()).items() if n > 0}
            self._seen = seen
            self.current = depth
            self._metrics.set_depth(depth)
            if self._alarm is not None:
                self._alarm.observe(depth)
            return depth
