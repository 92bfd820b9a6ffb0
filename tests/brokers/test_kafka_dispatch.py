"""The Kafka backend behind whole brokers: Knative interop, ordering across a rebalance,
dispatcher processes sharing a Trigger, and ``kill -9`` between a delivery and its commit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from agentfn.brokers.config import parse_documents
from agentfn.brokers.kafka import KafkaEventLog
from agentfn.brokers.log import LogRecord, Subscription
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent, KafkaRecord, from_kafka, to_binary, to_structured
from agentfn.events.extensions import KNATIVE_BROKER_TTL
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Answer, Subscriber
from tests.brokers._tansu import KafkaServer, broker_cli, kafka, kafka_log
from tests.brokers.contract import PROJECT, event, trigger

pytestmark = pytest.mark.kafka
_ = kafka  # the fixture, imported for pytest

# Knative's names, written out: a change to the naming in the code under test must fail here.
TOPIC = "knative-broker-default-default"
ORDERED = {"kafka.eventing.knative.dev/delivery.order": "ordered"}


class MembersLog:
    """The Kafka log of one broker, passed through, keeping the group members it opened.

    A member's ``assigned()`` is where a test sees a rebalance from the inside (the revocation
    has begun when it is empty).
    """

    def __init__(self, inner: KafkaEventLog) -> None:
        self.inner = inner
        self.members: list[Subscription] = []

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def append(self, topic: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        return await self.inner.append(topic, events)

    async def subscribe(self, topic: str, group: str) -> Subscription:
        member = await self.inner.subscribe(topic, group)
        self.members.append(member)
        return member


class Setup:
    """Brokers (in this process) and subscribers of one test, all stopped at the end."""

    def __init__(self, kafka: KafkaServer) -> None:
        self.kafka = kafka
        self.session = aiohttp.ClientSession()
        self.servers: list[BrokerServer] = []
        self.logs: list[MembersLog] = []
        self.subscribers: list[Subscriber] = []
        self.gates: list[asyncio.Event] = []

    def gate(self) -> asyncio.Event:
        """An event a subscriber may wait on; opened at the end, so a failed test still stops."""
        self.gates.append(asyncio.Event())
        return self.gates[-1]

    async def subscriber(self, behaviour: Any = None) -> Subscriber:
        sub = Subscriber(behaviour) if behaviour is not None else Subscriber()
        await sub.start()
        self.subscribers.append(sub)
        return sub

    async def broker(self, documents: Sequence[Mapping[str, Any]]) -> str:
        log = MembersLog(kafka_log(self.kafka))
        server = BrokerServer(parse_documents(documents), log)
        await server.start()
        self.servers.append(server)
        self.logs.append(log)
        port = await server.listen("127.0.0.1", 0)
        return f"http://127.0.0.1:{port}/default/default"

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        async with self.session.post(url, headers=dict(headers), data=body) as response:
            return response.status

    async def close(self) -> None:
        for gate in self.gates:
            gate.set()
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


def partition_of(key: str, partitions: int = 10) -> int:
    """Where the Java client's default partitioner (so Knative's receiver) puts ``key``."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def spread_keys(count: int, partitions: int = 10) -> list[str]:
    """Keys on ``count`` different partitions, so every member of a group gets some."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < count:
        key = f"key-{n}"
        keys.setdefault(partition_of(key, partitions), key)
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
    # A liveness bound, not a speed check: a rebalance that starts while a member is still
    # settling takes another JoinGroup round, each answered by Tansu only after about half the
    # session timeout, and a revocation waits up to its grace for events in flight.
    try:
        await async_wait_until(
            lambda: len(sub.seen) == total, timeout=90, message="every event delivered"
        )
    except AssertionError as stalled:
        raise AssertionError(f"{stalled}; {stall_report(setup, sub, sent)}") from None
    for key in keys:
        firsts: list[int] = []
        for arrival in sub.arrivals:
            if arrival.event.attributes["partitionkey"] == key:
                i = arrival.event.data["i"]
                if i not in firsts:
                    firsts.append(i)
        assert firsts == list(range(len(sent[key]))), key
    assert max(most.values()) == 1, "two deliveries of one key were in flight at once"


def stall_report(setup: Setup, sub: Subscriber, sent: Mapping[str, list[CloudEvent]]) -> str:
    """What a stalled delivery test needs to say: what is missing, and where each member is."""
    missing = {
        key: [e.data["i"] for e in events if e.id not in sub.seen]
        for key, events in sent.items()
        if any(e.id not in sub.seen for e in events)
    }
    partitions = {key: partition_of(key) for key in missing}
    members = [sorted(member.assigned()) for log in setup.logs for member in log.members]
    return (
        f"missing by key (i): {missing}; their partitions: {partitions}; "
        f"members' partitions: {members}; backlog per broker: "
        f"{[backlog(server) for server in setup.servers]}; delivered per broker: "
        f"{[delivered(server) for server in setup.servers]}"
    )


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


def backlog(server: BrokerServer) -> float:
    """Events a broker in this process fetched and has not finished (in flight or waiting)."""
    return sum(
        sample.value
        for family in server.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "broker_trigger_backlog"
    )


class GroupOffsets:
    """A consumer group's committed offsets on the topic, as the server reports them."""

    def __init__(self, kafka: KafkaServer, group: str) -> None:
        self.group = kafka.prefix + group
        self.topic = kafka.prefix + TOPIC
        self._admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)

    def _read(self) -> dict[int, int]:
        offsets = self._admin.list_group_offsets(self.group).get(self.group, {})
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.topic}

    async def now(self) -> dict[int, int]:
        return await asyncio.to_thread(self._read)

    async def reach(self, expected: Mapping[int, int], what: str) -> None:
        async def there() -> bool:
            now = await self.now()
            return all(now.get(p) == o for p, o in expected.items())

        await async_wait_until(there, timeout=15, interval=0.05, message=what)

    def close(self) -> None:
        self._admin.close()


