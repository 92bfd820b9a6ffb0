"""The Redis client an agent uses survives a burst wider than redis-py's default pool."""

from __future__ import annotations

import asyncio

import pytest
from agentfn.brokers.settings import BrokerSettings
from agentfn.functions._redis import POOL_CONNECTIONS, redis_client

from tests._servers import RedisServer


async def test_a_burst_of_200_concurrent_calls_all_succeed(redis_session: RedisServer) -> None:
    client = redis_client(redis_session.url)
    try:
        # BLPOP with a timeout holds a connection each: 200 at once need 200 connections,
        # more than redis-py's default pool of 100, which fails the rest at once.
        results = await asyncio.gather(
            *(client.blpop([f"agentfn-test-pool-{i}"], timeout=0.2) for i in range(200)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert results == [None] * 200


def test_the_pool_is_wider_than_a_subscriber_s_deliveries_in_flight() -> None:
    # Every delivery the broker has in flight to one agent may hold a connection at once.
    assert BrokerSettings().subscriber_in_flight < POOL_CONNECTIONS


async def test_a_full_pool_waits_its_timeout_for_a_connection_then_fails(
    redis_session: RedisServer,
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = redis_client(redis_session.url, pool_size=1, timeout_s=0.2)
    pool = client.connection_pool
    try:
        held = await pool.get_connection()  # the only connection, as a call in flight holds it
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        await pool.release(held)
        assert await client.ping()  # the released connection serves the next call
    finally:
        await client.aclose()


def test_a_pool_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        redis_client("redis://127.0.0.1:1", pool_size=0)
