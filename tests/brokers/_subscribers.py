"""Real HTTP subscribers on loopback for broker tests: programmable answers, recorded arrivals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from agentfn.brokers._serving import serve_in_loop
from agentfn.events import CloudEvent, from_http, to_binary

from tests._servers import read_body


@dataclass
class Answer:
    status: int = 202
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reply: CloudEvent | None = None
    delay: float = 0.0


@dataclass
class Arrival:
    event: CloudEvent
    at: float
    headers: dict[str, str]


Behaviour = Callable[[CloudEvent, int], Answer | Awaitable[Answer]]


def accept(_: CloudEvent, __: int) -> Answer:
    return Answer(202)


class Subscriber:
    """An ASGI subscriber served by uvicorn on a free loopback port, in the test's loop.

    ``behaviour(event, n)`` decides each answer; ``n`` is how many times this subscriber has
    now seen an event with that id (1 for the first arrival).
    """

    def __init__(self, behaviour: Behaviour = accept, name: str = "subscriber") -> None:
        self.behaviour = behaviour
        self.name = name
        self.arrivals: list[Arrival] = []
        self.seen: dict[str, int] = {}
        self.port = 0
        self._server: uvicorn.Server | None = None
        self.changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def events(self) -> list[CloudEvent]:
        return [a.event for a in self.arrivals]

    def ids(self) -> list[str]:
        return [a.event.id for a in self.arrivals]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        (event,) = from_http(headers, body)
        n = self.seen[event.id] = self.seen.get(event.id, 0) + 1
        self.arrivals.append(Arrival(event, time.monotonic(), dict(headers)))
        self.changed.set()
        answer = self.behaviour(event, n)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, Answer)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        out_headers = list(answer.headers)
        body = answer.body
        if answer.reply is not None:
            reply_headers, body = to_binary(answer.reply)
            out_headers += [(k.encode(), v.encode()) for k, v in reply_headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body})

    async def start(self) -> Subscriber:
        self._server, self.port = await serve_in_loop(self, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown()
            self._server = None
