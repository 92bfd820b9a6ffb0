"""One contract, every idempotency store: in-memory, in-memory persisted to a file, Redis.

Time is driven, not waited for: the embedded stores run on a fake clock, and Redis records are
aged by moving their expiry in Redis itself (see :class:`RedisTime`); one Redis case lets the
server's own clock expire records, waiting on the condition.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final, Protocol

import pytest
from agentfn.functions import (
    Claim,
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoreUnavailableError,
)
from agentfn.functions._idempotency import idempotency_key, new_token
from redis.asyncio import Redis

from tests._servers import RedisServer, free_port
from tests._waiting import async_wait_until
from tests.functions._support import FakeClock

LEASE_S = 30.0
TTL_S = 3600.0
#: A reply as the runtime stores it may hold any bytes.
OUTCOME = b'ce-id: 1\nce-type: t\n\n{"x": "\xc3\xa9"}\x00\xff'
PREFIX = "agentfn:idem:"


class StoreTime(Protocol):
    """The clock a store's records live by, as a test drives it."""

    async def advance(self, key: str, seconds: float) -> None:
        """Let ``seconds`` pass for the records under ``key`` and the keys it prefixes."""
        ...

    async def drift(self) -> float:
        """Seconds the store's clock moved by itself since the test began.

        A fake clock never does; a Redis server's runs on between the test's calls, which is
        the most any time left reported by Redis can fall short of the exact figure.
        """
        ...


class FakeTime:
    """The embedded store's time: the fake clock it was given, moved by hand."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    async def advance(self, key: str, seconds: float) -> None:
        self._clock.advance(seconds)  # every record of the store ages alike

    async def drift(self) -> float:
        return 0.0


# Moving a record's expiry earlier by N ms is N ms passing for it: Redis expires it (deletes it
# at once when the new time is not in the future) by exactly the rules a real wait would.
_AGE: Final = """
local at = redis.call('PEXPIRETIME', KEYS[1])
if at > 0 then
  redis.call('PEXPIREAT', KEYS[1], at - tonumber(ARGV[1]))
end
return at
"""


async def redis_ms(client: Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class RedisTime:
    """Redis's own clock: records aged by moving their expiry, drift read with ``TIME``."""

    def __init__(self, client: Redis, started_ms: int) -> None:
        self._client = client
        self._started_ms = started_ms

    @classmethod
    async def start(cls, client: Redis) -> RedisTime:
        return cls(client, await redis_ms(client))

    async def advance(self, key: str, seconds: float) -> None:
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", PREFIX + key) + "*"
        async for name in self._client.scan_iter(match=pattern):
            await self._client.eval(_AGE, 1, name, round(seconds * 1000))

    async def drift(self) -> float:
        # Redis counts whole milliseconds: one more covers the truncation on either side.
        return (await redis_ms(self._client) - self._started_ms + 1) / 1000


async def assert_leased(
    store: IdempotencyStore, store_time: StoreTime, key: str, *, left: float
) -> None:
    """A stranger's claim finds a lease stored with ``left`` seconds to run."""
    claim = await store.claim(key, new_token(), LEASE_S)
    assert claim.state is ClaimState.IN_FLIGHT
    assert claim.outcome == b""
    assert left - await store_time.drift() <= claim.retry_after <= left


