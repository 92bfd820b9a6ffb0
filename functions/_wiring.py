"""The parts of an agent's app, made from its :class:`Settings`: the one place that does.

Everything the runtime's stages need is built here and handed to them; no stage reads settings
to build a part of its own. A part the caller passes in is used as it is (and not closed by
the app); a part that is optional and not configured gets a stand-in that does nothing, or,
for the broker publisher, says clearly which setting is missing when a handler publishes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentfn.functions._breaker import BreakerPolicy, CircuitBreakers, RedisBreakerStore
from agentfn.functions._idempotency import (
    IdempotencyStore,
    InMemoryIdempotencyStore,
    RedisIdempotencyStore,
)
from agentfn.functions._publisher import HttpPublisher, NoPublisher, Publisher, SessionPool
from agentfn.functions._redis import redis_client
from agentfn.functions._rpc import ChannelPool, RpcPolicy

if TYPE_CHECKING:
    from agentfn.functions.settings import Settings
    from redis.asyncio import Redis

__all__ = ["Parts", "wire"]


@dataclass(frozen=True, slots=True, eq=False)
class Parts:
    """What an app is assembled from; ``closers`` close what :func:`wire` opened.

    ``channels``: the gRPC channels of ``ctx.rpc``, one per target (none open until a call).
    """

    settings: Settings
    redis: Redis | None
    store: IdempotencyStore | None
    breakers: CircuitBreakers
    sessions: SessionPool
    publisher: Publisher
    closers: tuple[Callable[[], Awaitable[None]], ...]
    channels: ChannelPool


def wire(
    agent: str,
    settings: Settings,
    *,
    store: IdempotencyStore | None = None,
    breakers: CircuitBreakers | None = None,
    publisher: Publisher | None = None,
) -> Parts:
    """The parts of agent ``agent``'s app: those given, the rest as ``settings`` configure."""
    closers: list[Callable[[], Awaitable[None]]] = []
    redis: Redis | None = None
    if settings.redis_url:
        redis = redis_client(settings.redis_url, timeout_s=settings.redis_timeout_s)
        closers.append(redis.aclose)

    if store is None:
        backend = settings.idempotency_backend
        if backend == "redis":
            assert redis is not None  # Settings refuses redis without a URL
            store = RedisIdempotencyStore(redis)
        elif backend == "embedded":
            store = InMemoryIdempotencyStore(
                path=settings.idempotency_path, max_records=settings.idempotency_max_records
            )
        if store is not None:
            closers.append(store.aclose)

    if breakers is None:
        policy = BreakerPolicy(
            failures=settings.breaker_failures,
            window_s=settings.breaker_window_s,
            reset_s=settings.breaker_reset_s,
        )
        shared = (
            RedisBreakerStore(redis, policy)
            if settings.breaker_shared and redis is not None
            else None
        )
        breakers = CircuitBreakers(policy, store=shared)

    sessions = SessionPool(timeout_s=settings.outbound_timeout_s)
    closers.append(sessions.aclose)
    if publisher is None:
        publisher = (
            HttpPublisher(settings.broker_url, sessions, breakers)
            if settings.broker_url
            else NoPublisher(agent)
        )
    channels = ChannelPool(RpcPolicy.from_settings(settings))
    closers.append(channels.aclose)
    return Parts(settings, redis, store, breakers, sessions, publisher, tuple(closers), channels)
