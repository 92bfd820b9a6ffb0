"""Idempotency as the broker sees it: duplicates, concurrent duplicates, crashes, outages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from agentfn.events import CloudEvent
from agentfn.functions import Agent, AgentApp, Context, Settings
from pydantic import BaseModel

from tests._servers import RedisServer, free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.functions._support import asgi_client, event, post, reply_of, serving

ROOT = Path(__file__).resolve().parents[2]


class Order(BaseModel):
    item: str
    quantity: int


class Receipt(BaseModel):
    item: str
    total_cents: int


class Shop:
    """An agent whose side effect (charging) must happen once per order event."""

    def __init__(self) -> None:
        self.charged: list[str] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_next = 0
        agent = Agent("shop")

        @agent.on("shop.ordered", emits={"shop.charged": Receipt})
        async def charge(order: Order, ctx: Context) -> Receipt:
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("card declined by a flaky processor")
            self.charged.append(ctx.event.id)
            return Receipt(item=order.item, total_cents=order.quantity * 250)

        self.agent = agent


@pytest.fixture(params=["embedded", "redis"])
def settings(request: pytest.FixtureRequest) -> Settings:
    if request.param == "embedded":
        return Settings(idempotency="embedded")
    server: RedisServer = request.getfixturevalue("redis_session")
    return Settings(idempotency="redis", redis_url=server.url)


@pytest.fixture
async def shop_app(settings: Settings) -> AsyncIterator[tuple[Shop, AgentApp]]:
    shop = Shop()
    app = shop.agent.app(settings=settings)
    yield shop, app
    await app.aclose()


def order(quantity: int = 2) -> CloudEvent:
    return event("shop.ordered", {"item": "tea", "quantity": quantity})


async def test_a_redelivered_event_gets_the_same_reply_without_a_second_charge(
    shop_app: tuple[Shop, AgentApp],
) -> None:
    shop, app = shop_app
    sent = order()
    async with asgi_client(app) as client:
        first = await post(client, sent)
        second = await post(client, sent)  # the ack was lost: the broker delivers again
    assert shop.charged == [sent.id]
    assert reply_of(first).data == {"item": "tea", "total_cents": 500}
    assert second.status_code == 200
    assert second.content == first.content
    assert {k: v for k, v in second.headers.items() if k.startswith("ce-")} == {
        k: v for k, v in first.headers.items() if k.startswith("ce-")
    }  # the same reply event, same id: the chain continues once


async def test_a_concurrent_duplicate_is_409_until_the_first_finishes(
    shop_app: tuple[Shop, AgentApp],
) -> None:
    shop, app = shop_app
    shop.gate = asyncio.Event()
    sent = order()
    async with asgi_client(app) as client:
        first = asyncio.create_task(post(client, sent))
        await asyncio.wait_for(shop.entered.wait(), timeout=5)
        duplicate = await post(client, sent)
        assert duplicate.status_code == 409
        assert 1 <= int(duplicate.headers["retry-after"]) <= 60
        assert duplicate.json()["error"] == "in flight"
        shop.gate.set()
        assert (await first).status_code == 200
        later = await post(client, sent)  # the broker's retry of the 409
    assert later.content == (await first).content
    assert shop.charged == [sent.id]


async def test_a_failed_attempt_releases_the_lease_for_the_retry(
    shop_app: tuple[Shop, AgentApp],
) -> None:
    shop, app = shop_app
    shop.fail_next = 1
    sent = order(4)
    async with asgi_client(app) as client:
        assert (await post(client, sent)).status_code == 500
        assert reply_of(await post(client, sent)).data == {"item": "tea", "total_cents": 1000}
        assert (await post(client, sent)).status_code == 200
    assert shop.charged == [sent.id]


async def test_the_key_is_agent_source_and_id(shop_app: tuple[Shop, AgentApp]) -> None:
    shop, app = shop_app
    async with asgi_client(app) as client:
        await post(
            client, event("shop.ordered", {"item": "a", "quantity": 1}, id="same", source="/a")
        )
        await post(
            client, event("shop.ordered", {"item": "b", "quantity": 1}, id="same", source="/b")
        )
    assert shop.charged == ["same", "same"]  # two sources, two events


async def test_dedupe_off_runs_every_delivery() -> None:
    shop = Shop()
    sent = order()
    async with asgi_client(shop.agent.app(settings=Settings(idempotency="off"))) as client:
        await post(client, sent)
        await post(client, sent)
    assert shop.charged == [sent.id, sent.id]


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_outage_answers_503_then_recovers_without_losing_or_doubling(
    redis_private: RedisServer,
) -> None:
    shop = Shop()
    settings = Settings(idempotency="redis", redis_url=redis_private.url, redis_timeout_s=0.5)
    app = shop.agent.app(settings=settings)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        before = [order(i) for i in range(1, 4)]
        for sent in before:
            assert (await post(client, sent)).status_code == 200

        redis_private.stop()
        during = [order(i) for i in range(4, 8)]
        for sent in during:
            refused = await post(client, sent)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "store_unavailable"
            assert refused.headers["retry-after"] == "1"  # the broker backs off a second
        assert (await client.get("/readyz")).status_code == 503
        assert shop.charged == [e.id for e in before]  # nothing ran without a dedupe record

        redis_private.start()
        replies = {}
        for sent in during:  # the broker's retries
            answer = await post(client, sent)
            assert answer.status_code == 200, answer.text
            replies[sent.id] = answer.content
        for sent in during:  # and a lost ack on each: answered from the record
            assert (await post(client, sent)).content == replies[sent.id]
        assert (await client.get("/readyz")).status_code == 200
    await app.aclose()
    assert Counter(shop.charged) == {e.id: 1 for e in before + during}


@dataclass
class SilentServer:
    """A TCP server that takes every connection and never answers: Redis behind a partition.

    ``received`` holds what each connection sent, in the order they came; the server closes
    none of them, so whatever ends a request is the client's own timeout.
    """

    received: list[bytearray] = field(default_factory=list)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _take(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        sent = bytearray()
        self.received.append(sent)
        while chunk := await reader.read(65536):
            sent += chunk

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._take, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.close()
            for writer in self._writers:
                writer.close()
            await server.wait_closed()


async def test_an_unanswering_redis_gets_one_immediate_retry_then_503() -> None:
    """A claim the store cannot make is tried twice (one retry), then answered at once."""
    silent = SilentServer()
    shop = Shop()
    async with silent.listening() as url:
        settings = Settings(idempotency="redis", redis_url=url, redis_timeout_s=0.2)
        async with asgi_client(shop.agent.app(settings=settings)) as client:
            # A backstop only: an agent waiting on Redis with no timeout of its own would hold
            # the broker's request here instead of letting it back off.
            async with asyncio.timeout(10):
                refused = await post(client, order())
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable"
    assert "TimeoutError" in refused.json()["message"]
    assert refused.headers["retry-after"] == "1"
    # Two connections, each of which sent its opening command and got no answer: the attempt
    # and its one retry, ended by the client's timeout, not by the server.
    assert len(silent.received) == 2
    assert all(sent for sent in silent.received)
    assert shop.charged == []


def _serve(port: int, redis_url: str, lease_s: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENTFN_IDEMPOTENCY_LEASE_S": str(lease_s),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from agentfn.functions.cli import main; main()",
            "--log-level",
            "WARNING",
            "serve",
            "tests.functions._agents:ledger",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--redis",
            redis_url,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def two_replicas(redis_session: RedisServer) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    ports = free_port(), free_port()
    processes = [_serve(port, redis_session.url, lease_s=2.0) for port in ports]
    try:
        for port in ports:
            wait_for_port(port, timeout=30)
        yield processes[0], ports[0], ports[1]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.redis
async def test_a_handler_killed_mid_event_runs_again_once_its_lease_expires(
    two_replicas: tuple[subprocess.Popen[bytes], int, int], tmp_path: Path
) -> None:
    """Two ``agentfn serve`` replicas sharing Redis; the first dies inside the handler."""
    doomed, doomed_port, survivor_port = two_replicas
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "hung"
    job = event(
        "test.job", {"text": "one two three", "ledger": str(ledger), "hang_marker": str(marker)}
    )
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{doomed_port}", timeout=30) as first,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{survivor_port}", timeout=10) as second,
    ):
        hanging = asyncio.create_task(post(first, job))
        await async_wait_until(marker.exists, timeout=10, message="the handler to start")
        doomed.kill()
        doomed.wait(timeout=10)
        with pytest.raises(httpx.HTTPError):
            await hanging

        redelivered = await post(second, job)  # the broker retries at once: the lease holds
        assert redelivered.status_code == 409
        assert int(redelivered.headers["retry-after"]) <= 2

        async def delivered() -> httpx.Response | None:
            answer = await post(second, job)
            return answer if answer.status_code != 409 else None

        answer = await async_wait_until(delivered, timeout=10, interval=0.2, message="lease expiry")
    reply = reply_of(answer)
    assert reply.data["words"] == 3
    assert reply.data["pid"] != doomed.pid
    assert ledger.read_text(encoding="utf-8").split() == [job.id]  # the side effect, once
