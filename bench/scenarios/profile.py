"""Profile of our hot path: scenario 1 on our side with py-spy attached to broker and agent.

One extra run of ours, as deployed and in-process (not part of the throughput table: the
sampler costs some CPU) with ``py-spy record --nonblocking`` on the broker and the agent
process (in-process: the one process). Besides the samples, the
exact CPU each process used over the run (``/proc/<pid>/stat``) is divided by the events, so
the per-event cost of every process (broker, agent, Redis, producer) is known without sampling
error; the samples say where inside the Python processes it goes. Writes
``bench/results/profile.txt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._harness import procs
from bench._harness.core import Column, Env, ScenarioSummary, System, Workload, settle

#: The systems profiled: ours as deployed (broker + agent process) and in-process.
PROFILED = ("ours", "ours-inprocess")
RATE = 200  # samples/s: enough for a 2-3 s run, light on a 2-core machine
TOP = 18


@dataclass
class Profile:
    name: str = "profile"
    title: str = "Profile of our hot path (scenario 1 with py-spy on broker and agent)"
    description: str = " ".join(__doc__.split("\n\n", 1)[1].split())
    columns: Sequence[Column] = (
        Column("eps", "events/s (sampled)"),
        Column("broker_cpu_us", "broker CPU µs/event", higher_is_better=False),
        Column("agent_cpu_us", "agent CPU µs/event", higher_is_better=False),
        Column("redis_cpu_us", "Redis CPU µs/event", higher_is_better=False),
        Column("producer_cpu_us", "producer CPU µs/event", higher_is_better=False),
    )
    primary: str | None = None
    #: One profiled run is enough.
    max_repeats: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    _reports: list[str] = field(default_factory=list)

    def systems(self, env: Env, available: Sequence[System]) -> list[System]:
        return [s for s in available if s.key in PROFILED]

    async def setup(self, env: Env, systems: Sequence[System]) -> None:
        self._reports = []
        self.params = {"events": env.events, "rate_hz": RATE}

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]:
        # No sampler without the bench extra: then CPU accounting only.
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(procs.PYTHON).parent))
        n = env.events
        async with system.running(env, Workload()) as running:
            run = env.run_id(system)
            roles = dict(running.pids)
            group = running.group
            assert group is not None
            others = {
                p.name: p.pid for p in group.started if p.name in ("redis", "dead-letter-sink")
            }
            outputs = {role: group.logs / f"py-spy-{role}.txt" for role in roles}
            samplers = [
                await asyncio.create_subprocess_exec(
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(outputs[role]),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                for role, pid in roles.items()
                if spy
            ]
            try:
                # The warm-up runs under the sampler: py-spy attaches asynchronously with no
                # signal when it is ready, and the warm-up gives it that time. Its samples only
                # apportion the CPU measured below, over the timed window alone.
                await settle(running, run, warmup=500)
                before = {r: procs.cpu_seconds([p]) for r, p in {**roles, **others}.items()}
                producer = time.process_time()
                started = time.perf_counter()
                await running.send_bulk(env.payloads(run, n))
                done = await running.wait_count(run, 1, n, timeout=60 + n / 50)
                producer = time.process_time() - producer
                after = {r: procs.cpu_seconds([p]) for r, p in {**roles, **others}.items()}
            finally:
                # SIGINT makes py-spy stop and write what it sampled.
                for sampler in samplers:
                    with contextlib.suppress(ProcessLookupError):
                        sampler.send_signal(signal.SIGINT)
                for sampler in samplers:
                    try:
                        await asyncio.wait_for(sampler.wait(), 20)
                    except TimeoutError:
                        sampler.kill()
                        await sampler.wait()
            cpu = {r: (after[r] - before[r]) / n * 1e6 for r in after}
            elapsed = done - started
            report = [
                f"#### {system.label}",
                f"{n} events in {elapsed:.2f} s ({n / elapsed:.0f}/s) with py-spy sampling at "
                f"{RATE} Hz (--nonblocking); exact CPU per event from /proc:",
                *(f"  {role:<18} {value:8.1f} µs/event" for role, value in cpu.items()),
                f"  {'producer':<18} {producer / n * 1e6:8.1f} µs/event",
                "",
            ]
            if spy is None:
                report.append("py-spy not found (pip install -e '.[bench]'): no samples")
            for role, path in outputs.items():
                report += summarise(role, path, n, cpu.get(role, 0.0))
            self._reports += report
            return {
                "eps": n / elapsed,
                "broker_cpu_us": cpu.get("broker", 0.0),
                "agent_cpu_us": cpu.get("agent", 0.0),
                "redis_cpu_us": cpu.get("redis", 0.0),
                "producer_cpu_us": producer / n * 1e6,
            }

    async def teardown(self, env: Env) -> None:
        if self._reports:
            (env.results_dir / "profile.txt").write_text("\n".join(self._reports) + "\n")

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]:
        return ["Top costs per event: bench/results/profile.txt"] if self._reports else []


def summarise(role: str, path: Path, events: int, cpu_us: float) -> list[str]:
    """Top functions by self and inclusive samples, scaled to µs of CPU per event.

    py-spy's raw format is one line per distinct stack: ``frame;frame;...;leaf COUNT``, each
    frame ``function (file:line)``. Samples are scaled so they add up to the process's measured
    CPU per event.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return [f"{role}: no py-spy output ({path})", ""]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [f"{role}: py-spy recorded no samples", ""]
    scale = cpu_us / total
    out = [f"== {role}: {total} samples, {cpu_us:.0f} µs CPU/event", "-- self (where it is spent)"]
    out += [
        f"  {n * scale:7.1f} µs/event {n / total:6.1%}  {name}" for name, n in own.most_common(TOP)
    ]
    out.append("-- inclusive, our code only (what it is spent for)")
    ours = [(name, n) for name, n in inclusive.most_common() if _is_ours(name)]
    out += [f"  {n * scale:7.1f} µs/event {n / total:6.1%}  {name}" for name, n in ours[:TOP]]
    out.append("")
    return out


def _is_ours(name: str) -> bool:
    if "(functions/cli.py)" in name:
        return False  # the process entry point: every sample is under it
    return any(f"({package}/" in name for package in ("brokers", "functions", "events", "bench"))


def _short(frame: str) -> str:
    """``function (path/to/site-packages/pkg/mod.py:123)`` -> ``function (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{procs.ROOT}/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    if name == "Runner.run" or (name == "run" and file.startswith("uvloop")):
        # uvloop is compiled: its own work (sockets, callbacks) shows as the frame under it.
        return "event loop (uvloop, native code)"
    return f"{name} ({file})" if file else name


SCENARIO = Profile()