class IdempotencyStoreContract:
    """The behaviour every store keeps; a subclass provides ``store`` and ``store_time``."""

    @pytest.fixture
    def key(self, request: pytest.FixtureRequest) -> str:
        # Distinct per test (and per parametrisation): the Redis store is shared by the session.
        return idempotency_key("agent", "/source", f"{request.node.nodeid}-{new_token()}")

    async def test_the_first_delivery_takes_the_lease(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        assert await store.claim(key, new_token(), LEASE_S) == Claim(ClaimState.ACQUIRED)
        await assert_leased(store, store_time, key, left=LEASE_S)

    async def test_a_concurrent_duplicate_is_told_the_time_left_on_the_lease(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        await store_time.advance(key, 20)
        await assert_leased(store, store_time, key, left=LEASE_S - 20)

    async def test_the_lease_holder_claiming_again_keeps_its_lease_unextended(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        # A client retrying a claim whose reply was lost must not lock itself out, nor keep
        # its lease alive past the time it was granted for.
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store_time.advance(key, 20)
        assert (await store.claim(key, token, LEASE_S)).state is ClaimState.ACQUIRED
        await assert_leased(store, store_time, key, left=LEASE_S - 20)
        await store_time.advance(key, LEASE_S - 20)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

    async def test_a_later_duplicate_gets_the_stored_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        assert await store.complete(key, token, OUTCOME, TTL_S)
        for _ in range(2):  # answering a duplicate leaves the record as it was
            claim = await store.claim(key, new_token(), LEASE_S)
            assert claim == Claim(ClaimState.DONE, outcome=OUTCOME)

    async def test_no_reply_is_stored_as_an_empty_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        assert await store.complete(key, token, b"", TTL_S)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(ClaimState.DONE, outcome=b"")

    async def test_a_released_lease_lets_the_retry_run(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        first = new_token()
        await store.claim(key, first, LEASE_S)
        await store_time.advance(key, 20)
        await store.release(key, first)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await assert_leased(store, store_time, key, left=LEASE_S)  # the retry's own lease
        await store.release(key, first)  # a stale release must not free the retry's lease
        await assert_leased(store, store_time, key, left=LEASE_S)

    async def test_only_the_holder_releases(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        await store.release(key, new_token())
        await assert_leased(store, store_time, key, left=LEASE_S)

    async def test_release_after_completion_keeps_the_outcome(
        self, store: IdempotencyStore, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.complete(key, token, OUTCOME, TTL_S)
        await store.release(key, token)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=OUTCOME
        )

    async def test_a_crashed_holders_lease_expires_after_lease_s(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)  # and never completed nor released
        await store_time.advance(key, LEASE_S - 10)
        await assert_leased(store, store_time, key, left=10)
        await store_time.advance(key, 10)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await assert_leased(store, store_time, key, left=LEASE_S)

    async def test_outcomes_expire_after_their_ttl(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        token = new_token()
        await store.claim(key, token, LEASE_S)
        await store.complete(key, token, OUTCOME, TTL_S)
        await store_time.advance(key, TTL_S - 10)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=OUTCOME
        )
        await store_time.advance(key, 10)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await assert_leased(store, store_time, key, left=LEASE_S)

    async def test_the_first_completion_wins(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        slow, fast = new_token(), new_token()
        await store.claim(key, slow, LEASE_S)
        await store_time.advance(key, LEASE_S)  # the slow holder outlived its lease
        assert (await store.claim(key, fast, LEASE_S)).state is ClaimState.ACQUIRED
        assert await store.complete(key, fast, b"fast", TTL_S)
        assert not await store.complete(key, slow, b"slow", TTL_S)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=b"fast"
        )
        await store_time.advance(key, TTL_S - 10)  # the losing write did not touch the TTL
        assert (await store.claim(key, new_token(), LEASE_S)).outcome == b"fast"
        await store_time.advance(key, 10)
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

    async def test_keys_are_independent(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        other = key + "-other"
        token = new_token()
        assert (await store.claim(other, token, LEASE_S)).state is ClaimState.ACQUIRED
        await assert_leased(store, store_time, other, left=LEASE_S)
        assert await store.complete(other, token, OUTCOME, TTL_S)
        await assert_leased(store, store_time, key, left=LEASE_S)
        assert (await store.claim(other, new_token(), LEASE_S)).outcome == OUTCOME

    async def test_exactly_one_of_many_concurrent_claims_wins(
        self, store: IdempotencyStore, store_time: StoreTime, key: str
    ) -> None:
        tokens = [new_token() for _ in range(25)]
        claims = await asyncio.gather(*(store.claim(key, t, LEASE_S) for t in tokens))
        states = [c.state for c in claims]
        assert states.count(ClaimState.ACQUIRED) == 1
        assert states.count(ClaimState.IN_FLIGHT) == 24
        drift = await store_time.drift()
        assert all(
            LEASE_S - drift <= c.retry_after <= LEASE_S
            for c in claims
            if c.state is ClaimState.IN_FLIGHT
        )
        winner = tokens[states.index(ClaimState.ACQUIRED)]
        # The lease stored is the winner's: its completion is the one every duplicate sees.
        assert (await store.claim(key, winner, LEASE_S)).state is ClaimState.ACQUIRED
        assert await store.complete(key, winner, OUTCOME, TTL_S)
        assert await store.claim(key, new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=OUTCOME
        )

    async def test_the_store_answers_readiness(self, store: IdempotencyStore) -> None:
        await store.ping()  # raises StoreUnavailableError when it cannot serve


class TestInMemoryStore(IdempotencyStoreContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[IdempotencyStore]:
        store = InMemoryIdempotencyStore(clock=clock)
        yield store
        await store.aclose()

    @pytest.fixture
    def store_time(self, clock: FakeClock) -> StoreTime:
        return FakeTime(clock)

    async def test_expired_records_are_swept(self) -> None:
        clock = FakeClock(0.0)
        store = InMemoryIdempotencyStore(clock=clock)
        for i in range(100):
            token = new_token()
            await store.claim(f"k{i}", token, 10)
            await store.complete(f"k{i}", token, b"", 20)
        await store.claim("leased", new_token(), 5)
        assert len(store) == 101
        clock.advance(30)
        await store.claim("fresh", new_token(), 10)
        assert len(store) == 1  # only the new lease is left


class TestPersistedInMemoryStore(IdempotencyStoreContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def store(self, tmp_path: Path, clock: FakeClock) -> AsyncIterator[IdempotencyStore]:
        store = InMemoryIdempotencyStore(path=tmp_path / "dedupe.jsonl", clock=clock)
        yield store
        await store.aclose()

    @pytest.fixture
    def store_time(self, clock: FakeClock) -> StoreTime:
        return FakeTime(clock)

    async def test_outcomes_survive_a_restart_and_leases_do_not(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        path = tmp_path / "nested" / "dedupe.jsonl"
        store = InMemoryIdempotencyStore(path=path, clock=clock)
        token = new_token()
        await store.claim("done", token, LEASE_S)
        await store.complete("done", token, OUTCOME, TTL_S)
        await store.claim("expiring", (t := new_token()), LEASE_S)
        await store.complete("expiring", t, b"old", 5)
        await store.claim("leased", new_token(), LEASE_S)
        await store.aclose()
        with path.open("a", encoding="utf-8") as log:
            log.write('{"k": "torn", "o": "AA')  # a crash in the middle of a write
        clock.advance(5)  # the restart took as long as the TTL of "expiring"

        reopened = InMemoryIdempotencyStore(path=path, clock=clock)
        assert len(reopened) == 1
        assert await reopened.claim("done", new_token(), LEASE_S) == Claim(
            ClaimState.DONE, outcome=OUTCOME
        )
        assert (await reopened.claim("expiring", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        assert (await reopened.claim("leased", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        clock.advance(TTL_S - 5)  # the outcome kept its expiry across the restart
        assert (await reopened.claim("done", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await reopened.aclose()
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [line["k"] for line in lines] == ["done"]  # compacted on open


class TestRedisStore(IdempotencyStoreContract):
    @pytest.fixture
    async def admin(self, redis_session: RedisServer) -> AsyncIterator[Redis]:
        client = Redis.from_url(redis_session.url)
        yield client
        await client.aclose()

    @pytest.fixture
    async def store(self, redis_session: RedisServer) -> AsyncIterator[IdempotencyStore]:
        store = RedisIdempotencyStore.from_url(redis_session.url)
        yield store
        await store.aclose()

    @pytest.fixture
    async def store_time(self, admin: Redis) -> StoreTime:
        return await RedisTime.start(admin)

    async def test_scripts_are_loaded_again_after_redis_forgets_them(
        self, store: IdempotencyStore, admin: Redis, key: str
    ) -> None:
        await store.claim(key, new_token(), LEASE_S)
        await admin.script_flush()
        # Alone, then several in one pipeline: both paths reload the scripts.
        assert (await store.claim(key + "-a", new_token(), LEASE_S)).state is ClaimState.ACQUIRED
        await admin.script_flush()
        claims = await asyncio.gather(
            *(store.claim(f"{key}-{i}", new_token(), LEASE_S) for i in range(5))
        )
        assert all(c.state is ClaimState.ACQUIRED for c in claims)
        assert all([await admin.exists(f"{PREFIX}{key}-{i}") for i in range(5)])

    async def test_records_are_set_under_the_prefix_with_the_exact_lease_and_ttl(
        self, store: IdempotencyStore, admin: Redis, key: str
    ) -> None:
        name = PREFIX + key
        before = await redis_ms(admin)
        await store.claim(key, "tok", LEASE_S)
        after = await redis_ms(admin)
        assert await admin.get(name) == b"Ltok"
        # Redis stamps the expiry with its time when the SET ran: between the two readings.
        assert before + LEASE_S * 1000 <= await admin.pexpiretime(name) <= after + LEASE_S * 1000

        before = await redis_ms(admin)
        assert await store.complete(key, "tok", OUTCOME, TTL_S)
        after = await redis_ms(admin)
        assert await admin.get(name) == b"D" + OUTCOME
        assert before + TTL_S * 1000 <= await admin.pexpiretime(name) <= after + TTL_S * 1000

    async def test_redis_expires_leases_and_outcomes_by_its_own_clock(
        self, store: IdempotencyStore, admin: Redis, key: str
    ) -> None:
        # Nothing aged by the test: Redis deletes both records when their time is up.
        await store.claim(key, new_token(), 0.05)
        token = new_token()

        async def free() -> bool:
            return (await store.claim(key, token, LEASE_S)).state is ClaimState.ACQUIRED

        await async_wait_until(free, timeout=10, interval=0.02, message="Redis to expire the lease")
        assert await store.complete(key, token, OUTCOME, 0.05)
        assert not await store.complete(key, token, b"other", TTL_S)  # the outcome is there

        async def gone() -> bool:
            return not await admin.exists(PREFIX + key)

        await async_wait_until(gone, timeout=10, interval=0.02, message="the outcome to expire")
        assert (await store.claim(key, new_token(), LEASE_S)).state is ClaimState.ACQUIRED

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
