"""What a handler gets besides its payload: the event, a logger, the span, outbound clients."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from agentfn.events import AttributeValue, CloudEvent
from agentfn.functions._breaker import CircuitBreakers
from agentfn.functions._publisher import HTTPClient
from agentfn.functions._spec import HandlerSpec
from agentfn.functions._tracing import trace_headers
from agentfn.functions.settings import Settings
from opentelemetry.trace import Span
from pydantic import BaseModel

if TYPE_CHECKING:
    from agentfn.functions._asgi import AgentApp
    from redis.asyncio import Redis

__all__ = ["Context"]


class Context:
    """The handling of one event, as the handler sees it.

    ``event`` is the incoming CloudEvent (all its attributes); ``chain_id`` identifies the run
    of the agent chain; ``span`` is the OpenTelemetry span of this handling. Outbound clients:
    :attr:`http` (breaker-guarded, traced HTTP), :meth:`guard` (a breaker around any other
    call: gRPC, inference), :meth:`publish` (an event to the broker, besides the reply),
    :attr:`redis` (the agent's Redis client when one is configured).
    """

    __slots__ = (
        "_app",
        "_http",
        "_logger",
        "_published",
        "_trace",
        "chain_id",
        "event",
        "handler",
        "span",
    )

    def __init__(
        self, app: AgentApp, handler: HandlerSpec, event: CloudEvent, chain_id: str, span: Span
    ) -> None:
        self._app = app
        self.handler = handler
        self.event = event
        self.chain_id = chain_id
        self.span = span
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._http: HTTPClient | None = None
        self._trace: dict[str, str] | None = None
        self._published = 0

    @property
    def agent(self) -> str:
        return self._app.spec.name

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """The incoming event's context attributes and extensions."""
        return self.event.attributes

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """The agent's logger, with the event id and chain id on every record."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                self._app.logger,
                {"event_id": self.event.id, "chain_id": self.chain_id, "agent": self.agent},
            )
        return self._logger

    @property
    def settings(self) -> Settings:
        return self._app.settings

    @property
    def state(self) -> dict[str, Any]:
        """Per-app storage for resources a handler builds once (caches, joins)."""
        return self._app.state

    @property
    def redis(self) -> Redis | None:
        return self._app.redis

    @property
    def breakers(self) -> CircuitBreakers:
        return self._app.breakers

    def guard(self, destination: str) -> AbstractAsyncContextManager[None]:
        """The breaker of ``destination`` around a block: ``async with ctx.guard("llm"): ...``.

        An exception in the block counts as a failure; an open breaker raises
        :class:`CircuitOpenError` (the handler answers 503 with ``Retry-After``).
        """
        return self._app.breakers.guard(destination)

    def trace_headers(self) -> dict[str, str]:
        """``traceparent``/``tracestate`` of this handling, for clients of your own."""
        return dict(self.trace_carrier())

    def trace_carrier(self) -> Mapping[str, str]:
        """The same, computed once per handling and shared (do not mutate)."""
        if self._trace is None:
            self._trace = trace_headers(self.span)
        return self._trace

    @property
    def http(self) -> HTTPClient:
        if self._http is None:
            self._http = HTTPClient(self._app.sessions, self._app.breakers, self.trace_carrier())
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
        self._published += 1
        event = self._app.outgoing(self, payload, event_type=type, sequence=self._published)
        await self._app.publish(event)
        return event
