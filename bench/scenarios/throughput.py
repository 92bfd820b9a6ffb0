"""Scenario 1, throughput: N events in, a trivial idempotent handler, time until all handled.

Each repetition starts the system fresh, warms it up, then the producer sends N events as fast
as its client library can while the handlers run; the clock stops when the handlers' counter in
Redis reaches N (first send -> last handled). "Publish events/s" is how fast the producer got
the events accepted (for us: 202 from the ingress, durable). CPU per event is what every
process of the system (broker, workers, Redis, Tansu) and the producer used over the timed
window, divided by N: on two shared cores, throughput is about 2 s of CPU / total CPU per event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._harness.core import Column, Env, ScenarioSummary, System, Workload, settle


def ratio_notes(
    summary: ScenarioSummary,
    metric: str,
    *,
    higher_is_better: bool,
    suffix: str = "",
    header: bool = True,
) -> list[str]:
    """Each of our systems' median against every peer's (and the floor's), one line each.

    A ratio above 1 means ours is better, whichever direction the metric improves in.
    """
    # Rows at another load than the peers' ("ours@own-half-max") are not comparable.
    ours = [s for s in summary.systems if s.role == "ours" and s.reps and "@" not in s.key]
    others = [s for s in summary.systems if s.role in ("peer", "floor") and s.reps]
    notes = []
    for mine in ours:
        mine_value = mine.stats()[metric].median
        parts = []
        for other in others:
            value = other.stats()[metric].median
            if value and mine_value:
                ratio = mine_value / value if higher_is_better else value / mine_value
                parts.append(f"{ratio:.2f}x {other.key}")
        if parts:
            notes.append(f"{mine.key}{suffix}: " + ", ".join(parts))
    if notes and header:
        notes.insert(0, "Ratios, ours over each other system (above 1x: ours is better):")
    return notes


@dataclass
class Throughput:
    name: str = "throughput"
    title: str = "Throughput: N events, trivial idempotent handler, until all handled"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
    columns: Sequence[Column] = (
        Column("eps", "events/s"),
        Column("publish_eps", "publish events/s"),
        Column("cpu_us", "system CPU µs/event", higher_is_better=False),
        Column("producer_cpu_us", "producer CPU µs/event", higher_is_better=False),
        Column("total_cpu_us", "total CPU µs/event", higher_is_better=False),
    )
    primary: str | None = "eps"
    params: dict[str, Any] = field(default_factory=dict)

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        return [s for s in available if self.name in s.scenarios]

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        self.params = {"events": env.events, "warmup": self.warmup(env)}

    @staticmethod
    def warmup(env: Env) -> int:
        return max(100, min(500, env.events // 10))

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        return await measure(env, system, Workload(), self.warmup(env))

    async def teardown(self, env: Env) -> None:
        return None

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        return ratio_notes(summary, "eps", higher_is_better=True)


async def measure(env: Env, system: System, workload: Workload, warmup: int) -> dict[str, Any]:
    """One timed repetition of scenario 1 (the idempotency scenario reuses it)."""
    n = env.events
    async with system.running(env, workload) as running:
        run = env.run_id(system)
        await settle(running, run, warmup=warmup)
        payloads = env.payloads(run, n)
        cpu_system = running.cpu_seconds()
        cpu_producer = time.process_time()
        started = time.perf_counter()
        await running.send_bulk(payloads)
        published = time.perf_counter()
        done = await running.wait_count(run, 1, n, timeout=60 + n / 50)
        cpu_producer = time.process_time() - cpu_producer
        cpu_system = running.cpu_seconds() - cpu_system
        handled = await running.count(run, 1)
        failures = {} if running.failures is None else {"failures": await running.failures()}
        return {
            **failures,
            "eps": n / (done - started),
            "publish_eps": n / (published - started),
            "seconds": done - started,
            # CPU per event: whatever the parallelism, what the machine pays per event (the
            # producer's share includes the harness polling for completion, alike for all).
            "cpu_us": cpu_system / n * 1e6,
            "producer_cpu_us": cpu_producer / n * 1e6,
            "total_cpu_us": (cpu_system + cpu_producer) / n * 1e6,
            "handled": handled,
        }


SCENARIO = Throughput()
