"""The Kafka backend behind whole brokers: Knative interop, ordering across a rebalance,
dispatcher processes sharing a Trigger, and ``kill -9`` between a delivery and its commit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from brokers.config import parse_documents
from brokers.log import topic_name
from brokers.server import BrokerServer
from events import CloudEvent, KafkaRecord, from_kafka, to_binary, to_structured
from events.extensions import KNATIVE_BROKER_TTL
from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Answer, Subscriber
from tests.brokers._tansu import KafkaServer, broker_cli, kafka, kafka_log
from tests.brokers.contract import PROJECT, event, trigger

pytestmark = pytest.mark.kafka
_ = kafka  # the fixture, imported for pytest

TOPIC = topic_name("default", "default")
ORDERED = {"kafka.eventing.knative.dev/delivery.order": "ordered"}


class Setup:
    """Brokers (in this process) and subscribers of one test, all stopped at the end."""

    def __init__(self, kafka: KafkaServer) -> None:
        self.kafka = kafka
        self.session = aiohttp.ClientSession()
        self.servers: list[BrokerServer] = []
        self.subscribers: list[Subscriber] = []

    async def subscriber(self, behaviour: Any = None) -> Subscriber:
        sub = Subscriber(behaviour) if behaviour is not None else Subscriber()
        await sub.start()
        self.subscribers.append(sub)
        return sub

    async def broker(self, documents: Sequence[Mapping[str, Any]]) -> str:
        server = BrokerServer(parse_documents(documents), kafka_log(self.kafka))
        await server.start()
        self.servers.append(server)
        port = await server.listen("127.0.0.1", 0)
        return f"http://127.0.0.1:{port}/default/default"

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        async with self.session.post(url, headers=dict(headers), data=body) as response:
            return response.status

    async def close(self) -> None:
        for server in self.servers:
            await server.stop(grace=0.5)
        for sub in self.subscribers:
            await sub.stop()
        await self.session.close()


@pytest.fixture
async def setup(kafka: KafkaServer) -> AsyncIterator[Setup]:
    s = Setup(kafka)
    try:
        yield s
    finally:
        await s.close()


# -- interoperability with Knative's Kafka Broker ------------------------------------------------


async def test_a_record_in_knatives_layout_is_dispatched(setup: Setup) -> None:
    sub = await setup.subscriber()
    await setup.broker([trigger("all", sub.url)])
    name = setup.kafka.prefix + TOPIC

    def produce_as_knative() -> None:
        # What Knative's receiver writes: binary content mode, key = partitionkey. A structured
        # record and one that is no CloudEvent at all (which must not block its partition).
        producer = KafkaProducer(bootstrap_servers=setup.kafka.bootstrap)
        try:
            producer.send(
                name,
                key=b"order-7",
                value=b'{"sku":"a1","qty":2}',
                headers=[
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"knative-1"),
                    ("ce_source", b"/apis/v1/namespaces/default/brokers/default"),
                    ("ce_type", b"com.example.order"),
                    ("ce_partitionkey", b"order-7"),
                    ("ce_knativebrokerttl", b"255"),
                    ("content-type", b"application/json"),
                ],
            )
            producer.send(name, key=b"order-7", value=b"\xffgarbage")
            producer.send(
                name,
                key=b"order-7",
                value=json.dumps(
                    {
                        "specversion": "1.0",
                        "id": "knative-2",
                        "source": "/elsewhere",
                        "type": "com.example.structured",
                        "partitionkey": "order-7",
                        "data": {"n": 2},
                    }
                ).encode(),
                headers=[("content-type", b"application/cloudevents+json; charset=utf-8")],
            )
            producer.flush(10)
        finally:
            producer.close()

    await asyncio.to_thread(produce_as_knative)
    await async_wait_until(lambda: len(sub.arrivals) >= 2, message="both events")
    first, second = sub.events()
    assert (first.id, first.type, first.data) == (
        "knative-1",
        "com.example.order",
        {"sku": "a1", "qty": 2},
    )
    assert first.attributes["partitionkey"] == "order-7"
    assert first.datacontenttype == "application/json"
    assert (second.id, second.data) == ("knative-2", {"n": 2})


async def test_ingress_writes_records_that_a_plain_consumer_decodes(setup: Setup) -> None:
    url = await setup.broker([])
    keyed = event(data={"sku": "a1"}, partitionkey="order-7")
    plain = event(type_="com.example.structured", data="just text", datacontenttype="text/plain")
    assert await setup.post(url, *to_binary(keyed)) == 202
    assert await setup.post(url, *to_structured(plain)) == 202
    name = setup.kafka.prefix + TOPIC

    def consume() -> list[Any]:
        consumer = KafkaConsumer(
            bootstrap_servers=setup.kafka.bootstrap, auto_offset_reset="earliest"
        )
        try:
            partitions = consumer.partitions_for_topic(name) or set()
            assert len(partitions) == 10, "Knative's default.topic.partitions"
            consumer.assign([TopicPartition(name, p) for p in partitions])
            records: list[Any] = []
            deadline = time.monotonic() + 10
            while len(records) < 2 and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=100).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

    records = {r.key: r for r in await asyncio.to_thread(consume)}
    assert set(records) == {b"order-7", None}
    for key, sent in ((b"order-7", keyed), (None, plain)):
        record = records[key]
        headers = dict(record.headers)
        # Binary content mode whatever mode the request came in: attributes as ce_ headers.
        assert headers["ce_id"] == sent.id.encode()
        assert headers["ce_specversion"] == b"1.0"
        assert not headers["content-type"].startswith(b"application/cloudevents")
        decoded = from_kafka(KafkaRecord.of(record.value, record.headers, record.key))
        assert decoded.attributes == {**sent.attributes, KNATIVE_BROKER_TTL: "255"}
        assert decoded.data == sent.data


# -- ordering across a rebalance -----------------------------------------------------------------


def spread_keys(count: int, partitions: int = 10) -> list[str]:
    """Keys on ``count`` different partitions, so every member of a group gets some."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < count:
        key = f"key-{n}"
        keys.setdefault((murmur2(key.encode()) & 0x7FFFFFFF) % partitions, key)
        n += 1
    return list(keys.values())


