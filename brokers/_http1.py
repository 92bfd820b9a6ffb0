"""A lean keep-alive HTTP/1.1 client for deliveries to plain ``http://`` subscribers.

Why not aiohttp here: measured on these machines, an aiohttp POST costs ~130 us of CPU, which
alone caps a single-core broker below the 5k events/s goal; this client costs a fraction of
that, because it does one thing: POST a body over a pooled connection and read the answer with
httptools (uvicorn's parser). TLS, redirects, proxies, chunked uploads and cookies are not its
business: ``https://`` subscribers go through aiohttp (see ``_sender.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httptools

__all__ = ["Http1Pool", "HttpResponse", "RequestFailedError"]

_MAX_IDLE_PER_HOST: Final = 256


class RequestFailedError(OSError):
    """No complete answer: refused, reset, timed out, or not HTTP."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_headers",
        "_parser",
        "_received",
        "closed",
        "future",
        "keep_alive",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[HttpResponse] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._received = False
        self.keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(RequestFailedError(f"not an HTTP answer: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(RequestFailedError(f"connection closed before the answer: {exc or 'EOF'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        response = HttpResponse(self._parser.get_status_code(), self._headers, b"".join(self._body))
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_result(response)

    def _fail(self, error: Exception) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_exception(error)

    def start(self, request: bytes, future: asyncio.Future[HttpResponse]) -> None:
        self._headers = []
        self._body = []
        self._received = False
        self.future = future
        assert self.transport is not None
        self.transport.write(request)

    @property
    def answered_anything(self) -> bool:
        return self._received

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections per ``host:port``; one request in flight per connection."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(
        self,
        host: str,
        port: int,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float,
    ) -> HttpResponse:
        head = [f"POST {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append("\r\n")
        request = "".join(head).encode("latin-1") + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = (host, port)
        idle = self._idle.setdefault(key, [])
        # A kept-alive connection may have been closed by the server while idle; if it dies
        # before answering anything, the request was not processed there: try a fresh one.
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(connection, request, key, deadline)
            except RequestFailedError:
                if connection.answered_anything or loop.time() >= deadline:
                    raise
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), max(0.001, deadline - loop.time())
            )
        except (OSError, TimeoutError) as error:
            raise RequestFailedError(f"cannot connect to {host}:{port}: {error}") from None
        return await self._exchange(connection, request, key, deadline)

    async def _exchange(
        self, connection: _Connection, request: bytes, key: tuple[str, int], deadline: float
    ) -> HttpResponse:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[HttpResponse] = loop.create_future()
        timer = loop.call_at(deadline, _expire, future)
        connection.start(request, future)
        try:
            response = await future
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()
        idle = self._idle[key]
        if connection.keep_alive and not connection.closed and len(idle) < _MAX_IDLE_PER_HOST:
            idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _expire(future: asyncio.Future[HttpResponse]) -> None:
    if not future.done():
        future.set_exception(RequestFailedError("timed out waiting for the answer"))
