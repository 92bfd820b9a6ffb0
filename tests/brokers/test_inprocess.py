"""Deliveries to subscribers hosted in the broker's process follow the HTTP path's rules.

An in-process subscriber answers (status, headers, body) as an HTTP subscriber would; the
broker must apply the same Knative semantics to it: 2xx delivered, a reply routed on, retries
with the Trigger's backoff, an exception or a timeout taken as "no answer" (retried), a
non-retryable answer dead-lettered with the error extensions naming the in-process URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.inprocess import LocalAnswer, LocalSubscriber, inprocess_url, origin_of
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent, to_binary
from agentfn.events.extensions import KNATIVE_ERROR_CODE, KNATIVE_ERROR_DEST

from tests._waiting import async_wait_until
from tests.brokers._subscribers import Subscriber
from tests.brokers.contract import RunningBroker, event, settled, trigger


class Hosted:
    """A programmable in-process subscriber recording what it was called with."""

    def __init__(self, *answers: LocalAnswer | BaseException | float) -> None:
        # Each call takes the next answer; a float sleeps that long (to time out), the last
        # answer repeats.
        self.answers = list(answers) or [(202, [], b"")]
        self.calls: list[CloudEvent] = []
        self.cancelled = 0

    async def __call__(self, received: CloudEvent, /) -> LocalAnswer:
        self.calls.append(received)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, float):
            try:
                await asyncio.sleep(answer)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return 202, [], b""
        return answer


def reply_answer(reply: CloudEvent) -> LocalAnswer:
    headers, body = to_binary(reply)
    return 200, [(k.encode(), v.encode()) for k, v in headers.items()], body


Start = Callable[..., Awaitable[RunningBroker]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a broker over SQLite with in-process subscribers; every one is stopped after."""
    servers: list[BrokerServer] = []

    async def starting(
        documents: Sequence[dict[str, Any]],
        local: dict[str, LocalSubscriber],
        services: dict[str, str] | None = None,
    ) -> RunningBroker:
        server = BrokerServer(
            parse_documents(documents),
            SqliteEventLog(tmp_path / f"log{len(servers)}", fsync=False),
            services=services,
            local_subscribers=local,
        )
        await server.start()
        servers.append(server)
        return RunningBroker(server, await server.listen("127.0.0.1", 0))

    yield starting
    for server in servers:
        await server.stop(grace=0.5)


@pytest.fixture
async def subscriber() -> AsyncIterator[Callable[[], Awaitable[Subscriber]]]:
    """Starts HTTP subscribers (sinks) on loopback; every one is stopped after."""
    started: list[Subscriber] = []

    async def starting() -> Subscriber:
        started.append(await Subscriber().start())
        return started[-1]

    yield starting
    for sub in started:
        await sub.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session: aiohttp.ClientSession, url: str, sent: CloudEvent) -> int:
    headers, body = to_binary(sent)
    async with session.post(url, headers=headers, data=body) as response:
        return response.status


def fast_retries(retry: int = 3) -> dict[str, Any]:
    return {"retry": retry, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}


Subscribers = Callable[[], Awaitable[Subscriber]]


async def test_the_event_is_handed_over_as_stored_without_an_http_request(
    start: Start, session: aiohttp.ClientSession
) -> None:
    hosted = Hosted()
    url = inprocess_url("agent")
    broker = await start([trigger("t", url)], {url: hosted})
    sent = event(data={"k": "v"}, myext="x")
    assert await post(session, broker.url(), sent) == 202
    await async_wait_until(lambda: hosted.calls, message="the in-process delivery")
    (got,) = hosted.calls
    assert (got.id, got.source, got.type, got.data) == (sent.id, sent.source, sent.type, {"k": "v"})
    assert got.attributes["myext"] == "x"
    assert int(str(got.attributes["knativebrokerttl"])) == 255
    await async_wait_until(
        lambda: broker.metric("broker_filter_event_count_total", response_code="202") == 1,
        message="the delivery counted as a 202",
    )


