"""Scenario 5, idempotency overhead: scenario 1 on our side with the dedupe store off,
embedded, and Redis.

The same run as scenario 1 (N events, producer -> broker -> agent), with the agent runtime's
idempotency store switched (``AGENTFN_IDEMPOTENCY``): ``off``, ``embedded`` (in-process, the
default) and ``redis`` (one Lua call to claim and one to complete each event, on the same
private Redis as the handler work). The handler's own per-event Redis work stays the same, so
the difference between rows is the store alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._harness.core import Column, Env, ScenarioSummary, System, Workload
from bench.scenarios.throughput import Throughput, measure

MEMBERS = ("ours-dedupe-off", "ours", "ours-dedupe-redis")


@dataclass
class Idempotency:
    name: str = "idempotency"
    title: str = "Idempotency overhead: scenario 1 with the dedupe store off, embedded, Redis"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
    columns: Sequence[Column] = (
        Column("eps", "events/s (end to end)"),
        Column("cpu_us", "system CPU µs/event", higher_is_better=False),
        Column("failures", "failed deliveries", higher_is_better=False),
    )
    primary: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        by_key = {s.key: s for s in available}
        return [by_key[k] for k in MEMBERS if k in by_key]

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        self.params = {"events": env.events}

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        return await measure(env, system, Workload(), Throughput.warmup(env))

    async def teardown(self, env: Env) -> None:
        return None

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        off = summary.result("ours-dedupe-off")
        if off is None or not off.reps:
            return []
        base = off.stats()
        notes = []
        for key in ("ours", "ours-dedupe-redis"):
            result = summary.result(key)
            if result is None or not result.reps:
                continue
            stats = result.stats()
            notes.append(
                f"{result.label}: {stats['eps'].median / base['eps'].median:.0%} of the "
                f"throughput with the store off, "
                f"{stats['cpu_us'].median - base['cpu_us'].median:+.0f} µs CPU per event"
            )
        return notes


SCENARIO = Idempotency()
