"""The broker process: ingress, one dispatcher per Trigger, over any :class:`EventLog` backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import uvicorn
from agentfn.brokers._dispatch import DispatchLimits, TriggerDispatcher
from agentfn.brokers._http1 import ANSWER_HEAD_BYTES
from agentfn.brokers._ingress import IngressApp
from agentfn.brokers._sender import Sender
from agentfn.brokers._serving import serve_in_loop
from agentfn.brokers.config import BrokerSpec, ConfigError, Topology, TriggerSpec
from agentfn.brokers.delivery import Destination
from agentfn.brokers.inprocess import LocalSubscriber
from agentfn.brokers.log import EventLog, LogRecord, topic_name
from agentfn.brokers.metrics import BrokerMetrics
from agentfn.brokers.retries import RetryObserver
from agentfn.brokers.settings import BrokerSettings
from agentfn.events import CloudEvent
from agentfn.events.extensions import stamp_broker_ttl

from agentfn._lifecycle import Started

__all__ = ["BrokerServer", "resolve_destination"]

log = logging.getLogger(__name__)


def resolve_destination(destination: Destination, services: Mapping[str, str]) -> str:
    """The URL of a destination; a ``ref`` is looked up by Service name in ``services``."""
    if destination.ref_name is None:
        assert destination.uri is not None
        return destination.uri
    base = services.get(destination.ref_name)
    if base is None:
        known = ", ".join(sorted(services)) or "none"
        raise ConfigError(
            f"{destination.describe()} is not a known service (known: {known}); "
            "map it with --service NAME=URL"
        )
    if destination.uri:
        return base.rstrip("/") + "/" + destination.uri.lstrip("/")
    return base


class BrokerServer(Started):
    """Brokers and Triggers of a :class:`Topology`, served over one HTTP port.

    ``await start()`` opens the log and the dispatchers, ``await listen(...)`` serves the
    ingress, ``await stop(grace)`` drains and closes (``aclose()``, or leaving ``async with``,
    with the default grace). ``app`` is the ASGI ingress for in-process use.
    ``local_subscribers`` maps URL origins (e.g. ``inprocess://planner``) to subscribers hosted
    in this process (:mod:`agentfn.brokers.inprocess`); deliveries to them are calls, not
    requests. ``retry_observer`` is told of every retry a dispatcher schedules
    (:mod:`agentfn.brokers.retries`).
    """

    def __init__(
        self,
        topology: Topology,
        event_log: EventLog,
        *,
        services: Mapping[str, str] | None = None,
        settings: BrokerSettings | None = None,
        local_subscribers: Mapping[str, LocalSubscriber] | None = None,
        retry_observer: RetryObserver | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings or BrokerSettings()
        self.metrics = BrokerMetrics()
        self._log = event_log
        self._services = dict(services or {})
        self._retry_observer = retry_observer
        self._sender = Sender(
            connections=self.settings.max_in_flight,
            local=local_subscribers,
            # A reply is an event like any other: the body limit of the ingress bounds it.
            max_answer_bytes=self.settings.max_body_bytes + ANSWER_HEAD_BYTES,
        )
        self._limits = DispatchLimits(
            max_in_flight=self.settings.max_in_flight,
            subscriber_in_flight=self.settings.subscriber_in_flight,
            window=self.settings.trigger_window,
        )
        self._dispatchers: list[TriggerDispatcher] = []
        self._started = False
        self._server: uvicorn.Server | None = None
        self.app = IngressApp(
            topology.brokers,
            self.ingest,
            self.metrics,
            max_body_bytes=self.settings.max_body_bytes,
            ready=lambda: self._started,
        )
        # Fail on an unknown ref before anything starts, with the Trigger's name.
        self._urls = {t: self._urls_of(t) for t in topology.triggers}

    def _urls_of(self, trigger: TriggerSpec) -> tuple[str, str | None]:
        where = f"Trigger {trigger.namespace}/{trigger.name}"
        try:
            subscriber = resolve_destination(trigger.subscriber, self._services)
            sink = self.topology.delivery_for(trigger).dead_letter_sink
            dead_letter = None if sink is None else resolve_destination(sink, self._services)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        return subscriber, dead_letter

    async def ingest(self, broker: BrokerSpec, events: Sequence[CloudEvent]) -> list[LogRecord]:
        """Store events for ``broker`` (durable on return), each with a ``knativebrokerttl``."""
        stamped = [stamp_broker_ttl(event) for event in events]
        return await self._log.append(topic_name(broker.namespace, broker.name), stamped)

    async def start(self) -> None:
        await self._log.start()
        await self._sender.start()
        for trigger in self.topology.triggers:
            broker = self.topology.brokers[(trigger.namespace, trigger.broker)]
            subscription = await self._log.subscribe(
                topic_name(broker.namespace, broker.name), trigger.group
            )
            subscriber, dead_letter = self._urls[trigger]

            async def ingest_reply(events: Sequence[CloudEvent], _b: BrokerSpec = broker) -> object:
                return await self.ingest(_b, events)

            dispatcher = TriggerDispatcher(
                trigger=trigger,
                policy=self.topology.delivery_for(trigger),
                subscriber_url=subscriber,
                dead_letter_url=dead_letter,
                subscription=subscription,
                sender=self._sender,
                ingest=ingest_reply,
                limits=self._limits,
                metrics=self.metrics,
                retry_observer=self._retry_observer,
            )
            dispatcher.start()
            self._dispatchers.append(dispatcher)
        self._started = True

    async def listen(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        """Serve the ingress on ``host:port`` (0: any free port); returns the bound port."""
        self._server, bound = await serve_in_loop(self.app, host, port)
        log.info("broker ingress listening on %s:%d", host, bound)
        return bound

    async def stop(self, grace: float = 5.0) -> None:
        self._started = False
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown()
        await asyncio.gather(*(d.stop(grace) for d in self._dispatchers))
        await self._sender.aclose()
        await self._log.aclose()

    async def aclose(self) -> None:
        """:meth:`stop` with the default grace."""
        await self.stop()
