"""The lean HTTP/1.1 client over real sockets: keep-alive reuse, a connection the server closed
while idle, a reset mid-answer, an answer past the timeout, an answer over the size cap.

A request goes out at most once: a pooled connection found closed is skipped before anything
is written to it; one that fails after the request was written is a failure (no answer), since
the server may have acted on it, and sending again is the delivery policy's call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from agentfn.brokers._http1 import Http1Pool, Http1Transport, RequestFailedError
from agentfn.brokers._transport import Url

from tests._waiting import async_wait_until

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

#: What the server does with one request: write to it (and may close it), given its number.
Behaviour = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                await self.behaviour(writer, self.requests)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@asynccontextmanager
async def serving(behaviour: Behaviour) -> AsyncIterator[tuple[Server, Url]]:
    server = Server(behaviour)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, Url.parse(f"http://127.0.0.1:{port}/")
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def answer_ok(writer: asyncio.StreamWriter, n: int) -> None:
    writer.write(OK)
    await writer.drain()


async def post(pool: Http1Pool, url: Url, timeout: float = 5.0) -> bytes:
    answer = await pool.post(url.host, url.port, url.target, {"ce-id": "1"}, b"{}", timeout=timeout)
    assert answer.status == 200
    return answer.body


async def test_keep_alive_reuses_the_connection() -> None:
    pool = Http1Pool()
    async with serving(answer_ok) as (server, url):
        assert await post(pool, url) == b"ok"
        assert await post(pool, url) == b"ok"
    pool.close()
    assert (server.connections, server.requests) == (1, 2)


async def test_a_connection_closed_while_idle_is_replaced_without_a_second_send() -> None:
    pool = Http1Pool()
    async with serving(answer_ok) as (server, url):
        await post(pool, url)
        server.writers[0].close()  # the server's keep-alive timeout
        await async_wait_until(lambda: pool.idle(url.host, url.port) == 0, message="seen closed")
        assert await post(pool, url) == b"ok"
    pool.close()
    assert (server.connections, server.requests) == (2, 2)


async def test_a_request_written_and_then_dropped_is_not_sent_again() -> None:
    async def drop_the_second(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await answer_ok(writer, n)
        else:
            writer.transport.abort()

    pool = Http1Pool()
    async with serving(drop_the_second) as (server, url):
        await post(pool, url)
        with pytest.raises(RequestFailedError):
            await post(pool, url)
    pool.close()
    assert (server.connections, server.requests) == (1, 2), "the dropped request went out once"


async def test_a_reset_mid_answer_is_no_answer() -> None:
    async def half(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.transport.abort()

    async with serving(half) as (_, url):
        answer = await Http1Transport(Http1Pool()).post(url, {}, b"{}", 5.0)
    assert answer.status is None
    assert answer.error is not None
    assert "closed" in answer.error


async def test_an_answer_past_the_timeout_is_no_answer_and_its_connection_is_dropped() -> None:
    late = asyncio.Event()

    async def slow_first(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await late.wait()  # answers only once the client has given up
        await answer_ok(writer, n)

    pool = Http1Pool()
    async with serving(slow_first) as (server, url):
        answer = await Http1Transport(pool).post(url, {}, b"{}", 0.05)
        assert answer.status is None
        assert answer.error == "timed out waiting for the answer"
        assert pool.idle(url.host, url.port) == 0
        late.set()  # the late answer must not be read as the next request's
        assert await post(pool, url) == b"ok"
    pool.close()
    assert server.connections == 2


async def test_an_answer_over_the_cap_is_refused() -> None:
    async def huge(writer: asyncio.StreamWriter, n: int) -> None:
        size = 4096 if n == 1 else 200
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()

    pool = Http1Pool(max_answer_bytes=1024)
    async with serving(huge) as (server, url):
        answer = await Http1Transport(pool).post(url, {}, b"{}", 5.0)
        assert answer.status is None
        assert answer.error == "answer over 1024 bytes"
        assert pool.idle(url.host, url.port) == 0
        small = await Http1Transport(pool).post(url, {}, b"{}", 5.0)
    pool.close()
    assert (small.status, small.body) == (200, b"x" * 200)
    assert server.connections == 2, "the refused answer's connection was closed, not reused"
