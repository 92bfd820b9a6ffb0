"""The ASGI app of one agent: Knative's data plane over raw ASGI, transport only.

``POST`` (any path) carries one CloudEvent, answered by the agent's
:class:`~agentfn.functions._pipeline.Pipeline` (its docstring lists the status codes), or 413
when the body is over ``AGENTFN_MAX_BODY_BYTES``. ``GET /healthz`` (liveness), ``GET /readyz``
(readiness: the idempotency store answers), ``GET /metrics`` (Prometheus), ``GET /`` (what the
agent consumes and emits).

Knative retries 404, 408, 409, 429 and 5xx, and sends a 400/413/422 straight to the
dead-letter sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from agentfn.events import CloudEvent
from agentfn.functions._answers import Answer, json_answer
from agentfn.functions._context import Services
from agentfn.functions._errors import StoreUnavailableError
from agentfn.functions._metrics import AgentMetrics
from agentfn.functions._outbox import Emitter
from agentfn.functions._pipeline import Pipeline, Sink
from agentfn.functions._tracing import Tracing, configure_from_env
from agentfn.functions._wiring import Parts, wire

from agentfn._asgi import Receive, Scope, Send, lifespan, read_body
from agentfn._lifecycle import Started

if TYPE_CHECKING:
    from agentfn.functions._breaker import CircuitBreakers
    from agentfn.functions._idempotency import IdempotencyStore
    from agentfn.functions._publisher import Publisher
    from agentfn.functions._spec import AgentSpec
    from agentfn.functions.settings import Settings
    from opentelemetry.trace import TracerProvider

__all__ = ["AgentApp", "Response"]

log = logging.getLogger(__name__)

#: The answer to one request (status, header pairs, body): :data:`_answers.Answer`.
Response: TypeAlias = Answer

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


def _too_large(limit: int) -> Answer:
    return json_answer(
        413, {"error": "body too large", "message": f"over AGENTFN_MAX_BODY_BYTES ({limit})"}
    )


class AgentApp(Started):
    """Serves one agent; an ASGI callable (``http`` and ``lifespan`` scopes).

    Built from explicit parts (:meth:`from_settings` makes them from settings); closes what
    the parts' maker opened with :meth:`aclose` or at the end of ``async with``.
    """

    def __init__(
        self,
        spec: AgentSpec,
        parts: Parts,
        *,
        tracer_provider: TracerProvider | None = None,
        configure_tracing: bool = False,
    ) -> None:
        self.spec = spec
        self.settings = parts.settings
        self.store = parts.store
        self.breakers = parts.breakers
        self.publisher = parts.publisher
        self.redis = parts.redis
        self.sessions = parts.sessions
        self.logger = logging.getLogger(f"agentfn.agent.{spec.name}")
        self.state: dict[str, Any] = {}
        self.metrics = AgentMetrics(spec.name, spec.consumes)
        self.breakers.add_listener(self.metrics.set_breaker_state)
        self._closers = list(parts.closers)
        self._max_body = parts.settings.max_body_bytes
        self._tracing = Tracing(spec.name, tracer_provider)
        self._configure_tracing = configure_tracing
        services = Services(
            agent=spec.name,
            logger=self.logger,
            settings=parts.settings,
            state=self.state,
            redis=parts.redis,
            breakers=parts.breakers,
            sessions=parts.sessions,
            channels=parts.channels,
            source=spec.source,
        )
        self._pipeline = Pipeline(
            spec,
            services=services,
            emitter=Emitter(spec, parts.publisher),
            store=parts.store,
            metrics=self.metrics,
            tracing=self._tracing,
        )
        self._started = False
        self._start_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls,
        spec: AgentSpec,
        settings: Settings,
        *,
        store: IdempotencyStore | None = None,
        breakers: CircuitBreakers | None = None,
        publisher: Publisher | None = None,
        tracer_provider: TracerProvider | None = None,
        configure_tracing: bool = False,
    ) -> AgentApp:
        """The app of ``spec`` with the parts not given made as ``settings`` configure."""
        parts = wire(spec.name, settings, store=store, breakers=breakers, publisher=publisher)
        return cls(
            spec, parts, tracer_provider=tracer_provider, configure_tracing=configure_tracing
        )

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
        """Close what this app's maker opened (not the store, breakers or publisher given)."""
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                log.warning("closing %s failed", close, exc_info=True)
        self._closers.clear()
        self._started = False

    # -- front doors ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            method: str = scope["method"]
            answer: Answer
            if method == "POST":
                # The first message inline: nearly every event's body is one message.
                message = await receive()
                body: bytes | None = message.get("body", b"")
                if message.get("more_body", False):
                    body = await read_body(receive, self._max_body, first=message)
                if body is None or len(body) > self._max_body:
                    answer = _too_large(self._max_body)
                else:
                    answer = await self.respond(method, scope["path"], scope["headers"], body)
            else:
                answer = await self.respond(method, scope["path"], scope["headers"], b"")
            status, headers, payload = answer
            # A new list: `headers` may be a stored or static answer's, shared between requests.
            headers = [*headers, (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        elif kind == "lifespan":
            await lifespan(receive, send, startup=self.start, shutdown=self.aclose)

    def respond(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> Awaitable[Answer]:
        """The answer to one HTTP request, whatever server carried it (ASGI, functions-framework).

        Not a coroutine of its own: an event's request awaits the pipeline directly, one
        frame less on the hot path.
        """
        if not self._started:
            return self._started_then(self.respond, method, path, headers, body)
        if method == "POST":
            if len(body) > self._max_body:
                return _ready(_too_large(self._max_body))
            return self._pipeline.handle(headers, body)
        if method in ("GET", "HEAD"):
            return self._get(path, head=method == "HEAD")
        return _ready(
            json_answer(405, {"error": "method not allowed"}, (b"allow", b"GET, HEAD, POST"))
        )

    def deliver(
        self,
        event: CloudEvent,
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
        transport_first: bool = False,
        deadline: float | None = None,
        sink: Sink | None = None,
    ) -> Awaitable[Answer]:
        """The answer to one CloudEvent that is already parsed and validated.

        What a POST of it gets; the broker calls this for an agent it hosts in its own process
        (``agentfn dev --in-process``), the gRPC front door for every call and session event
        (:meth:`Pipeline.deliver <agentfn.functions._pipeline.Pipeline.deliver>` says what
        the options mean). ``traceparent`` is the W3C header a request carried.
        """
        if not self._started:
            return self._started_then(
                self.deliver,
                event,
                traceparent=traceparent,
                tracestate=tracestate,
                transport_first=transport_first,
                deadline=deadline,
                sink=sink,
            )
        return self._pipeline.deliver(
            event,
            traceparent=traceparent,
            tracestate=tracestate,
            transport_first=transport_first,
            deadline=deadline,
            sink=sink,
        )

    async def _started_then(self, entry: Any, *args: Any, **options: Any) -> Answer:
        await self.start()
        answer: Answer = await entry(*args, **options)
        return answer

    async def _get(self, path: str, *, head: bool) -> Answer:
        status, headers, body = await self._resource(path)
        return status, headers, b"" if head else body

    async def _resource(self, path: str) -> Answer:
        if path in ("/healthz", "/livez"):
            return 200, [_TEXT], b"ok"
        if path == "/readyz":
            if self.store is not None:
                try:
                    await self.store.ping()
                except StoreUnavailableError as error:
                    return json_answer(503, {"error": str(error)})
            return 200, [_TEXT], b"ready"
        if path == "/metrics":
            text, content_type = self.metrics.render()
            return 200, [(b"content-type", content_type.encode())], text
        if path == "/":
            return json_answer(200, self.spec.describe())
        return json_answer(404, {"error": "not found"})


async def _ready(answer: Answer) -> Answer:
    return answer
