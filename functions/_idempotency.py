"""Idempotency by CloudEvent identity: one record per (agent, source, id).

The life of a record::

    claim ──(absent or lease expired)──> lease (token, expires)  ──complete──> done (outcome, TTL)
          ──(leased by another)────────> IN_FLIGHT: answer 409, the broker retries later
          ──(done)─────────────────────> DONE: answer the stored outcome again, run nothing
    lease ──release (handler failed)───> absent: the retry runs the handler

A concurrent duplicate gets 409 rather than waiting: a waiting request holds a connection and
a slot of the container's concurrency for as long as the first run takes, and Knative retries
409 with backoff anyway, by which time the outcome is stored and the duplicate gets it.

Two stores keep the same contract: :class:`InMemoryIdempotencyStore` (one process, optionally
appending outcomes to a file) and :class:`RedisIdempotencyStore` (every replica; one round trip
per call through a Lua script), whose client comes from the one factory,
:func:`agentfn.functions._redis.redis_client`. redis-py is imported only by that factory and the
Redis store's batcher (whose client brought it in): an agent without Redis never loads it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from agentfn.functions._errors import StoreUnavailableError
from agentfn.functions._redis import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "Claim",
    "ClaimState",
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "RedisIdempotencyStore",
    "idempotency_key",
    "new_token",
]


class ClaimState(Enum):
    ACQUIRED = "acquired"
    IN_FLIGHT = "in_flight"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` found.

    ``ACQUIRED``: the caller holds the lease and must ``complete`` or ``release``.
    ``IN_FLIGHT``: another delivery holds it for ``retry_after`` seconds more.
    ``DONE``: handled before; ``outcome`` is what ``complete`` stored (``b""`` = no reply).
    """

    state: ClaimState
    outcome: bytes = b""
    retry_after: float = 0.0


ACQUIRED: Final = Claim(ClaimState.ACQUIRED)


def idempotency_key(agent: str, source: str, event_id: str) -> str:
    # The length prefix keeps (a, "x:y", z) and (a, "x", "y:z") apart whatever they contain.
    return f"{agent}:{len(source)}:{source}:{event_id}"


_TOKEN_PREFIX: Final = os.urandom(6).hex()
_token_counter = itertools.count()


def new_token() -> str:
    """A lease owner's token: only its holder may complete or release the lease.

    A random per-process prefix and a counter: unique across replicas without a system call
    per event.
    """
    return f"{_TOKEN_PREFIX}{next(_token_counter):x}"


class IdempotencyStore(Protocol):
    """Dedupe records keyed by :func:`idempotency_key`. Failures raise StoreUnavailableError."""

    async def claim(self, key: str, token: str, lease_s: float) -> Claim:
        """Take the lease when the key is free (or its lease expired), else report why not."""
        ...

    async def complete(self, key: str, token: str, outcome: bytes, ttl_s: float) -> bool:
        """Store ``outcome`` for ``ttl_s``; ``False`` when another delivery completed first."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Drop the lease if ``token`` still holds it, so a retry runs the handler."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError when the store cannot serve (readiness)."""
        ...

    async def aclose(self) -> None: ...


