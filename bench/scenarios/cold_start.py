"""Scenario 4, cold start: spawn one worker process until its first event is handled; idle RSS.

The scale-from-zero cost we control: Knative starts an agent's container when an event comes
for it, and what happens inside is ours, interpreter start to first answer. Ours: spawn
``agentfn serve`` and POST the event to it (retried while the port refuses) until it answers
2xx. Peers: the event is already queued in Redis (a queue holds work while no worker runs), then
the worker is spawned, until its handler has done the work. The floor is a bare uvicorn app.
After the first event the process idles 1 s, then its resident memory is read from
``/proc/<pid>/status`` (VmRSS, summed over the process and its children: a pre-forked pool
counts whole).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentfn.brokers._http1 import RequestFailedError

from bench._harness import procs
from bench._harness.core import ColdStartable, Column, Env, ScenarioSummary, System
from bench._harness.http import CloudEventSender
from bench._harness.work import new_payload
from bench.scenarios.throughput import ratio_notes

IDLE_S = 1.0


@dataclass
class ColdStartScenario:
    name: str = "cold_start"
    title: str = "Cold start: spawn a worker process until its first event is handled"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
    columns: Sequence[Column] = (
        Column("start_s", "spawn -> first event handled, s", "{:.2f}", higher_is_better=False),
        Column("rss_mb", "idle RSS MiB", "{:.0f}", higher_is_better=False),
        Column("processes", "processes", "{:.0f}", higher_is_better=False),
    )
    primary: str | None = "start_s"
    params: dict[str, Any] = field(default_factory=dict)

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        return [s for s in available if self.name in s.scenarios and isinstance(s, ColdStartable)]

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        self.params = {"idle_s": IDLE_S}

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        assert isinstance(system, ColdStartable)
        group = env.procs(f"{system.key}-cold")
        run = env.run_id(system)
        counter = None
        try:
            redis_url = await procs.start_redis(group)
            target = await system.cold_start(group, redis_url)
            payload = new_payload(run, 0)
            counter = _Counter(redis_url, run)
            if target.enqueue is not None:
                result = target.enqueue(payload)
                if asyncio.iscoroutine(result):
                    await result
            started = time.perf_counter()
            proc = group.spawn(target.name, target.argv, env=target.env)
            if target.url is not None:
                await _post_until_answered(target.url, payload, proc)
            else:
                await procs.wait_until(
                    counter.handled,
                    timeout=60,
                    what="the first event",
                    interval=0.002,
                    procs=[proc],
                )
            elapsed = time.perf_counter() - started
            if target.close is not None:
                result = target.close()
                if asyncio.iscoroutine(result):
                    await result
            # Memory once the start-up garbage had its chance to go: what an idle replica holds.
            await asyncio.sleep(IDLE_S)
            proc.check()
            return {
                "start_s": elapsed,
                "rss_mb": procs.rss_bytes(proc.pid) / 2**20,
                "processes": procs.process_count(proc.pid),
            }
        finally:
            if counter is not None:
                await counter.aclose()
            group.close()

    async def teardown(self, env: Env) -> None:
        return None

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        return [
            *ratio_notes(summary, "start_s", higher_is_better=False, suffix=" start time"),
            *ratio_notes(
                summary, "rss_mb", higher_is_better=False, suffix=" idle RSS", header=False
            ),
        ]


class _Counter:
    def __init__(self, redis_url: str, run: str) -> None:
        from redis.asyncio import Redis

        from bench._harness.work import count_key

        self._redis = Redis.from_url(redis_url)
        self._key = count_key(run, 1)

    async def handled(self) -> bool:
        return int(await self._redis.get(self._key) or 0) >= 1

    async def aclose(self) -> None:
        await self._redis.aclose()


async def _post_until_answered(url: str, payload: dict[str, Any], proc: procs.Proc) -> None:
    """POST the event until the server answers 2xx; connection refused means not up yet."""
    sender = CloudEventSender(url, "bench.a")
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                await sender.send_one(payload)
                return
            except RequestFailedError:
                proc.check()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.002)
    finally:
        sender.close()


SCENARIO = ColdStartScenario()
