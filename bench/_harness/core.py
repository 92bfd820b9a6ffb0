"""The two seams of the harness: a :class:`System` under test and a :class:`Scenario`.

A *system* (``bench/peers/<name>.py``, one file per peer; it may declare variants) knows how to
start itself for a :class:`Workload`, and hands back a :class:`Running` handle that sends event
payloads its native way (our ingress over HTTP, ``task.delay``, ``broker.publish``...). Where the
handler work lands (a Redis) is on the handle, so a scenario observes every system alike.

A *scenario* (``bench/scenarios/<name>.py``, one file each) picks the systems it compares and
measures one repetition of one system in :meth:`Scenario.run_once`. The runner alternates
systems within each repetition, repeats, and reports the median and spread of every metric.

A new scenario (the gRPC sync path, inference) is one new file exposing ``SCENARIO``; a new
peer is one new file exposing ``SYSTEMS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import pkgutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from redis.asyncio import Redis

from bench._harness import procs
from bench._harness.work import count_key, latency_key, new_payload

# -- what a system runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What the handlers are set up for. Per-event behaviour travels in the payload itself.

    ``backoff_s`` is the nominal schedule every side is configured to: the wait before retry
    ``k`` (1, 2, ...) is ``backoff_s * 2**k``, the formula of Knative's Kafka Broker.
    """

    hops: int = 1
    retries: int = 5
    backoff_s: float = 0.1
    #: Our runtime's idempotency store: "embedded" (the default as deployed), "redis", "off".
    idempotency: str = "embedded"


@dataclass(frozen=True)
class Knobs:
    """How a system was configured, as the report states it."""

    processes: str
    concurrency: str
    guarantees: str


_T = TypeVar("_T")


class Teardown:
    """What a system's run undoes when it ends, latest first; its processes go last."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack

    def defer(self, close: Callable[[], object], *, quiet: bool = False) -> None:
        """Call ``close`` (a function or a coroutine function) at the end; ``quiet``: a client
        whose server is already gone may fail to close, which must not mask the run's error."""

        async def closing() -> None:
            with contextlib.suppress(Exception) if quiet else contextlib.nullcontext():
                result = close()
                if inspect.isawaitable(result):
                    await result

        self._stack.push_async_callback(closing)

    def enter(self, manager: AbstractContextManager[_T]) -> _T:
        """Enter ``manager`` now and exit it at the end."""
        return self._stack.enter_context(manager)


@contextlib.asynccontextmanager
async def system_run(env: Env, key: str) -> AsyncIterator[tuple[procs.Procs, Teardown]]:
    """The process group of one run of system ``key`` and its teardown (the frame of every
    ``System.running``)."""
    group = env.procs(key)
    try:
        async with contextlib.AsyncExitStack() as stack:
            yield group, Teardown(stack)
    finally:
        group.close()


