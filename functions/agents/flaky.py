"""The flaky agent: fingerprints text, failing the first attempts of each event on purpose.

It shows what the broker and runtime do with failures: ``retryable`` failures answer 503 with
``Retry-After`` (the broker backs off), ``crash`` failures answer 500 (retried too); the
idempotency lease is released on each failure, so the next attempt runs, and the attempt that
succeeds reports how many it took.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import timedelta
from typing import Final

from agentfn.functions import Agent, Context, Delivery, RetryableError
from agentfn.functions.agents import _text
from agentfn.functions.agents.models import (
    FLAKY_COMPLETED,
    FLAKY_REQUESTED,
    FlakyCompleted,
    FlakyRequested,
)

__all__ = ["SimulatedCrashError", "agent", "fingerprint", "function"]

#: Attempt counters kept per process, oldest dropped first.
_REMEMBERED: Final = 10_000

agent = Agent(
    "flaky",
    description="Fingerprints text; fails the first fail_attempts deliveries of each event.",
    delivery=Delivery(retry=5, backoff_policy="linear", backoff_delay=timedelta(milliseconds=100)),
)


class SimulatedCrashError(RuntimeError):
    """The failure the flaky agent raises in ``crash`` mode (a 500)."""


@agent.on(FLAKY_REQUESTED, emits={FLAKY_COMPLETED: FlakyCompleted})
async def fingerprint(request: FlakyRequested, ctx: Context) -> FlakyCompleted:
    attempts: OrderedDict[str, int] = ctx.state.setdefault("attempts", OrderedDict())
    key = f"{ctx.event.source}\n{ctx.event.id}"
    attempt = attempts.pop(key, 0) + 1
    if attempt <= request.fail_attempts:
        attempts[key] = attempt
        while len(attempts) > _REMEMBERED:
            attempts.popitem(last=False)
        if request.failure == "retryable":
            raise RetryableError(f"simulated outage, attempt {attempt}", retry_after=1)
        raise SimulatedCrashError(f"simulated crash, attempt {attempt}")
    normalised = " ".join(_text.words(request.text))
    return FlakyCompleted(
        words=len(_text.words(request.text)),
        sha256=hashlib.sha256(normalised.encode()).hexdigest(),
        attempts=attempt,
    )


function = agent.http_function()
