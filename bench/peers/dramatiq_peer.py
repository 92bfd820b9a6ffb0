"""Dramatiq on Redis.

Worker side (imported by ``dramatiq bench.peers.dramatiq_peer``, configured by
``BENCH_REDIS_URL``): three actors ``bench_a`` -> ``bench_b`` -> ``bench_c`` on one queue, each
doing the shared handler work and sending the next hop.

Guarantees: Dramatiq acknowledges a message after the actor ran (a dead worker's messages are
requeued by the others' heartbeat maintenance); the ``Retries`` middleware retries with
exponential backoff, ``min_backoff`` set so the first wait is the nominal one (Dramatiq always
adds jitter: each wait is 1-2x nominal, and that is not configurable); exhausted messages go to
its dead-letter queue (``bench.XQ``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from bench._harness import procs
from bench._harness.core import ColdStart, Env, Knobs, Running, Workload, system_run
from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, run_sync

QUEUE: Final = "bench"
ACTORS: Final = ("bench_a", "bench_b", "bench_c")
#: The most Dramatiq's jitter stretches a wait, as a multiple of nominal (always on, fixed).
MAX_JITTER: Final = 2


def make_broker(redis_url: str, workload: Workload | None = None) -> Any:
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Retries, default_middleware

    backoff_ms = int((workload or Workload()).backoff_s * 2 * 1000)
    middleware = [m() for m in default_middleware if m is not Retries]
    # Retry k (0-based in Dramatiq) waits min_backoff * 2**k (times jitter): min_backoff is the
    # nominal first wait, base * 2.
    middleware.append(
        Retries(
            max_retries=(workload or Workload()).retries,
            min_backoff=backoff_ms,
            max_backoff=backoff_ms * 2**6,
        )
    )
    broker = RedisBroker(url=redis_url, middleware=middleware)
    broker.declare_queue(QUEUE)
    if workload is not None:
        _declare(broker)
    return broker


def _declare(broker: Any) -> None:
    import dramatiq
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    record, attempt = client.register_script(RECORD_LUA), client.register_script(ATTEMPT_LUA)
    actors: list[Any] = []

    def make(index: int) -> Any:
        def hop(payload: dict[str, Any]) -> None:
            after = run_sync(record, attempt, payload)
            if after is not None and index + 1 < len(actors):
                actors[index + 1].send(after)

        hop.__name__ = ACTORS[index]
        return dramatiq.actor(hop, actor_name=ACTORS[index], queue_name=QUEUE, broker=broker)

    actors.extend(make(i) for i in range(len(ACTORS)))


# The worker process: configured from the environment the harness gives it.
if "BENCH_REDIS_URL" in os.environ:
    import dramatiq as _dramatiq

    broker = make_broker(
        os.environ["BENCH_REDIS_URL"], Workload(backoff_s=float(os.environ["BENCH_BACKOFF_S"]))
    )
    _dramatiq.set_broker(broker)


def _message(payload: dict[str, Any]) -> Any:
    from dramatiq import Message

    return Message(queue_name=QUEUE, actor_name=ACTORS[0], args=(payload,), kwargs={}, options={})


@dataclass
class DramatiqSystem:
    key: str = "dramatiq"
    label: str = "Dramatiq (Redis)"
    processes: int = 2
    threads: int = 8
    #: Messages each worker process fetches ahead. Dramatiq's default (2 per thread) leaves
    #: the threads waiting on Redis round trips; measured here, 64 was best.
    prefetch: int = 64
    role: str = "peer"
    scenarios: frozenset[str] = frozenset({"throughput", "latency", "retry", "cold_start"})

    def knobs(self) -> Knobs:
        return Knobs(
            processes=f"1 worker, --processes {self.processes} --threads {self.threads}",
            concurrency=f"queue prefetch {self.prefetch}; producer: actor message enqueue in "
            "a loop (one Lua call each)",
            guarantees="ack after processing; Retries middleware exponential (jittered 1-2x); "
            "DLQ bench.XQ",
        )

    def worker_argv(self) -> list[str]:
        return [
            procs.PYTHON,
            "-m",
            "dramatiq",
            "bench.peers.dramatiq_peer",
            "--processes",
            str(self.processes),
            "--threads",
            str(self.threads),
            "--queues",
            QUEUE,
        ]

    def spawn_worker(self, group: procs.Procs, redis_url: str, workload: Workload) -> procs.Proc:
        return group.spawn(
            "dramatiq-worker",
            self.worker_argv(),
            env=procs.base_env(
                BENCH_REDIS_URL=redis_url,
                BENCH_BACKOFF_S=str(workload.backoff_s),
                dramatiq_queue_prefetch=str(self.prefetch),
            ),
        )

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart:
        client = make_broker(redis_url)
        return ColdStart(
            name="dramatiq-worker",
            argv=self.worker_argv(),
            env=procs.base_env(
                BENCH_REDIS_URL=redis_url,
                BENCH_BACKOFF_S="0.1",
                dramatiq_queue_prefetch=str(self.prefetch),
            ),
            enqueue=lambda payload: client.enqueue(_message(payload)),
            close=client.close,
        )

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            worker = self.spawn_worker(group, redis_url, workload)
            client = make_broker(redis_url)
            teardown.defer(client.close, quiet=True)

            def send_one(payload: dict[str, Any]) -> None:
                client.enqueue(_message(payload))

            def send_all(payloads: list[dict[str, Any]]) -> None:
                for payload in payloads:
                    send_one(payload)

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


SYSTEMS = [DramatiqSystem()]
