"""Scenario 2, latency: a 3-hop chain (A -> B -> C) at a fixed offered load, open loop.

The producer stamps each event and sends at a fixed rate regardless of answers (open loop, so
a slow system queues instead of slowing the producer down); C records now minus the stamp.
Ours: producer -> broker -> A, A's reply -> broker -> B, B's reply -> broker -> C (three
Triggers). Peers: task/actor/subscriber A enqueues B enqueues C. The offered load is half the
measured maximum (scenario 1) of the slowest system here, so every system runs at most half
loaded and the numbers are per-hop overhead, not queueing; ours is also run at half of its own
maximum.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._harness.core import (
    Column,
    Env,
    Knobs,
    Running,
    ScenarioSummary,
    System,
    Workload,
    settle,
)
from bench.scenarios.throughput import ratio_notes

HOPS = 3
#: Chains/s when no throughput result is at hand (``--scenarios latency`` on a fresh clone).
DEFAULT_RATE = 100.0
MEMBERS = (
    "ours",
    "ours-inprocess",
    "ours-fsync",
    "ours-kafka",
    "celery",
    "dramatiq",
    "faststream-redis",
    "faststream-kafka",
)


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


@dataclass
class AtOwnRate:
    """A system run at half of its own measured maximum instead of the common rate."""

    inner: System
    rate: float
    role: str = "ours"

    @property
    def key(self) -> str:
        return f"{self.inner.key}@own-half-max"

    @property
    def label(self) -> str:
        return f"{self.inner.label} at half its own max ({self.rate:.0f} chains/s)"

    @property
    def scenarios(self) -> frozenset[str]:
        return self.inner.scenarios

    def knobs(self) -> Knobs:
        return self.inner.knobs()

    def running(
        self, env: Env, workload: Workload
    ) -> contextlib.AbstractAsyncContextManager[Running]:
        return self.inner.running(env, workload)


@dataclass
class Latency:
    name: str = "latency"
    title: str = "Latency: 3-hop chain at a fixed offered load (open loop)"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
    columns: Sequence[Column] = (
        Column("p50_ms", "p50 ms", "{:.2f}", higher_is_better=False),
        Column("p99_ms", "p99 ms", "{:.2f}", higher_is_better=False),
        Column("max_ms", "max ms", "{:.1f}", higher_is_better=False),
        Column("rate", "chains/s offered", "{:.0f}"),
    )
    primary: str | None = "p50_ms"
    params: dict[str, Any] = field(default_factory=dict)
    rate: float = DEFAULT_RATE
    seconds: float = 5.0

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        chosen: list[System] = [s for s in available if s.key in MEMBERS]
        maxima = _throughput_maxima(env)
        known = [maxima[s.key] for s in chosen if s.key in maxima]
        # Half the slowest member's maximum, in chains (each chain is HOPS handled events).
        self.rate = min(known) / 2 / HOPS if known else DEFAULT_RATE
        self.seconds = 2.0 if env.quick else 5.0
        ours = next((s for s in chosen if s.key == "ours"), None)
        if ours is not None and "ours" in maxima and maxima["ours"] / 2 / HOPS > self.rate * 1.2:
            chosen.append(AtOwnRate(ours, maxima["ours"] / 2 / HOPS))  # type: ignore[arg-type]
        self.params = {
            "hops": HOPS,
            "chains_per_s": round(self.rate, 1),
            "seconds": self.seconds,
            "basis": "half the slowest member's scenario-1 median"
            if known
            else "default (no throughput result)",
        }
        return chosen

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        return None

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        rate = system.rate if isinstance(system, AtOwnRate) else self.rate
        n = max(20, int(rate * self.seconds))
        async with system.running(env, Workload(hops=HOPS)) as running:
            run = env.run_id(system)
            await settle(running, run, warmup=100, hops=HOPS)
            achieved = await running.send_paced(env.payloads(run, n, hops=HOPS), rate)
            await running.wait_count(run, HOPS, n, timeout=60 + n / 20)
            latencies = sorted(await running.latencies_ms(run))
        return {
            "p50_ms": _percentile(latencies, 0.50),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": latencies[-1],
            "rate": rate,
            "achieved_rate": achieved,
            "chains": len(latencies),
        }

    async def teardown(self, env: Env) -> None:
        return None

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        return [
            *ratio_notes(summary, "p50_ms", higher_is_better=False, suffix=" p50"),
            *ratio_notes(summary, "p99_ms", higher_is_better=False, suffix=" p99", header=False),
        ]


def _throughput_maxima(env: Env) -> dict[str, float]:
    """Scenario 1's median events/s per system: from this invocation, else its last JSON."""
    summary = env.done.get("throughput")
    if summary is not None:
        return {s.key: s.stats()["eps"].median for s in summary.systems if "eps" in s.stats()}
    path = env.results_dir / "throughput.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {
        s["key"]: s["stats"]["eps"]["median"]
        for s in document.get("systems", [])
        if "eps" in s.get("stats", {})
    }


SCENARIO = Latency()
