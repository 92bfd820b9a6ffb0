"""The handler work every system does per event, identical on every side.

An event's payload is a small JSON object::

    {"run": "r3", "i": 17, "hop": 1, "hops": 3, "fail": 0, "sent": 1712345678901234567}

and each handler, ours or a peer's, does exactly this:

1. when ``fail`` > 0: one Redis round trip counting the attempt and recording its time; the
   first ``fail`` attempts raise :class:`InjectedFailure` (the system retries with backoff);
2. the dedupe check and the side effect, one Redis round trip (a Lua script): ``SET NX`` on the
   event's key and, only when that key is new, ``INCR`` the run's counter for this hop (and, at
   the last hop, ``RPUSH`` the end-to-end latency from ``sent``);
3. when ``hop`` < ``hops``: hand the next hop on (our agent replies; a peer enqueues).

The harness sees completion in the same Redis (the last hop's counter reaching N), so every
side is timed by one mechanism that costs the handler one round trip. Step 2 runs even where
the system has its own dedupe (our runtime's idempotency store), so no side gets away with
less work; the store is measured on its own in the idempotency scenario.
"""

from __future__ import annotations

import time
from typing import Any, Final

__all__ = [
    "ATTEMPT_LUA",
    "KEY_TTL_S",
    "RECORD_LUA",
    "InjectedFailure",
    "attempt_keys",
    "count_key",
    "latency_key",
    "new_payload",
    "next_payload",
    "record_args",
    "record_keys",
    "run_async",
    "run_sync",
]

#: Dedupe keys outlive any run; the harness's Redis is private and thrown away afterwards.
KEY_TTL_S: Final = 3600

RECORD_LUA: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('INCR', KEYS[2])
  if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[2]) end
  return 1
end
return 0
"""

ATTEMPT_LUA: Final = """
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"""


class InjectedFailure(RuntimeError):  # noqa: N818 - what it is, not an error of the handler
    """The retry scenario's planned failure: every system must retry it with backoff."""


def count_key(run: str, hop: int) -> str:
    return f"bench:{run}:count:{hop}"


def latency_key(run: str) -> str:
    return f"bench:{run}:lat"


def attempts_key(run: str, i: int) -> str:
    return f"bench:{run}:attempts:{i}"


def times_key(run: str, i: int) -> str:
    return f"bench:{run}:times:{i}"


def attempt_keys(payload: dict[str, Any]) -> list[str]:
    return [attempts_key(payload["run"], payload["i"]), times_key(payload["run"], payload["i"])]


def record_keys(payload: dict[str, Any]) -> list[str]:
    run, hop = payload["run"], payload["hop"]
    return [f"bench:{run}:seen:{payload['i']}:{hop}", count_key(run, hop), latency_key(run)]


def record_args(payload: dict[str, Any], now_ns: int) -> list[str | int]:
    final = payload["hop"] >= payload["hops"]
    latency_us = str((now_ns - payload["sent"]) // 1000) if final else ""
    return [KEY_TTL_S, latency_us]


def next_payload(payload: dict[str, Any]) -> dict[str, Any] | None:
    if payload["hop"] >= payload["hops"]:
        return None
    return {**payload, "hop": payload["hop"] + 1}


async def run_async(record: Any, attempt: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The work with redis-py asyncio scripts (``register_script``); returns the next hop."""
    now = time.time_ns()
    if payload["fail"]:
        n = await attempt(keys=attempt_keys(payload), args=[now, KEY_TTL_S])
        if n <= payload["fail"]:
            raise InjectedFailure(f"planned failure, attempt {n}")
    await record(keys=record_keys(payload), args=record_args(payload, now))
    return next_payload(payload)


def run_sync(record: Any, attempt: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The same with redis-py's blocking client (Celery, Dramatiq)."""
    now = time.time_ns()
    if payload["fail"]:
        n = attempt(keys=attempt_keys(payload), args=[now, KEY_TTL_S])
        if n <= payload["fail"]:
            raise InjectedFailure(f"planned failure, attempt {n}")
    record(keys=record_keys(payload), args=record_args(payload, now))
    return next_payload(payload)


def new_payload(run: str, i: int, *, hops: int = 1, fail: int = 0) -> dict[str, Any]:
    """A fresh event payload; ``sent`` is stamped again by the sender right before it sends."""
    return {"run": run, "i": i, "hop": 1, "hops": hops, "fail": fail, "sent": time.time_ns()}
