"""The dead-letter store contract against Redis (a real redis-server), and what is its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from agentfn.brokers.deadletters import RedisLetterStore, open_store
from agentfn.brokers.deadletters.letters import LetterQuery
from agentfn.brokers.deadletters.store import LetterStoreUnavailableError
from redis.asyncio import Redis

from tests._servers import RedisServer, free_port, wait_for_port
from tests.brokers.deadletters.contract import (
    LetterStoreContract,
    StoreBackend,
    accepted,
    again,
    letter,
)


class RedisBackend(StoreBackend):
    """Letters under a prefix of this test's own, on a shared or a private server."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.prefix = f"agentfn:deadletters:test:{uuid.uuid4().hex}"

    def make(self) -> RedisLetterStore:
        return RedisLetterStore(self.server.url, prefix=self.prefix, timeout_s=1.0)

    async def cut(self) -> None:
        self.server.stop()

    async def restore(self) -> None:
        if self.server.process is None or self.server.process.poll() is not None:
            self.server.start()
            wait_for_port(self.server.port)

    async def forget(self) -> None:
        client = Redis.from_url(self.server.url)
        try:
            names = [name async for name in client.scan_iter(match=f"{self.prefix}:*")]
            if names:
                await client.delete(*names)
        finally:
            await client.aclose()


class TestRedisLetterStore(LetterStoreContract):
    @pytest.fixture
    async def backend(self, redis_session: RedisServer) -> AsyncIterator[RedisBackend]:
        backend = RedisBackend(redis_session)
        yield backend
        await backend.forget()

    @pytest.fixture
    async def outage_backend(self, redis_private: RedisServer) -> AsyncIterator[RedisBackend]:
        backend = RedisBackend(redis_private)
        yield backend
        await backend.restore()


@pytest.fixture
async def backend(redis_session: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_session)
    yield backend
    await backend.forget()


@pytest.fixture
async def admin(redis_session: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_session.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def store(backend: RedisBackend) -> AsyncIterator[RedisLetterStore]:
    async with backend.make() as store:
        yield store


async def test_the_layout_is_a_stream_per_namespace_and_broker_and_an_index(
    store: RedisLetterStore, admin: Redis
) -> None:
    p = store.prefix
    a = letter(1)
    b = letter(2, path="/default/default/writer")
    c = letter(3, path="/team-b/audit/planner")
    for one in (a, b, c):
        await store.append(one)
    assert await admin.smembers(f"{p}:streams") == {
        f"{p}:stream:default/default",
        f"{p}:stream:team-b/audit",
    }
    entries = await admin.xrange(f"{p}:stream:default/default")
    assert [fields for _, fields in entries] == [
        {"key": a.key, "trigger": "planner", "type": "test.task"},
        {"key": b.key, "trigger": "writer", "type": "test.task"},
    ]
    assert await admin.hgetall(f"{p}:depth") == {
        "default\x1fdefault\x1fplanner": "1",
        "default\x1fdefault\x1fwriter": "1",
        "team-b\x1faudit\x1fplanner": "1",
    }
    record = await admin.hgetall(f"{p}:letter:{a.key}")
    assert record["_stream"] == f"{p}:stream:default/default"
    assert record["_entry"] == entries[0][0]

    await store.record_replay(a.key, accepted(10))
    assert await admin.hget(f"{p}:depth", "default\x1fdefault\x1fplanner") is None  # no zeros
    await store.delete([a.key, c.key])
    assert [fields["key"] for _, fields in await admin.xrange(f"{p}:stream:default/default")] == [
        b.key
    ]  # XDEL'ed
    assert await admin.smembers(f"{p}:streams") == {f"{p}:stream:default/default"}
    assert not await admin.exists(f"{p}:stream:team-b/audit", f"{p}:letter:{a.key}")


async def test_entry_ids_order_letters_across_streams(store: RedisLetterStore) -> None:
    # Every Trigger its own stream: the cursor (an entry id) still pages them as one.
    letters = [letter(n, path=f"/ns-{n % 3}/broker-{n % 2}/t") for n in range(9)]
    for one in letters:
        await store.append(one)
    first = await store.list(LetterQuery(limit=4))
    assert first.next is not None
    rest = await store.list(LetterQuery(limit=10, after=first.next))
    assert [one.key for one in (*first.letters, *rest.letters)] == [one.key for one in letters]
    assert rest.next is None


async def test_pages_need_reads_beyond_the_first_chunk(store: RedisLetterStore) -> None:
    # More entries than one XRANGE reads (limit + 1, at least 50) in each of two streams, one
    # twice as dense as the other, and letters a filter selects scattered over both.
    letters = [
        letter(n, path="/a/x/t" if n % 3 else "/b/y/t", type_="rare" if n % 10 == 1 else "t")
        for n in range(240)
    ]
    for one in letters:
        await store.append(one)
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 7),
        ({}, 1000),
        ({"namespace": "a"}, 30),
        ({"namespace": "b"}, 7),
        ({"type": "rare"}, 40),  # one page, read from both streams past their first chunk
        ({"type": "rare", "namespace": "a"}, 5),
    ]
    for filters, limit in cases:
        wanted = [
            one.key
            for one in letters
            if filters.get("namespace", one.origin.namespace) == one.origin.namespace
            and filters.get("type", one.event.type) == one.event.type
        ]
        seen: list[str] = []
        after = None
        while True:
            page = await store.list(LetterQuery(**filters, limit=limit, after=after))  # type: ignore[arg-type]
            seen.extend(one.key for one in page.letters)
            if page.next is None:
                break
            after = page.next
        assert seen == wanted, (filters, limit)


async def test_scripts_are_loaded_again_after_redis_forgets_them(
    store: RedisLetterStore, admin: Redis
) -> None:
    first = letter(1)
    await store.append(first)
    await admin.script_flush()
    await store.record_replay(first.key, accepted(10))
    await admin.script_flush()
    assert (await store.append(again(first, at=20)))[1]
    await admin.script_flush()
    assert [one.key for one in await store.delete([first.key])] == [first.key]


async def test_open_store_names_redis() -> None:
    store = open_store("redis", redis_url="redis://127.0.0.1:6390/2")
    assert isinstance(store, RedisLetterStore)
    assert store.url == "redis://127.0.0.1:6390/2"
    assert store.prefix == "agentfn:deadletters"


async def test_an_unreachable_redis_raises_unavailable_naming_it() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisLetterStore(url, timeout_s=0.5)
    with pytest.raises(LetterStoreUnavailableError, match=url):
        await store.start()
    with pytest.raises(LetterStoreUnavailableError, match="not started"):
        await store.append(letter(1))
    await store.aclose()


async def test_a_redis_restart_between_calls_is_survived(redis_private: RedisServer) -> None:
    # A connection of the pool died with the server: the next call reconnects, no error.
    async with RedisLetterStore(redis_private.url) as store:
        await store.append(letter(1))
        redis_private.stop()
        redis_private.start()  # without persistence: it comes back empty
        second = letter(2)
        assert await store.append(second) == (second, True)
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}
