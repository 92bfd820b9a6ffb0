"""Scenario 3, the retry path: every event's handler fails twice, then succeeds.

Each side is configured to the same nominal schedule: the wait before retry k is
``base * 2**k`` with base 0.1 s, so 0.2 s then 0.4 s (ours: Trigger ``delivery`` retry 5,
exponential, ``backoffDelay: PT0.1S``). The handler records each attempt's time in Redis, so
the gaps between attempts are measured where the work happens. Reported: time from the first
send until every event succeeded, the median and worst gap of each retry, and the share of
events whose schedule was followed: no retry earlier than nominal (10 ms tolerance) and none
later than twice nominal plus 100 ms (room for Dramatiq's built-in jitter of up to 2x).
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
from bench.scenarios.throughput import ratio_notes

FAILURES = 2
BASE_S = 0.1
EARLY_TOLERANCE_S = 0.010
LATE_ALLOWANCE_S = 0.100
MEMBERS = ("ours", "ours-inprocess", "celery", "dramatiq", "faststream-redis")


def nominal(retry: int) -> float:
    """The wait before retry ``retry`` (1-based)."""
    return BASE_S * 2**retry


@dataclass
class Retry:
    name: str = "retry"
    title: str = "Retry path: fail twice, then succeed (nominal waits 0.2 s, 0.4 s)"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
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
            "nominal_waits_s": [nominal(1), nominal(2)],
        }

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        n = self.events(env)
        async with system.running(env, Workload(backoff_s=BASE_S)) as running:
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
            "A schedule is followed when no wait is shorter than nominal - 10 ms and none is "
            "longer than 2x nominal + 100 ms; attempts/event above 3 means extra deliveries.",
            "FastStream has no backoff: its pending entries come back after a fixed idle time "
            "(set to the first nominal wait), so it finishes sooner by retrying early.",
            *ratio_notes(summary, "completion_s", higher_is_better=False, suffix=" completion"),
        ]


def _on_schedule(gaps: list[float]) -> bool:
    for retry, gap in enumerate(gaps[:FAILURES], start=1):
        wait = nominal(retry)
        if gap < wait - EARLY_TOLERANCE_S or gap > 2 * wait + LATE_ALLOWANCE_S:
            return False
    return True


SCENARIO = Retry()
