"""The ASGI app of one agent: Knative's data plane over raw ASGI.

``POST`` (any path) carries one CloudEvent; the answer is

=====  ===============================================================================
200    the reply CloudEvent: binary mode, or structured when a string attribute would
       need percent-encoding in a header (:func:`agentfn.events.to_http`)
202    handled, no reply (or the emitted events were published to the broker)
400    not a valid CloudEvent (or none at all), a batch of several, or no handler
       consumes its type
409    a duplicate of an event still being handled (``Retry-After``: the lease left)
413    body too large
422    the payload fails the handler's input model (JSON list of the errors)
500    the handler raised (retried by the broker)
503    retryable: RetryableError, timeout, unreachable downstream, open circuit, or the
       idempotency store is unavailable (``Retry-After``)
=====  ===============================================================================

``GET /healthz`` (liveness), ``GET /readyz`` (readiness: the idempotency store answers),
``GET /metrics`` (Prometheus), ``GET /`` (what the agent consumes and emits).

Knative retries 404, 408, 409, 429 and 5xx, and sends a 400/413/422 straight to the
dead-letter sink.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from agentfn.events import (
    SPEC_VERSION,
    CloudEvent,
    InvalidEventError,
    attribute_text,
    extensions,
    from_http,
    needs_structured,
    new_event_id,
    to_binary,
    to_http,
)
from agentfn.events.http import header_safe
from agentfn.functions._breaker import BreakerPolicy, CircuitBreakers, RedisBreakerStore
from agentfn.functions._context import Context
from agentfn.functions._errors import CircuitOpenError, RetryableError, StoreUnavailableError
from agentfn.functions._idempotency import (
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    idempotency_key,
    new_token,
    redis_client,
)
from agentfn.functions._metrics import AgentMetrics, FailureKind, TypeMetrics
from agentfn.functions._publisher import HttpPublisher, Publisher, SessionPool, is_connection_error
from agentfn.functions._spec import AgentSpec, HandlerSpec
from agentfn.functions._tracing import ATTR_DUPLICATE, Tracing, configure_from_env
from agentfn.functions.settings import Settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode, TracerProvider
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MAX_BODY_BYTES", "AgentApp", "Response"]

logger = logging.getLogger(__name__)

Response: TypeAlias = tuple[int, list[tuple[bytes, bytes]], bytes]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_MAX_ERRORS: Final = 20

_JSON_MEDIA: Final = "application/json"
_JSON: Final = (b"content-type", _JSON_MEDIA.encode())
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_NO_CONTENT: Final[Response] = (202, [], b"")
_CHAIN_HEADER: Final = b"ce-" + extensions.CHAIN_ID.encode()
_TTL_HEADER: Final = b"ce-" + extensions.KNATIVE_BROKER_TTL.encode()
_PUBLISHED_NAMESPACE: Final = uuid.UUID("a7f3c1d4-2b8e-4c55-8f0e-5d9b1e4c7a21")
# Outcome stored for "handled, no reply"; a reply is stored as the answer itself (see
# _encode_outcome), so a duplicate is answered byte for byte without parsing an event.
_NO_REPLY: Final = b""


def _json_response(status: int, body: dict[str, Any], *extra: tuple[bytes, bytes]) -> Response:
    return status, [_JSON, *extra], json.dumps(body, separators=(",", ":")).encode()


def _retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    # delay-seconds is a whole number; round up so the retry never comes early.
    return b"retry-after", str(max(1, math.ceil(seconds))).encode()


def _event_response(event: CloudEvent) -> Response:
    """The 200 answer carrying ``event`` in the content mode every writer here picks."""
    headers, body = to_http(event)
    return 200, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], body


def _encode_outcome(answer: Response) -> bytes:
    """A 200 answer as stored bytes: ``name: value`` lines, a blank line, the body."""
    _, headers, body = answer
    return b"\n".join([name + b": " + value for name, value in headers]) + b"\n\n" + body


def _decode_outcome(outcome: bytes) -> Response:
    if outcome == _NO_REPLY:
        return _NO_CONTENT
    head, _, body = outcome.partition(b"\n\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\n")]
    return 200, headers, body  # type: ignore[return-value]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Route:
    """A handler as dispatched for one event type, with that type's metric children."""

    __slots__ = ("deadline", "handler", "metrics")

    def __init__(self, handler: HandlerSpec, metrics: TypeMetrics, deadline: float | None):
        self.handler = handler
        self.metrics = metrics
        self.deadline = deadline