async def test_ordered_trigger_keeps_per_key_order_across_a_rebalance(setup: Setup) -> None:
    keys = spread_keys(8)
    in_flight = dict.fromkeys(keys, 0)
    most = dict.fromkeys(keys, 0)

    async def flaky(ev: CloudEvent, n: int) -> Answer:
        key = str(ev.attributes["partitionkey"])
        in_flight[key] += 1
        most[key] = max(most[key], in_flight[key])
        await asyncio.sleep(0.005)
        in_flight[key] -= 1
        return Answer(503 if ev.data["i"] % 4 == 0 and n == 1 else 202)

    sub = await setup.subscriber(flaky)
    docs = [
        trigger(
            "ordered",
            sub.url,
            delivery={"retry": 5, "backoffDelay": "PT0.01S"},
            annotations=ORDERED,
        )
    ]
    first = await setup.broker(docs)
    sent: dict[str, list[CloudEvent]] = {k: [] for k in keys}

    async def send(url: str) -> None:
        total = sum(map(len, sent.values()))
        key = keys[total % len(keys)]
        ev = event(data={"i": len(sent[key])}, partitionkey=key)
        sent[key].append(ev)
        assert await setup.post(url, *to_binary(ev)) == 202

    for _ in range(40):
        await send(first)
    await async_wait_until(lambda: len(sub.seen) >= 20, message="the first dispatcher at work")
    # A second dispatcher of the same Trigger joins; events keep coming, so the group
    # rebalances with deliveries in flight and waiting in the ordered lanes.
    second = await setup.broker(docs)
    deadline = time.monotonic() + 20
    while not all(delivered(server) for server in setup.servers):
        assert time.monotonic() < deadline, "the second dispatcher never delivered"
        await send(second if len(sub.seen) % 2 else first)
        await asyncio.sleep(0.005)  # a steady stream, not a burst that ends before the move
    for _ in range(40):
        await send(second)
    total = sum(map(len, sent.values()))
    await async_wait_until(
        lambda: len(sub.seen) == total, timeout=30, message="every event delivered"
    )
    for key in keys:
        firsts: list[int] = []
        for arrival in sub.arrivals:
            if arrival.event.attributes["partitionkey"] == key:
                i = arrival.event.data["i"]
                if i not in firsts:
                    firsts.append(i)
        assert firsts == list(range(len(sent[key]))), key
    assert max(most.values()) == 1, "two deliveries of one key were in flight at once"


