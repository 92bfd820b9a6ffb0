"""The one Redis client an agent process makes: idempotency records, breakers and ``ctx.redis``.

redis-py is imported only when a client is made, so an agent without Redis never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["POOL_CONNECTIONS", "redis_client"]

#: Connections per agent process to Redis: above the broker's default in-flight deliveries
#: per subscriber (128), so a full burst never waits for a connection.
POOL_CONNECTIONS: Final = 256


def redis_client(url: str, *, timeout_s: float = 2.0, pool_size: int = POOL_CONNECTIONS) -> Redis:
    """A pooled asyncio client that fails fast: one immediate retry, then the error.

    The retry replaces a pooled connection that died with a Redis restart; anything longer
    would hold the broker's request while Redis is down, when a quick 503 lets it back off.
    ``aclose()`` closes every connection of the pool.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, got {pool_size}")
    # A blocking pool: redis-py's default pool fails the 101st concurrent call at once
    # (MaxConnectionsError), and a broker delivers up to 128 events at a time per subscriber.
    # Waiting (bounded by the same timeout) for a free connection is what a burst needs.
    from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415 - see the docstring
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    # from_pool: the client owns its pool, so aclose() closes the connections too (a client
    # built with connection_pool=... leaves them open for the process's lifetime).
    return Redis.from_pool(pool)
