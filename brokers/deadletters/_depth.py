"""The depth per Trigger as the sink knows it: read from the store after every change.

Read, not counted: the store is the truth (another sink may write to the same Redis, a record
may reopen under another Trigger), so the gauge and the alarm follow what the store says.

Off the answer's path: a change (a letter stored, replayed, purged) only notes itself, and a
background task reads the depth after it, so a 202 waits for the durable write and nothing
else. Reads are serialised and coalesced: a read that starts after a change has completed sees
it, and a burst of changes shares the next read. :meth:`DepthWatch.refresh` reads now when a
change is not reflected yet: ``/metrics`` calls it before each scrape, tests before they look.
The alarm therefore sees the depth as read: a burst that crosses the threshold is one
``exceeded`` at the depth the read found, which may be past ``N + 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from agentfn.brokers.deadletters._alerts import DepthAlarm
from agentfn.brokers.deadletters._metrics import DeadLetterMetrics, Labels
from agentfn.brokers.deadletters.store import DeadLetterStore, LetterStoreUnavailableError

__all__ = ["DepthWatch"]

log = logging.getLogger(__name__)


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
        self._due = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._follower = asyncio.create_task(self._follow(), name="deadletters-depth")

    async def aclose(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    def changed(self) -> None:
        """Note a completed change of the store; the depth is read after it in the background."""
        self._changes += 1
        self._due.set()

    async def _follow(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            try:
                await self.refresh()
            except LetterStoreUnavailableError as error:
                # The change itself is done; the gauge catches up on the next change or scrape.
                log.warning("dead-letter depth not refreshed: %s", error)

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
