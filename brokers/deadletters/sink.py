"""The dead-letter sink: a Knative Sink that keeps every letter the broker posts to it.

``POST /<namespace>/<broker>/<trigger>`` (or a shorter path) stores each event of the request,
in any CloudEvents content mode, and answers 202 only once every one is durable, duplicates
included (a retry of the broker is answered as the first post was). The rest mirrors the
broker ingress: 400 for what is no CloudEvent, 405 with ``Allow``, 413 over the body limit,
503 when the store cannot write (the broker retries). Paths starting ``/v1/`` are the JSON API
(:mod:`agentfn.brokers.deadletters._api`); ``/healthz`` and ``/metrics`` are as the broker's.

::

    sink = DeadLetterSink(store, settings=DeadLetterSettings(...))
    async with sink:                       # opens the store, loads the depth
        port = await sink.listen("0.0.0.0", 8080)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp
import uvicorn
from agentfn.brokers._serving import serve_in_loop
from agentfn.brokers.deadletters._alerts import AlarmTransition, DepthAlarm
from agentfn.brokers.deadletters._api import LettersApi
from agentfn.brokers.deadletters._depth import DepthWatch
from agentfn.brokers.deadletters._http import JSON, error_body, respond
from agentfn.brokers.deadletters._metrics import DeadLetterMetrics
from agentfn.brokers.deadletters.letters import DeadLetter, TriggerRef
from agentfn.brokers.deadletters.settings import DeadLetterSettings
from agentfn.brokers.deadletters.store import DeadLetterStore, LetterStoreUnavailableError
from agentfn.events import CloudEvent, InvalidEventError, from_http

from agentfn._asgi import (
    ASGIApp,
    BodyRefused,
    Receive,
    Scope,
    Send,
    lifespan,
    read_request_body,
)
from agentfn._lifecycle import Started

__all__ = ["DeadLetterSink"]

log = logging.getLogger(__name__)

_SINK_ALLOW: Final = [(b"allow", b"POST, OPTIONS")]
_READ_ALLOW: Final = [(b"allow", b"GET, HEAD")]
_PROMETHEUS: Final = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class _App:
    """The sink's ASGI app as an object: servers that guess the ASGI version (uvicorn)
    take a bound method for an ASGI 2 app."""

    __slots__ = ("_handle",)

    def __init__(self, handle: ASGIApp) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send)


class DeadLetterSink(Started):
    """The sink over ``store``: ``app`` is its ASGI app, :meth:`listen` serves it on a port.

    ``clock`` stamps arrivals and replays and reads ``since``/``before`` (tests inject one).
    ``alarms`` lists the depth alarm's transitions in order (empty without ``alert_depth``).
    """

    def __init__(
        self,
        store: DeadLetterStore,
        *,
        settings: DeadLetterSettings | None = None,
        clock: Callable[[], float] = time.time,
        replay_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.settings = settings or DeadLetterSettings()
        self.metrics = DeadLetterMetrics()
        self._clock = clock
        threshold = self.settings.alert_depth
        self._alarm = None if threshold is None else DepthAlarm(threshold, self.settings.alert_sink)
        self._depth = DepthWatch(store, self.metrics, self._alarm)
        self._api = LettersApi(
            store,
            self._depth,
            self.metrics,
            clock=clock,
            broker_url=self.settings.broker_url,
            alert_depth=threshold,
            replay_timeout=replay_timeout,
        )
        self._max_body = self.settings.max_body_bytes
        self._ready = False
        self._store_open = False
        self._server: uvicorn.Server | None = None
        self.app: ASGIApp = _App(self._asgi)

    @property
    def alarms(self) -> list[AlarmTransition]:
        return [] if self._alarm is None else self._alarm.transitions

    @property
    def ready(self) -> bool:
        return self._ready

    async def settled(self) -> None:
        """Bring the depth gauge and the alarm up to every change made so far.

        They follow changes in the background (a 202 does not wait for them); this reads the
        depth now if a change is not reflected yet. Raises LetterStoreUnavailableError.
        """
        await self._depth.refresh()

    async def start(self) -> None:
        await self.store.start()
        self._store_open = True
        try:
            if self._alarm is not None:
                await self._alarm.start()
            self._api.session = aiohttp.ClientSession(skip_auto_headers=("User-Agent",))
            # The depth at start-up counts: a backlog over the threshold alerts at once.
            await self._depth.refresh(force=True)
            self._depth.start()
        except BaseException:
            await self.aclose()  # `async with` does not close what failed to start
            raise
        self._ready = True

    async def listen(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        """Serve on ``host:port`` (0: any free port); the bound port."""
        self._server, bound = await serve_in_loop(self.app, host, port)
        log.info("dead-letter sink listening on %s:%d", host, bound)
        return bound

    async def aclose(self) -> None:
        self._ready = False
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown()
            self._server = None
        await self._depth.aclose()
        if self._alarm is not None:
            await self._alarm.aclose()
        if self._api.session is not None:
            await self._api.session.close()
            self._api.session = None
        if self._store_open:
            self._store_open = False
            await self.store.aclose()

    # -- the ASGI app ----------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        parts = [part for part in path.split("/") if part]
        if parts[:1] == ["v1"]:
            if self._ready:
                await self._api(scope, receive, send)
            else:
                await respond(send, 503, error_body("the dead-letter sink is starting"), JSON)
            return
        if path in ("/healthz", "/metrics"):
            await self._read_only(path, method, send)
            return
        if len(parts) > 3:
            await respond(
                send,
                404,
                error_body(f"no sink at {path}; POST to /<namespace>/<broker>/<trigger>"),
                JSON,
            )
            return
        if method == "OPTIONS":
            await respond(send, 200, b"", _SINK_ALLOW)
            return
        if method != "POST":
            await respond(
                send,
                405,
                error_body(f"{method} is not allowed; POST dead letters"),
                _SINK_ALLOW + JSON,
            )
            return
        status, body = await self._receive(TriggerRef.from_path(path), scope, receive)
        await respond(send, status, body, JSON if body else ())

    async def _read_only(self, path: str, method: str, send: Send) -> None:
        if method not in ("GET", "HEAD"):
            await respond(
                send, 405, error_body(f"{method} is not allowed; GET {path}"), _READ_ALLOW + JSON
            )
        elif path == "/healthz":
            await respond(send, 200 if self._ready else 503, b"ok" if self._ready else b"starting")
        else:
            try:
                await self._depth.refresh()  # a scrape sees every change made before it
            except LetterStoreUnavailableError as error:
                log.warning("dead-letter depth not refreshed for /metrics: %s", error)
            await respond(send, 200, self.metrics.exposition(), _PROMETHEUS)

    async def _receive(
        self, origin: TriggerRef, scope: Scope, receive: Receive
    ) -> tuple[int, bytes]:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body = await read_request_body(headers, receive, self._max_body)
        if isinstance(body, BodyRefused):
            return body.status, error_body(body.message)
        try:
            events = from_http(headers, body)
        except InvalidEventError as error:
            # As the ingress: Knative's data plane answers 400 to anything it cannot parse.
            return 400, json.dumps(error.as_dict()).encode()
        if not self._ready:
            return 503, error_body("the dead-letter sink is starting; retry later")
        try:
            await self._store_all(origin, events)
        except LetterStoreUnavailableError as error:
            log.error("dead letters for %s not stored: %s", origin.describe(), error)
            return 503, error_body("the dead-letter store cannot write; retry later")
        return 202, b""

    async def _store_all(self, origin: TriggerRef, events: list[CloudEvent]) -> None:
        at = self._clock()
        redact = self.settings.redact_data
        # All at once: the letters of a batch share the store's group commit (one fsync),
        # where one await after another would pay a commit each.
        outcomes = await asyncio.gather(
            *(
                self.store.append(DeadLetter.received(event, origin, at=at, redact=redact))
                for event in events
            )
        )
        created = sum(new for _, new in outcomes)
        if created:
            self.metrics.stored.labels(*origin.labels).inc(created)
        if created < len(outcomes):
            self.metrics.duplicates.labels(*origin.labels).inc(len(outcomes) - created)
        if created:
            self._depth.changed()
