"""Helpers of the runtime tests: events to POST, real HTTP servers on loopback, a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from agentfn.events import CloudEvent, from_http, to_binary, to_structured

from tests._servers import free_port

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def event(
    type_: str, data: Any = None, *, source: str = "/tests", **attributes: object
) -> CloudEvent:
    return CloudEvent.new(type_, source, data, **attributes)


def binary(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    return to_binary(ev)


def structured(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    return to_structured(ev)


def reply_of(response: httpx.Response) -> CloudEvent:
    """The reply CloudEvent of a 200 answer (binary mode)."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert "ce-id" in response.headers, "a reply is sent in binary mode"
    return from_http(list(response.headers.items()), response.content)[0]


async def post(
    client: httpx.AsyncClient, ev: CloudEvent, path: str = "/", **extra_headers: str
) -> httpx.Response:
    headers, body = to_binary(ev)
    headers.update(extra_headers)
    return await client.post(path, headers=headers, content=body)


@contextlib.asynccontextmanager
async def asgi_client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """In-process ASGI calls (no socket): fine for answers, not for server behaviour."""
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            yield client
    finally:
        close = getattr(app, "aclose", None)  # an AgentApp: its sessions and stores
        if close is not None:
            await close()


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, lifespan: str = "on") -> AsyncIterator[str]:
    """``app`` under a real uvicorn on a free loopback port, in this event loop; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@dataclass
class Sink:
    """A real HTTP receiver (a broker ingress or a downstream service stand-in) that records.

    Each request is parsed as a CloudEvent when it is one. ``statuses`` answers in turn (then
    ``default_status``); ``headers`` lists every request's headers.
    """

    default_status: int = 202
    statuses: list[int] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    answer_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.headers.append(headers)
        self.paths.append(scope["path"])
        status = self.statuses.pop(0) if self.statuses else self.default_status
        if status < 300 and any(
            k.startswith("ce-") or "cloudevents" in v for k, v in headers.items()
        ):
            self.events.extend(from_http(headers, body))
        await send(
            {"type": "http.response.start", "status": status, "headers": self.answer_headers}
        )
        await send({"type": "http.response.body", "body": b""})


class FakeClock:
    """A clock tests move by hand (seconds, like ``time.time``)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