@dataclass
class Running:
    """A started system: where its handlers record, how to send, what to watch."""

    redis_url: str
    send_one: Callable[[dict[str, Any]], Any]
    """Send one payload; a coroutine function, or a plain function for blocking clients."""
    send_all: Callable[[list[dict[str, Any]]], Any]
    """Send payloads as fast as the client library can (pipelined where it does it)."""
    watched: list[procs.Proc] = field(default_factory=list)
    """Processes whose death fails the run (workers, brokers)."""
    pids: dict[str, int] = field(default_factory=dict)
    """Main pids by role (``broker``, ``agent``, ``worker``), for profiles and memory."""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Every process of the system (servers included), for CPU accounting.
    group: procs.Procs | None = None
    #: Failed delivery attempts so far, where the system exposes them (our broker's metrics).
    failures: Callable[[], Awaitable[int]] | None = None

    _redis: Redis | None = None

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def count(self, run: str, hop: int) -> int:
        value = await self.redis.get(count_key(run, hop))
        return int(value or 0)

    async def wait_count(self, run: str, hop: int, n: int, *, timeout: float) -> float:
        """Until ``n`` events of ``run`` were handled at ``hop``; returns perf_counter then."""

        async def done() -> bool:
            return await self.count(run, hop) >= n

        await procs.wait_until(
            done, timeout=timeout, what=f"{n} events handled", interval=0.005, procs=self.watched
        )
        return time.perf_counter()

    def cpu_seconds(self) -> float:
        """CPU used so far by every process of the system (broker/Redis/Tansu included)."""
        if self.group is None:
            return 0.0
        return procs.cpu_seconds([p.pid for p in self.group.started if p.alive()])

    async def latencies_ms(self, run: str) -> list[float]:
        raw = await self.redis.lrange(latency_key(run), 0, -1)
        return [int(v) / 1000 for v in raw]

    async def send_paced(self, payloads: list[dict[str, Any]], rate: float) -> float:
        """Open loop: payload ``i`` goes at ``start + i / rate`` whatever the answers do.

        Returns the achieved send rate. Each payload is stamped when it is sent.
        """
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[Any]] = set()
        start = loop.time()
        for i, item in enumerate(payloads):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            item["sent"] = time.time_ns()
            result = self.send_one(item)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                pending.add(task)
                task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return len(payloads) / max(loop.time() - start, 1e-9)

    async def send_bulk(self, payloads: list[dict[str, Any]]) -> None:
        now = time.time_ns()
        for item in payloads:
            item["sent"] = now
        result = self.send_all(payloads)
        if asyncio.iscoroutine(result):
            await result


@dataclass
class ColdStart:
    """How to start one worker process of a system from nothing, for the cold-start scenario.

    An HTTP system gets its first event POSTed to ``url`` (retried while the port refuses);
    a queue system gets it enqueued with ``enqueue`` before the process is spawned, as a
    queue holds work while no worker runs.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    url: str | None = None
    enqueue: Callable[[dict[str, Any]], Any] | None = None
    close: Callable[[], Any] | None = None


@runtime_checkable
class System(Protocol):
    """One system under test (ours, a peer, or the floor)."""

    key: str
    label: str
    #: "ours", "peer" or "floor": ratios are taken against the peers.
    role: str
    #: Scenario names this system takes part in.
    scenarios: frozenset[str]

    def knobs(self) -> Knobs: ...

    def running(self, env: Env, workload: Workload) -> AbstractAsyncContextManager[Running]: ...


@runtime_checkable
class ColdStartable(Protocol):
    """A system that can say how one of its worker processes starts (cold-start scenario)."""

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart: ...


# -- what a scenario measures ------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A metric as the Markdown table shows it."""

    metric: str
    label: str
    fmt: str = "{:.0f}"
    #: Whether more is better (throughput) or less (latency): decides the ratio's direction.
    higher_is_better: bool = True


class Scenario(Protocol):
    name: str
    title: str
    #: What one repetition does, for the report.
    description: str
    columns: Sequence[Column]
    #: The metric the ratios against peers (and the plot) use; None: no ratio.
    primary: str | None

    def systems(self, env: Env, available: Sequence[System]) -> list[System]: ...

    async def setup(self, env: Env, systems: Sequence[System]) -> None: ...

    async def run_once(self, env: Env, system: System, rep: int) -> dict[str, Any]: ...

    async def teardown(self, env: Env) -> None: ...

    def notes(self, env: Env, summary: ScenarioSummary) -> list[str]: ...


# -- the run's environment -----------------------------------------------------------------------


@dataclass
class Env:
    results_dir: Path
    logs_dir: Path
    events: int
    repeats: int
    quick: bool
    #: Summaries of scenarios already run in this invocation, by name.
    done: dict[str, ScenarioSummary] = field(default_factory=dict)
    _runs: int = 0

    def run_id(self, system: System) -> str:
        self._runs += 1
        return f"{system.key}-{self._runs}"

    def procs(self, name: str) -> procs.Procs:
        return procs.Procs(self.logs_dir / f"{self._runs:03d}-{name}")

    @staticmethod
    def payloads(run: str, n: int, *, hops: int = 1, fail: int = 0) -> list[dict[str, Any]]:
        return [new_payload(run, i, hops=hops, fail=fail) for i in range(n)]


