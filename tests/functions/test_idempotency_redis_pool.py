"""The Redis client an agent uses survives a burst wider than redis-py's default pool."""

from __future__ import annotations

import asyncio

from agentfn.functions._idempotency import redis_client

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
