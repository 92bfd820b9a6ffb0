"""The depth alarm: one warning (and one CloudEvent) when a Trigger's waiting letters cross N.

The alarm is edge-triggered per ``(namespace, broker, trigger)``: depth going from ``<= N`` to
``> N`` is one ``exceeded`` transition, going back to ``<= N`` one ``recovered``; a depth that
stays above N says nothing more, however many letters arrive. Every transition is kept in
:attr:`DepthAlarm.transitions`, in order, so what the alarm did is observable without timing.

The threshold event goes to ``alert_sink`` from one background task, in transition order: a
sink answering slowly never holds up the 202 of the letter that crossed the line, and an
alert posted after another was posted after it. A failed post is logged and dropped: the
Prometheus gauge (and the ``PrometheusRule`` on it) stays the durable signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

import aiohttp
from agentfn.brokers.deadletters._metrics import Labels
from agentfn.events import CloudEvent, to_http

__all__ = ["ALERT_SOURCE", "ALERT_TYPE", "AlarmTransition", "DepthAlarm"]

log = logging.getLogger(__name__)

ALERT_TYPE: Final = "dev.agentfn.deadletters.threshold"
ALERT_SOURCE: Final = "/agentfn/deadletters"

AlarmState = Literal["exceeded", "recovered"]


class AlarmTransition(NamedTuple):
    """One crossing of the threshold: which Trigger, which way, at what depth."""

    labels: Labels
    state: AlarmState
    depth: int


class DepthAlarm:
    """Watches the depth per Trigger against ``threshold``; posts to ``sink`` when given."""

    def __init__(
        self,
        threshold: int,
        sink: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.threshold = threshold
        self.sink = sink
        self.transitions: list[AlarmTransition] = []
        self._timeout = timeout
        self._above: set[Labels] = set()
        self._outbox: asyncio.Queue[CloudEvent] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._poster: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.sink is not None:
            self._session = aiohttp.ClientSession()
            self._poster = asyncio.create_task(self._post_all(), name="deadletters-alerts")

    async def aclose(self, grace: float = 5.0) -> None:
        """Post what is queued (for ``grace`` seconds at most), then stop."""
        if self._poster is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), grace)
            self._poster.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poster
            self._poster = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def observe(self, depth: Mapping[Labels, int]) -> None:
        """Compare the depth now (every Trigger with waiting letters) with what it was."""
        for labels in sorted(self._above | depth.keys()):
            now = depth.get(labels, 0)
            if now > self.threshold and labels not in self._above:
                self._above.add(labels)
                self._transition(AlarmTransition(labels, "exceeded", now))
            elif now <= self.threshold and labels in self._above:
                self._above.discard(labels)
                self._transition(AlarmTransition(labels, "recovered", now))

    def _transition(self, transition: AlarmTransition) -> None:
        self.transitions.append(transition)
        where = "/".join(transition.labels)
        if transition.state == "recovered":
            log.info(
                "dead letters of %s back to %d (threshold %d)",
                where,
                transition.depth,
                self.threshold,
            )
            return
        log.warning(
            "dead letters of %s: %d waiting, over the threshold of %d",
            where,
            transition.depth,
            self.threshold,
        )
        if self.sink is not None:
            self._outbox.put_nowait(self._event(transition))

    def _event(self, transition: AlarmTransition) -> CloudEvent:
        namespace, broker, trigger = transition.labels
        return CloudEvent.new(
            ALERT_TYPE,
            ALERT_SOURCE,
            {
                "namespace": namespace,
                "broker": broker,
                "trigger": trigger,
                "depth": transition.depth,
                "threshold": self.threshold,
                "state": transition.state,
            },
            subject=f"{namespace}/{broker}/{trigger}",
        )

    async def _post_all(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await self._post(event)
            finally:
                self._outbox.task_done()

    async def _post(self, event: CloudEvent) -> None:
        assert self._session is not None
        assert self.sink is not None
        headers, body = to_http(event)
        try:
            async with self._session.post(
                self.sink,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as answer:
                if answer.status >= 300:
                    log.warning(
                        "alert sink %s refused the threshold event %s: HTTP %d",
                        self.sink,
                        event.id,
                        answer.status,
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            log.warning(
                "alert sink %s did not take the threshold event %s: %s: %s",
                self.sink,
                event.id,
                type(error).__name__,
                error,
            )
