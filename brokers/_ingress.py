"""The broker ingress as a raw ASGI app: ``POST /<namespace>/<broker>``, Knative's status codes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from agentfn.brokers.config import BrokerSpec
from agentfn.brokers.log import EventTooLargeError, LogUnavailableError
from agentfn.brokers.metrics import BrokerMetrics
from agentfn.events import CloudEvent, InvalidEventError, from_http

from agentfn._asgi import BodyRefused, Receive, Scope, Send, lifespan, read_request_body

__all__ = ["IngressApp"]

log = logging.getLogger(__name__)

Ingest = Callable[[BrokerSpec, Sequence[CloudEvent]], Awaitable[object]]

_JSON: Final = [(b"content-type", b"application/json")]
_ALLOW: Final = [(b"allow", b"POST, OPTIONS")]


def _error(message: str, **fields: object) -> bytes:
    return json.dumps({"error": message, **fields}).encode()


class IngressApp:
    def __init__(
        self,
        brokers: Mapping[tuple[str, str], BrokerSpec],
        ingest: Ingest,
        metrics: BrokerMetrics,
        *,
        max_body_bytes: int,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._by_path = {spec.path: spec for spec in brokers.values()}
        self._ingest = ingest
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._ready = ready
        # Bound label children per (broker, code): labels() costs a lock and a dict per call.
        self._counted: dict[tuple[str, int], Any] = {}
        self._timers = {
            spec.path: metrics.ingress_latency.labels(spec.namespace, spec.name)
            for spec in brokers.values()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz" and method in ("GET", "HEAD"):
            ok = self._ready()
            await _respond(send, 200 if ok else 503, b"ok" if ok else b"starting")
            return
        if path == "/metrics" and method == "GET":
            await _respond(
                send,
                200,
                self._metrics.exposition(),
                [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            )
            return
        if method == "OPTIONS":
            await _respond(send, 200, b"", _ALLOW)
            return
        if method != "POST":
            await _respond(
                send, 405, _error(f"{method} is not allowed; POST events"), _ALLOW + _JSON
            )
            return
        broker = self._by_path.get(path.rstrip("/"))
        if broker is None:
            await _respond(
                send, 404, _error(f"no broker at {path}; POST to /<namespace>/<broker>"), _JSON
            )
            return
        await self._post(broker, scope, receive, send)

    async def _post(self, broker: BrokerSpec, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        status, body, count = await self._handle(broker, headers, receive)
        counter = self._counted.get((broker.path, status))
        if counter is None:
            counter = self._metrics.ingress_events.labels(
                broker.namespace, broker.name, str(status), f"{status // 100}xx"
            )
            self._counted[(broker.path, status)] = counter
        counter.inc(max(count, 1))
        self._timers[broker.path].observe((time.perf_counter() - started) * 1000)
        await _respond(send, status, body, _JSON if body else None)

    async def _handle(
        self, broker: BrokerSpec, headers: list[tuple[bytes, bytes]], receive: Receive
    ) -> tuple[int, bytes, int]:
        body = await read_request_body(headers, receive, self._max_body)
        if isinstance(body, BodyRefused):
            return body.status, _error(body.message), 0
        try:
            events = from_http(headers, body)
        except InvalidEventError as error:
            # No CloudEvent in any mode is a 400 too, not a 415: Knative's data plane says a
            # sink that cannot parse a valid CloudEvent MUST answer 400 Bad Request.
            return 400, json.dumps(error.as_dict()).encode(), 0
        if not events:
            return 202, b"", 0
        try:
            await self._ingest(broker, events)
        except LogUnavailableError as error:
            log.error("ingress %s: %s", broker.path, error)
            return 503, _error("the event store cannot write; retry later"), len(events)
        except EventTooLargeError as error:
            log.warning("ingress %s: %s", broker.path, error)
            return 413, _error(str(error)), len(events)
        except InvalidEventError as error:
            return 400, json.dumps(error.as_dict()).encode(), len(events)
        return 202, b"", len(events)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})
