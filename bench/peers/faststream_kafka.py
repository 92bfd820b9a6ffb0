"""FastStream on Kafka (aiokafka), on the same kind of Tansu server as our Kafka backend.

Worker side (``faststream run bench.peers.faststream_kafka:app``, configured by
``BENCH_KAFKA`` and ``BENCH_REDIS_URL``): three subscribers on topics ``bench-a`` -> ``bench-b``
-> ``bench-c`` (10 partitions each, as Knative's default), each doing the shared handler work
in Redis and publishing the next hop.

Guarantees: offsets committed only after the handler ran (``AckPolicy.NACK_ON_ERROR``; a failure
seeks back, so the record is delivered again at once: FastStream has no retry schedule and no
dead-letter topic); the producer waits for every in-sync replica (``acks=all``) as our Kafka
backend does, but is not idempotent: Tansu answers aiokafka's ``InitProducerId`` with an
unknown error (ours, on kafka-python, is idempotent). Concurrency: FastStream's per-partition
consumers (``max_workers``), so order within a partition is kept, like Knative's ordered delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from bench._harness import procs
from bench._harness.core import Env, Knobs, Running, Workload, system_run
from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, run_async
from bench.peers.ours import TANSU_FETCH_MAX_WAIT_S, TANSU_SESSION_TIMEOUT_S

TOPICS: Final = ("bench-a", "bench-b", "bench-c")
GROUP: Final = "bench"
PARTITIONS: Final = 10
SESSION_TIMEOUT_S: Final = TANSU_SESSION_TIMEOUT_S


def make_app(bootstrap: str, redis_url: str, workers: int) -> Any:
    from faststream import AckPolicy, FastStream
    from faststream.kafka import KafkaBroker
    from redis.asyncio import Redis

    broker = KafkaBroker(bootstrap, acks="all", logger=None)
    client = Redis.from_url(redis_url)
    record, attempt = client.register_script(RECORD_LUA), client.register_script(ATTEMPT_LUA)

    def make(index: int) -> None:
        following = TOPICS[index + 1] if index + 1 < len(TOPICS) else None

        async def hop(payload: dict[str, Any]) -> None:
            after = await run_async(record, attempt, payload)
            if after is not None and following is not None:
                await broker.publish(after, topic=following)

        broker.subscriber(
            TOPICS[index],
            # One group per topic, as Knative has one per Trigger: a shared group would make
            # every member's join rebalance all three.
            group_id=f"{GROUP}-{TOPICS[index]}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_workers=workers,
            fetch_max_wait_ms=int(TANSU_FETCH_MAX_WAIT_S * 1000),
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            heartbeat_interval_ms=int(SESSION_TIMEOUT_S * 1000 / 4),
        )(hop)

    for index in range(len(TOPICS)):
        make(index)
    return FastStream(broker)


# The worker process: configured from the environment the harness gives it.
app = (
    make_app(
        os.environ["BENCH_KAFKA"],
        os.environ["BENCH_REDIS_URL"],
        int(os.environ.get("BENCH_MAX_WORKERS", "5")),
    )
    if "BENCH_KAFKA" in os.environ
    else None
)


async def create_topics(bootstrap: str) -> None:
    """The topics, partitioned as Knative's Kafka Broker partitions its own, before any client."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in TOPICS]
        )
    finally:
        await admin.close()


@dataclass
class FastStreamKafka:
    key: str = "faststream-kafka"
    label: str = "FastStream (Kafka on Tansu)"
    workers: int = 2
    #: Consumers per process: 2 x 5 = one per partition.
    max_workers: int = 5
    role: str = "peer"
    scenarios: frozenset[str] = frozenset({"throughput", "latency"})
    #: Sends the producer keeps in flight (aiokafka batches what is queued together).
    in_flight: int = 512

    def knobs(self) -> Knobs:
        return Knobs(
            processes=f"faststream run --workers {self.workers} (uvloop)",
            concurrency=f"max_workers {self.max_workers} per process (one consumer per "
            f"partition, {PARTITIONS} partitions); producer: {self.in_flight} sends in flight",
            guarantees="commit after the handler; producer acks=all, not idempotent (Tansu "
            "refuses aiokafka's InitProducerId); failures redelivered at once (no backoff, no DLQ)",
        )

    def worker_argv(self) -> list[str]:
        return [
            procs.PYTHON,
            "-m",
            "faststream",
            "run",
            "bench.peers.faststream_kafka:app",
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
        ]

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        from faststream.kafka import KafkaBroker

        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            bootstrap = await procs.start_tansu(group)
            await create_topics(bootstrap)
            worker = group.spawn(
                "faststream-worker",
                self.worker_argv(),
                env=procs.base_env(
                    BENCH_KAFKA=bootstrap,
                    BENCH_REDIS_URL=redis_url,
                    BENCH_MAX_WORKERS=str(self.max_workers),
                ),
            )
            client = KafkaBroker(bootstrap, acks="all", logger=None)
            teardown.defer(client.stop, quiet=True)
            await client.connect()

            async def send_one(payload: dict[str, Any]) -> None:
                await client.publish(payload, topic=TOPICS[0])

            async def send_all(payloads: list[dict[str, Any]]) -> None:
                slots = asyncio.Semaphore(self.in_flight)

                async def one(payload: dict[str, Any]) -> None:
                    async with slots:
                        await client.publish(payload, topic=TOPICS[0])

                await asyncio.gather(*(one(p) for p in payloads))

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


SYSTEMS = [FastStreamKafka()]
