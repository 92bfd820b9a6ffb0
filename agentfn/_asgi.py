"""What the broker's ingress and the agent runtime share as ASGI servers, defined once.

The ASGI types, reading a request body up to a limit, the lifespan protocol, and running a
server's main coroutine on uvloop when it is there. Imports nothing of agentfn: both sides
import it without loading the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, NamedTuple, TypeAlias, TypeVar

__all__ = [
    "ASGIApp",
    "BodyRefused",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "lifespan",
    "read_body",
    "read_request_body",
    "run",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")


async def read_body(receive: Receive, limit: int, first: Message | None = None) -> bytes | None:
    """The request body, or ``None`` as soon as it outgrows ``limit`` bytes (answer 413).

    ``first`` is a message the caller already received: a server that reads the first
    message inline, for the common one-message body, hands the rest to this.
    """
    chunks: list[bytes] = []
    size = 0
    message = first if first is not None else await receive()
    while True:
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            # Not drained: the server closes the connection of a request whose body it
            # did not read, which is what a client sending too much should get.
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
        message = await receive()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyRefused(NamedTuple):
    """Why a request body was not read: the status to answer and a message naming the cause."""

    status: int
    message: str


async def read_request_body(
    headers: list[tuple[bytes, bytes]], receive: Receive, limit: int
) -> bytes | BodyRefused:
    """The body of a request, refused before reading when its ``content-length`` is over
    ``limit`` (413) or no number (400), and as soon as it outgrows ``limit`` (413)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return BodyRefused(400, "content-length is not a number")
            if declared > limit:
                return BodyRefused(413, f"body over {limit} bytes")
    body = await read_body(receive, limit)
    if body is None:
        return BodyRefused(413, f"body over {limit} bytes")
    return body


async def lifespan(
    receive: Receive,
    send: Send,
    *,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve a ``lifespan`` scope: ``startup`` before the first request, ``shutdown`` after
    the last; a failed startup is reported to the server, which then does not serve."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                try:
                    await startup()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": repr(error)})
                    return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's main coroutine to its end, on uvloop when it is installed."""
    try:
        import uvloop  # noqa: PLC0415 - only processes that run a loop of their own need it
    except ImportError:  # pragma: no cover - uvloop is a dependency through uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)
