"""The gRPC front door of an agent: ``agentfn.v1.Agent`` over ``grpc.aio``, the same runtime.

Every call and every session event goes through :meth:`AgentApp.deliver
<agentfn.functions._asgi.AgentApp.deliver>`, the entry the HTTP server and the broker's
in-process call use: one pipeline, so idempotency (by ``source`` and ``id``), tracing,
breakers, validation and metrics are the same whatever carried the event. What the pipeline
answers (Knative's HTTP codes) maps to a gRPC status:

=====================  ==================  ===============================================
answer                 status              details / trailing metadata
=====================  ==================  ===============================================
200 reply              OK                  ``Reply.event`` (a session: the event)
202 no reply           OK                  ``Reply`` without event (a session: nothing)
400 invalid event,     INVALID_ARGUMENT    the JSON error body: ``attribute`` names the
no handler                                 field (``body`` for bytes that are no message)
422 bad payload        INVALID_ARGUMENT    the JSON validation errors, each with its ``loc``
409 in flight          ABORTED             ``retry-after``: the lease left, in seconds
503 retryable, open    UNAVAILABLE         ``retry-after`` (seconds) and
breaker, store down                        ``grpc-retry-pushback-ms``, which gRPC's
                                           ``retryPolicy`` honours as the next delay
the caller's deadline  DEADLINE_EXCEEDED   the handling is cancelled, its claim released
500 and anything else  INTERNAL            the JSON error body
=====================  ==================  ===============================================

Trace context comes from the call's metadata (``traceparent``, ``tracestate``: the calling
span) and, without it, from the event's extension. A session handles its events one at a
time, in order; each one's replies are written as they come (an async-generator handler's as
it yields them), and a failure ends the session with that event's status.

Requests are read as bytes and parsed here, so a message that is no CloudEvent is an
``INVALID_ARGUMENT`` naming the field, not grpcio's own deserialization error. Besides the
agent service the server answers ``grpc.health.v1.Health`` (``SERVING`` once the app has
started, ``NOT_SERVING`` as soon as it stops) and server reflection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import grpc
from agentfn.events import CloudEvent, InvalidEventError, from_http
from agentfn.events.proto import agent_pb2, cloudevents_pb2
from agentfn.events.protobuf import from_protobuf, to_protobuf
from agentfn.functions._answers import Answer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentfn._lifecycle import Started

if TYPE_CHECKING:
    from agentfn.functions._asgi import AgentApp

__all__ = ["SERVICE_NAME", "GrpcServer", "status_of"]

log = logging.getLogger(__name__)

#: ``agentfn.v1.Agent``.
SERVICE_NAME: Final[str] = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name

Metadata = tuple[tuple[str, str], ...]

_CODES: Final = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    409: grpc.StatusCode.ABORTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: Pings a client may send with no call in flight, at most this often, without being told to
#: go away (grpcio's default is one per five minutes): clients keep channels alive through
#: Knative's activator with pings every few seconds.
_MIN_PING_INTERVAL_MS: Final = 5_000


def status_of(answer: Answer) -> tuple[grpc.StatusCode, str, Metadata]:
    """The gRPC status, details and trailing metadata of a failed answer (status >= 300)."""
    status, headers, body = answer
    code = _CODES.get(status, grpc.StatusCode.INTERNAL)
    trailing: list[tuple[str, str]] = []
    for name, value in headers:
        if name == b"retry-after":
            seconds = value.decode("latin-1")
            trailing.append(("retry-after", seconds))
            if status == 503:
                trailing.append(("grpc-retry-pushback-ms", str(_delay_ms(seconds))))
    return code, body.decode("utf-8", "replace"), tuple(trailing)


def _delay_ms(seconds: str) -> int:
    try:
        return max(0, math.ceil(float(seconds) * 1000))
    except ValueError:
        return 1000


def _trace_metadata(metadata: Sequence[Any] | None) -> tuple[str | None, str | None]:
    traceparent = tracestate = None
    for key, value in metadata or ():
        if key == "traceparent" and isinstance(value, str):
            traceparent = value
        elif key == "tracestate" and isinstance(value, str):
            tracestate = value
    return traceparent, tracestate


def _serialized(message: agent_pb2.Reply | cloudevents_pb2.CloudEvent) -> bytes:
    # Attributes are a map: sorted, so a duplicate's stored reply is the same bytes on every
    # replica, not only in the process that first answered.
    return message.SerializeToString(deterministic=True)


def _reply_event(answer: Answer) -> CloudEvent:
    _, headers, body = answer
    return from_http(headers, body)[0]


class _Servicer:
    """``agentfn.v1.Agent`` for one app: converts, delivers, maps the answer."""

    __slots__ = ("_app",)

    def __init__(self, app: AgentApp) -> None:
        self._app = app

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Call": grpc.unary_unary_rpc_method_handler(
                    self.call, response_serializer=_serialized
                ),
                "Session": grpc.stream_stream_rpc_method_handler(
                    self.session, response_serializer=_serialized
                ),
            },
        )

    async def call(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        event = await self._event(request, context)
        answer = await self._deliver(event, context)
        status = answer[0]
        if status == 200:
            return agent_pb2.Reply(event=to_protobuf(_reply_event(answer)))
        if status < 300:
            return agent_pb2.Reply()
        await self._abort(context, answer)
        return None  # unreachable: abort raises

    async def session(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        async def sink(event: CloudEvent) -> None:
            await context.write(to_protobuf(event))

        async for request in requests:
            event = await self._event(request, context)
            answer = await self._deliver(event, context, sink)
            status = answer[0]
            if status == 200:
                await sink(_reply_event(answer))
            elif status >= 300:
                await self._abort(context, answer)

    async def _deliver(
        self,
        event: CloudEvent,
        context: grpc.aio.ServicerContext[Any, Any],
        sink: Any = None,
    ) -> Answer:
        traceparent, tracestate = _trace_metadata(context.invocation_metadata())
        remaining = context.time_remaining()
        return await self._app.deliver(
            event,
            traceparent=traceparent,
            tracestate=tracestate,
            transport_first=traceparent is not None,
            deadline=None if remaining is None else time.monotonic() + remaining,
            sink=sink,
        )

    @staticmethod
    async def _event(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> CloudEvent:
        try:
            return from_protobuf(request)
        except InvalidEventError as error:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                json.dumps(error.as_dict(), separators=(",", ":")),
            )
            raise  # unreachable: abort raises

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], answer: Answer) -> None:
        code, details, trailing = status_of(answer)
        await context.abort(code, details, trailing)


class GrpcServer(Started):
    """A ``grpc.aio`` server of one app's agent service, health and reflection.

    It starts the app (if not yet) but never closes it: the app may be served over HTTP too,
    and whoever made it closes it after this server has stopped. ``port`` 0 binds a free
    port; :attr:`port` is the one bound.
    """

    def __init__(
        self,
        app: AgentApp,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        grace_s: float = 5.0,
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._grace_s = grace_s
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stopping: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` to dial (the bound port; a wildcard host dials loopback)."""
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        await self._app.start()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._app.settings.max_body_bytes),
                # Refuse a port another process holds, instead of sharing it silently.
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", _MIN_PING_INTERVAL_MS),
                ("grpc.http2.max_ping_strikes", 0),
            ]
        )
        server.add_generic_rpc_handlers((_Servicer(self._app).handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        host = f"[{self._host}]" if ":" in self._host else self._host
        try:
            self.port = server.add_insecure_port(f"{host}:{self._requested_port}")
        except RuntimeError as error:
            raise OSError(f"gRPC cannot listen on {host}:{self._requested_port}: {error}") from None
        await server.start()
        self._server = server
        serving = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", serving)
        await self._health.set(SERVICE_NAME, serving)
        log.info("gRPC %s on %s:%d", SERVICE_NAME, self._host, self.port)

    async def aclose(self) -> None:
        """Say NOT_SERVING at once, let calls in flight finish within the grace, stop."""
        if self._server is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(self._server))
        await asyncio.shield(self._stopping)

    async def _stop(self, server: grpc.aio.Server) -> None:
        await self._health.enter_graceful_shutdown()
        await server.stop(self._grace_s)