class AgentApp:
    """Serves one agent; an ASGI callable (``http`` and ``lifespan`` scopes)."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        settings: Settings | None = None,
        store: IdempotencyStore | None = None,
        breakers: CircuitBreakers | None = None,
        publisher: Publisher | None = None,
        tracer_provider: TracerProvider | None = None,
        configure_tracing: bool = False,
    ) -> None:
        self.spec = spec
        self.settings = settings if settings is not None else Settings()
        self.logger = logging.getLogger(f"agentfn.agent.{spec.name}")
        self.state: dict[str, Any] = {}
        self.metrics = AgentMetrics(spec.name, spec.consumes)
        self._closers: list[Callable[[], Awaitable[None]]] = []
        settings_ = self.settings

        self.redis: Redis | None = None
        if settings_.redis_url:
            self.redis = redis_client(settings_.redis_url, timeout_s=settings_.redis_timeout_s)
            self._closers.append(self.redis.aclose)

        self.store: IdempotencyStore | None = store
        if store is None:
            backend = settings_.idempotency_backend
            if backend == "redis":
                assert self.redis is not None  # Settings refuses redis without a URL
                self.store = RedisIdempotencyStore(self.redis)
            elif backend == "embedded":
                self.store = InMemoryIdempotencyStore(
                    path=settings_.idempotency_path, max_records=settings_.idempotency_max_records
                )
            if self.store is not None:
                self._closers.append(self.store.aclose)

        if breakers is None:
            policy = BreakerPolicy(
                failures=settings_.breaker_failures,
                window_s=settings_.breaker_window_s,
                reset_s=settings_.breaker_reset_s,
            )
            shared = (
                RedisBreakerStore(self.redis, policy)
                if settings_.breaker_shared and self.redis is not None
                else None
            )
            breakers = CircuitBreakers(policy, store=shared)
        breakers.add_listener(self.metrics.set_breaker_state)
        self.breakers = breakers

        self.sessions = SessionPool(timeout_s=settings_.outbound_timeout_s)
        self._closers.append(self.sessions.aclose)
        if publisher is None and settings_.broker_url:
            publisher = HttpPublisher(settings_.broker_url, self.sessions, self.breakers)
        self.publisher = publisher

        self._tracing = Tracing(spec.name, tracer_provider)
        self._configure_tracing = configure_tracing
        self._lease_s = settings_.idempotency_lease_s
        self._ttl_s = settings_.idempotency_ttl_s
        self._retry_after_s = settings_.retry_after_s
        deadline = spec.delivery.handler_deadline()
        if deadline is not None:
            # The lease must outlive the handler, or a slow run would let a duplicate in.
            self._lease_s = max(self._lease_s, deadline + 5.0)

        routes: dict[str, list[_Route]] = {}
        for handler in spec.handlers:
            for event_type in handler.event_types:
                routes.setdefault(event_type, []).append(
                    _Route(handler, self.metrics.for_type(event_type), deadline)
                )
        # The most specific filter wins; declaration order breaks ties (sort is stable).
        self._routes = {
            t: tuple(sorted(found, key=lambda r: -len(r.handler.filters)))
            for t, found in routes.items()
        }
        self._reply_headers = {
            event_type: _static_reply_headers(event_type, spec.source)
            for handler in spec.handlers
            for event_type in handler.emits
        }
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Idempotent; the first request starts the app when no lifespan did."""
        async with self._start_lock:
            if self._started:
                return
            if self._configure_tracing:
                configure_from_env()
            self._tracing.resolve()
            self._started = True

    async def aclose(self) -> None:
        """Close what this app opened (not the store, breakers or publisher it was given)."""
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                logger.warning("closing %s failed", close, exc_info=True)
        self._closers.clear()
        self._started = False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": repr(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                await self.start()
            if scope["method"] == "POST":
                message = await receive()
                body: bytes | None = message.get("body", b"")
                if message.get("more_body", False):
                    body = await _read_rest(receive, body or b"")
                status, headers, payload = (
                    _json_response(413, {"error": "body too large"})
                    if body is None or len(body) > MAX_BODY_BYTES
                    else await self.handle(scope["headers"], body)
                )
            else:
                status, headers, payload = await self.respond(
                    scope["method"], scope["path"], scope["headers"], b""
                )
            # A new list: `headers` may be a stored or static answer's, shared between requests.
            headers = [*headers, (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def respond(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """The answer to one HTTP request, whatever server carried it."""
        if not self._started:
            await self.start()
        if method == "POST":
            if len(body) > MAX_BODY_BYTES:
                return _json_response(413, {"error": "body too large"})
            return await self.handle(headers, body)
        if method in ("GET", "HEAD"):
            answer = await self._get(path)
            return answer if method == "GET" else (answer[0], answer[1], b"")
        return _json_response(405, {"error": "method not allowed"}, (b"allow", b"GET, HEAD, POST"))

    async def _get(self, path: str) -> Response:
        if path in ("/healthz", "/livez"):
            return 200, [_TEXT], b"ok"
        if path == "/readyz":
            if self.store is not None:
                try:
                    await self.store.ping()
                except StoreUnavailableError as error:
                    return _json_response(503, {"error": str(error)})
            return 200, [_TEXT], b"ready"
        if path == "/metrics":
            text, content_type = self.metrics.render()
            return 200, [(b"content-type", content_type.encode())], text
        if path == "/":
            return _json_response(200, self.spec.describe())
        return _json_response(404, {"error": "not found"})

    # -- events --------------------------------------------------------------------------------

    async def handle(self, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Response:
        """The answer to one POSTed CloudEvent."""
        raw_headers = headers if isinstance(headers, list) else list(headers)
        try:
            events = from_http(raw_headers, body)
        except InvalidEventError as error:
            self.metrics.for_type("").failed(FailureKind.INVALID)
            return _json_response(400, error.as_dict())
        if len(events) != 1:
            self.metrics.for_type("").failed(FailureKind.INVALID)
            return _json_response(
                400, {"error": "invalid CloudEvent", "message": "send one event per request"}
            )
        http_traceparent: str | None = None
        if extensions.TRACEPARENT not in events[0].attributes:
            for name, value in raw_headers:
                if name == b"traceparent":
                    http_traceparent = value.decode("latin-1")
                    break
        return await self.deliver(events[0], traceparent=http_traceparent)

    async def deliver(self, event: CloudEvent, *, traceparent: str | None = None) -> Response:
        """The answer to one CloudEvent that is already parsed and validated.

        What :meth:`handle` does after parsing the request, with the same answers; the broker
        calls it directly for an agent it hosts in its own process (``agentfn dev
        --in-process``). ``traceparent`` is the W3C header the request carried, if any.
        """
        if not self._started:
            await self.start()
        route = self._route(event)
        if route is None:
            self.metrics.for_type(event.type).failed(FailureKind.NO_HANDLER)
            return _json_response(
                400,
                {
                    "error": "no handler",
                    "type": event.type,
                    "agent": self.spec.name,
                    "consumes": list(self.spec.consumes),
                },
            )
        handler = route.handler
        model = handler.input_model
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
                return _json_response(
                    422,
                    {"error": "validation", "count": len(errors), "errors": errors[:_MAX_ERRORS]},
                )

        attributes = event.attributes
        chain = attributes.get(extensions.CHAIN_ID)
        chain_id = str(chain) if chain is not None else _mint_chain_id(event)
        span = self._tracing.start(event, self._tracing.parent(event, traceparent), chain_id)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            answer = await self._run(route, event, payload, chain_id, span)
            span.set_attribute("http.response.status_code", answer[0])
            return answer
        finally:
            otel_context.detach(token)
            span.end()

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

    async def _run(
        self,
        route: _Route,
        event: CloudEvent,
        payload: BaseModel | CloudEvent,
        chain_id: str,
        span: Span,
    ) -> Response:
        metrics = route.metrics
        store = self.store
        key = token = ""
        if store is not None:
            key = idempotency_key(self.spec.name, event.source, event.id)
            token = new_token()
            try:
                claim = await store.claim(key, token, self._lease_s)
            except StoreUnavailableError as error:
                return self._failure(route, span, error)
            if claim.state is ClaimState.DONE:
                metrics.duplicates.inc()
                span.set_attributes({ATTR_DUPLICATE: True})
                return _decode_outcome(claim.outcome)
            if claim.state is ClaimState.IN_FLIGHT:
                metrics.failed(FailureKind.IN_FLIGHT)
                span.set_attributes({ATTR_DUPLICATE: True})
                return _json_response(
                    409,
                    {"error": "in flight", "message": "this event is being handled; retry"},
                    _retry_after_header(claim.retry_after),
                )

        ctx = Context(self, route.handler, event, chain_id, span)
        started = time.perf_counter()
        try:
            result = await self._invoke(route, payload, ctx)
            answer = await self._emit(ctx, result)
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
            outcome = _NO_REPLY if answer is _NO_CONTENT else _encode_outcome(answer)
            try:
                await store.complete(key, token, outcome, self._ttl_s)
            except StoreUnavailableError:
                # The side effect happened; refusing now would only make the broker run it
                # again. Answer, and let the lease expire: a later duplicate may run again.
                self.logger.warning(
                    "handled %s but could not record it; a duplicate may run again", event.id
                )
        metrics.handled.inc()
        return answer

    async def _invoke(self, route: _Route, payload: BaseModel | CloudEvent, ctx: Context) -> object:
        handler = route.handler
        function = handler.function
        if handler.is_async:
            pending = function(payload, ctx) if handler.takes_context else function(payload)
        else:
            args = (payload, ctx) if handler.takes_context else (payload,)
            pending = asyncio.to_thread(function, *args)
        if route.deadline is None:
            return await pending
        async with asyncio.timeout(route.deadline):
            return await pending

    async def _emit(self, ctx: Context, result: object) -> Response:
        """The answer carrying the reply; a list is published to the broker instead (202)."""
        if result is None:
            return _NO_CONTENT
        if isinstance(result, BaseModel):
            return self._reply(ctx, result)
        if isinstance(result, CloudEvent):
            return _event_response(self.outgoing(ctx, result))
        if isinstance(result, list | tuple):
            # Sequence numbers continue after those of ctx.publish calls.
            first = ctx._published
            events = [
                self.outgoing(ctx, item, sequence=first + n)
                for n, item in enumerate(result, start=1)
            ]
            ctx._published = first + len(events)
            outcomes = await asyncio.gather(
                *(self.publish(event) for event in events), return_exceptions=True
            )
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                # Published ids are derived from the input, so the retry re-sends the same
                # events and downstream idempotency drops the ones that did arrive.
                raise failures[0]
            return _NO_CONTENT
        raise TypeError(
            f"handler {ctx.handler.name} returned {type(result).__name__}; return a model of "
            "one of its emits types, a list of them, or None"
        )

    def outgoing(
        self,
        ctx: Context,
        payload: BaseModel | CloudEvent,
        *,
        event_type: str | None = None,
        sequence: int = 0,
    ) -> CloudEvent:
        """The event carrying ``payload`` on from the handling of ``ctx``.

        ``sequence`` 0 is the reply (a fresh id); 1, 2, ... are published events, whose ids
        are derived from the incoming event so that a retried handler sends the same ones.
        """
        incoming = ctx.event
        carried: dict[str, object] = {extensions.CHAIN_ID: ctx.chain_id}
        carried.update(ctx.trace_carrier())
        ttl = incoming.attributes.get(extensions.KNATIVE_BROKER_TTL)
        if ttl is not None:
            # The broker decrements on the reply path; an event published straight to the
            # ingress skips that, so it loses the hop here.
            carried[extensions.KNATIVE_BROKER_TTL] = (
                ttl if sequence == 0 else max(_as_int(ttl) - 1, 0)
            )
        if isinstance(payload, CloudEvent):
            missing = {k: v for k, v in carried.items() if k not in payload.attributes}
            return payload.with_attributes(**missing) if missing else payload
        event_type = _emitted_type(ctx.handler, payload, event_type)
        if sequence:
            carried["id"] = str(
                uuid.uuid5(
                    _PUBLISHED_NAMESPACE,
                    f"{self.spec.name}\n{incoming.source}\n{incoming.id}\n{sequence}",
                )
            )
        return CloudEvent.new(
            event_type, self.spec.source, payload.model_dump(mode="json"), **carried
        )

    async def publish(self, event: CloudEvent) -> None:
        if self.publisher is None:
            raise RuntimeError(
                f"agent {self.spec.name!r} publishes events but has no broker: "
                "set AGENTFN_BROKER_URL (agentfn serve --broker URL)"
            )
        await self.publisher.publish(event)

    def _reply(self, ctx: Context, payload: BaseModel) -> Response:
        """The 200 answer carrying ``payload`` as the reply event, built straight as headers.

        The same event :meth:`outgoing` would build, without a second validation of what is
        valid by construction: type and source were checked when the agent was declared, the
        chain id and trace context come from a validated event or are minted here. A value
        binary mode would percent-encode sends the reply structured instead, built as
        :meth:`outgoing` builds it: the rule of :func:`agentfn.events.to_http`, which SDKs that
        never percent-decode (JavaScript, Go, Java) read intact.
        """
        static = self._reply_headers[_emitted_type(ctx.handler, payload, None)]
        carried = [(_CHAIN_HEADER, ctx.chain_id)]
        carried.extend((b"ce-" + name.encode(), v) for name, v in ctx.trace_carrier().items())
        ttl = ctx.event.attributes.get(extensions.KNATIVE_BROKER_TTL)
        if ttl is not None:
            carried.append((_TTL_HEADER, attribute_text(ttl)))
        if static is None or not all(header_safe(value) for _, value in carried):
            return _event_response(self.outgoing(ctx, payload))
        headers = list(static)
        headers.append((b"ce-id", new_event_id().encode()))
        headers.append((b"ce-time", _now().encode()))
        headers.extend((name, value.encode("ascii")) for name, value in carried)
        return 200, headers, payload.__pydantic_serializer__.to_json(payload)

    async def _release(self, store: IdempotencyStore, key: str, token: str) -> None:
        try:
            await store.release(key, token)
        except StoreUnavailableError:
            self.logger.warning("could not release the lease on %s; it expires by itself", key)

    def _failure(self, route: _Route, span: Span, error: Exception) -> Response:
        """The answer for an exception, counted and recorded on the span."""
        status, kind, retry_after = self._classify(route.handler, error)
        route.metrics.failed(kind)
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{kind.value}: {error}")
        body = {"error": kind.value, "exception": type(error).__name__, "message": str(error)[:512]}
        if status == 500:
            self.logger.error("handler %s failed", route.handler.name, exc_info=error)
            return _json_response(500, body)
        self.logger.warning("handler %s: %s (retried)", route.handler.name, error)
        return _json_response(status, body, _retry_after_header(retry_after))

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


def _emitted_type(handler: HandlerSpec, payload: object, event_type: str | None) -> str:
    """The declared type ``payload`` is emitted as; TypeError (a 500) if it is not declared."""
    if not isinstance(payload, BaseModel):
        raise TypeError(f"cannot emit a {type(payload).__name__}; emit a pydantic model")
    if event_type is None:
        found = handler.type_of(type(payload))
        if found is None:
            raise TypeError(
                f"handler {handler.name} emitted {type(payload).__name__}, which is none of "
                f"its emits types {sorted(handler.emits)}"
            )
        return found
    declared = handler.emits.get(event_type)
    if declared is None or not isinstance(payload, declared):
        raise TypeError(
            f"handler {handler.name} does not emit {event_type!r} as {type(payload).__name__}"
        )
    return event_type


def _static_reply_headers(event_type: str, source: str) -> tuple[tuple[bytes, bytes], ...] | None:
    """The headers every reply of ``event_type`` shares, encoded by the HTTP binding itself;
    ``None`` when they would need percent-encoding (every such reply goes structured)."""
    template = CloudEvent(
        {
            "specversion": SPEC_VERSION,
            "id": "-",
            "source": source,
            "type": event_type,
            "datacontenttype": _JSON_MEDIA,
        },
    )
    if needs_structured(template):
        return None
    headers, _ = to_binary(template)
    return tuple(
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in headers.items()
        if name != "ce-id"
    )


def _mint_chain_id(event: CloudEvent) -> str:
    """The chain id the first agent of a chain sets: derived from the event it started from.

    Derived, not random, so a retried first agent starts the same chain; hashed over source
    and id because an id is only unique within its source.
    """
    digest = hashlib.blake2b(f"{event.source}\n{event.id}".encode(), digest_size=16)
    return digest.hexdigest()


def _as_int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


async def _read_rest(receive: Receive, first: bytes) -> bytes | None:
    """The rest of a chunked body; ``None`` once it outgrows MAX_BODY_BYTES (drained)."""
    chunks = [first]
    size = len(first)
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if size <= MAX_BODY_BYTES else None
