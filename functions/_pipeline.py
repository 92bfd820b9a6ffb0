"""Handling one event, transport-free: route, validate, claim, invoke, answer.

Every front door calls this: the ASGI app (:meth:`Pipeline.handle`, from the request's
headers and body), the broker's in-process call (:meth:`Pipeline.deliver`, an event already
parsed), and servers of other transports. Whatever happens becomes an :data:`Answer` in
Knative's status codes:

=====  ===============================================================================
200    the reply CloudEvent: binary mode, or structured when a string attribute would
       need percent-encoding in a header (:func:`agentfn.events.to_http`)
202    handled, no reply (or the emitted events were published to the broker)
400    not a valid CloudEvent (or none at all), a batch of several, or no handler
       consumes its type
409    a duplicate of an event still being handled (``Retry-After``: the lease left)
422    the payload fails the handler's input model (JSON list of the errors)
500    the handler raised (retried by the broker)
503    retryable: RetryableError, timeout, unreachable downstream, open circuit, or the
       idempotency store is unavailable (``Retry-After``)
=====  ===============================================================================

A handler written as an async generator streams: given a ``sink`` (a gRPC session), each event
it yields goes out as it is yielded and the answer is 202; without one (HTTP, in-process, a
unary gRPC call) the yielded events are a returned list: published to the broker, 202. The
events a streamed run sent are stored as its outcome, so a duplicate over a session gets the
same events again (and a duplicate elsewhere 202, as the list's would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final, TypeAlias

from agentfn.events import CloudEvent, InvalidEventError, extensions, from_http
from agentfn.functions._answers import (
    NO_CONTENT,
    Answer,
    decode_outcome,
    encode_outcome,
    json_answer,
    retry_after_header,
    stream_answer,
    streamed_events,
)
from agentfn.functions._context import Context, Services
from agentfn.functions._errors import CircuitOpenError, RetryableError, StoreUnavailableError
from agentfn.functions._idempotency import ClaimState, IdempotencyStore, idempotency_key, new_token
from agentfn.functions._metrics import AgentMetrics, FailureKind, TypeMetrics
from agentfn.functions._outbox import Emitter, Outbox, chain_id_of
from agentfn.functions._publisher import is_connection_error
from agentfn.functions._tracing import ATTR_DUPLICATE, Tracing
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from agentfn.functions._spec import AgentSpec, HandlerSpec

__all__ = ["Pipeline", "Sink"]

_MAX_ERRORS: Final = 20

#: Where a streaming front door (a gRPC session) takes each event a handling streams out.
Sink: TypeAlias = Callable[[CloudEvent], Awaitable[None]]


class _Streamed:
    """The events an async-generator handler streamed to a sink (already sent)."""

    __slots__ = ("events",)

    def __init__(self, events: list[CloudEvent]) -> None:
        self.events = events


class _Route:
    """A handler as dispatched for one event type, with that type's metric children."""

    __slots__ = ("deadline", "handler", "metrics")

    def __init__(self, handler: HandlerSpec, metrics: TypeMetrics, deadline: float | None):
        self.handler = handler
        self.metrics = metrics
        self.deadline = deadline