def delivered(server: BrokerServer) -> float:
    """Deliveries a broker in this process made that the subscriber accepted."""
    total = 0.0
    for family in server.metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "broker_filter_event_count_total"
                and sample.labels.get("response_code") == "202"
            ):
                total += sample.value
    return total


# -- dispatcher processes ------------------------------------------------------------------------


class Process:
    """An ``agentfn broker --kafka`` process."""

    def __init__(self, kafka: KafkaServer, triggers: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            broker_cli(kafka, self.port, triggers),
            cwd=PROJECT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/default/default"

    async def ready(self) -> None:
        await asyncio.to_thread(wait_for_port, self.port, timeout=20)

    async def delivered(self, session: aiohttp.ClientSession, trigger_name: str) -> float:
        """Deliveries this process made that the subscriber accepted (its /metrics)."""
        async with session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            if (
                line.startswith("broker_filter_event_count_total{")
                and f'trigger_name="{trigger_name}"' in line
                and 'response_code="202"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)


def triggers_file(directory: Path, subscriber: str, name: str) -> Path:
    path = directory / "triggers.yaml"
    path.write_text(yaml.safe_dump(trigger(name, subscriber)))
    return path


@pytest.mark.slow
async def test_two_dispatcher_processes_share_a_triggers_partitions(
    setup: Setup, tmp_path: Path
) -> None:
    sub = await setup.subscriber()
    triggers = triggers_file(tmp_path, sub.url, "shared")
    a = Process(setup.kafka, triggers)
    b = Process(setup.kafka, triggers)
    sent: list[CloudEvent] = []
    try:
        await a.ready()
        await b.ready()

        async def send_round(url: str) -> None:
            batch = [event(data={"n": len(sent) + i}, partitionkey=f"k{i}") for i in range(20)]
            for ev in batch:
                assert await setup.post(url, *to_binary(ev)) == 202
            sent.extend(batch)
            await async_wait_until(
                lambda: all(e.id in sub.seen for e in sent), message="the round delivered"
            )

        async def both_delivered() -> bool:
            await send_round(a.url)
            counts = [await p.delivered(setup.session, "shared") for p in (a, b)]
            return all(c > 0 for c in counts)

        # Rounds until the group has settled on two members and both dispatch.
        await async_wait_until(both_delivered, timeout=30, interval=0.1, message="both deliver")
        # One replica leaves: the other takes over its partitions and nothing is lost.
        b.stop()
        for _ in range(2):
            await send_round(a.url)
    finally:
        a.stop()
        b.stop()
    assert {e.id for e in sent} <= set(sub.seen)


@pytest.mark.slow
async def test_kill_9_after_delivery_before_the_commit_redelivers_the_same_event(
    setup: Setup, tmp_path: Path
) -> None:
    if not setup.kafka.is_tansu:
        pytest.skip("needs a Kafka the tests can cut off")
    target = event(data={"important": True})

    def cut_then_accept(ev: CloudEvent, n: int) -> Answer:
        if ev.id == target.id and n == 1:
            # The dispatcher gets its 202 but can no longer commit the offset past it.
            setup.kafka.cut()
        return Answer(202)

    sub = await setup.subscriber(cut_then_accept)
    triggers = triggers_file(tmp_path, sub.url, "durable")
    first = Process(setup.kafka, triggers)
    try:
        await first.ready()
        assert await setup.post(first.url, *to_binary(target)) == 202
        await async_wait_until(
            lambda: first.delivered(setup.session, "durable"),
            message="the dispatcher to have its 202",
        )
        first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
        setup.kafka.restore()
    assert sub.seen[target.id] == 1
    second = Process(setup.kafka, triggers)
    try:
        await async_wait_until(
            lambda: sub.seen.get(target.id) == 2, timeout=20, message="the redelivery"
        )
    finally:
        second.stop()
    again = sub.arrivals[-1].event
    assert (again.id, again.data) == (target.id, target.data)
