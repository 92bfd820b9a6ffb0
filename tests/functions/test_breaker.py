"""Circuit breakers: transitions (one contract: in-process and Redis) and what the broker sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from agentfn.functions import (
    Agent,
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    CircuitBreakers,
    CircuitOpenError,
    Context,
    InMemoryBreakerStore,
    RedisBreakerStore,
    Settings,
    UnavailableError,
)
from agentfn.functions._idempotency import new_token
from agentfn.functions._redis import redis_client
from pydantic import BaseModel

from tests._servers import RedisServer
from tests._waiting import async_wait_until
from tests.functions._support import FakeClock, Sink, asgi_client, event, post, reply_of, serving

POLICY = BreakerPolicy(failures=5, window_s=60, reset_s=30, probe_timeout_s=10)


class BoomError(Exception):
    pass


async def fail(breakers: CircuitBreakers, destination: str, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(BoomError):
            async with breakers.guard(destination):
                raise BoomError


async def succeed(breakers: CircuitBreakers, destination: str) -> None:
    async with breakers.guard(destination):
        pass


def test_policies_are_validated() -> None:
    assert BreakerPolicy() == BreakerPolicy(failures=5, window_s=60, reset_s=30, probe_timeout_s=30)
    with pytest.raises(ValueError, match="failures"):
        BreakerPolicy(failures=0)
    with pytest.raises(ValueError, match="reset_s"):
        BreakerPolicy(reset_s=0)
    with pytest.raises(ValueError, match="window_s"):
        BreakerPolicy(window_s=-1)
    with pytest.raises(ValueError, match="probe_timeout_s"):
        BreakerPolicy(probe_timeout_s=0)


class BreakerContract:
    """Transitions every breaker store keeps; subclasses provide ``make_store``."""

    @pytest.fixture
    def destination(self) -> str:
        return f"http://downstream-{new_token()}"

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def breakers(self, make_store: BreakerStore, clock: FakeClock) -> CircuitBreakers:
        return CircuitBreakers(POLICY, store=make_store, clock=clock)

    async def test_five_failures_within_the_window_open_it(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 4)
        await succeed(breakers, destination)  # a success does not reset a rolling count
        assert breakers.last_state(destination) is BreakerState.CLOSED
        clock.advance(10)
        await fail(breakers, destination)
        assert breakers.last_state(destination) is BreakerState.OPEN
        with pytest.raises(CircuitOpenError) as refused:
            await succeed(breakers, destination)
        assert refused.value.retry_after == pytest.approx(30)
        assert refused.value.destination == destination

    async def test_failures_older_than_the_window_do_not_count(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 4)
        clock.advance(61)
        await fail(breakers, destination, 4)
        assert breakers.last_state(destination) is BreakerState.CLOSED
        await succeed(breakers, destination)

    async def test_open_refuses_until_half_open_with_the_time_left(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 5)
        clock.advance(29.5)
        with pytest.raises(CircuitOpenError) as refused:
            await succeed(breakers, destination)
        assert refused.value.retry_after == pytest.approx(0.5)
        assert breakers.last_state(destination) is BreakerState.OPEN
        clock.advance(0.5)  # the time it gave: now half-open, the call goes through
        decision = await breakers.acquire(destination)
        assert (decision.allowed, decision.state, decision.probe) == (
            True,
            BreakerState.HALF_OPEN,
            True,
        )

    async def test_half_open_lets_one_probe_through_and_its_success_closes(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 5)
        clock.advance(30)
        probe_running = asyncio.Event()
        finish_probe = asyncio.Event()

        async def probe() -> None:
            async with breakers.guard(destination):
                probe_running.set()
                await finish_probe.wait()

        task = asyncio.create_task(probe())
        await asyncio.wait_for(probe_running.wait(), timeout=5)
        assert breakers.last_state(destination) is BreakerState.HALF_OPEN
        with pytest.raises(CircuitOpenError) as refused:  # only one probe at a time
            await succeed(breakers, destination)
        assert 0 < refused.value.retry_after <= 1
        finish_probe.set()
        await task
        assert breakers.last_state(destination) is BreakerState.CLOSED
        await fail(breakers, destination, 4)  # closed again: the count starts over
        await succeed(breakers, destination)

    async def test_a_failed_probe_opens_it_for_another_full_period(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 5)
        clock.advance(31)
        await fail(breakers, destination)
        assert breakers.last_state(destination) is BreakerState.OPEN
        clock.advance(29)
        with pytest.raises(CircuitOpenError) as refused:
            await succeed(breakers, destination)
        assert refused.value.retry_after == pytest.approx(1)

    async def test_a_probe_that_never_answers_frees_the_slot_after_its_timeout(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 5)
        clock.advance(30)
        await breakers.acquire(destination)  # a probe taken by a replica that then died
        with pytest.raises(CircuitOpenError):
            await succeed(breakers, destination)
        clock.advance(POLICY.probe_timeout_s)
        await succeed(breakers, destination)
        assert breakers.last_state(destination) is BreakerState.CLOSED

    async def test_a_cancelled_probe_gives_the_slot_back(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        await fail(breakers, destination, 5)
        clock.advance(30)

        probing = asyncio.Event()

        async def hang() -> None:
            async with breakers.guard(destination):
                probing.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hang())
        await asyncio.wait_for(probing.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        assert breakers.last_state(destination) is BreakerState.OPEN  # counted as a failure
        clock.advance(30)
        await succeed(breakers, destination)

    async def test_destinations_are_independent(
        self, breakers: CircuitBreakers, destination: str
    ) -> None:
        other = destination + "-other"
        await fail(breakers, destination, 5)
        assert breakers.last_state(destination) is BreakerState.OPEN
        with pytest.raises(CircuitOpenError) as refused:
            await succeed(breakers, destination)
        assert refused.value.destination == destination
        await succeed(breakers, other)
        assert breakers.last_state(other) is BreakerState.CLOSED
        await fail(breakers, other, 4)  # its own count, not added to the open one's
        await succeed(breakers, other)
        assert breakers.last_state(other) is BreakerState.CLOSED

    async def test_listeners_see_every_change(
        self, breakers: CircuitBreakers, destination: str, clock: FakeClock
    ) -> None:
        seen: list[BreakerState] = []
        breakers.add_listener(lambda d, s: seen.append(s) if d == destination else None)
        await succeed(breakers, destination)
        await fail(breakers, destination, 5)
        clock.advance(30)
        await succeed(breakers, destination)
        assert seen == [
            BreakerState.CLOSED,
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ]


class TestInMemoryBreakers(BreakerContract):
    @pytest.fixture
    def make_store(self) -> BreakerStore:
        return InMemoryBreakerStore(POLICY)


class TestRedisBreakers(BreakerContract):
    @pytest.fixture
    async def make_store(self, redis_session: RedisServer) -> AsyncIterator[BreakerStore]:
        client = redis_client(redis_session.url)
        yield RedisBreakerStore(client, POLICY)
        await client.aclose()

    async def test_replicas_sharing_redis_agree(
        self, redis_session: RedisServer, destination: str, clock: FakeClock
    ) -> None:
        # Each replica its own client, made by the store from the URL as an agent process would.
        stores = [RedisBreakerStore.from_url(redis_session.url, POLICY) for _ in range(2)]
        try:
            one, two = (CircuitBreakers(POLICY, store=store, clock=clock) for store in stores)
            await fail(one, destination, 3)
            await fail(two, destination, 2)  # five in all: open for everyone
            for replica in (one, two):
                with pytest.raises(CircuitOpenError):
                    await succeed(replica, destination)
            clock.advance(30)
            await succeed(two, destination)  # one replica's probe closes it for both
            await succeed(one, destination)
        finally:
            for store in stores:
                await store.aclose()

    async def test_a_store_made_from_a_url_closes_its_connections(
        self, redis_session: RedisServer, destination: str
    ) -> None:
        observer = redis_client(redis_session.url)
        try:
            store = RedisBreakerStore.from_url(redis_session.url, POLICY)
            await store.on_failure(destination, 1.0, probe=False)
            own = str(await store._client.client_id())  # the store's own connection
            assert own in {c["id"] for c in await observer.client_list()}
            await store.aclose()

            async def gone() -> bool:  # Redis drops a closed connection a moment later
                return own not in {c["id"] for c in await observer.client_list()}

            await async_wait_until(gone, timeout=5, message="the store's connection to close")
        finally:
            await observer.aclose()

    async def test_a_store_given_a_client_leaves_it_open(
        self, redis_session: RedisServer, destination: str
    ) -> None:
        client = redis_client(redis_session.url)
        try:
            await RedisBreakerStore(client, POLICY).aclose()
            assert await client.ping()  # the app's shared client still serves
        finally:
            await client.aclose()


class Lookup(BaseModel):
    word: str


class Definition(BaseModel):
    word: str
    status: int


async def test_an_open_breaker_answers_503_with_the_time_to_half_open() -> None:
    """A handler calling a failing service: 503s, then the breaker spares the service."""
    downstream = Sink(default_status=500)
    clock = FakeClock()
    breakers = CircuitBreakers(BreakerPolicy(), clock=clock)
    agent = Agent("dictionary")

    @agent.on("word.lookup", emits={"word.defined": Definition})
    async def define(lookup: Lookup, ctx: Context) -> Definition:
        answer = await ctx.http.get(f"{ctx.state['url']}/define", params={"w": lookup.word})
        return Definition(word=lookup.word, status=answer.status)

    app = agent.app(settings=Settings(idempotency="off"), breakers=breakers)
    async with serving(downstream) as url, asgi_client(app) as client:
        app.state["url"] = url
        for _ in range(5):
            failed = await post(client, event("word.lookup", {"word": "ok"}))
            assert (failed.status_code, failed.json()["error"]) == (503, "retryable")
            assert failed.json()["exception"] == "UnavailableError"
        assert len(downstream.headers) == 5

        refused = await post(client, event("word.lookup", {"word": "ok"}))
        assert refused.status_code == 503
        assert refused.json()["error"] == "circuit_open"
        assert refused.headers["retry-after"] == "30"
        assert len(downstream.headers) == 5  # the call was not made
        metrics = (await client.get("/metrics")).text
        assert (
            f'agentfn_circuit_breaker_state{{agent="dictionary",destination="{url}"}} 1.0'
            in metrics
        )

        clock.advance(30)
        downstream.default_status = 200
        reply = reply_of(await post(client, event("word.lookup", {"word": "ok"})))
        assert reply.data == {"word": "ok", "status": 200}
        assert downstream.headers[-1]["host"].endswith(url.rsplit(":", 1)[1])
        metrics = (await client.get("/metrics")).text
        assert (
            f'agentfn_circuit_breaker_state{{agent="dictionary",destination="{url}"}} 0.0'
            in metrics
        )


async def test_guard_wraps_any_client_and_counts_its_exceptions() -> None:
    clock = FakeClock()
    breakers = CircuitBreakers(BreakerPolicy(failures=2, reset_s=5), clock=clock)
    agent = Agent("inference")

    @agent.on("prompt")
    async def infer(lookup: Lookup, ctx: Context) -> None:
        async with ctx.guard("model:llama"):
            raise UnavailableError("model:llama", "overloaded")

    app = agent.app(settings=Settings(idempotency="off"), breakers=breakers)
    async with asgi_client(app) as client:
        answers = [await post(client, event("prompt", {"word": "x"})) for _ in range(3)]
    assert [a.json()["error"] for a in answers] == ["retryable", "retryable", "circuit_open"]
    assert answers[2].headers["retry-after"] == "5"


async def test_downstream_retry_after_reaches_the_broker() -> None:
    downstream = Sink(default_status=429, answer_headers=[(b"retry-after", b"7")])
    agent = Agent("polite")

    @agent.on("word.lookup")
    async def define(lookup: Lookup, ctx: Context) -> None:
        await ctx.http.post(ctx.state["url"], json={"w": lookup.word})

    app = agent.app(settings=Settings(idempotency="off"))
    async with serving(downstream) as url, asgi_client(app) as client:
        app.state["url"] = url
        answer = await post(client, event("word.lookup", {"word": "x"}))
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "7")


async def test_an_unreachable_downstream_is_503() -> None:
    from tests._servers import free_port

    agent = Agent("lonely")

    @agent.on("word.lookup")
    async def define(lookup: Lookup, ctx: Context) -> None:
        await ctx.http.get(f"http://127.0.0.1:{free_port()}/")

    async with asgi_client(agent.app(settings=Settings(idempotency="off"))) as client:
        answer = await post(client, event("word.lookup", {"word": "x"}))
    assert answer.status_code == 503
    assert "not reachable" in answer.json()["message"]


async def test_4xx_answers_are_returned_and_do_not_count_as_failures() -> None:
    downstream = Sink(default_status=404)
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    agent = Agent("seeker")

    @agent.on("word.lookup", emits={"word.defined": Definition})
    async def define(lookup: Lookup, ctx: Context) -> Definition:
        answer = await ctx.http.get(ctx.state["url"])
        return Definition(word=lookup.word, status=answer.status)

    app = agent.app(settings=Settings(idempotency="off"), breakers=breakers)
    async with serving(downstream) as url, asgi_client(app) as client:
        app.state["url"] = url
        for _ in range(3):
            assert (
                reply_of(await post(client, event("word.lookup", {"word": "x"}))).data["status"]
                == 404
            )
    assert breakers.last_state(url) is BreakerState.CLOSED


async def test_shared_breakers_come_from_settings(redis_session: RedisServer) -> None:
    settings = Settings(
        idempotency="off",
        redis_url=redis_session.url,
        breaker_shared=True,
        breaker_failures=2,
        breaker_reset_s=9,
    )
    agent = Agent("shared")

    @agent.on("x")
    async def handle(lookup: Lookup, ctx: Context) -> None:
        async with ctx.guard(ctx.state["destination"]):
            raise ConnectionError("down")

    replicas = [agent.app(settings=settings) for _ in range(2)]
    destination = f"svc-{new_token()}"
    try:
        answers = []
        for i in range(3):
            app = replicas[i % 2]
            app.state["destination"] = destination
            async with asgi_client(app) as client:
                answers.append(await post(client, event("x", {"word": "w"})))
        assert [a.json()["error"] for a in answers] == ["retryable", "retryable", "circuit_open"]
        assert answers[2].headers["retry-after"] == "9"
    finally:
        for app in replicas:
            await app.aclose()
