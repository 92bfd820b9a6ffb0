"""FastStream on Redis Streams.

Worker side (``faststream run bench.peers.faststream_redis:app``, configured by
``BENCH_REDIS_URL``): three subscribers on streams ``bench-a`` -> ``bench-b`` -> ``bench-c``, each
doing the shared handler work and publishing the next hop.

Guarantees: a consumer group per stream, acknowledged (``XACK``) only after the handler ran
(``AckPolicy.NACK_ON_ERROR``: a failure leaves the entry pending). Streams, not lists: a list
pop loses the message if the worker dies mid-handler. FastStream has no retry schedule and no
dead-letter queue; what brings a pending entry back is a second subscriber per stream that
claims entries idle for ``min_idle_time`` (``XAUTOCLAIM``): a fixed redelivery delay, set to the
nominal first wait, not a backoff.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from bench._harness import procs
from bench._harness.core import ColdStart, Env, Knobs, Running, Workload, system_run
from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, run_async

STREAMS: Final = ("bench-a", "bench-b", "bench-c")
GROUP: Final = "bench"
#: Messages each subscriber handles at once (FastStream's default is 1: one at a time).
MAX_WORKERS: Final = 16
#: Entries per XREADGROUP.
BATCH: Final = 64


def reclaim_ms(workload: Workload) -> int:
    """The reclaiming subscriber's ``min_idle_time``: the nominal first wait, ``base * 2``."""
    return int(workload.backoff_s * 2 * 1000)


def make_app(redis_url: str, workload: Workload) -> tuple[Any, Any]:
    from faststream import AckPolicy, FastStream
    from faststream.redis import RedisBroker, StreamSub
    from redis.asyncio import Redis

    broker = RedisBroker(redis_url, logger=None)
    client = Redis.from_url(redis_url)
    record, attempt = client.register_script(RECORD_LUA), client.register_script(ATTEMPT_LUA)
    consumer = f"worker-{os.getpid()}"
    idle_ms = reclaim_ms(workload)

    def make(index: int) -> None:
        following = STREAMS[index + 1] if index + 1 < len(STREAMS) else None

        async def hop(payload: dict[str, Any]) -> None:
            after = await run_async(record, attempt, payload)
            if after is not None and following is not None:
                await broker.publish(after, stream=following)

        broker.subscriber(
            stream=StreamSub(STREAMS[index], group=GROUP, consumer=consumer, max_records=BATCH),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_workers=MAX_WORKERS,
        )(hop)
        # The recovery path: entries left pending (a failed or crashed handling) come back
        # once idle this long.
        broker.subscriber(
            stream=StreamSub(
                STREAMS[index],
                group=GROUP,
                consumer=consumer,
                min_idle_time=idle_ms,
                polling_interval=max(10, idle_ms // 4),
            ),
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )(hop)

    for index in range(len(STREAMS)):
        make(index)
    return FastStream(broker), broker


# The worker process: configured from the environment the harness gives it.
app = (
    make_app(
        os.environ["BENCH_REDIS_URL"], Workload(backoff_s=float(os.environ["BENCH_BACKOFF_S"]))
    )[0]
    if "BENCH_REDIS_URL" in os.environ
    else None
)


async def declare_groups(redis_url: str) -> None:
    """Create the consumer groups from the start of each stream, as a deployment would.

    A FastStream subscriber creates its group at ``$`` (only entries added after it started),
    so events sent while the worker boots would be skipped, which no at-least-once setup allows.
    """
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for stream in STREAMS:
            await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    finally:
        await client.aclose()


@dataclass
class FastStreamRedis:
    key: str = "faststream-redis"
    label: str = "FastStream (Redis Streams)"
    workers: int = 2
    role: str = "peer"
    scenarios: frozenset[str] = frozenset({"throughput", "latency", "retry", "cold_start"})
    #: XADDs the producer pipelines into one round trip.
    pipeline: int = 100

    def knobs(self) -> Knobs:
        return Knobs(
            processes=f"faststream run --workers {self.workers} (uvloop)",
            concurrency=f"max_workers {MAX_WORKERS} per subscriber, {BATCH} entries per read; "
            f"producer: broker.publish pipelined {self.pipeline} per round trip",
            guarantees="consumer group, XACK after the handler; pending entries reclaimed "
            "after a fixed idle time (no backoff schedule, no DLQ)",
        )

    def worker_argv(self) -> list[str]:
        return [
            procs.PYTHON,
            "-m",
            "faststream",
            "run",
            "bench.peers.faststream_redis:app",
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
        ]

    def spawn_worker(self, group: procs.Procs, redis_url: str, workload: Workload) -> procs.Proc:
        return group.spawn(
            "faststream-worker",
            self.worker_argv(),
            env=procs.base_env(BENCH_REDIS_URL=redis_url, BENCH_BACKOFF_S=str(workload.backoff_s)),
        )

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart:
        from faststream.redis import RedisBroker

        await declare_groups(redis_url)
        client = RedisBroker(redis_url, logger=None)
        await client.connect()

        async def enqueue(payload: dict[str, Any]) -> None:
            await client.publish(payload, stream=STREAMS[0])

        return ColdStart(
            name="faststream-worker",
            argv=self.worker_argv(),
            env=procs.base_env(BENCH_REDIS_URL=redis_url, BENCH_BACKOFF_S="0.1"),
            enqueue=enqueue,
            close=client.stop,
        )

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        from faststream.redis import RedisBroker

        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            await declare_groups(redis_url)
            worker = self.spawn_worker(group, redis_url, workload)
            client = RedisBroker(redis_url, logger=None)
            teardown.defer(client.stop, quiet=True)
            await client.connect()

            async def send_one(payload: dict[str, Any]) -> None:
                await client.publish(payload, stream=STREAMS[0])

            async def send_all(payloads: list[dict[str, Any]]) -> None:
                # FastStream's documented pipelining idiom goes through its connection.
                for start in range(0, len(payloads), self.pipeline):
                    async with client._connection.pipeline() as pipe:
                        for payload in payloads[start : start + self.pipeline]:
                            await client.publish(payload, stream=STREAMS[0], pipeline=pipe)
                        await pipe.execute()

            running = Running(
                redis_url=redis_url,
                group=group,
                send_one=send_one,
                send_all=send_all,
                watched=[worker],
                pids={"worker": worker.pid},
            )
            teardown.defer(running.aclose)
            yield running


SYSTEMS = [FastStreamRedis()]
