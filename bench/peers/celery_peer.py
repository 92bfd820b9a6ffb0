"""Celery on Redis: the peer most Python teams know.

Worker side (imported by ``celery -A bench.peers.celery_peer:app worker``, configured by
``BENCH_REDIS_URL``): three tasks ``bench.a`` -> ``bench.b`` -> ``bench.c`` on one queue, each doing
the shared handler work and enqueueing the next hop.

Guarantees as close to ours as Celery on Redis gets: ``acks_late`` (acknowledged after the task
ran) with ``reject_on_worker_lost`` (a killed worker's task is redelivered), retries with
exponential backoff on the same nominal schedule (``self.retry(countdown=base * 2**k)``:
Celery's own ``retry_backoff`` rounds its factor up to whole seconds, so it cannot express a
0.2 s first wait), and no dead-letter queue: Celery has one only on AMQP brokers (a failed task
is logged and dropped). Prefork pool with one child per core; prefetch multiplier tuned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from bench._harness import procs
from bench._harness.core import ColdStart, Env, Knobs, Running, Workload, system_run
from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, InjectedFailure, run_sync

QUEUE: Final = "bench"
TASKS: Final = ("bench.a", "bench.b", "bench.c")
#: Messages a child reserves per slot. Measured here: 1 starves the pool between round trips,
#: 16 and above stop helping (and keep more tasks hostage to a crashed worker).
PREFETCH: Final = 16


def make_app(redis_url: str, workload: Workload | None = None) -> Any:
    from celery import Celery

    app = Celery("bench", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=PREFETCH,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        # Unacknowledged messages come back after this long when a worker vanishes.
        broker_transport_options={"visibility_timeout": 300},
        task_serializer="json",
        accept_content=["json"],
    )
    if workload is not None:
        _declare(app, workload)
    return app


def _declare(app: Any, workload: Workload) -> None:
    import redis

    client: list[Any] = []

    def scripts() -> tuple[Any, Any]:
        # Created on first use, so each prefork child has its own connection.
        if not client:
            r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
            client.extend([r.register_script(RECORD_LUA), r.register_script(ATTEMPT_LUA)])
        return client[0], client[1]

    def make(index: int) -> None:
        following = TASKS[index + 1] if index + 1 < len(TASKS) else None

        @app.task(
            bind=True,
            name=TASKS[index],
            max_retries=workload.retries,
            acks_late=True,
            reject_on_worker_lost=True,
        )
        def hop(self: Any, payload: dict[str, Any]) -> None:
            record, attempt = scripts()
            try:
                after = run_sync(record, attempt, payload)
            except InjectedFailure as error:
                # Retry k (1-based) waits base * 2**k: the nominal schedule of every side.
                countdown = workload.backoff_s * 2 ** (self.request.retries + 1)
                raise self.retry(exc=error, countdown=countdown) from None
            if after is not None and following is not None:
                app.send_task(following, args=(after,), queue=QUEUE)

    for index in range(len(TASKS)):
        make(index)


# The worker process: configured from the environment the harness gives it.
app = (
    make_app(
        os.environ["BENCH_REDIS_URL"], Workload(backoff_s=float(os.environ["BENCH_BACKOFF_S"]))
    )
    if "BENCH_REDIS_URL" in os.environ
    else None
)


@dataclass
class CelerySystem:
    key: str = "celery"
    label: str = "Celery (Redis)"
    pool: str = "prefork"
    concurrency: int = 2
    role: str = "peer"
    scenarios: frozenset[str] = frozenset({"throughput", "latency", "retry", "cold_start"})

    def knobs(self) -> Knobs:
        return Knobs(
            processes=f"1 worker, --pool {self.pool} -c {self.concurrency}",
            concurrency=f"prefetch multiplier {PREFETCH}; producer: send_task in a loop on one "
            "pooled producer connection",
            guarantees="acks_late + reject_on_worker_lost; retry countdown base*2^k; no DLQ "
            "on Redis (failed tasks are logged)",
        )

    def worker_argv(self) -> list[str]:
        return [
            procs.PYTHON,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_peer:app",
            "worker",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--queues",
            QUEUE,
            "--loglevel",
            "WARNING",
            # Cluster chatter that a single worker does not need and that costs CPU per second.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-O",
            "fair",
        ]

    def spawn_worker(self, group: procs.Procs, redis_url: str, workload: Workload) -> procs.Proc:
        return group.spawn(
            "celery-worker",
            self.worker_argv(),
            env=procs.base_env(BENCH_REDIS_URL=redis_url, BENCH_BACKOFF_S=str(workload.backoff_s)),
        )

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart:
        client = make_app(redis_url)
        return ColdStart(
            name="celery-worker",
            argv=self.worker_argv(),
            env=procs.base_env(BENCH_REDIS_URL=redis_url, BENCH_BACKOFF_S="0.1"),
            enqueue=lambda payload: client.send_task(TASKS[0], args=(payload,), queue=QUEUE),
            close=client.close,
        )

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            worker = self.spawn_worker(group, redis_url, workload)
            client = make_app(redis_url)
            teardown.defer(client.close, quiet=True)
            producer = teardown.enter(client.producer_or_acquire())

            def send_one(payload: dict[str, Any]) -> None:
                client.send_task(TASKS[0], args=(payload,), queue=QUEUE, producer=producer)

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


SYSTEMS = [CelerySystem()]