class Pipeline:
    """The stages one event goes through in an agent; built once per app."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        services: Services,
        emitter: Emitter,
        store: IdempotencyStore | None,
        metrics: AgentMetrics,
        tracing: Tracing,
    ) -> None:
        settings = services.settings
        self._spec = spec
        self._services = services
        self._emitter = emitter
        self._store = store
        self._metrics = metrics
        self._tracing = tracing
        self._logger: logging.Logger = services.logger
        self._ttl_s = settings.idempotency_ttl_s
        self._retry_after_s = settings.retry_after_s
        deadline = spec.delivery.handler_deadline()
        # The lease must outlive the handler, or a slow run would let a duplicate in.
        self._lease_s = (
            settings.idempotency_lease_s
            if deadline is None
            else max(settings.idempotency_lease_s, deadline + 5.0)
        )
        routes: dict[str, list[_Route]] = {}
        for handler in spec.handlers:
            for event_type in handler.event_types:
                routes.setdefault(event_type, []).append(
                    _Route(handler, metrics.for_type(event_type), deadline)
                )
        # The most specific filter wins; declaration order breaks ties (sort is stable).
        self._routes = {
            t: tuple(sorted(found, key=lambda r: -len(r.handler.filters)))
            for t, found in routes.items()
        }

    # -- entry points ---------------------------------------------------------------------------

    async def handle(self, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Answer:
        """The answer to one event as the HTTP binding carries it (any content mode)."""
        raw_headers = headers if isinstance(headers, list) else list(headers)
        try:
            events = from_http(raw_headers, body)
        except InvalidEventError as error:
            self._metrics.for_type("").failed(FailureKind.INVALID)
            return json_answer(400, error.as_dict())
        if len(events) != 1:
            self._metrics.for_type("").failed(FailureKind.INVALID)
            return json_answer(
                400, {"error": "invalid CloudEvent", "message": "send one event per request"}
            )
        http_traceparent: str | None = None
        if extensions.TRACEPARENT not in events[0].attributes:
            for name, value in raw_headers:
                if name == b"traceparent":
                    http_traceparent = value.decode("latin-1")
                    break
        return await self.deliver(events[0], traceparent=http_traceparent)

    async def deliver(
        self,
        event: CloudEvent,
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
        transport_first: bool = False,
        deadline: float | None = None,
        sink: Sink | None = None,
    ) -> Answer:
        """The answer to one CloudEvent that is already parsed and validated.

        ``traceparent`` (and ``tracestate``) is the W3C trace context the transport carried, if
        any; the event's own wins unless ``transport_first`` (a gRPC call's metadata).
        ``deadline`` (:func:`time.monotonic` seconds) is when the caller stops waiting; the
        handling's deadline is the sooner of it and the handler's delivery timeout. ``sink``
        takes each event an async-generator handler yields, as it yields it (module
        docstring).
        """
        route = self._route(event)
        if route is None:
            self._metrics.for_type(event.type).failed(FailureKind.NO_HANDLER)
            return json_answer(
                400,
                {
                    "error": "no handler",
                    "type": event.type,
                    "agent": self._spec.name,
                    "consumes": list(self._spec.consumes),
                },
            )
        model = route.handler.input_model
        payload: BaseModel | CloudEvent
        if model is None:
            payload = event
        else:
            try:
                data = event.data
                payload = (
                    model.model_validate_json(data)
                    if isinstance(data, bytes | str)
                    else model.model_validate(data)
                )
            except ValidationError as error:
                route.metrics.failed(FailureKind.VALIDATION)
                # Without the input: it may be binary or huge, and the dead-letter sink gets the
                # event anyway. Knative keeps only the first KiB of the body either way.
                errors = error.errors(include_url=False, include_context=False, include_input=False)
                return json_answer(
                    422,
                    {"error": "validation", "count": len(errors), "errors": errors[:_MAX_ERRORS]},
                )

        chain_id = chain_id_of(event)
        parent = self._tracing.parent(
            event, traceparent, tracestate=tracestate, transport_first=transport_first
        )
        span = self._tracing.start(event, parent, chain_id)
        token = otel_context.attach(trace.set_span_in_context(span))
        if route.deadline is not None:
            own = time.monotonic() + route.deadline
            deadline = own if deadline is None else min(own, deadline)
        try:
            answer = await self._claimed(
                route, event, payload, chain_id, span, deadline=deadline, sink=sink
            )
            span.set_attribute("http.response.status_code", answer[0])
            return answer
        finally:
            otel_context.detach(token)
            span.end()

    # -- stages ---------------------------------------------------------------------------------

    def _route(self, event: CloudEvent) -> _Route | None:
        candidates = self._routes.get(event.type)
        if candidates is None:
            return None
        if len(candidates) == 1 and not candidates[0].handler.filters:
            return candidates[0]
        attributes = event.attributes
        for route in candidates:
            if route.handler.matches(attributes):
                return route
        return None

    async def _claimed(
        self,
        route: _Route,
        event: CloudEvent,
        payload: BaseModel | CloudEvent,
        chain_id: str,
        span: Span,
        *,
        deadline: float | None,
        sink: Sink | None,
    ) -> Answer:
        """Run the handler once per event identity: a duplicate gets the first answer."""
        metrics = route.metrics
        store = self._store
        key = token = ""
        if store is not None:
            key = idempotency_key(self._spec.name, event.source, event.id)
            token = new_token()
            try:
                claim = await store.claim(key, token, self._lease_s)
            except StoreUnavailableError as error:
                return self._failure(route, span, error)
            if claim.state is ClaimState.DONE:
                metrics.duplicates.inc()
                span.set_attributes({ATTR_DUPLICATE: True})
                return await self._replayed(decode_outcome(claim.outcome), sink)
            if claim.state is ClaimState.IN_FLIGHT:
                metrics.failed(FailureKind.IN_FLIGHT)
                span.set_attributes({ATTR_DUPLICATE: True})
                return json_answer(
                    409,
                    {"error": "in flight", "message": "this event is being handled; retry"},
                    retry_after_header(claim.retry_after),
                )

        outbox = Outbox(self._emitter, route.handler, event, chain_id, span, deadline=deadline)
        started = time.perf_counter()
        try:
            result = await self._invoke(route, payload, outbox, sink)
            answer = await self._answer(outbox, result)
        except Exception as error:
            metrics.latency.observe(time.perf_counter() - started)
            if store is not None:
                await self._release(store, key, token)
            return self._failure(route, span, error)
        except BaseException:
            if store is not None:
                await asyncio.shield(self._release(store, key, token))
            raise
        metrics.latency.observe(time.perf_counter() - started)

        if store is not None:
            try:
                await store.complete(key, token, encode_outcome(answer), self._ttl_s)
            except StoreUnavailableError:
                # The side effect happened; refusing now would only make the broker run it
                # again. Answer, and let the lease expire: a later duplicate may run again.
                self._logger.warning(
                    "handled %s but could not record it; a duplicate may run again", event.id
                )
        metrics.handled.inc()
        # A streamed run's events went out as they were yielded: nothing more to answer.
        return NO_CONTENT if isinstance(result, _Streamed) else answer

    @staticmethod
    async def _replayed(answer: Answer, sink: Sink | None) -> Answer:
        """A stored answer for a duplicate; a streamed run's events go to ``sink`` again."""
        events = streamed_events(answer)
        if events is None:
            return answer
        if sink is not None:
            for event in events:
                await sink(event)
        return NO_CONTENT

    async def _invoke(
        self, route: _Route, payload: BaseModel | CloudEvent, outbox: Outbox, sink: Sink | None
    ) -> object:
        handler = route.handler
        function = handler.function
        # A Context only for a handler that takes one: the outbox alone carries the rest.
        if handler.is_generator:
            generator = (
                function(payload, Context(self._services, outbox))
                if handler.takes_context
                else function(payload)
            )
            pending = self._drain(generator, outbox, sink)
        elif handler.is_async:
            pending = (
                function(payload, Context(self._services, outbox))
                if handler.takes_context
                else function(payload)
            )
        else:
            args = (
                (payload, Context(self._services, outbox)) if handler.takes_context else (payload,)
            )
            pending = asyncio.to_thread(function, *args)
        if route.deadline is None:
            return await pending
        async with asyncio.timeout(route.deadline):
            return await pending

    @staticmethod
    async def _drain(
        generator: AsyncGenerator[object, None], outbox: Outbox, sink: Sink | None
    ) -> object:
        """Run an async-generator handler: its items to ``sink`` as yielded, else a list."""
        async with contextlib.aclosing(generator):
            if sink is None:
                return [item async for item in generator]
            sent: list[CloudEvent] = []
            async for item in generator:
                if not isinstance(item, BaseModel | CloudEvent):
                    raise TypeError(
                        f"handler {outbox.handler.name} yielded {type(item).__name__}; yield "
                        "models of its emits types"
                    )
                event = outbox.sequenced(item)
                await sink(event)
                sent.append(event)
            return _Streamed(sent)

    @staticmethod
    async def _answer(outbox: Outbox, result: object) -> Answer:
        """The answer carrying the reply; a list is published to the broker instead (202)."""
        if result is None:
            return NO_CONTENT
        if isinstance(result, BaseModel):
            return outbox.reply(result)
        if isinstance(result, CloudEvent):
            return outbox.reply_event(result)
        if isinstance(result, list | tuple):
            await outbox.fan_out(result)
            return NO_CONTENT
        if isinstance(result, _Streamed):
            return stream_answer(result.events)
        raise TypeError(
            f"handler {outbox.handler.name} returned {type(result).__name__}; return a model of "
            "one of its emits types, a list of them, or None"
        )

    async def _release(self, store: IdempotencyStore, key: str, token: str) -> None:
        try:
            await store.release(key, token)
        except StoreUnavailableError:
            self._logger.warning("could not release the lease on %s; it expires by itself", key)

    # -- failures -------------------------------------------------------------------------------

    def _failure(self, route: _Route, span: Span, error: Exception) -> Answer:
        """The answer for an exception, counted and recorded on the span."""
        status, kind, retry_after = self._classify(route.handler, error)
        route.metrics.failed(kind)
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{kind.value}: {error}")
        body = {"error": kind.value, "exception": type(error).__name__, "message": str(error)[:512]}
        if status == 500:
            self._logger.error("handler %s failed", route.handler.name, exc_info=error)
            return json_answer(500, body)
        self._logger.warning("handler %s: %s (retried)", route.handler.name, error)
        return json_answer(status, body, retry_after_header(retry_after))

    def _classify(self, handler: HandlerSpec, error: Exception) -> tuple[int, FailureKind, float]:
        default = self._retry_after_s
        if isinstance(error, CircuitOpenError):
            return 503, FailureKind.CIRCUIT_OPEN, error.retry_after or default
        if isinstance(error, StoreUnavailableError):
            return 503, FailureKind.STORE_UNAVAILABLE, error.retry_after or default
        if isinstance(error, RetryableError):
            kind = (
                FailureKind.TIMEOUT
                if isinstance(error.__cause__, TimeoutError)
                else FailureKind.RETRYABLE
            )
            return 503, kind, error.retry_after if error.retry_after is not None else default
        if isinstance(error, TimeoutError):
            return 503, FailureKind.TIMEOUT, default
        if is_connection_error(error):
            return 503, FailureKind.RETRYABLE, default
        if handler.retry_on and isinstance(error, handler.retry_on):
            return 503, FailureKind.RETRYABLE, default
        return 500, FailureKind.ERROR, 0.0
