"""The sender's transport seam: one transport per destination, chosen when the dispatcher is
built; a test transport answers in memory, and Knative's reading of answers is the sender's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agentfn.brokers._dispatch import DispatchLimits, TriggerDispatcher
from agentfn.brokers._http1 import Http1Transport
from agentfn.brokers._sender import Sender
from agentfn.brokers._transport import (
    AiohttpTransport,
    Answer,
    LocalTransport,
    MockTransport,
    Url,
)
from agentfn.brokers.config import TriggerSpec
from agentfn.brokers.delivery import BackoffPolicy, DeliveryPolicy, Destination
from agentfn.brokers.filters import match_all
from agentfn.brokers.inprocess import LocalAnswer
from agentfn.brokers.log import LogRecord
from agentfn.brokers.metrics import BrokerMetrics
from agentfn.events import CloudEvent, from_http, to_binary
from agentfn.events.extensions import KNATIVE_BROKER_TTL, KNATIVE_ERROR_CODE

from tests._waiting import async_wait_until
from tests.brokers.test_dispatch_rebalance import ScriptedSubscription

SUBSCRIBER = "http://planner.default.svc/handle"
SINK = "https://sink.example/dlq"


def test_each_destination_gets_its_transport_once() -> None:
    async def local(event: CloudEvent, /) -> LocalAnswer:
        return 202, [], b""

    sender = Sender(local={"inprocess://planner": local})
    assert isinstance(sender.route("http://agent:8080/x")._transport, Http1Transport)
    assert isinstance(sender.route("https://agent/x")._transport, AiohttpTransport)
    assert isinstance(sender.route("http://user:pw@agent/x")._transport, AiohttpTransport)
    assert isinstance(sender.route("inprocess://planner")._transport, LocalTransport)

    mock = MockTransport(lambda url, headers, body: Answer(202))
    assert Sender(transport=mock).route(SUBSCRIBER)._transport is mock


def test_a_url_is_split_once() -> None:
    url = Url.parse("http://agent:8080/a/b?x=1")
    assert (url.host, url.port, url.target, url.plain_http) == ("agent", 8080, "/a/b?x=1", True)
    assert Url.parse("https://agent").port == 443
    assert Url.parse("http://agent").target == "/"


async def test_a_dispatcher_over_a_mock_transport() -> None:
    """Retry on 503, a reply routed on with one hop fewer, a 400 dead-lettered: all in memory."""
    retried = CloudEvent.new("t.retried", "/s", {"n": 1})
    refused = CloudEvent.new("t.refused", "/s", {"n": 2})
    reply = CloudEvent.new("t.reply", "/agent", {"ok": True})
    requests: list[tuple[str, Mapping[str, str], CloudEvent]] = []

    def handle(url: Url, headers: Mapping[str, str], body: bytes) -> Answer:
        (received,) = from_http(headers, body)
        requests.append((url.text, headers, received))
        if url.text == SINK:
            return Answer(202)
        if received.id == refused.id:
            return Answer(400, body=b"no")
        if sum(r[2].id == retried.id for r in requests) == 1:
            return Answer(503, [(b"retry-after", b"0")])
        reply_headers, reply_body = to_binary(reply)
        encoded = [(k.encode(), v.encode()) for k, v in reply_headers.items()]
        return Answer(200, encoded, reply_body)

    stored: list[CloudEvent] = []

    async def ingest(events: object) -> None:
        stored.extend(events)  # type: ignore[call-overload]

    metrics = BrokerMetrics()
    policy = DeliveryPolicy(retry=2, backoff_policy=BackoffPolicy.LINEAR, backoff_delay=0.001)
    dispatcher = TriggerDispatcher(
        trigger=TriggerSpec("default", "t", "default", Destination(uri=SUBSCRIBER), match_all),
        policy=policy,
        subscriber_url=SUBSCRIBER,
        dead_letter_url=SINK,
        subscription=ScriptedSubscription(
            [
                LogRecord(0, 0, retried.with_attributes(**{KNATIVE_BROKER_TTL: 5})),
                LogRecord(0, 1, refused),
            ]
        ),
        sender=Sender(transport=MockTransport(handle)),
        ingest=ingest,
        limits=DispatchLimits(),
        metrics=metrics,
    )
    dispatcher.start()
    try:
        await async_wait_until(
            lambda: (
                metrics.backlog.labels("default", "default", "t")._value.get() == 0
                and len(requests) == 4
            ),
            message="both events settled",
        )
    finally:
        await dispatcher.stop(grace=1.0)
    to_subscriber = [(r[2].id, r[1].get("prefer")) for r in requests if r[0] == SUBSCRIBER]
    assert sorted(to_subscriber) == sorted(
        [(retried.id, "reply"), (retried.id, "reply"), (refused.id, "reply")]
    )
    (letter,) = [r[2] for r in requests if r[0] == SINK]
    assert letter.id == refused.id
    assert letter.attributes[KNATIVE_ERROR_CODE] == "400"
    (routed,) = stored
    assert routed.id == reply.id
    assert routed.attributes[KNATIVE_BROKER_TTL] == 4


async def test_a_mock_handler_that_raises_or_stalls_is_no_answer() -> None:
    event = CloudEvent.new("t", "/s", {})

    def broken(url: Url, headers: Mapping[str, str], body: bytes) -> Answer:
        raise ConnectionResetError("reset")

    async def stalled(url: Url, headers: Mapping[str, str], body: bytes) -> Answer:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    for handler in (broken, stalled):
        attempt = await Sender(transport=MockTransport(handler)).send(
            SUBSCRIBER, event, timeout=0.05
        )
        assert attempt.status is None
        assert attempt.error


async def test_a_local_transport_takes_a_request_as_well() -> None:
    seen: list[CloudEvent] = []

    async def local(event: CloudEvent, /) -> LocalAnswer:
        seen.append(event)
        return 202, [], b""

    event = CloudEvent.new("t", "/s", {"a": 1})
    headers, body = to_binary(event)
    answer = await LocalTransport(local).post(Url.parse("inprocess://a"), headers, body, 1.0)
    assert answer.status == 202
    assert [e.attributes for e in seen] == [event.attributes]
    refused = await LocalTransport(local).post(Url.parse("inprocess://a"), {}, b"{", 1.0)
    assert refused.status == 400
    assert len(seen) == 1
