"""Circuit breakers for outbound calls, one per destination.

closed ──(``failures`` failures within ``window_s``)──> open ──(``reset_s``)──> half-open
half-open: one probe call goes through (others are refused); its success closes the
circuit, its failure opens it again for another ``reset_s``.

A refused call raises :class:`CircuitOpenError` carrying the time to half-open, which the
runtime turns into 503 + ``Retry-After`` so the broker backs off instead of spending attempts.

State lives in-process (:class:`InMemoryBreakerStore`) or in Redis
(:class:`RedisBreakerStore`) so all replicas of an agent agree. Time comes from the caller's
clock in both, so tests drive transitions with a fake clock.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from agentfn.functions._errors import CircuitOpenError, UnavailableError
from agentfn.functions._redis import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "CircuitBreakers",
    "Decision",
    "InMemoryBreakerStore",
    "RedisBreakerStore",
]

T = TypeVar("T")

log = logging.getLogger(__name__)


class BreakerState(IntEnum):
    """Values double as the ``agentfn_circuit_breaker_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open.

    ``probe_timeout_s`` bounds how long one half-open probe holds the only slot, so a replica
    that dies mid-probe does not keep the circuit half-open for everyone.
    """

    failures: int = 5
    window_s: float = 60.0
    reset_s: float = 30.0
    probe_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be at least 1, got {self.failures}")
        for name in ("window_s", "reset_s", "probe_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a call may go out; ``retry_after`` is set when it may not."""

    allowed: bool
    state: BreakerState
    probe: bool = False
    retry_after: float = 0.0


_ALLOW: Final = Decision(allowed=True, state=BreakerState.CLOSED)
_PROBE: Final = Decision(allowed=True, state=BreakerState.HALF_OPEN, probe=True)
#: A refused caller during someone else's probe retries soon: probes usually answer fast.
_HALF_OPEN_RETRY_S: Final = 1.0


class BreakerStore(Protocol):
    """Where breaker state lives; every method takes the caller's ``now`` (seconds)."""

    async def acquire(self, destination: str, now: float) -> Decision: ...

    async def on_failure(self, destination: str, now: float, *, probe: bool) -> BreakerState: ...

    async def on_success(self, destination: str, now: float, *, probe: bool) -> BreakerState: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Circuit:
    failures: deque[float] = field(default_factory=deque)
    opened_at: float | None = None
    probe_until: float | None = None


class InMemoryBreakerStore:
    """Breaker state of this process."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._circuits: dict[str, _Circuit] = {}

    async def acquire(self, destination: str, now: float) -> Decision:
        circuit = self._circuits.get(destination)
        if circuit is None or circuit.opened_at is None:
            return _ALLOW
        half_open_at = circuit.opened_at + self._policy.reset_s
        if now < half_open_at:
            return Decision(allowed=False, state=BreakerState.OPEN, retry_after=half_open_at - now)
        if circuit.probe_until is not None and now < circuit.probe_until:
            wait = min(_HALF_OPEN_RETRY_S, circuit.probe_until - now)
            return Decision(allowed=False, state=BreakerState.HALF_OPEN, retry_after=wait)
        circuit.probe_until = now + self._policy.probe_timeout_s
        return _PROBE

    async def on_failure(self, destination: str, now: float, *, probe: bool) -> BreakerState:
        circuit = self._circuits.setdefault(destination, _Circuit())
        if circuit.opened_at is not None:
            # A call let through while closed can fail after others opened the circuit; only
            # the probe's failure restarts the open period.
            if probe:
                circuit.opened_at, circuit.probe_until = now, None
            return BreakerState.OPEN
        failures = circuit.failures
        failures.append(now)
        horizon = now - self._policy.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if len(failures) >= self._policy.failures:
            failures.clear()
            circuit.opened_at = now
            return BreakerState.OPEN
        return BreakerState.CLOSED

    async def on_success(self, destination: str, now: float, *, probe: bool) -> BreakerState:
        circuit = self._circuits.get(destination)
        if circuit is None:
            return BreakerState.CLOSED
        if probe:
            circuit.failures.clear()
            circuit.opened_at = circuit.probe_until = None
            return BreakerState.CLOSED
        if circuit.opened_at is None:
            return BreakerState.CLOSED
        return (
            BreakerState.OPEN
            if now < circuit.opened_at + self._policy.reset_s
            else BreakerState.HALF_OPEN
        )

    async def aclose(self) -> None:
        return None


# Lua numbers become integers in replies, so times travel as strings both ways.
_ACQUIRE: Final = """
local opened = redis.call('HGET', KEYS[1], 'opened')
if not opened then return {0, '0'} end
local now = tonumber(ARGV[1])
local half_open_at = tonumber(opened) + tonumber(ARGV[2])
if now < half_open_at then return {1, tostring(half_open_at - now)} end
local probe = redis.call('HGET', KEYS[1], 'probe')
if probe and now < tonumber(probe) then return {2, tostring(tonumber(probe) - now)} end
redis.call('HSET', KEYS[1], 'probe', tostring(now + tonumber(ARGV[3])))
return {3, '0'}
"""

_FAILURE: Final = """
local now = tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'opened') == 1 then
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'opened', ARGV[1])
    redis.call('HDEL', KEYS[1], 'probe')
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
  end
  return 1