class InMemoryIdempotencyStore:
    """Records in a dict of this process; outcomes optionally appended to ``path``.

    At most ``max_records`` outcomes are kept: past that the oldest go first, TTL or not, so
    memory stays bounded under any event rate (the dedupe window shrinks instead).

    The file is a JSON-lines log of completed outcomes, read back (expired lines dropped, the
    rest rewritten) when the store opens, so a restarted process still answers duplicates of
    what it handled. Leases are never written: a process that dies takes its leases with it,
    which is what lease expiry would do. Writes are flushed, not fsynced: a restart is covered,
    a power loss is not.

    ``clock`` gives the time records live by (tests pass a fake one to move it by hand). It is
    wall time, not monotonic, because expiry times go into the file and a process started
    later (after a reboot, too) reads them back.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        max_records: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        self._clock = clock
        self._max_records = max_records
        # key -> (token or None when done, outcome, expires_at)
        self._records: dict[str, tuple[str | None, bytes, float]] = {}
        # Expiry order per kind: every lease (and every outcome) lives equally long, so each
        # deque is sorted and expired records leave from its left end in O(1) amortised.
        self._lease_expiry: deque[tuple[float, str]] = deque()
        self._done_expiry: deque[tuple[float, str]] = deque()
        self._log: IO[str] | None = None
        if path is not None:
            self._log = self._open_log(Path(path))

    def _open_log(self, path: Path) -> IO[str]:
        now = self._clock()
        if path.exists():
            with path.open(encoding="utf-8") as existing:
                for line in existing:
                    try:
                        entry = json.loads(line)
                        key, outcome, expires = entry["k"], entry["o"], float(entry["e"])
                    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
                        continue  # a line cut short by a crash mid-write
                    if expires > now:
                        self._records[key] = (None, base64.b64decode(outcome), expires)
            live = sorted((expires, key) for key, (_, _, expires) in self._records.items())
            self._done_expiry.extend(live)
            tmp = path.with_suffix(path.suffix + ".tmp")
            with tmp.open("w", encoding="utf-8") as compacted:
                for expires, key in live:
                    compacted.write(self._log_line(key, self._records[key][1], expires))
            tmp.replace(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8")

    @staticmethod
    def _log_line(key: str, outcome: bytes, expires: float) -> str:
        encoded = base64.b64encode(outcome).decode("ascii")
        return json.dumps({"k": key, "o": encoded, "e": expires}) + "\n"

    def _sweep(self, now: float) -> None:
        records = self._records
        for queue in (self._lease_expiry, self._done_expiry):
            while queue and queue[0][0] <= now:
                expires, key = queue.popleft()
                record = records.get(key)
                if record is not None and record[2] == expires:
                    del records[key]

    async def claim(self, key: str, token: str, lease_s: float) -> Claim:
        now = self._clock()
        self._sweep(now)
        record = self._records.get(key)
        if record is not None and record[2] > now:
            if record[0] is None:
                return Claim(ClaimState.DONE, outcome=record[1])
            if record[0] != token:
                return Claim(ClaimState.IN_FLIGHT, retry_after=record[2] - now)
            # The holder asking again (a retried call): its lease stands as it was, not
            # extended, as in Redis, so a holder that keeps asking cannot outlive its lease.
            return ACQUIRED
        expires = now + lease_s
        self._records[key] = (token, b"", expires)
        self._lease_expiry.append((expires, key))
        return ACQUIRED

    async def complete(self, key: str, token: str, outcome: bytes, ttl_s: float) -> bool:
        now = self._clock()
        record = self._records.get(key)
        if record is not None and record[0] is None and record[2] > now:
            return False
        expires = now + ttl_s
        self._records[key] = (None, outcome, expires)
        done = self._done_expiry
        done.append((expires, key))
        if len(done) > self._max_records:
            _, oldest = done.popleft()
            record = self._records.get(oldest)
            if record is not None and record[0] is None:
                del self._records[oldest]
        if self._log is not None:
            self._log.write(self._log_line(key, outcome, expires))
            self._log.flush()
        return True

    async def release(self, key: str, token: str) -> None:
        record = self._records.get(key)
        if record is not None and record[0] == token:
            del self._records[key]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __len__(self) -> int:
        return len(self._records)


# Values: b"L" + token while leased, b"D" + outcome once done.
# A claim that finds its own token is the client retrying after a lost reply: still ours.
_CLAIM: Final = """
if redis.call('SET', KEYS[1], 'L' .. ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local value = redis.call('GET', KEYS[1])
if value == 'L' .. ARGV[1] then
  return {0}
end
if string.sub(value, 1, 1) == 'D' then
  return {2, string.sub(value, 2)}
end
return {1, redis.call('PTTL', KEYS[1])}
"""

_COMPLETE: Final = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 1) == 'D' then
  return 0
end
redis.call('SET', KEYS[1], 'D' .. ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == 'L' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Script:
    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


class _ScriptBatcher:
    """Runs script calls made in the same event-loop turn as one pipelined round trip.

    Under concurrency this is the difference between a round trip (and a loop wake-up, and a
    socket write) per event and one per batch: about 2.5x the claims per second on loopback.
    A lone call goes straight out, so nothing waits for company.
    """

    def __init__(self, client: Redis) -> None:
        # Here, not at module level: a Redis client exists, so redis-py is loaded already.
        from redis.exceptions import NoScriptError, ResponseError  # noqa: PLC0415

        self._no_script = NoScriptError
        self._response_error = ResponseError
        self._client = client
        self._pending: list[tuple[_Script, list[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, [script.sha, len(keys), *keys, *args], future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[_Script, list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([command for _, command, _ in batch])
            no_script = self._no_script
            missing = [i for i, r in enumerate(results) if isinstance(r, no_script)]
            if missing:
                # Redis restarted (or was flushed) since the scripts were loaded.
                for script in {batch[i][0] for i in missing}:
                    await self._client.script_load(script.text)
                again = await self._execute([batch[i][1] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except BaseException as error:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, commands: list[list[Any]]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await self._client.evalsha(*commands[0])]
            except self._response_error as error:
                return [error]
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.evalsha(*command)
        return await pipe.execute(raise_on_error=False)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class RedisIdempotencyStore:
    """Records in Redis, shared by every replica of an agent.

    Each call is one script (``EVALSHA``; loaded again after a Redis restart), so the hot path
    costs one round trip to claim and one to complete, and calls made by concurrent requests
    share their round trips (see _ScriptBatcher). Any Redis failure raises
    :class:`StoreUnavailableError`: the runtime answers 503 and the broker retries later.
    """

    def __init__(self, client: Redis, *, prefix: str = "agentfn:idem:", owns_client: bool = False):
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._batcher = _ScriptBatcher(client)
        self._claim = _Script(_CLAIM)
        self._complete = _Script(_COMPLETE)
        self._release = _Script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 2.0) -> RedisIdempotencyStore:
        return cls(redis_client(url, timeout_s=timeout_s), owns_client=True)

    async def claim(self, key: str, token: str, lease_s: float) -> Claim:
        try:
            found = await self._batcher.call(
                self._claim, [self._prefix + key], [token, max(1, int(lease_s * 1000))]
            )
        except Exception as error:
            raise _unavailable(error) from error
        state = found[0]
        if state == 0:
            return ACQUIRED
        value = found[1]
        if state == 2:
            return Claim(ClaimState.DONE, outcome=value)
        return Claim(ClaimState.IN_FLIGHT, retry_after=max(int(value), 0) / 1000)

    async def complete(self, key: str, token: str, outcome: bytes, ttl_s: float) -> bool:
        try:
            stored = await self._batcher.call(
                self._complete, [self._prefix + key], [outcome, max(1, int(ttl_s * 1000))]
            )
        except Exception as error:
            raise _unavailable(error) from error
        return bool(stored)

    async def release(self, key: str, token: str) -> None:
        try:
            await self._batcher.call(self._release, [self._prefix + key], [token])
        except Exception as error:
            raise _unavailable(error) from error

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except Exception as error:
            raise _unavailable(error) from error

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._owns_client:
            await self._client.aclose()


def _unavailable(error: Exception) -> StoreUnavailableError:
    return StoreUnavailableError(f"idempotency store unavailable: {type(error).__name__}: {error}")
