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
from typing import Final

import httptools
from agentfn.brokers._transport import Answer, Url

__all__ = [
    "ANSWER_HEAD_BYTES",
    "DEFAULT_MAX_ANSWER_BYTES",
    "Http1Pool",
    "Http1Transport",
    "HttpResponse",
    "RequestFailedError",
]

_MAX_IDLE_PER_HOST: Final = 256

#: Room for an answer's status line and headers, on top of the body limit.
ANSWER_HEAD_BYTES: Final = 64 * 1024
#: The most an answer may take, head and body: the broker's default body limit (1 MiB) and its
#: head. A subscriber sending more is not buffered without end: no answer, connection closed.
DEFAULT_MAX_ANSWER_BYTES: Final = 1024 * 1024 + ANSWER_HEAD_BYTES


class RequestFailedError(OSError):
    """No complete answer: refused, reset, timed out, or not HTTP."""


#: Kept for the benchmarks' imports: a response is an :class:`Answer` with a status.
HttpResponse = Answer


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_headers",
        "_limit",
        "_parser",
        "_received",
        "closed",
        "future",
        "keep_alive",
        "transport",
    )

    def __init__(self, limit: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[Answer] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._limit = limit
        self._received = 0
        self.keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._limit:
            self._fail(RequestFailedError(f"answer over {self._limit} bytes"))
            self.close()
            return
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
        response = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_result(response)

    def _fail(self, error: Exception) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_exception(error)

    def start(self, request: bytes, future: asyncio.Future[Answer]) -> None:
        self._headers = []
        self._body = []
        self._received = 0
        self.future = future
        assert self.transport is not None
        self.transport.write(request)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections per ``host:port``; one request in flight per connection.

    A request goes out once. A pooled connection the server closed while it was idle is seen
    closed before the request is written, and skipped for another (the request surely never
    reached it). A connection that fails after the request was written, with nothing answered,
    is a failure like any other: the server may have received and processed the request, and
    sending it again is the delivery policy's decision (with its backoff), not the client's.
    """

    def __init__(self, *, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_answer_bytes = max_answer_bytes

    def idle(self, host: str, port: int) -> int:
        """Open connections to ``host:port`` waiting for a request."""
        return sum(not c.closed for c in self._idle.get((host, port), ()))

    async def post(
        self,
        host: str,
        port: int,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float,
    ) -> Answer:
        """POST ``body``; the answer, or :class:`RequestFailedError` when none came."""
        return await self._send(host, port, _request(host, port, target, headers, body), timeout)

    async def _send(self, host: str, port: int, request: bytes, timeout: float) -> Answer:
        # One coroutine from connection to answer: this is the broker's hot path.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = (host, port)
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        connection = _reusable(idle)
        if connection is None:
            connection = await self._connect(host, port, deadline)
        future: asyncio.Future[Answer] = loop.create_future()
        timer = loop.call_at(deadline, _expire, future)
        connection.start(request, future)
        try:
            answer = await future
        except BaseException:
            connection.close()  # a late answer must not be read as the next request's
            raise
        finally:
            timer.cancel()
        if connection.keep_alive and not connection.closed and len(idle) < _MAX_IDLE_PER_HOST:
            idle.append(connection)
        else:
            connection.close()
        return answer

    async def _connect(self, host: str, port: int, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        limit = self._max_answer_bytes
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(limit), host, port),
                max(0.001, deadline - loop.time()),
            )
        except (OSError, TimeoutError) as error:
            raise RequestFailedError(f"cannot connect to {host}:{port}: {error}") from None
        return connection

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _reusable(idle: list[_Connection]) -> _Connection | None:
    """The most recent idle connection still open; closed ones are dropped on the way."""
    while idle:
        connection = idle.pop()
        if not connection.closed and not connection.is_closing():
            return connection
    return None


def _request(host: str, port: int, target: str, headers: Mapping[str, str], body: bytes) -> bytes:
    head = [f"POST {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"]
    head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    head.append("\r\n")
    return "".join(head).encode("latin-1") + body


def _expire(future: asyncio.Future[Answer]) -> None:
    if not future.done():
        future.set_exception(RequestFailedError("timed out waiting for the answer"))


class Http1Transport:
    """The lean client as a :class:`agentfn.brokers._transport.Transport` (``http://`` only)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool

    async def post(
        self, url: Url, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        request = _request(url.host, url.port, url.target, headers, body)
        try:
            return await self._pool._send(url.host, url.port, request, timeout)
        except RequestFailedError as error:
            return Answer(None, error=str(error))
