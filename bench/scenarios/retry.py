"""Scenario 3, the retry path: every event's handler fails twice, then succeeds.

Every side is configured to one nominal schedule (:data:`WORKLOAD`); the handler records each
attempt's time in Redis, so the gaps between attempts are measured where the work happens. The
figures in the text (waits, tolerances) are rendered from the constants below, the ones the
systems are started with, so the report cannot state a schedule the run did not use.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._harness.core import Column, Env, ScenarioSummary, System, Workload, settle
from bench._harness.work import attempt_keys
from bench.peers.dramatiq_peer import MAX_JITTER
from bench.peers.faststream_redis import reclaim_ms
from bench.scenarios.throughput import ratio_notes

FAILURES = 2
BASE_S = 0.1
#: What every side is started with: retry ``k`` waits ``BASE_S * 2**k``.
WORKLOAD = Workload(backoff_s=BASE_S)
EARLY_TOLERANCE_S = 0.010
#: A wait may be up to this multiple of nominal (plus the allowance): Dramatiq's jitter.
LATE_FACTOR = MAX_JITTER
LATE_ALLOWANCE_S = 0.100
MEMBERS = ("ours", "ours-inprocess", "celery", "dramatiq", "faststream-redis")


def nominal(retry: int) -> float:
    """The wait before retry ``retry`` (1-based)."""
    return WORKLOAD.backoff_s * 2.0**retry


def _s(seconds: float) -> str:
    return f"{seconds:g} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _waits(joiner: str) -> str:
    return joiner.join(_s(nominal(k)) for k in range(1, FAILURES + 1))


def _rule() -> str:
    return (
        f"no wait is shorter than nominal - {_ms(EARLY_TOLERANCE_S)} and none is longer than "
        f"{LATE_FACTOR}x nominal + {_ms(LATE_ALLOWANCE_S)}"
    )


def describe() -> str:
    return (
        "Each side is configured to the same nominal schedule: the wait before retry k is "
        f"base * 2**k with base {_s(WORKLOAD.backoff_s)}, so {_waits(' then ')} (ours: Trigger "
        f"``delivery`` retry {WORKLOAD.retries}, exponential, "
        f"``backoffDelay: PT{WORKLOAD.backoff_s}S``). The handler records each attempt's time "
        "in Redis, so the gaps between attempts are measured where the work happens. Reported: "
        "time from the first send until every event succeeded, the median and worst gap of "
        "each retry, and the share of events whose schedule was followed: "
        f"{_rule()} (room for Dramatiq's built-in jitter of up to {MAX_JITTER}x)."
    )


@dataclass
class Retry:
    name: str = "retry"
    title: str = f"Retry path: fail twice, then succeed (nominal waits {_waits(', ')})"
    description: str = field(default_factory=describe)
    columns: Sequence[Column] = (
        Column("completion_s", "all done, s", "{:.2f}", higher_is_better=False),
        Column("gap1_ms", "retry 1 wait ms (median)", "{:.0f}"),
        Column("gap1_max_ms", "retry 1 worst ms", "{:.0f}"),
        Column("gap2_ms", "retry 2 wait ms (median)", "{:.0f}"),
        Column("gap2_max_ms", "retry 2 worst ms", "{:.0f}"),
        Column("followed_pct", "schedule followed %", "{:.0f}"),
        Column("attempts", "attempts/event", "{:.2f}", higher_is_better=False),
    )
    #: No ratio column: finishing first is no merit for a side that cannot back off.
    primary: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        return [s for s in available if s.key in MEMBERS and self.name in s.scenarios]

    def events(self, env: Env) -> int:
        return 20 if env.quick else 200

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        self.params = {
            "events": self.events(env),
            "failures_per_event": FAILURES,
            "nominal_waits_s": [nominal(k) for k in range(1, FAILURES + 1)],
            "retries": WORKLOAD.retries,
            "early_tolerance_s": EARLY_TOLERANCE_S,
            "late_factor": LATE_FACTOR,
            "late_allowance_s": LATE_ALLOWANCE_S,
            "faststream_reclaim_ms": reclaim_ms(WORKLOAD),
        }

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        n = self.events(env)
        async with system.running(env, WORKLOAD) as running:
            run = env.run_id(system)
            await settle(running, run, warmup=50)
            payloads = env.payloads(run, n, fail=FAILURES)
            started = time.perf_counter()
            await running.send_bulk(payloads)
            done = await running.wait_count(run, 1, n, timeout=60)
            redis = running.redis
            pipe = redis.pipeline(transaction=False)
            for payload in payloads:
                pipe.lrange(attempt_keys(payload)[1], 0, -1)
            histories = [[int(t) / 1e9 for t in times] for times in await pipe.execute()]
        gaps = [[b - a for a, b in itertools.pairwise(h)] for h in histories]
        first = [g[0] for g in gaps if len(g) >= 1]
        second = [g[1] for g in gaps if len(g) >= 2]
        followed = sum(1 for g in gaps if len(g) >= FAILURES and _on_schedule(g))
        return {
            "completion_s": done - started,
            "gap1_ms": statistics.median(first) * 1000,
            "gap1_max_ms": max(first) * 1000,
            "gap2_ms": statistics.median(second) * 1000,
            "gap2_max_ms": max(second) * 1000,
            "followed_pct": 100 * followed / n,
            "attempts": sum(len(h) for h in histories) / n,
        }

    async def teardown(self, env: Env) -> None:
        return None

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        return [
            f"A schedule is followed when {_rule()}; attempts/event above {FAILURES + 1} means "
            "extra deliveries.",
            "FastStream has no backoff: its pending entries come back after a fixed idle time "
            f"({reclaim_ms(WORKLOAD)} ms, the first nominal wait), so it finishes sooner by "
            "retrying early.",
            *ratio_notes(summary, "completion_s", higher_is_better=False, suffix=" completion"),
        ]


def _on_schedule(gaps: list[float]) -> bool:
    for retry, gap in enumerate(gaps[:FAILURES], start=1):
        wait = nominal(retry)
        if gap < wait - EARLY_TOLERANCE_S or gap > LATE_FACTOR * wait + LATE_ALLOWANCE_S:
            return False
    return True


SCENARIO = Retry()
