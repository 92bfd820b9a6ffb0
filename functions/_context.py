"""What a handler gets besides its payload: the event, a logger, the span, outbound clients."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfn.events import AttributeValue, CloudEvent
from agentfn.functions._publisher import HTTPClient

if TYPE_CHECKING:
    from agentfn.functions._breaker import CircuitBreakers
    from agentfn.functions._outbox import Outbox
    from agentfn.functions._publisher import SessionPool
    from agentfn.functions._spec import HandlerSpec
    from agentfn.functions.settings import Settings
    from opentelemetry.trace import Span
    from pydantic import BaseModel
    from redis.asyncio import Redis

__all__ = ["Context", "Services"]


@dataclass(frozen=True, slots=True, eq=False)
class Services:
    """What every handling of one agent shares with its handler; built once per app."""

    agent: str
    logger: logging.Logger
    settings: Settings
    state: dict[str, Any]
    redis: Redis | None
    breakers: CircuitBreakers
    sessions: SessionPool


class Context:
    """The handling of one event, as the handler sees it.

    ``event`` is the incoming CloudEvent (all its attributes); ``chain_id`` identifies the run
    of the agent chain; ``span`` is the OpenTelemetry span of this handling. Outbound clients:
    :attr:`http` (breaker-guarded, traced HTTP), :meth:`guard` (a breaker around any other
    call: gRPC, inference), :meth:`publish` (an event to the broker, besides the reply),
    :attr:`redis` (the agent's Redis client when one is configured).
    """

    __slots__ = ("_http", "_logger", "_outbox", "_services")

    def __init__(self, services: Services, outbox: Outbox) -> None:
        self._services = services
        self._outbox = outbox
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._http: HTTPClient | None = None

    @property
    def event(self) -> CloudEvent:
        return self._outbox.event

    @property
    def handler(self) -> HandlerSpec:
        return self._outbox.handler

    @property
    def chain_id(self) -> str:
        return self._outbox.chain_id

    @property
    def span(self) -> Span:
        return self._outbox.span

    @property
    def agent(self) -> str:
        return self._services.agent

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """The incoming event's context attributes and extensions."""
        return self._outbox.event.attributes

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """The agent's logger, with the event id and chain id on every record."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                self._services.logger,
                {"event_id": self.event.id, "chain_id": self.chain_id, "agent": self.agent},
            )
        return self._logger

    @property
    def settings(self) -> Settings:
        return self._services.settings

    @property
    def state(self) -> dict[str, Any]:
        """Per-app storage for resources a handler builds once (caches, joins)."""
        return self._services.state

    @property
    def redis(self) -> Redis | None:
        return self._services.redis

    @property
    def breakers(self) -> CircuitBreakers:
        return self._services.breakers

    def guard(self, destination: str) -> AbstractAsyncContextManager[None]:
        """The breaker of ``destination`` around a block: ``async with ctx.guard("llm"): ...``.

        An exception in the block counts as a failure; an open breaker raises
        :class:`CircuitOpenError` (the handler answers 503 with ``Retry-After``).
        """
        return self._services.breakers.guard(destination)

    def trace_headers(self) -> dict[str, str]:
        """``traceparent``/``tracestate`` of this handling, for clients of your own."""
        return dict(self._outbox.trace_carrier())

    def trace_carrier(self) -> Mapping[str, str]:
        """The same, computed once per handling and shared (do not mutate)."""
        return self._outbox.trace_carrier()

    @property
    def http(self) -> HTTPClient:
        if self._http is None:
            services = self._services
            self._http = HTTPClient(
                services.sessions, services.breakers, self._outbox.trace_carrier()
            )
        return self._http

    async def publish(
        self, payload: BaseModel | CloudEvent, *, type: str | None = None
    ) -> CloudEvent:
        """Send an event to the broker ingress now (``AGENTFN_BROKER_URL``); returns it.

        A model becomes an event of its declared ``emits`` type (``type`` picks one when the
        model is declared under several) with the chain id and trace context. Its id is
        derived from the incoming event and the publish's position, so a retried handler that
        publishes again sends the same ids and downstream agents drop the repeats.
        """
        return await self._outbox.publish(payload, event_type=type)
