"""One contract, every idempotency store: in-memory, in-memory persisted to a file, Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from functions import (
    Claim,
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoreUnavailableError,
)
from functions._idempotency import idempotency_key, new_token
from tests._servers import RedisServer, free_port
from tests._waiting import async_wait_until

LEASE_S = 30.0
TTL_S = 3600.0
#: A reply as the runtime stores it may hold any bytes.
OUTCOME = b'ce-id: 1\nce-type: t\n\n{"x": "\xc3\xa9"}\x00\xff'


class IdempotencyStoreContract:
    """The behaviour every store keeps; a subclass provides the ``store`` fixture."""

    @pytest.fixture
    def key(self, request: pytest.FixtureRequest) -> str:
        # Distinct per test (and per parametrisation): the Redis store is shared by the session.
        return idempotency_key("agent", "/source", f"{request.node.nodeid}-{new_token()}")

    async def test_the_first_delivery_takes_the_lease(
        self, store: IdempotencyStore, key: str
    ) -> None:
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

    async def test_a_concurrent_duplicate_finds_it_in_flight(
        self, store: IdempotencyStore, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        claim = await store.claim(key, new_token(), LEASE_S)
        assert claim.state is ClaimState.IN_FLIGHT
        assert 0 < claim.retry_after <= LEASE_S

    async def test_the_lease_holder_claiming_again_keeps_its_lease(
        self, store: IdempotencyStore, key: str
    ) -> None:
        # A client retrying a claim whose reply was lost must not lock itself out.
        token = new_token()
        await store.claim(key, token, LEASE_S)
        assert (await store.claim(key, token, LEASE_S)).state is ClaimState.ACQUIRED

    async def test_a_later_duplicate_gets_the_stored_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        assert await store.complete(key, token, OUTCOME, TTL_S)
        claim = await store.claim(key, new_token(), LEASE_S)
        assert claim == Claim(ClaimState.DONE, outcome=OUTCOME)

    async def test_no_reply_is_stored_as_an_empty_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.complete(key, token, b"", TTL_S)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(ClaimState.DONE, outcome=b"")

    async def test_a_released_lease_lets_the_retry_run(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.release(key, token)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

    async def test_only_the_holder_releases(self, store: IdempotencyStore, key: str) -> None:
        await store.claim(key, new_token(), LEASE_S)
        await store.release(key, new_token())
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.IN_FLIGHT

    async def test_release_after_completion_keeps_the_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.complete(key, token, OUTCOME, TTL_S)
        await store.release(key, token)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.DONE

    async def test_a_crashed_holders_lease_expires(self, store: IdempotencyStore, key: str) -> None:
        await store.claim(key, new_token(), 0.2)  # and never completed nor released

        async def free() -> bool:
            return (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

        await async_wait_until(free, timeout=5, interval=0.05, message="the lease to expire")

    async def test_outcomes_expire_after_their_ttl(self, store: IdempotencyStore, key: str) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.complete(key, token, OUTCOME, 0.2)

        async def gone() -> bool:
            return (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

        await async_wait_until(gone, timeout=5, interval=0.05, message="the outcome to expire")

    async def test_the_first_completion_wins(self, store: IdempotencyStore, key: str) -> None:
        slow, fast = new_token(), new_token()
        await store.claim(key, slow, 0.2)

        async def expired() -> bool:
            return (await store.claim(key, fast, LEASE_S)).state is ClaimState.ACQUIRED

        await async_wait_until(expired, timeout=5, interval=0.05, message="the lease to expire")
        assert await store.complete(key, fast, b"fast", TTL_S)
        assert not await store.complete(key, slow, b"slow", TTL_S)
        assert (await store.claim(key, new_token(), LEASE_S)).outcome == b"fast"

    async def test_keys_are_independent(self, store: IdempotencyStore, key: str) -> None:
        await store.claim(key, new_token(), LEASE_S)
        other = key + "-other"
        assert (await store.claim(other, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

    async def test_exactly_one_of_many_concurrent_claims_wins(
        self, store: IdempotencyStore, key: str
    ) -> None:
        claims = await asyncio.gather(*(store.claim(key, new_token(), LEASE_S) for _ in range(25)))
        states = [c.state for c in claims]
        assert states.count(ClaimState.ACQUIRED) == 1
        assert states.count(ClaimState.IN_FLIGHT) == 24

    async def test_the_store_answers_readiness(self, store: IdempotencyStore) -> None:
        await store.ping()


class TestInMemoryStore(IdempotencyStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[IdempotencyStore]:
        store = InMemoryIdempotencyStore()
        yield store
        await store.aclose()

    async def test_expired_records_are_swept(self) -> None:
        now = [0.0]
        store = InMemoryIdempotencyStore(clock=lambda: now[0])
        for i in range(100):
            token = new_token()
            await store.claim(f"k{i}", token, 10)
            await store.complete(f"k{i}", token, b"", 20)
        await store.claim("leased", new_token(), 5)
        assert len(store) == 101
        now[0] = 30.0
        await store.claim("fresh", new_token(), 10)
        assert len(store) == 1  # only the new lease is left


class TestPersistedInMemoryStore(IdempotencyStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
        store = InMemoryIdempotencyStore(path=tmp_path / "dedupe.jsonl")
        yield store
        await store.aclose()

    async def test_outcomes_survive_a_restart_and_leases_do_not(self, tmp_path: Path) -> None:
        path = tmp_path / "nested" / "dedupe.jsonl"
        store = InMemoryIdempotencyStore(path=path)
        token = new_token()
        await store.claim("done", token, LEASE_S)
        await store.complete("done", token, OUTCOME, TTL_S)
        await store.claim("expiring", (t := new_token()), LEASE_S)
        await store.complete("expiring", t, b"old", 0.05)
        await store.claim("leased", new_token(), LEASE_S)
        await store.aclose()
        with path.open("a", encoding="utf-8") as log:
            log.write('{"k": "torn", "o": "AA')  # a crash in the middle of a write
        await asyncio.sleep(0.06)  # past the 0.05 s TTL of "expiring" (wall clock)

        reopened = InMemoryIdempotencyStore(path=path)
        assert await reopened.claim("done", new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=OUTCOME
        )
        assert (await reopened.claim("expiring", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        assert (await reopened.claim("leased", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await reopened.aclose()
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [line["k"] for line in lines] == ["done"]  # compacted on open


class TestRedisStore(IdempotencyStoreContract):
    @pytest.fixture
    async def store(self, redis_session: RedisServer) -> AsyncIterator[IdempotencyStore]:
        store = RedisIdempotencyStore.from_url(redis_session.url)
        yield store
        await store.aclose()

    async def test_scripts_are_loaded_again_after_redis_forgets_them(
        self, store: IdempotencyStore, redis_session: RedisServer, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        admin = Redis.from_url(redis_session.url)
        await admin.script_flush()
        await admin.aclose()
        # Alone, then several in one pipeline: both paths reload the scripts.
        assert (await store.claim(key + "-a", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        admin = Redis.from_url(redis_session.url)
        await admin.script_flush()
        await admin.aclose()
        claims = await asyncio.gather(
            *(store.claim(f"{key}-{i}", new_token(), LEASE_S) for i in range(5))
        )
        assert all(c.state is ClaimState.ACQUIRED for c in claims)

    async def test_records_live_under_the_prefix(
        self, store: IdempotencyStore, redis_session: RedisServer, key: str
    ) -> None:
        await store.claim(key, "tok", LEASE_S)
        admin = Redis.from_url(redis_session.url)
        try:
            assert await admin.get("agentfn:idem:" + key) == b"Ltok"
            assert 0 < await admin.pttl("agentfn:idem:" + key) <= LEASE_S * 1000
        finally:
            await admin.aclose()

    async def test_an_unreachable_redis_raises_store_unavailable(self) -> None:
        store = RedisIdempotencyStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
        try:
            with pytest.raises(StoreUnavailableError):
                await store.claim("k", new_token(), LEASE_S)
            with pytest.raises(StoreUnavailableError):
                await store.ping()
        finally:
            await store.aclose()


def test_keys_keep_agent_source_and_id_apart() -> None:
    keys = {
        idempotency_key("a", "x:y", "z"),
        idempotency_key("a", "x", "y:z"),
        idempotency_key("b", "x:y", "z"),
        idempotency_key("a", "x:y", "z:"),
    }
    assert len(keys) == 4


async def test_the_embedded_store_keeps_at_most_max_records_outcomes() -> None:
    store = InMemoryIdempotencyStore(max_records=3)
    for i in range(5):
        token = new_token()
        await store.claim(f"k{i}", token, LEASE_S)
        await store.complete(f"k{i}", token, f"o{i}".encode(), TTL_S)
    assert len(store) == 3
    assert (await store.claim("k0", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
    assert (await store.claim("k4", new_token(), LEASE_S)).outcome == b"o4"
    with pytest.raises(ValueError, match="max_records"):
        InMemoryIdempotencyStore(max_records=0)
