"""A Boolean extension passes its Trigger and then the handler's filter, on every path.

Trigger filters and handler filters compare one canonical text
(:func:`agentfn.events.attribute_text`):
``true``, never Python's ``True``. The event reaches the agent as a JSON ``true`` (structured
mode over HTTP, the in-process call over the SQLite log) or as the header text ``true``
(binary mode over HTTP, anything read back from Kafka); the handler must match it every way,
or the broker's 400 sends the event to the dead-letter sink.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.filters import compile_filter
from agentfn.brokers.inprocess import inprocess_url
from agentfn.brokers.log import EventLog
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent, to_structured
from agentfn.functions import Agent, AgentApp, Settings
from agentfn.functions._knative import trigger_documents
from pydantic import BaseModel

from tests._waiting import async_wait_until
from tests.brokers._subscribers import Subscriber
from tests.brokers._tansu import KafkaServer, kafka, kafka_log  # noqa: F401 - the fixture
from tests.brokers.contract import RunningBroker, settled, trigger
from tests.functions._support import serving


class Order(BaseModel):
    sku: str


class Expedited(BaseModel):
    sku: str


def flagger(handled: list[Any]) -> Agent:
    agent = Agent("flagger")

    @agent.on("t.order", filters={"urgent": "true"}, emits={"t.expedited": Expedited})
    async def expedite(order: Order) -> Expedited:
        handled.append(order.sku)
        return Expedited(sku=order.sku)

    return agent


def test_the_handler_and_the_trigger_read_a_boolean_as_true() -> None:
    (handler,) = flagger([]).spec.handlers
    (document,) = trigger_documents(flagger([]).spec)
    trigger_filter = compile_filter(None, document["spec"]["filters"])
    for value in (True, "true"):
        event = {"type": "t.order", "urgent": value}
        assert trigger_filter(event), value
        assert handler.matches(event), value
    for value in (False, "false", "True"):
        event = {"type": "t.order", "urgent": value}
        assert not trigger_filter(event), value
        assert not handler.matches(event), value


@contextlib.asynccontextmanager
async def broker_with(
    app: AgentApp, event_log: EventLog, *, over_http: bool, sink: Subscriber
) -> AsyncIterator[RunningBroker]:
    """The broker routing the agent's Triggers to ``app`` (over HTTP or in process), replies
    of type ``t.expedited`` to ``sink``, and anything dead-lettered to ``sink`` as well."""
    async with contextlib.AsyncExitStack() as stack:
        if over_http:
            services = {"flagger": await stack.enter_async_context(serving(app))}
            local = None
        else:
            services = {"flagger": inprocess_url("flagger")}
            local = {inprocess_url("flagger"): app.deliver}
        documents = trigger_documents(app.spec, dead_letter_sink=sink.url)
        documents.append(trigger("replies", sink.url, attributes={"type": "t.expedited"}))
        server = BrokerServer(
            parse_documents(documents), event_log, services=services, local_subscribers=local
        )
        await server.start()
        try:
            yield RunningBroker(server, await server.listen("127.0.0.1", 0))
        finally:
            await server.stop(grace=0.5)


PATHS = [
    pytest.param("http", "", id="http-binary"),
    # A subject binary mode would percent-encode: delivered structured, the Boolean stays JSON.
    pytest.param("http", "orders/42 shipped", id="http-structured"),
    pytest.param("in-process", "", id="in-process"),
    pytest.param("kafka", "orders/42 shipped", id="kafka", marks=pytest.mark.kafka),
]


@pytest.mark.parametrize(("path", "subject"), PATHS)
async def test_a_boolean_extension_passes_the_trigger_and_the_handler_filter(
    path: str, subject: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    handled: list[Any] = []
    app = flagger(handled).app(settings=Settings(idempotency="off"))
    event_log: EventLog
    if path == "kafka":
        server: KafkaServer = request.getfixturevalue("kafka")
        event_log = kafka_log(server)
    else:
        event_log = SqliteEventLog(tmp_path / "log", fsync=False)
    sink = await Subscriber(name="sink").start()
    extra = {"subject": subject} if subject else {}
    urgent = CloudEvent.new("t.order", "/shop", {"sku": "a1"}, urgent=True, **extra)
    calm = CloudEvent.new("t.order", "/shop", {"sku": "b2"}, urgent=False, **extra)
    try:
        async with (
            broker_with(app, event_log, over_http=path == "http", sink=sink) as broker,
            aiohttp.ClientSession() as session,
        ):
            for sent in (calm, urgent):
                # Structured: the Boolean is stored as JSON true, not as the text of a header.
                headers, body = to_structured(sent)
                async with session.post(broker.url(), headers=headers, data=body) as response:
                    assert response.status == 202
            await async_wait_until(lambda: sink.arrivals, message="the reply at the sink")
            for each in broker.server.topology.triggers:
                await settled(broker, each.name)
    finally:
        await sink.stop()
        await app.aclose()
    # The reply, not a dead letter: the handler's filter matched what the Trigger passed.
    (arrived,) = sink.events()
    assert (arrived.type, arrived.data) == ("t.expedited", {"sku": "a1"})
    assert handled == ["a1"], "the Trigger filters out urgent=false; the handler ran once"