@pytest.fixture
def offsets_of(kafka: KafkaServer) -> Iterator[Any]:
    """``offsets_of(group)``: a :class:`GroupOffsets`, closed after the test."""
    opened: list[GroupOffsets] = []

    def open_(group: str) -> GroupOffsets:
        opened.append(GroupOffsets(kafka, group))
        return opened[-1]

    yield open_
    for offsets in opened:
        offsets.close()


def places(kafka: KafkaServer, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Where each event is stored, read back by a plain consumer: id -> (partition, offset)."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    name = kafka.prefix + TOPIC
    try:
        consumer.assign([TopicPartition(name, p) for p in consumer.partitions_for_topic(name)])
        found: dict[str, tuple[int, int]] = {}
        deadline = time.monotonic() + 10
        while not set(ids) <= set(found):
            assert time.monotonic() < deadline, f"only {len(found)} of {len(ids)} stored"
            for batch in consumer.poll(timeout_ms=100).values():
                for record in batch:
                    found[dict(record.headers)["ce_id"].decode()] = (
                        record.partition,
                        record.offset,
                    )
        return {i: found[i] for i in ids}
    finally:
        consumer.close()


async def test_a_group_commits_only_the_contiguous_watermark_of_events_finished_out_of_order(
    setup: Setup, offsets_of: Any
) -> None:
    # Six events on one partition, delivered concurrently (an unordered Trigger). The third is
    # held by the subscriber while the others are answered: the group's committed offset may
    # pass the first two, never the held one, until it is answered too.
    events = [event(data={"i": i}, partitionkey="watermark") for i in range(6)]
    held = events[2]
    release = setup.gate()

    async def hold_one(ev: CloudEvent, n: int) -> Answer:
        if ev.id == held.id:
            await release.wait()
        return Answer(202)

    sub = await setup.subscriber(hold_one)
    url = await setup.broker([trigger("watermark", sub.url)])
    (server,) = setup.servers
    offsets = offsets_of("knative-trigger-default-watermark")
    for ev in events:
        assert await setup.post(url, *to_binary(ev)) == 202
    where = await asyncio.to_thread(places, setup.kafka, [e.id for e in events])
    (partition,) = {p for p, _ in where.values()}
    at = [where[e.id][1] for e in events]
    assert at == list(range(at[0], at[0] + 6))

    # Every other event is answered and finished by the dispatcher (its 202 counted), and the
    # held one is out at the subscriber.
    await async_wait_until(
        lambda: delivered(server) == 5 and set(sub.seen) == {e.id for e in events},
        message="five events answered, the held one in flight",
    )
    await offsets.reach({partition: at[2]}, "the commit past the first two events")
    # Proof that nothing further is coming: a marker on another partition is committed after
    # the others finished; the dispatcher commits every partition's watermark together, so a
    # commit past the held event would be there by now.
    elsewhere = next(k for k in spread_keys(2) if partition_of(k) != partition)
    marker = event(data={"marker": True}, partitionkey=elsewhere)
    assert await setup.post(url, *to_binary(marker)) == 202
    (marker_place,) = (await asyncio.to_thread(places, setup.kafka, [marker.id])).values()
    assert marker_place[0] != partition
    await offsets.reach({marker_place[0]: marker_place[1] + 1}, "the marker's commit")
    assert (await offsets.now())[partition] == at[2], "committed past an unfinished event"

    release.set()
    await offsets.reach({partition: at[5] + 1}, "the commit past all six once the held one ends")
    assert sub.seen == {e.id: 1 for e in [*events, marker]}


async def test_a_revoked_partition_waits_for_its_delivery_in_flight_and_commits_it(
    setup: Setup, offsets_of: Any
) -> None:
    # One event per partition, every one held at the subscriber (in flight at the first
    # member) when a second member joins the Trigger's group. The revocation must wait for
    # them and commit them before the partitions move: the next owner then starts after them,
    # so none is delivered twice, and events that come later go to whoever owns their
    # partition now.
    keys = spread_keys(10)
    held = [event(data={"held": k}, partitionkey=k) for k in keys]
    release = setup.gate()

    async def hold_until_released(ev: CloudEvent, n: int) -> Answer:
        if "held" in ev.data:
            await release.wait()
        return Answer(202)

    sub = await setup.subscriber(hold_until_released)
    docs = [trigger("handover", sub.url)]
    first_url = await setup.broker(docs)
    (first,) = setup.logs[0].members
    offsets = offsets_of("knative-trigger-default-handover")
    await async_wait_until(
        lambda: first.assigned() == frozenset(range(10)), timeout=15, message="the first member"
    )
    for ev in held:
        assert await setup.post(first_url, *to_binary(ev)) == 202
    where = await asyncio.to_thread(places, setup.kafka, [e.id for e in held])
    assert sorted(p for p, _ in where.values()) == list(range(10))
    await async_wait_until(
        lambda: set(sub.seen) == {e.id for e in held}, message="every held event in flight"
    )
    seeded = await offsets.now()
    assert seeded == dict(where.values()), "nothing in flight is committed yet"

    await setup.broker(docs)  # the second member joins: the group rebalances
    (second,) = setup.logs[1].members
    await async_wait_until(
        lambda: not first.assigned(), timeout=15, message="the revocation to begin"
    )
    # The revocation waits for the events in flight: the partitions have not moved.
    assert second.assigned() == frozenset()
    assert await offsets.now() == seeded
    release.set()
    await async_wait_until(
        lambda: first.assigned() and second.assigned(), timeout=15, message="both members"
    )
    assert first.assigned().isdisjoint(second.assigned())
    assert first.assigned() | second.assigned() == frozenset(range(10))
    # Committed by the first member during the revocation, so before the second could read.
    assert await offsets.now() == {p: o + 1 for p, o in where.values()}

    # A marker behind each held event, on every partition: each is delivered by the member that
    # owns its partition now, and once all are and nothing is left in flight, no held event
    # has come a second time.
    markers = [event(data={"marker": k}, partitionkey=k) for k in keys]
    for ev in markers:
        assert await setup.post(first_url, *to_binary(ev)) == 202
    await async_wait_until(
        lambda: all(m.id in sub.seen for m in markers), timeout=15, message="every marker"
    )
    await async_wait_until(
        lambda: all(backlog(server) == 0 for server in setup.servers),
        message="both members idle",
    )
    assert sub.seen == {e.id: 1 for e in [*held, *markers]}
    moved = len(second.assigned())
    assert [delivered(server) for server in setup.servers] == [10 + 10 - moved, moved]
    marker_places = await asyncio.to_thread(places, setup.kafka, [m.id for m in markers])
    await offsets.reach(
        {p: o + 1 for p, o in marker_places.values()}, "the markers committed by their owners"
    )


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

        async def send_round(url: str, timeout: float = 10.0) -> None:
            batch = [event(data={"n": len(sent) + i}, partitionkey=f"k{i}") for i in range(20)]
            for ev in batch:
                assert await setup.post(url, *to_binary(ev)) == 202
            sent.extend(batch)
            await async_wait_until(
                lambda: all(e.id in sub.seen for e in sent),
                timeout=timeout,
                message="the round delivered",
            )

        async def both_delivered() -> bool:
            await send_round(a.url)
            counts = [await p.delivered(setup.session, "shared") for p in (a, b)]
            return all(c > 0 for c in counts)

        # Rounds until the group has settled on two members and both dispatch.
        await async_wait_until(both_delivered, timeout=30, interval=0.1, message="both deliver")
        # One replica leaves: the other takes over its partitions and nothing is lost.
        b.stop()
        # The first round waits out the rebalance: at worst (b's LeaveGroup lost) the group
        # notices only after the session timeout (10 s), and Tansu answers the JoinGroup
        # that follows after about half of it.
        await send_round(a.url, timeout=30.0)
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
