"""What a handler gets besides its payload: the event, a logger, the span, outbound clients."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfn.events import AttributeValue, CloudEvent, extensions
from agentfn.functions._inference import InferenceClient, inference_policy
from agentfn.functions._publisher import HTTPClient
from agentfn.functions._rpc import AgentClient, RpcEvents

if TYPE_CHECKING:
    from agentfn.functions._breaker import CircuitBreakers
    from agentfn.functions._outbox import Outbox
    from agentfn.functions._publisher import SessionPool
    from agentfn.functions._rpc import ChannelPool
    from agentfn.functions._spec import HandlerSpec
    from agentfn.functions.settings import Settings
    from opentelemetry.trace import Span
    from pydantic import BaseModel
    from redis.asyncio import Redis

__all__ = ["Context", "Services"]


@dataclass(frozen=True, slots=True, eq=False)
class Services:
    """What every handling of one agent shares with its handler; built once per app.

    ``source`` is the agent's CloudEvents source (what events it sends over ``ctx.rpc``
    carry); ``channels`` the app's gRPC channels (``None``: ``ctx.rpc`` is refused).
    """

    agent: str
    logger: logging.Logger
    settings: Settings
    state: dict[str, Any]
    redis: Redis | None
    breakers: CircuitBreakers
    sessions: SessionPool
    channels: ChannelPool | None = None
    source: str = "/agentfn/agents/unnamed"


class Context:
    """The handling of one event, as the handler sees it.

    ``event`` is the incoming CloudEvent (all its attributes); ``chain_id`` identifies the run
    of the agent chain; ``span`` is the OpenTelemetry span of this handling. Outbound clients:
    :attr:`http` (breaker-guarded, traced HTTP), :meth:`rpc` (another agent over gRPC),
    :meth:`infer` (a model server over the Open Inference Protocol),
    :meth:`guard` (a breaker around any other call: a database, an API),
    :meth:`publish` (an event to the broker, besides the reply), :attr:`redis` (the agent's
    Redis client when one is configured).
    """

    __slots__ = ("_http", "_logger", "_outbox", "_rpc_events", "_services")

    def __init__(self, services: Services, outbox: Outbox) -> None:
        self._services = services
        self._outbox = outbox
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._http: HTTPClient | None = None
        self._rpc_events: RpcEvents | None = None

    @property
    def event(self) -> CloudEvent:
        return self._outbox.event

    @property
    def handler(self) -> HandlerSpec:
        return self._outbox.handler

    @property
    def deadline(self) -> float | None:
        """When this handling is cut off, in :func:`time.monotonic` seconds (its delivery
        timeout, or a gRPC caller's deadline if sooner); ``None``: no limit."""
        return self._outbox.deadline

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

    def rpc(self, target: str) -> AgentClient:
        """A gRPC client of the agent at ``target``: a peer's name in ``AGENTFN_RPC_TARGETS``,
        ``host:port`` or its Knative URL.

        ``await ctx.rpc("http://planner-rpc.agentfn.svc.cluster.local").call(model,
        type="chain.count.asked")`` returns the reply event (or ``None``); ``async with
        ctx.rpc(target).session() as stream`` opens a stream. The app's one channel per
        target and its breaker of that target are used; each call's deadline is what is left
        of this handler's (unless a shorter ``timeout`` is given), its metadata and event
        carry this handling's trace context and chain id, and a model's event id is derived
        from the incoming event, so a retried handler's calls are answered from what the
        target stored. An unreachable target raises :class:`RpcUnavailableError` (503).
        """
        services = self._services
        if services.channels is None:
            raise RuntimeError(f"agent {services.agent!r} was built without gRPC channels")
        target = services.settings.rpc_peers.get(target, target)  # a peer's name, or a target
        outbox = self._outbox
        events = self._rpc_events
        if events is None:
            carried = {extensions.CHAIN_ID: outbox.chain_id, **outbox.trace_carrier()}
            events = self._rpc_events = RpcEvents(
                services.agent,
                services.source,
                incoming=outbox.event,
                handler=outbox.handler,
                carried=carried,
            )
        return AgentClient(
            target,
            channels=services.channels,
            breakers=services.breakers,
            events=events,
            deadline=outbox.deadline,
            metadata=outbox.trace_carrier(),
        )

    def infer(self, model: str, *, target: str | None = None) -> InferenceClient:
        """A client of ``model`` on its model server: the target ``AGENTFN_INFERENCE_TARGETS``
        names for it (``target`` overrides: ``http://host:8080`` is OIP REST,
        ``grpc://host:8081`` OIP gRPC).

        ``await ctx.infer("all-minilm-l6-v2").embed(sentences)`` returns one vector per
        sentence; ``.infer(request)`` sends any kserve ``InferRequest``. The app's channels,
        HTTP session and breaker of that target are used; each call's deadline is what is left
        of this handler's (unless a shorter ``timeout`` is given) and carries this handling's
        trace context. A server that cannot be reached or cannot take the call raises
        :class:`InferenceUnavailableError` (503); a refusal (a bad tensor) raises
        :class:`InferenceError` with the server's message. A model with no target raises
        :class:`LookupError` naming the setting.
        """
        services = self._services
        settings = services.settings
        if target is None:
            models = settings.inference_models
            target = models.get(model)
            if target is None:
                known = ", ".join(sorted(models)) or "none"
                raise LookupError(
                    f"no model server for model {model!r}: set AGENTFN_INFERENCE_TARGETS="
                    f"{model}=grpc://HOST:PORT (or http://HOST:PORT); configured: {known}"
                )
        outbox = self._outbox
        client = InferenceClient(
            model,
            target,
            channels=services.channels,
            sessions=services.sessions,
            breakers=services.breakers,
            policy=inference_policy(settings),
            deadline=outbox.deadline,
            metadata=outbox.trace_carrier(),
        )
        if client.protocol == "grpc" and services.channels is None:
            raise RuntimeError(f"agent {services.agent!r} was built without gRPC channels")
        return client

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
