"""Deliveries to subscribers hosted in the broker's process follow the HTTP path's rules.

An in-process subscriber answers (status, headers, body) as an HTTP subscriber would; the
broker must apply the same Knative semantics to it: 2xx delivered, a reply routed on, retries
with the Trigger's backoff, an exception or a timeout taken as "no answer" (retried), a
non-retryable answer dead-lettered with the error extensions naming the in-process URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from brokers.config import parse_documents
from brokers.embedded import SqliteEventLog
from brokers.inprocess import LocalAnswer, LocalSubscriber, inprocess_url, origin_of
from brokers.server import BrokerServer
from events import CloudEvent, to_binary
from events.extensions import KNATIVE_ERROR_CODE, KNATIVE_ERROR_DEST
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Subscriber
from tests.brokers.contract import event, trigger


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


async def start(
    tmp_path: Path,
    documents: Sequence[dict[str, Any]],
    local: dict[str, LocalSubscriber],
    services: dict[str, str] | None = None,
) -> tuple[BrokerServer, str]:
    server = BrokerServer(
        parse_documents(documents),
        SqliteEventLog(tmp_path, fsync=False),
        services=services,
        local_subscribers=local,
    )
    await server.start()
    port = await server.listen("127.0.0.1", 0)
    return server, f"http://127.0.0.1:{port}/default/default"


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


def metric(server: BrokerServer, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in server.metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_event_is_handed_over_as_stored_without_an_http_request(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    hosted = Hosted()
    url = inprocess_url("agent")
    server, ingress = await start(tmp_path, [trigger("t", url)], {url: hosted})
    try:
        sent = event(data={"k": "v"}, myext="x")
        assert await post(session, ingress, sent) == 202
        await async_wait_until(lambda: hosted.calls, message="the in-process delivery")
        (got,) = hosted.calls
        assert (got.id, got.source, got.type, got.data) == (
            sent.id,
            sent.source,
            sent.type,
            {"k": "v"},
        )
        assert got.attributes["myext"] == "x"
        assert int(str(got.attributes["knativebrokerttl"])) == 255
        await async_wait_until(
            lambda: metric(server, "broker_filter_event_count_total", response_code="202") == 1,
            message="the delivery counted as a 202",
        )
    finally:
        await server.stop()


async def test_a_reply_is_routed_on_like_an_http_reply(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    sink = await Subscriber().start()
    reply = event("test.reply", data={"answer": 42})
    hosted = Hosted(reply_answer(reply))
    url = inprocess_url("agent")
    documents = [
        trigger("requests", url, attributes={"type": "test.event"}),
        trigger("replies", sink.url, attributes={"type": "test.reply"}),
    ]
    server, ingress = await start(tmp_path, documents, {url: hosted})
    try:
        assert await post(session, ingress, event()) == 202
        await async_wait_until(lambda: sink.arrivals, message="the reply at the sink")
        (routed,) = sink.events()
        assert (routed.id, routed.data) == (reply.id, {"answer": 42})
        # The reply path decrements the TTL, as for an HTTP subscriber's reply.
        assert int(str(routed.attributes["knativebrokerttl"])) == 254
    finally:
        await server.stop()
        await sink.stop()


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
    tmp_path: Path, session: aiohttp.ClientSession, failure: LocalAnswer | BaseException
) -> None:
    hosted = Hosted(failure, failure, (202, [], b""))
    url = inprocess_url("agent")
    server, ingress = await start(
        tmp_path, [trigger("t", url, delivery=fast_retries())], {url: hosted}
    )
    try:
        sent = event()
        assert await post(session, ingress, sent) == 202
        await async_wait_until(lambda: len(hosted.calls) == 3, message="two retries")
        await settled_trigger(server, "t")
        assert [c.id for c in hosted.calls] == [sent.id] * 3
        assert metric(server, "broker_filter_event_retry_count_total", trigger_name="t") == 2
    finally:
        await server.stop()


async def test_no_answer_in_time_is_retried_and_the_slow_call_is_cancelled(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    hosted = Hosted(5.0, (202, [], b""))
    url = inprocess_url("agent")
    delivery = {**fast_retries(), "timeout": "PT0.2S"}
    server, ingress = await start(tmp_path, [trigger("t", url, delivery=delivery)], {url: hosted})
    try:
        assert await post(session, ingress, event()) == 202
        await async_wait_until(lambda: len(hosted.calls) == 2, message="the retry")
        await settled_trigger(server, "t")
        assert hosted.cancelled == 1
        assert metric(server, "broker_filter_event_count_total", response_code="none") == 1
    finally:
        await server.stop()


async def test_a_non_retryable_answer_is_dead_lettered_naming_the_in_process_url(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    dead_letters = await Subscriber().start()
    hosted = Hosted((422, [(b"content-type", b"application/json")], b'{"error":"validation"}'))
    url = inprocess_url("agent")
    delivery = {**fast_retries(), "deadLetterSink": {"uri": dead_letters.url}}
    server, ingress = await start(tmp_path, [trigger("t", url, delivery=delivery)], {url: hosted})
    try:
        sent = event()
        assert await post(session, ingress, sent) == 202
        await async_wait_until(lambda: dead_letters.arrivals, message="the dead letter")
        (dead,) = dead_letters.events()
        assert dead.id == sent.id
        assert dead.attributes[KNATIVE_ERROR_CODE] == "422"
        assert dead.attributes[KNATIVE_ERROR_DEST] == url
        assert len(hosted.calls) == 1  # 422 is not retried
    finally:
        await server.stop()
        await dead_letters.stop()


async def test_a_service_ref_resolves_to_the_hosted_agent_and_other_urls_stay_http(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    http_subscriber = await Subscriber().start()
    hosted = Hosted()
    by_ref = trigger("by-ref", "", attributes={"type": "test.event"})
    by_ref["spec"]["subscriber"] = {
        "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "planner"},
        "uri": "/events",
    }
    documents = [by_ref, trigger("over-http", http_subscriber.url)]
    server, ingress = await start(
        tmp_path,
        documents,
        {inprocess_url("planner"): hosted},
        services={"planner": inprocess_url("planner")},
    )
    try:
        sent = event()
        assert await post(session, ingress, sent) == 202
        await async_wait_until(
            lambda: hosted.calls and http_subscriber.arrivals, message="both deliveries"
        )
        assert [c.id for c in hosted.calls] == [sent.id]
        assert http_subscriber.ids() == [sent.id]
    finally:
        await server.stop()
        await http_subscriber.stop()


def test_subscribers_are_found_by_origin_whatever_the_path_or_case() -> None:
    assert origin_of("inprocess://Planner/events?x=1") == "inprocess://planner"
    assert origin_of("HTTP://127.0.0.1:8080/a") == "http://127.0.0.1:8080"
    assert origin_of(inprocess_url("worker")) == "inprocess://worker"


async def settled_trigger(server: BrokerServer, name: str) -> None:
    await async_wait_until(
        lambda: metric(server, "broker_trigger_backlog", trigger_name=name) == 0,
        message=f"trigger {name} to settle",
    )