end
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'opened', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return 1
end
return 0
"""


class RedisBreakerStore:
    """Breaker state shared through Redis by every replica: one script call per transition.

    A call through a closed circuit costs one round trip before (``acquire``) and, only when
    it fails, one after. Replicas should keep their clocks in sync (NTP); the times compared
    are the callers'.

    An agent app passes its one client (shared with the idempotency store and ``ctx.redis``);
    :meth:`from_url` makes and owns one, closed by :meth:`aclose`.
    """

    def __init__(
        self,
        client: Redis,
        policy: BreakerPolicy,
        *,
        prefix: str = "agentfn:cb:",
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._policy = policy
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._failure = client.register_script(_FAILURE)
        # Idle circuits vanish (closed) once nothing could still depend on their state.
        self._ttl_ms = int(2000 * (policy.window_s + policy.reset_s + policy.probe_timeout_s))

    @classmethod
    def from_url(
        cls, url: str, policy: BreakerPolicy, *, timeout_s: float = 2.0
    ) -> RedisBreakerStore:
        return cls(redis_client(url, timeout_s=timeout_s), policy, owns_client=True)

    def _keys(self, destination: str) -> list[str]:
        key = self._prefix + destination
        return [key, key + ":f"]

    async def acquire(self, destination: str, now: float) -> Decision:
        policy = self._policy
        code, wait = await self._acquire(
            keys=self._keys(destination), args=[repr(now), policy.reset_s, policy.probe_timeout_s]
        )
        if code == 0:
            return _ALLOW
        if code == 3:
            return _PROBE
        if code == 1:
            return Decision(allowed=False, state=BreakerState.OPEN, retry_after=float(wait))
        return Decision(
            allowed=False,
            state=BreakerState.HALF_OPEN,
            retry_after=min(_HALF_OPEN_RETRY_S, float(wait)),
        )

    async def on_failure(self, destination: str, now: float, *, probe: bool) -> BreakerState:
        policy = self._policy
        opened = await self._failure(
            keys=self._keys(destination),
            args=[
                repr(now),
                policy.window_s,
                policy.failures,
                "1" if probe else "0",
                f"{now!r}:{os.urandom(4).hex()}",
                self._ttl_ms,
            ],
        )
        return BreakerState.OPEN if opened else BreakerState.CLOSED

    async def on_success(self, destination: str, now: float, *, probe: bool) -> BreakerState:
        if probe:
            await self._client.delete(*self._keys(destination))
        # A non-probe success changes nothing (failures count in a rolling window), so it
        # costs no round trip; the caller keeps whatever state it last saw.
        return BreakerState.CLOSED

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class CircuitBreakers:
    """The breakers of one agent, keyed by destination (``host:port``, a model name, ...).

    Use :meth:`guard` around any call (gRPC, an inference client) or :meth:`call`; an
    exception inside counts as a failure of that destination. ``on_state`` sees every state
    the breakers observe (it feeds the state gauge).
    """

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        store: BreakerStore | None = None,
        clock: Callable[[], float] = time.time,
        on_state: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._store = store if store is not None else InMemoryBreakerStore(self.policy)
        self._clock = clock
        self._listeners: list[Callable[[str, BreakerState], None]] = []
        if on_state is not None:
            self._listeners.append(on_state)
        self._last: dict[str, BreakerState] = {}

    def add_listener(self, listener: Callable[[str, BreakerState], None]) -> None:
        """Call ``listener(destination, state)`` on every state change this process sees."""
        self._listeners.append(listener)

    def _observe(self, destination: str, state: BreakerState) -> None:
        if self._last.get(destination) is not state:
            self._last[destination] = state
            for listener in self._listeners:
                listener(destination, state)

    def last_state(self, destination: str) -> BreakerState:
        """The state this process last saw for ``destination`` (closed if never used)."""
        return self._last.get(destination, BreakerState.CLOSED)

    async def acquire(self, destination: str) -> Decision:
        """Let one call through or raise :class:`CircuitOpenError`."""
        try:
            decision = await self._store.acquire(destination, self._clock())
        except CircuitOpenError:
            raise
        except Exception as error:
            # Shared state that cannot be read is no reason to call a destination blindly
            # nor to fail it: the event is retried once Redis answers again.
            raise UnavailableError("breaker-store", str(error)) from error
        self._observe(destination, decision.state)
        if not decision.allowed:
            raise CircuitOpenError(destination, decision.retry_after)
        return decision

    async def record(self, destination: str, decision: Decision, *, ok: bool) -> None:
        if ok and not decision.probe:
            return
        now = self._clock()
        try:
            if ok:
                state = await self._store.on_success(destination, now, probe=True)
            else:
                state = await self._store.on_failure(destination, now, probe=decision.probe)
        except Exception:
            # The call's own outcome matters more than the bookkeeping: never mask it.
            log.warning(
                "could not record a call to %s in the breaker store", destination, exc_info=True
            )
            return
        self._observe(destination, state)

    @asynccontextmanager
    async def guard(self, destination: str) -> AsyncIterator[None]:
        decision = await self.acquire(destination)
        try:
            yield
        except Exception:
            await self.record(destination, decision, ok=False)
            raise
        except BaseException:
            # Cancelled mid-call: no verdict on the destination, but a probe must not keep
            # the only half-open slot until it times out.
            if decision.probe:
                await self.record(destination, decision, ok=False)
            raise
        await self.record(destination, decision, ok=True)

    async def call(self, destination: str, function: Callable[[], Awaitable[T]]) -> T:
        async with self.guard(destination):
            return await function()

    async def aclose(self) -> None:
        await self._store.aclose()