# -- statistics and the runner --------------------------------------------------------------------


@dataclass
class Stat:
    median: float
    low: float
    high: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), ordered[0], ordered[-1], q1, q3, len(ordered))

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "q1": self.q1,
            "q3": self.q3,
            "n": self.n,
        }


@dataclass
class SystemResult:
    key: str
    label: str
    role: str
    knobs: Knobs
    reps: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, Stat]:
        metrics: dict[str, list[float]] = {}
        for rep in self.reps:
            for name, value in rep.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    metrics.setdefault(name, []).append(float(value))
        return {name: Stat.of(values) for name, values in metrics.items()}


@dataclass
class ScenarioSummary:
    name: str
    title: str
    description: str
    columns: Sequence[Column]
    primary: str | None
    systems: list[SystemResult]
    seconds: float
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def result(self, key: str) -> SystemResult | None:
        return next((s for s in self.systems if s.key == key), None)


async def run_scenario(
    env: Env, scenario: Scenario, available: Sequence[System], log: Callable[[str], None]
) -> ScenarioSummary:
    systems = scenario.systems(env, available)
    results = [SystemResult(s.key, s.label, s.role, s.knobs()) for s in systems]
    started = time.perf_counter()
    await scenario.setup(env, systems)
    try:
        # Alternate: every repetition runs each system once, so a burst of load from elsewhere
        # on the (shared) machine hurts one run of one system, not all runs of one system.
        # A scenario may cap its repetitions (``max_repeats``: a profile needs one).
        repeats = min(env.repeats, getattr(scenario, "max_repeats", None) or env.repeats)
        for rep in range(repeats):
            for system, result in zip(systems, results, strict=True):
                t0 = time.perf_counter()
                try:
                    metrics = await scenario.run_once(env, system, rep)
                except Exception as error:  # one broken peer must not sink the whole table
                    message = f"rep {rep}: {type(error).__name__}: {error}"
                    result.errors.append(message)
                    log(f"  {scenario.name} {system.key} FAILED {message}")
                    continue
                result.reps.append(metrics)
                shown = ", ".join(
                    f"{c.metric}={c.fmt.format(metrics[c.metric])}"
                    for c in scenario.columns
                    if isinstance(metrics.get(c.metric), int | float)
                )
                log(
                    f"  {scenario.name} rep {rep + 1}/{repeats} {system.key:<18} {shown} "
                    f"({time.perf_counter() - t0:.1f}s)"
                )
    finally:
        await scenario.teardown(env)
    summary = ScenarioSummary(
        scenario.name,
        scenario.title,
        scenario.description,
        scenario.columns,
        scenario.primary,
        results,
        time.perf_counter() - started,
        params=getattr(scenario, "params", {}),
    )
    summary.notes = scenario.notes(env, summary)
    env.done[scenario.name] = summary
    return summary


# -- discovery -----------------------------------------------------------------------------------


def discover_systems() -> list[System]:
    """Every system of ``bench/peers``: ours first, then the floor, then the peers."""
    found: list[System] = []
    for module in _modules("bench.peers"):
        found.extend(getattr(module, "SYSTEMS", ()))
    order = {"ours": 0, "floor": 1, "peer": 2}
    return sorted(found, key=lambda s: order.get(s.role, 3))


def discover_scenarios() -> dict[str, Scenario]:
    found: dict[str, Scenario] = {}
    for module in _modules("bench.scenarios"):
        scenario = getattr(module, "SCENARIO", None)
        if scenario is not None:
            found[scenario.name] = scenario
    return found


def _modules(package: str) -> list[Any]:
    root = importlib.import_module(package)
    return [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(root.__path__)
        if not info.name.startswith("_")
    ]


async def settle(running: Running, run: str, *, warmup: int, hops: int = 1) -> None:
    """Warm a fresh system up (connections, imports, first-use caches) before timing it."""
    payloads = Env.payloads(f"{run}-warm", warmup, hops=hops)
    await running.send_bulk(payloads)
    await running.wait_count(f"{run}-warm", hops, warmup, timeout=60)