async def test_a_reply_is_routed_on_like_an_http_reply(
    start: Start, subscriber: Subscribers, session: aiohttp.ClientSession
) -> None:
    sink = await subscriber()
    reply = event("test.reply", data={"answer": 42})
    hosted = Hosted(reply_answer(reply))
    url = inprocess_url("agent")
    documents = [
        trigger("requests", url, attributes={"type": "test.event"}),
        trigger("replies", sink.url, attributes={"type": "test.reply"}),
    ]
    broker = await start(documents, {url: hosted})
    assert await post(session, broker.url(), event()) == 202
    await async_wait_until(lambda: sink.arrivals, message="the reply at the sink")
    (routed,) = sink.events()
    assert (routed.id, routed.data) == (reply.id, {"answer": 42})
    # The reply path decrements the TTL, as for an HTTP subscriber's reply.
    assert int(str(routed.attributes["knativebrokerttl"])) == 254


@pytest.mark.parametrize(
    "failure",
    [
        (500, [], b'{"error":"boom"}'),
        (503, [], b""),
        RuntimeError("the subscriber crashed"),
    ],
    ids=["500", "503", "exception"],
)
async def test_failures_are_retried_by_the_triggers_policy(
    start: Start, session: aiohttp.ClientSession, failure: LocalAnswer | BaseException
) -> None:
    hosted = Hosted(failure, failure, (202, [], b""))
    url = inprocess_url("agent")
    broker = await start([trigger("t", url, delivery=fast_retries())], {url: hosted})
    sent = event()
    assert await post(session, broker.url(), sent) == 202
    await async_wait_until(lambda: len(hosted.calls) == 3, message="two retries")
    await settled(broker, "t")
    assert [c.id for c in hosted.calls] == [sent.id] * 3
    assert broker.metric("broker_filter_event_retry_count_total", trigger_name="t") == 2


async def test_no_answer_in_time_is_retried_and_the_slow_call_is_cancelled(
    start: Start, session: aiohttp.ClientSession
) -> None:
    hosted = Hosted(5.0, (202, [], b""))
    url = inprocess_url("agent")
    delivery = {**fast_retries(), "timeout": "PT0.2S"}
    broker = await start([trigger("t", url, delivery=delivery)], {url: hosted})
    assert await post(session, broker.url(), event()) == 202
    await async_wait_until(lambda: len(hosted.calls) == 2, message="the retry")
    await settled(broker, "t")
    assert hosted.cancelled == 1
    assert broker.metric("broker_filter_event_count_total", response_code="none") == 1


async def test_a_non_retryable_answer_is_dead_lettered_naming_the_in_process_url(
    start: Start, subscriber: Subscribers, session: aiohttp.ClientSession
) -> None:
    dead_letters = await subscriber()
    hosted = Hosted((422, [(b"content-type", b"application/json")], b'{"error":"validation"}'))
    url = inprocess_url("agent")
    delivery = {**fast_retries(), "deadLetterSink": {"uri": dead_letters.url}}
    broker = await start([trigger("t", url, delivery=delivery)], {url: hosted})
    sent = event()
    assert await post(session, broker.url(), sent) == 202
    await async_wait_until(lambda: dead_letters.arrivals, message="the dead letter")
    (dead,) = dead_letters.events()
    assert dead.id == sent.id
    assert dead.attributes[KNATIVE_ERROR_CODE] == "422"
    assert dead.attributes[KNATIVE_ERROR_DEST] == url
    assert len(hosted.calls) == 1  # 422 is not retried


async def test_a_service_ref_resolves_to_the_hosted_agent_and_other_urls_stay_http(
    start: Start, subscriber: Subscribers, session: aiohttp.ClientSession
) -> None:
    http_subscriber = await subscriber()
    hosted = Hosted()
    by_ref = trigger("by-ref", "", attributes={"type": "test.event"})
    by_ref["spec"]["subscriber"] = {
        "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "planner"},
        "uri": "/events",
    }
    broker = await start(
        [by_ref, trigger("over-http", http_subscriber.url)],
        {inprocess_url("planner"): hosted},
        services={"planner": inprocess_url("planner")},
    )
    sent = event()
    assert await post(session, broker.url(), sent) == 202
    await async_wait_until(
        lambda: hosted.calls and http_subscriber.arrivals, message="both deliveries"
    )
    assert [c.id for c in hosted.calls] == [sent.id]
    assert http_subscriber.ids() == [sent.id]


def test_subscribers_are_found_by_origin_whatever_the_path_or_case() -> None:
    assert origin_of("inprocess://Planner/events?x=1") == "inprocess://planner"
    assert origin_of("HTTP://127.0.0.1:8080/a") == "http://127.0.0.1:8080"
    assert origin_of(inprocess_url("worker")) == "inprocess://worker"
