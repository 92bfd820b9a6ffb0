"""The broker contract suite: every backend runs these tests unchanged.

A backend's test module subclasses :class:`BrokerContract` and implements the three hooks:
``make_log`` (a fresh :class:`EventLog`), ``break_store`` (make the next writes fail) and
``broker_command`` (the ``agentfn broker`` command line for process-level tests).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from agentfn.brokers.config import parse_documents
from agentfn.brokers.delivery import RetryWait, WaitReason
from agentfn.brokers.log import EventLog
from agentfn.brokers.retries import RetryRecord, ScheduledRetry
from agentfn.brokers.server import BrokerServer
from agentfn.brokers.settings import BrokerSettings
from agentfn.events import CloudEvent, to_batch, to_binary, to_structured
from agentfn.events.extensions import (
    KNATIVE_BROKER_TTL,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DEST,
)

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Answer, Subscriber

PROJECT = Path(__file__).resolve().parents[2]


def trigger(
    name: str,
    subscriber: str,
    *,
    broker: str = "default",
    attributes: Mapping[str, str] | None = None,
    filters: list[Any] | None = None,
    delivery: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"broker": broker, "subscriber": {"uri": subscriber}}
    if attributes is not None:
        spec["filter"] = {"attributes": dict(attributes)}
    if filters is not None:
        spec["filters"] = filters
    if delivery is not None:
        spec["delivery"] = dict(delivery)
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": metadata,
        "spec": spec,
    }


def event(
    type_: str = "test.event", source: str = "/tests", data: Any = None, **ext: object
) -> CloudEvent:
    return CloudEvent.new(type_, source, {"n": 1} if data is None else data, **ext)


class RunningBroker:
    def __init__(self, server: BrokerServer, port: int, retries: RetryRecord | None = None) -> None:
        self.server = server
        self.port = port
        self._retries = retries  # the server's retry observer, when it was given this one

    def retries(self, event_id: str, *, dead_letter: bool = False) -> list[ScheduledRetry]:
        """The retries the dispatchers scheduled for one event (see :class:`RetryRecord`)."""
        assert self._retries is not None, "this broker was started without a RetryRecord"
        return self._retries.of(event_id, dead_letter=dead_letter)

    def url(self, namespace: str = "default", name: str = "default") -> str:
        return f"http://127.0.0.1:{self.port}/{namespace}/{name}"

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in self.server.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


class Harness:
    def __init__(self, contract: BrokerContract, tmp_path: Path) -> None:
        self.contract = contract
        self.tmp_path = tmp_path
        self.session = aiohttp.ClientSession()
        self._subscribers: list[Subscriber] = []
        self._brokers: list[BrokerServer] = []

    async def subscriber(self, behaviour: Any = None, name: str = "subscriber") -> Subscriber:
        sub = Subscriber(behaviour, name) if behaviour is not None else Subscriber(name=name)
        await sub.start()
        self._subscribers.append(sub)
        return sub

    async def broker(
        self,
        documents: Sequence[Mapping[str, Any]] = (),
        *,
        settings: BrokerSettings | None = None,
        services: Mapping[str, str] | None = None,
    ) -> RunningBroker:
        retries = RetryRecord()
        server = BrokerServer(
            parse_documents(documents),
            self.contract.make_log(self.tmp_path / f"log{len(self._brokers)}"),
            services=services,
            settings=settings,
            retry_observer=retries,
        )
        await server.start()
        self._brokers.append(server)
        port = await server.listen("127.0.0.1", 0)
        return RunningBroker(server, port, retries)

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        async with self.session.post(url, headers=dict(headers), data=body) as response:
            return response.status, dict(response.headers), await response.read()

    async def send(self, url: str, ev: CloudEvent, mode: str = "binary") -> int:
        headers, body = to_structured(ev) if mode == "structured" else to_binary(ev)
        status, _, _ = await self.post(url, headers, body)
        return status

    async def close(self) -> None:
        for server in self._brokers:
            await server.stop(grace=0.5)
        for sub in self._subscribers:
            await sub.stop()
        await self.session.close()


async def settled(broker: RunningBroker, trigger_name: str) -> None:
    """Wait until the Trigger has no event whose outcome is open.

    Proof of absence without a sleep: once an event's delivery has finished (delivered,
    dead-lettered, dropped), the dispatcher never attempts it again.
    """
    await async_wait_until(
        lambda: broker.metric("broker_trigger_backlog", trigger_name=trigger_name) == 0,
        message=f"trigger {trigger_name} to settle",
    )


def decisions(scheduled: Sequence[ScheduledRetry]) -> list[tuple[int, int | None, RetryWait]]:
    """(retry number, status that caused it, wait) of each scheduled retry."""
    return [(r.retry, r.status, r.wait) for r in scheduled]


def assert_sent_as_scheduled(
    sub: Subscriber, event_id: str, scheduled: Sequence[ScheduledRetry]
) -> None:
    """Each retry reached the subscriber after the attempt before it and not before it was due.

    Only a lower bound on real time: a loaded machine makes retries late, never early.
    """
    times = [a.at for a in sub.arrivals if a.event.id == event_id]
    assert len(times) == len(scheduled) + 1, (times, scheduled)
    for (before, after), retry in zip(itertools.pairwise(times), scheduled, strict=True):
        assert before <= retry.at, "a retry is decided after the answer that caused it"
        # asyncio wakes a timer up to one clock tick early; 1 ms covers it many times over.
        assert after >= retry.due - 0.001, (retry, after)


class BrokerContract:
    """The behaviour every broker backend must show. Subclasses implement the hooks below."""

    def make_log(self, directory: Path) -> EventLog:
        raise NotImplementedError

    async def break_store(self, broker: RunningBroker) -> None:
        """Make the backend's next writes fail (the ingress must answer 503)."""
        raise NotImplementedError

    async def repair_store(self, broker: RunningBroker) -> None:
        """Undo :meth:`break_store`."""
        raise NotImplementedError

    def broker_command(self, data_dir: Path, port: int, triggers: Path) -> list[str]:
        raise NotImplementedError

    @pytest.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[Harness]:
        h = Harness(self, tmp_path)
        try:
            yield h
        finally:
            await h.close()

    # -- ingress status codes ------------------------------------------------------------------

    async def test_binary_structured_and_batch_are_accepted_and_delivered(
        self, harness: Harness
    ) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        a, b, c, d = (event(data={"i": i}) for i in range(4))
        assert await harness.send(broker.url(), a, "binary") == 202
        assert await harness.send(broker.url(), b, "structured") == 202
        status, _, _ = await harness.post(broker.url(), *to_batch([c, d]))
        assert status == 202
        await async_wait_until(lambda: len(sub.arrivals) == 4, message="4 deliveries")
        assert sorted(sub.ids()) == sorted(e.id for e in (a, b, c, d))
        delivered = {e.id: e for e in sub.events()}
        assert delivered[c.id].data == {"i": 2}
        assert delivered[a.id].attributes[KNATIVE_BROKER_TTL] == "255"

    async def test_empty_batch_is_accepted_and_delivers_nothing(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        status, _, _ = await harness.post(broker.url(), *to_batch([]))
        assert status == 202
        marker = event(type_="marker")
        assert await harness.send(broker.url(), marker) == 202
        await async_wait_until(lambda: sub.arrivals, message="the marker")
        assert sub.ids() == [marker.id]

    async def test_invalid_event_is_400_naming_the_attribute(self, harness: Harness) -> None:
        broker = await harness.broker()
        headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "not a uri"}
        status, answer_headers, body = await harness.post(broker.url(), headers, b"")
        assert status == 400
        assert answer_headers["Content-Type"] == "application/json"
        assert json.loads(body)["attribute"] == "source"
        missing = {"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}
        status, _, body = await harness.post(broker.url(), missing, b"")
        assert (status, json.loads(body)["attribute"]) == (400, "id")

    async def test_batch_with_one_invalid_member_is_rejected_whole(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        good = event()
        members = [
            json.loads(to_structured(good)[1]),
            {"specversion": "1.0", "id": "x", "type": "t"},
        ]
        body = json.dumps(members).encode()
        status, _, answer = await harness.post(
            broker.url(), {"content-type": "application/cloudevents-batch+json"}, body
        )
        assert status == 400
        assert json.loads(answer) | {"message": ""} == {
            "error": "invalid CloudEvent",
            "attribute": "source",
            "rule": "required",
            "index": 1,
            "message": "",
        }
        marker = event(type_="marker")
        assert await harness.send(broker.url(), marker) == 202
        await async_wait_until(lambda: sub.arrivals, message="the marker")
        assert sub.ids() == [marker.id], "no member of the rejected batch may be delivered"

    async def test_unknown_broker_is_404(self, harness: Harness) -> None:
        broker = await harness.broker()
        assert await harness.send(broker.url("default", "nope"), event()) == 404
        assert (
            await harness.send(f"http://127.0.0.1:{broker.port}/just-one-segment", event()) == 404
        )

    async def test_other_methods_are_405_and_options_200(self, harness: Harness) -> None:
        broker = await harness.broker()
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            async with harness.session.request(method, broker.url()) as response:
                assert response.status == 405, method
                assert response.headers["Allow"] == "POST, OPTIONS"
        async with harness.session.options(broker.url()) as response:
            assert response.status == 200
            assert response.headers["Allow"] == "POST, OPTIONS"

    async def test_body_over_the_limit_is_413(self, harness: Harness) -> None:
        limit = 64 * 1024
        sub = await harness.subscriber()
        broker = await harness.broker(
            [trigger("all", sub.url)], settings=BrokerSettings(max_body_bytes=limit)
        )
        too_big = event(data={"blob": "x" * limit})
        assert await harness.send(broker.url(), too_big) == 413
        # Chunked, without a content-length: the limit holds while reading.
        headers, body = to_binary(too_big)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        async with harness.session.post(broker.url(), headers=headers, data=chunks()) as response:
            assert response.status == 413
        fits = event(data={"blob": "x" * (limit - 1024)})
        assert await harness.send(broker.url(), fits) == 202

    async def test_default_body_limit_refuses_one_byte_over_a_mib(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])  # the default settings
        limit = 1024 * 1024  # the README's and the settings table's default
        headers, body = to_binary(event(data=b"x" * (limit + 1)))
        assert len(body) == limit + 1  # binary mode: the body is the data alone
        status, answer_headers, answer = await harness.post(broker.url(), headers, body)
        assert status == 413
        assert answer_headers["Content-Type"] == "application/json"
        assert json.loads(answer) == {"error": "body over 1048576 bytes"}

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while read
            for i in range(0, len(body), 64 * 1024):
                yield body[i : i + 64 * 1024]

        async with harness.session.post(broker.url(), headers=headers, data=chunks()) as response:
            assert response.status == 413
            assert json.loads(await response.read()) == {"error": "body over 1048576 bytes"}
        marker = event(type_="marker")
        assert await harness.send(broker.url(), marker) == 202
        await async_wait_until(lambda: sub.arrivals, message="the marker")
        assert sub.ids() == [marker.id], "a refused body is never stored"

    async def test_an_event_of_exactly_the_default_1_mib_limit_is_stored_and_delivered(
        self, harness: Harness
    ) -> None:
        # The limit is inclusive: the body of exactly 1 MiB is stored whole, in Kafka too (its
        # records have room for the attributes beside the body; Knative's 1 MiB would not).
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])  # the default settings
        fits = event(data=b"x" * (1024 * 1024))
        headers, body = to_binary(fits)
        assert len(body) == 1024 * 1024
        status, _, answer = await harness.post(broker.url(), headers, body)
        assert (status, answer) == (202, b"")
        await async_wait_until(lambda: sub.arrivals, message="the delivery")
        assert sub.ids() == [fits.id]
        assert sub.arrivals[0].event.data == b"x" * (1024 * 1024)

    def test_body_limit_never_below_64k(self) -> None:
        with pytest.raises(ValueError, match="max_body_bytes"):
            BrokerSettings(max_body_bytes=1000)

    @pytest.mark.parametrize(
        ("headers", "body", "rule"),
        [
            ({"content-type": "application/json"}, b"{}", "content-mode"),
            ({"content-type": "text/plain"}, b"hello", "content-mode"),
            ({}, b"", "content-mode"),
            ({"content-type": "application/cloudevents+avro"}, b"\x00", "event-format"),
        ],
        ids=["json-without-ce-headers", "text-plain", "empty", "avro-format"],
    )
    async def test_not_a_cloudevent_is_400_naming_the_rule(
        self, harness: Harness, headers: dict[str, str], body: bytes, rule: str
    ) -> None:
        # Knative's data plane: a sink unable to parse a valid CloudEvent MUST answer 400.
        broker = await harness.broker()
        status, answer_headers, answer = await harness.post(broker.url(), headers, body)
        assert status == 400
        assert answer_headers["Content-Type"] == "application/json"
        assert json.loads(answer) | {"message": ""} == {
            "error": "invalid CloudEvent",
            "attribute": "content-type",
            "rule": rule,
            "message": "",
        }

    async def test_store_failure_is_503_and_nothing_is_lost(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        await self.break_store(broker)
        refused = event()
        assert await harness.send(broker.url(), refused) == 503
        assert broker.metric("broker_ingress_event_count_total", response_code="503") == 1
        await self.repair_store(broker)
        # The ingress takes events again once the store is back; a Kafka producer may take a
        # moment to reconnect, and a sender retries a 503 (as Knative's senders do). Each try
        # is a new event, so that a refused one arriving later is told from the accepted one.
        accepted: list[CloudEvent] = []

        async def a_new_event_is_accepted() -> bool:
            ev = event()
            status = await harness.send(broker.url(), ev)
            assert status in {202, 503}, status
            if status == 202:
                accepted.append(ev)
            return status == 202

        await async_wait_until(
            a_new_event_is_accepted, timeout=30, message="the ingress to accept after the repair"
        )
        await async_wait_until(lambda: sub.arrivals, message="delivery after the store recovered")
        assert sub.ids() == [accepted[0].id]

    async def test_health_and_metrics(self, harness: Harness) -> None:
        broker = await harness.broker()
        async with harness.session.get(f"http://127.0.0.1:{broker.port}/healthz") as response:
            assert response.status == 200
        assert await harness.send(broker.url(), event()) == 202
        await harness.post(broker.url(), {"content-type": "application/json"}, b"{}")
        async with harness.session.get(f"http://127.0.0.1:{broker.port}/metrics") as response:
            text = await response.text()
        assert (
            'broker_ingress_event_count_total{broker_name="default",namespace_name="default",'
            'response_code="202",response_code_class="2xx"} 1.0' in text
        )
        assert (
            'broker_ingress_event_count_total{broker_name="default",namespace_name="default",'
            'response_code="400",response_code_class="4xx"} 1.0' in text
        )

    # -- filters -------------------------------------------------------------------------------

    async def test_filter_matrix_over_type_source_and_extension(self, harness: Harness) -> None:
        # Knative's ManyTriggers: each Trigger sees exactly the events its filter selects.
        cases: dict[str, dict[str, Any]] = {
            "any": {},
            "type-a": {"attributes": {"type": "type.a"}},
            "source-x": {"attributes": {"source": "/x"}},
            "a-from-x": {"attributes": {"type": "type.a", "source": "/x"}},
            "has-ext": {"attributes": {"tenant": ""}},
            "ext-blue": {"attributes": {"tenant": "blue"}},
            "exact-b": {"filters": [{"exact": {"type": "type.b"}}]},
            "prefix": {"filters": [{"prefix": {"type": "type."}}]},
            "suffix": {"filters": [{"suffix": {"source": "/y"}}]},
            "all": {
                "filters": [{"all": [{"exact": {"type": "type.a"}}, {"exact": {"tenant": "blue"}}]}]
            },
            "any-of": {
                "filters": [{"any": [{"exact": {"type": "type.b"}}, {"exact": {"source": "/x"}}]}]
            },
            "not-a": {"filters": [{"not": {"exact": {"type": "type.a"}}}]},
            "filters-win": {
                "attributes": {"type": "type.a"},
                "filters": [{"exact": {"type": "type.b"}}],
            },
            "case-sensitive": {"attributes": {"type": "TYPE.A"}},
        }
        subs = {name: await harness.subscriber(name=name) for name in cases}
        docs = [
            trigger(
                name, subs[name].url, attributes=spec.get("attributes"), filters=spec.get("filters")
            )
            for name, spec in cases.items()
        ]
        broker = await harness.broker(docs)
        sent = {
            "a-x": event("type.a", "/x"),
            "a-y-blue": event("type.a", "/y", tenant="blue"),
            "b-x-red": event("type.b", "/x", tenant="red"),
            "b-y": event("type.b", "/y"),
            "c-z": event("other.c", "/z"),
        }
        # No one event passes every filter: three markers, sent last, give each Trigger at least
        # one. A Trigger that has delivered its markers has judged every event before them.
        markers = {
            "mark-a": event("type.a", "/x", tenant="blue"),
            "mark-b": event("type.b", "/y"),
            "mark-upper": event("TYPE.A", "/z"),
        }
        for ev in [*sent.values(), *markers.values()]:
            assert await harness.send(broker.url(), ev) == 202
        expected_markers = {
            "any": set(markers),
            "type-a": {"mark-a"},
            "source-x": {"mark-a"},
            "a-from-x": {"mark-a"},
            "has-ext": {"mark-a"},
            "ext-blue": {"mark-a"},
            "exact-b": {"mark-b"},
            "prefix": {"mark-a", "mark-b"},
            "suffix": {"mark-b"},
            "all": {"mark-a"},
            "any-of": {"mark-a", "mark-b"},
            "not-a": {"mark-b", "mark-upper"},
            "filters-win": {"mark-b"},
            "case-sensitive": {"mark-upper"},
        }
        expected = {
            "any": set(sent),
            "type-a": {"a-x", "a-y-blue"},
            "source-x": {"a-x", "b-x-red"},
            "a-from-x": {"a-x"},
            "has-ext": {"a-y-blue", "b-x-red"},
            "ext-blue": {"a-y-blue"},
            "exact-b": {"b-x-red", "b-y"},
            "prefix": {"a-x", "a-y-blue", "b-x-red", "b-y"},
            "suffix": {"a-y-blue", "b-y"},
            "all": {"a-y-blue"},
            "any-of": {"a-x", "b-x-red", "b-y"},
            "not-a": {"b-x-red", "b-y", "c-z"},
            "filters-win": {"b-x-red", "b-y"},
            "case-sensitive": set(),
        }
        await async_wait_until(
            lambda: all(
                markers[m].id in subs[name].ids()
                for name, wanted in expected_markers.items()
                for m in wanted
            ),
            message="every Trigger's markers",
        )
        # Past its markers, each Trigger has nothing in flight either: what it delivered so far
        # is all it will ever deliver.
        for name in cases:
            await settled(broker, name)
        everything = sent | markers
        for name, sub in subs.items():
            ids = {k for k, ev in everything.items() if ev.id in sub.ids()}
            assert ids == expected[name] | expected_markers[name], name
            assert len(sub.arrivals) == len(ids), f"{name} got a duplicate or a stranger"

    async def test_cesql_filters_select_events_and_errors_never_match(
        self, harness: Harness
    ) -> None:
        # Every expression also accepts the marker, sent last: once a Trigger has delivered
        # it, the Trigger has judged every event before it.
        cases = {
            "orders": "type = 'marker' OR (type LIKE 'order.%' AND INT(priority) > 5)",
            "blue-or-red": "type = 'marker' OR (tenant IN ('blue', 'red') XOR EXISTS urgent)",
            "erroring": "INT(tenant) > 1",  # a cast error for every event but the marker
            "missing": "nosuchattribute = 'x'",  # missingAttribute for all but the marker
        }
        subs = {name: await harness.subscriber(name=name) for name in cases}
        broker = await harness.broker(
            [trigger(name, subs[name].url, filters=[{"cesql": e}]) for name, e in cases.items()]
        )
        sent = {
            "hi": event("order.created", priority="9", tenant="blue"),
            "lo": event("order.created", priority="2", tenant="red", urgent="yes"),
            "other": event("invoice.sent", priority="9", tenant="green"),
        }
        marker = event("marker", priority="1", tenant="7", nosuchattribute="x")
        for ev in [*sent.values(), marker]:
            assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(
            lambda: all(marker.id in sub.ids() for sub in subs.values()), message="the markers"
        )
        assert sorted(subs["orders"].ids()) == sorted([sent["hi"].id, marker.id])
        assert sorted(subs["blue-or-red"].ids()) == sorted([sent["hi"].id, marker.id])
        assert subs["erroring"].ids() == [marker.id]
        assert subs["missing"].ids() == [marker.id]

    async def test_invalid_cesql_is_rejected_when_the_trigger_is_loaded(
        self, harness: Harness
    ) -> None:
        with pytest.raises(
            ValueError, match=r"Trigger default/bad: filters.cesql: .*line 1, column 15"
        ):
            await harness.broker(
                [trigger("bad", "http://127.0.0.1:9/", filters=[{"cesql": "type = 'a' AND"}])]
            )

    # -- delivery ------------------------------------------------------------------------------

    async def test_flaky_subscriber_gets_one_delivery_on_the_backoff_schedule(
        self, harness: Harness
    ) -> None:
        failures = 4

        def flaky(_: CloudEvent, n: int) -> Answer:
            if n == 1:
                return Answer(409)
            if n <= 1 + failures:
                return Answer(503)
            return Answer(202)

        sub = await harness.subscriber(flaky)
        delay = 0.05
        broker = await harness.broker(
            [
                trigger(
                    "flaky",
                    sub.url,
                    delivery={
                        "retry": 10,
                        "backoffPolicy": "exponential",
                        "backoffDelay": f"PT{delay}S",
                    },
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(
            lambda: sub.seen.get(ev.id) == failures + 2, timeout=15, message="success"
        )
        await settled(broker, "flaky")
        assert sub.seen[ev.id] == failures + 2
        scheduled = broker.retries(ev.id)
        # 0.05 * 2**k for k = 1..5: doubling is exact in binary, so these compare exactly.
        assert decisions(scheduled) == [
            (1, 409, RetryWait(0.1, WaitReason.BACKOFF)),
            (2, 503, RetryWait(0.2, WaitReason.BACKOFF)),
            (3, 503, RetryWait(0.4, WaitReason.BACKOFF)),
            (4, 503, RetryWait(0.8, WaitReason.BACKOFF)),
            (5, 503, RetryWait(1.6, WaitReason.BACKOFF)),
        ]
        assert {r.trigger for r in scheduled} == {"default/flaky"}
        assert {r.url for r in scheduled} == {sub.url}
        assert_sent_as_scheduled(sub, ev.id, scheduled)
        assert (
            broker.metric("broker_filter_event_retry_count_total", trigger_name="flaky")
            == failures + 1
        )

    async def test_linear_backoff_schedule(self, harness: Harness) -> None:
        sub = await harness.subscriber(lambda _, n: Answer(500 if n <= 3 else 202))
        broker = await harness.broker(
            [
                trigger(
                    "linear",
                    sub.url,
                    delivery={"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.125S"},
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(lambda: sub.seen.get(ev.id) == 4, timeout=10, message="4 attempts")
        await settled(broker, "linear")
        scheduled = broker.retries(ev.id)
        # 0.125 s is a binary fraction: its multiples compare exactly.
        assert decisions(scheduled) == [
            (1, 500, RetryWait(0.125, WaitReason.BACKOFF)),
            (2, 500, RetryWait(0.25, WaitReason.BACKOFF)),
            (3, 500, RetryWait(0.375, WaitReason.BACKOFF)),
        ]
        assert_sent_as_scheduled(sub, ev.id, scheduled)

    async def test_retry_after_is_honoured_and_capped(self, harness: Harness) -> None:
        sub = await harness.subscriber(
            lambda _, n: Answer(429, headers=[(b"retry-after", b"1")]) if n == 1 else Answer(202)
        )
        capped = await harness.subscriber(
            lambda _, n: Answer(503, headers=[(b"retry-after", b"30")]) if n == 1 else Answer(202)
        )
        policy = {"retry": 3, "backoffDelay": "PT0.01S"}
        broker = await harness.broker(
            [
                trigger("honour", sub.url, delivery=policy, attributes={"type": "honour"}),
                trigger(
                    "cap",
                    capped.url,
                    delivery=policy | {"retryAfterMax": "PT0.5S"},
                    attributes={"type": "cap"},
                ),
            ]
        )
        one, two = event("honour"), event("cap")
        assert await harness.send(broker.url(), one) == 202
        assert await harness.send(broker.url(), two) == 202
        await async_wait_until(
            lambda: sub.seen.get(one.id) == 2 and capped.seen.get(two.id) == 2,
            timeout=10,
            message="second attempts",
        )
        await settled(broker, "honour")
        await settled(broker, "cap")
        # The backoff before retry 1 is 0.02 s; the header asks for more and gets it, up to
        # retryAfterMax.
        honoured, cut = broker.retries(one.id), broker.retries(two.id)
        assert decisions(honoured) == [(1, 429, RetryWait(1.0, WaitReason.RETRY_AFTER))]
        assert decisions(cut) == [(1, 503, RetryWait(0.5, WaitReason.RETRY_AFTER_MAX))]
        assert_sent_as_scheduled(sub, one.id, honoured)
        assert_sent_as_scheduled(capped, two.id, cut)

    async def test_non_retryable_422_goes_once_to_the_dead_letter_sink(
        self, harness: Harness
    ) -> None:
        sub = await harness.subscriber(lambda *_: Answer(422, body=b'{"detail":"bad payload"}'))
        dls = await harness.subscriber(name="dls")
        broker = await harness.broker(
            [
                trigger(
                    "strict",
                    sub.url,
                    delivery={
                        "retry": 5,
                        "backoffDelay": "PT0.01S",
                        "deadLetterSink": {"uri": dls.url},
                    },
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(lambda: dls.arrivals, message="a dead letter")
        await settled(broker, "strict")
        assert sub.seen[ev.id] == 1
        assert len(dls.arrivals) == 1
        letter = dls.arrivals[0].event
        assert letter.id == ev.id
        assert letter.data == ev.data
        assert letter.attributes[KNATIVE_ERROR_DEST] == sub.url
        assert letter.attributes[KNATIVE_ERROR_CODE] == "422"
        assert (
            base64.b64decode(str(letter.attributes[KNATIVE_ERROR_DATA]))
            == b'{"detail":"bad payload"}'
        )

    async def test_error_data_is_cut_to_1024_bytes(self, harness: Harness) -> None:
        sub = await harness.subscriber(lambda *_: Answer(400, body=b"e" * 5000))
        dls = await harness.subscriber(name="dls")
        broker = await harness.broker(
            [
                trigger(
                    "cut",
                    sub.url,
                    delivery={"retry": 0, "deadLetterSink": {"uri": dls.url}},
                )
            ]
        )
        assert await harness.send(broker.url(), event()) == 202
        await async_wait_until(lambda: dls.arrivals, message="a dead letter")
        assert (
            base64.b64decode(str(dls.arrivals[0].event.attributes[KNATIVE_ERROR_DATA]))
            == b"e" * 1024
        )

    async def test_unreachable_subscriber_dead_letter_carries_the_destination(
        self, harness: Harness
    ) -> None:
        dls = await harness.subscriber(name="dls")
        nowhere = f"http://127.0.0.1:{free_port()}/agent"
        broker = await harness.broker(
            [
                trigger(
                    "gone",
                    nowhere,
                    delivery={
                        "retry": 2,
                        "backoffDelay": "PT0.01S",
                        "deadLetterSink": {"uri": dls.url},
                    },
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(lambda: dls.arrivals, timeout=10, message="a dead letter")
        letter = dls.arrivals[0].event
        assert letter.id == ev.id
        assert letter.attributes[KNATIVE_ERROR_DEST] == nowhere
        assert KNATIVE_ERROR_CODE not in letter.attributes
        assert (
            broker.metric(
                "broker_filter_event_count_total", trigger_name="gone", response_code="none"
            )
            == 3
        )

    async def test_exhausted_retries_go_to_the_sink_with_the_last_status(
        self, harness: Harness
    ) -> None:
        sub = await harness.subscriber(lambda *_: Answer(500, body=b"boom"))
        dls = await harness.subscriber(name="dls")
        broker = await harness.broker(
            [
                trigger(
                    "failing",
                    sub.url,
                    delivery={
                        "retry": 3,
                        "backoffDelay": "PT0.01S",
                        "deadLetterSink": {"uri": dls.url},
                    },
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(lambda: dls.arrivals, timeout=10, message="a dead letter")
        assert sub.seen[ev.id] == 4
        assert dls.arrivals[0].event.attributes[KNATIVE_ERROR_CODE] == "500"

    async def test_failing_dead_letter_sink_is_retried(self, harness: Harness) -> None:
        sub = await harness.subscriber(lambda *_: Answer(400))
        dls = await harness.subscriber(lambda _, n: Answer(503 if n <= 2 else 202), name="dls")
        broker = await harness.broker(
            [
                trigger(
                    "s",
                    sub.url,
                    delivery={
                        "retry": 3,
                        "backoffDelay": "PT0.01S",
                        "deadLetterSink": {"uri": dls.url},
                    },
                )
            ]
        )
        ev = event()
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(
            lambda: dls.seen.get(ev.id) == 3, timeout=10, message="sink accepted"
        )
        await settled(broker, "s")
        assert (
            broker.metric("broker_filter_dead_letter_count_total", trigger_name="s", outcome="sent")
            == 1
        )
        # The sink's retries follow the Trigger's delivery, like the subscriber's: no retry of
        # the 400, then the sink's two 503s, 0.02 s and 0.04 s apart.
        assert broker.retries(ev.id) == []
        to_sink = broker.retries(ev.id, dead_letter=True)
        assert decisions(to_sink) == [
            (1, 503, RetryWait(0.02, WaitReason.BACKOFF)),
            (2, 503, RetryWait(0.04, WaitReason.BACKOFF)),
        ]
        assert {r.url for r in to_sink} == {dls.url}
        assert_sent_as_scheduled(dls, ev.id, to_sink)

    async def test_without_a_sink_the_event_is_dropped_and_counted(self, harness: Harness) -> None:
        sub = await harness.subscriber(lambda *_: Answer(400))
        broker = await harness.broker([trigger("s", sub.url, delivery={"retry": 0})])
        assert await harness.send(broker.url(), event()) == 202
        await async_wait_until(
            lambda: (
                broker.metric(
                    "broker_filter_dead_letter_count_total", trigger_name="s", outcome="dropped"
                )
                == 1
            ),
            message="the drop is counted",
        )

    async def test_broker_delivery_is_the_default_for_its_triggers(self, harness: Harness) -> None:
        sub = await harness.subscriber(lambda *_: Answer(500))
        dls = await harness.subscriber(name="dls")
        docs = [
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "metadata": {"name": "other", "namespace": "team"},
                "spec": {
                    "delivery": {
                        "retry": 1,
                        "backoffDelay": "PT0.01S",
                        "deadLetterSink": {"uri": dls.url},
                    }
                },
            },
            trigger("t", sub.url, broker="other")
            | {"metadata": {"name": "t", "namespace": "team"}},
        ]
        broker = await harness.broker(docs)
        ev = event()
        assert await harness.send(broker.url("team", "other"), ev) == 202
        await async_wait_until(lambda: dls.arrivals, message="a dead letter")
        assert sub.seen[ev.id] == 2

    async def test_36k_event_is_delivered_exactly_once_intact(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        payload = {"blob": "y" * (36 * 1024), "n": 7}
        ev = event(data=payload)
        assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(lambda: sub.arrivals, message="the delivery")
        await settled(broker, "all")
        assert len(sub.arrivals) == 1
        assert sub.arrivals[0].event.data == payload

    async def test_prefer_reply_header_is_sent(self, harness: Harness) -> None:
        sub = await harness.subscriber()
        broker = await harness.broker([trigger("all", sub.url)])
        assert await harness.send(broker.url(), event()) == 202
        await async_wait_until(lambda: sub.arrivals, message="the delivery")
        assert sub.arrivals[0].headers["prefer"] == "reply"

    async def test_prefer_reply_where_the_reply_is_forwarded_not_to_the_dead_letter_sink(
        self, harness: Harness
    ) -> None:
        # Knative's data plane: a sender that processes replies says so with ``Prefer: reply``.
        # A Trigger's subscriber (a model server's event path among them) may answer with a reply
        # the broker publishes, also when that subscriber was reached by a reply; the
        # dead-letter sink's answer is discarded, so its delivery must not ask for one.
        replying = await harness.subscriber(
            lambda ev, _: Answer(200, reply=CloudEvent.new("prefer.replied", "/agent", {})), "a"
        )
        rejecting = await harness.subscriber(lambda *_: Answer(422), "b")
        dls = await harness.subscriber(name="dls")
        broker = await harness.broker(
            [
                trigger("first", replying.url, attributes={"type": "prefer.asked"}),
                trigger(
                    "second",
                    rejecting.url,
                    attributes={"type": "prefer.replied"},
                    delivery={"retry": 0, "deadLetterSink": {"uri": dls.url}},
                ),
            ]
        )
        assert await harness.send(broker.url(), event("prefer.asked")) == 202
        await async_wait_until(lambda: dls.arrivals, message="the reply's dead letter")
        assert replying.arrivals[0].headers.get("prefer") == "reply"
        assert rejecting.arrivals[0].headers.get("prefer") == "reply"
        assert dls.arrivals[0].event.type == "prefer.replied"
        assert "prefer" not in dls.arrivals[0].headers

    # -- replies -------------------------------------------------------------------------------

    async def test_reply_chain_a_b_c(self, harness: Harness) -> None:
        def step(next_type: str) -> Any:
            return lambda ev, _: Answer(
                200, reply=CloudEvent.new(next_type, "/agent", {"from": ev.type})
            )

        a = await harness.subscriber(step("chain.b"), "a")
        b = await harness.subscriber(step("chain.c"), "b")
        c = await harness.subscriber(name="c")
        broker = await harness.broker(
            [
                trigger("a", a.url, attributes={"type": "chain.a"}),
                trigger("b", b.url, attributes={"type": "chain.b"}),
                trigger("c", c.url, attributes={"type": "chain.c"}),
            ]
        )
        assert await harness.send(broker.url(), event("chain.a")) == 202
        await async_wait_until(lambda: c.arrivals, message="the end of the chain")
        final = c.arrivals[0].event
        assert final.data == {"from": "chain.b"}
        assert final.attributes[KNATIVE_BROKER_TTL] == "253"
        assert len(a.arrivals) == len(b.arrivals) == 1

    async def test_reply_loop_is_stopped_by_the_ttl(self, harness: Harness) -> None:
        def ping(ev: CloudEvent, _: int) -> Answer:
            return Answer(
                200, reply=CloudEvent.new("loop.ping", "/pinger", {"hop": ev.data["hop"] + 1})
            )

        sub = await harness.subscriber(ping)
        broker = await harness.broker([trigger("loop", sub.url, attributes={"type": "loop.ping"})])
        start = event("loop.ping", data={"hop": 0}, **{KNATIVE_BROKER_TTL: 5})
        assert await harness.send(broker.url(), start) == 202
        await async_wait_until(
            lambda: (
                broker.metric("broker_filter_ttl_exhausted_count_total", trigger_name="loop") == 1
            ),
            message="the loop to be cut",
        )
        assert [e.data["hop"] for e in sub.events()] == [0, 1, 2, 3, 4]

    async def test_default_ttl_stops_an_unbounded_loop(self, harness: Harness) -> None:
        sub = await harness.subscriber(
            lambda ev, _: Answer(200, reply=CloudEvent.new("loop", "/p", {}))
        )
        broker = await harness.broker([trigger("loop", sub.url, attributes={"type": "loop"})])
        assert await harness.send(broker.url(), event("loop")) == 202
        await async_wait_until(
            lambda: (
                broker.metric("broker_filter_ttl_exhausted_count_total", trigger_name="loop") == 1
            ),
            timeout=30,
            message="the loop to be cut",
        )
        assert len(sub.arrivals) == 255

    async def test_2xx_without_body_is_no_reply_and_non_event_body_is_502(
        self, harness: Harness
    ) -> None:
        quiet = await harness.subscriber(lambda *_: Answer(204), "quiet")
        garbage = await harness.subscriber(
            lambda _, n: Answer(200, body=b"hello") if n == 1 else Answer(202), "garbage"
        )
        watcher = await harness.subscriber(name="watcher")
        broker = await harness.broker(
            [
                trigger("quiet", quiet.url, attributes={"type": "q"}),
                trigger(
                    "garbage",
                    garbage.url,
                    attributes={"type": "g"},
                    delivery={"retry": 2, "backoffDelay": "PT0.01S"},
                ),
                trigger(
                    "watch",
                    watcher.url,
                    filters=[
                        {"not": {"any": [{"exact": {"type": "q"}}, {"exact": {"type": "g"}}]}}
                    ],
                ),
            ]
        )
        q, g = event("q"), event("g")
        assert await harness.send(broker.url(), q) == 202
        assert await harness.send(broker.url(), g) == 202
        await async_wait_until(lambda: garbage.seen.get(g.id) == 2, message="a retry after the 502")
        assert (
            broker.metric(
                "broker_filter_event_count_total", trigger_name="garbage", response_code="502"
            )
            == 1
        )
        marker = event("marker")
        assert await harness.send(broker.url(), marker) == 202
        await async_wait_until(lambda: watcher.arrivals, message="the marker")
        assert watcher.ids() == [marker.id], "neither answer may be routed as a reply"

    # -- concurrency and fairness --------------------------------------------------------------

    async def test_slow_subscriber_does_not_stall_the_others(self, harness: Harness) -> None:
        release = asyncio.Event()

        async def stuck(_: CloudEvent, __: int) -> Answer:
            await release.wait()
            return Answer(202)

        slow = await harness.subscriber(stuck, "slow")
        fast = await harness.subscriber(name="fast")
        broker = await harness.broker(
            [trigger("slow", slow.url), trigger("fast", fast.url)],
            settings=BrokerSettings(subscriber_in_flight=4, max_in_flight=16),
        )
        try:
            sent = [event(data={"i": i}) for i in range(60)]
            for ev in sent:
                assert await harness.send(broker.url(), ev) == 202
            await async_wait_until(
                lambda: len(fast.arrivals) == 60, timeout=10, message="the fast trigger"
            )
            # Under load the slow Trigger's consumer may still be fetching: wait for its slots
            # to fill rather than read them at the moment the fast one finished.
            await async_wait_until(
                lambda: len(slow.arrivals) >= 4, timeout=10, message="the slow trigger's slots"
            )
            # The stuck Trigger's position has not moved: every event is backlog in the store.
            await async_wait_until(
                lambda: broker.metric("broker_trigger_store_backlog", trigger_name="slow") == 60,
                message="the slow trigger's store backlog",
            )
            assert len(slow.arrivals) == 4, "the slow subscriber holds only its own slots"
        finally:
            release.set()  # never leave handlers parked: teardown would wait on them
        await async_wait_until(
            lambda: len(slow.arrivals) == 60, timeout=10, message="the slow trigger"
        )
        await async_wait_until(
            lambda: broker.metric("broker_trigger_store_backlog", trigger_name="slow") == 0,
            message="the backlog to drain",
        )

    async def test_ordered_trigger_delivers_one_at_a_time_in_order(self, harness: Harness) -> None:
        in_flight = 0
        most = 0

        async def flaky(ev: CloudEvent, n: int) -> Answer:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1
            return Answer(503 if ev.data["i"] % 3 == 0 and n == 1 else 202)

        sub = await harness.subscriber(flaky)
        broker = await harness.broker(
            [
                trigger(
                    "ordered",
                    sub.url,
                    delivery={"retry": 3, "backoffDelay": "PT0.01S"},
                    annotations={"kafka.eventing.knative.dev/delivery.order": "ordered"},
                )
            ]
        )
        sent = [event(data={"i": i}, partitionkey="k") for i in range(20)]
        for ev in sent:
            assert await harness.send(broker.url(), ev) == 202
        await async_wait_until(
            lambda: (
                len({a.event.id for a in sub.arrivals}) == 20
                and sub.arrivals[-1].event.id == sent[-1].id
            ),
            timeout=15,
            message="all 20",
        )
        firsts: list[int] = []
        for arrival in sub.arrivals:
            if not firsts or firsts[-1] != arrival.event.data["i"]:
                firsts.append(arrival.event.data["i"])
        assert firsts == list(range(20))
        assert most == 1

    # -- durability ----------------------------------------------------------------------------

    @pytest.mark.slow
    async def test_kill_9_with_events_in_flight_then_restart_delivers_every_accepted_event(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        # Until the restart the subscriber refuses every delivery (503), so the killed process
        # delivers nothing; only the restarted one can, and it must deliver every event that
        # was answered 202, also those accepted in the last moments before the kill.
        restarted = False
        delivered: set[str] = set()  # answered 2xx by the subscriber, after the restart

        def gated(ev: CloudEvent, _: int) -> Answer:
            if not restarted:
                return Answer(503)
            delivered.add(ev.id)
            return Answer(202)

        sub = await harness.subscriber(gated)
        triggers = tmp_path / "triggers.yaml"
        triggers.write_text(
            yaml.safe_dump(
                trigger(
                    "durable",
                    sub.url,
                    delivery={"retry": 1000, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"},
                )
            )
        )
        data_dir = tmp_path / "data"
        port = free_port()
        command = self.broker_command(data_dir, port, triggers)
        url = f"http://127.0.0.1:{port}/default/default"
        accepted: list[str] = []
        unanswered: list[str] = []  # sent when the broker died: may or may not be delivered

        async def keep_sending(lane: int) -> None:
            """Send one event after another until the broker stops answering."""
            for i in itertools.count():
                ev = event(data={"lane": lane, "i": i})
                try:
                    status = await harness.send(url, ev)
                except (aiohttp.ClientError, OSError):
                    unanswered.append(ev.id)
                    return
                assert status == 202, (status, ev.id)
                accepted.append(ev.id)

        proc = subprocess.Popen(
            command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await asyncio.to_thread(wait_for_port, port, timeout=20)
            for i in range(200):
                ev = event(data={"i": i})
                assert await harness.send(url, ev) == 202
                accepted.append(ev.id)
            headers, body = to_batch([event(data={"batch": i}) for i in range(50)])
            status, _, _ = await harness.post(url, headers, body)
            assert status == 202
            accepted.extend(e.id for e in json_ids(body))
            before_senders = len(accepted)
            senders = [asyncio.create_task(keep_sending(lane)) for lane in range(4)]
            await async_wait_until(
                lambda: len(sub.seen) >= 10 and len(accepted) >= before_senders + 40,
                message="deliveries in flight while requests keep arriving",
            )
            assert not any(task.done() for task in senders), "the senders run into the kill"
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            # Each sender ends on its first request without an answer, so none outlives the kill.
            await asyncio.wait_for(asyncio.gather(*senders), timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(unanswered) == len(senders)
        restarted = True
        proc = subprocess.Popen(
            command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await async_wait_until(
                lambda: set(accepted) <= delivered,
                timeout=60,
                message="every event answered 202 to be delivered after the restart",
            )
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def json_ids(body: bytes) -> list[CloudEvent]:
    return [
        CloudEvent.create({k: v for k, v in m.items() if k != "data"}, m.get("data"))
        for m in json.loads(body)
    ]


def agentfn_command() -> list[str]:
    return [str(Path(sys.executable).parent / "agentfn"), "--log-level", "WARNING"]


__all__ = ["BrokerContract", "Harness", "RunningBroker", "agentfn_command", "event", "trigger"]
