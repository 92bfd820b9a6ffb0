"""Strings that binary mode would percent-encode arrive intact, end to end.

The HTTP binding (3.1.3.2) makes a binary-mode sender percent-encode space, ``"``, ``%`` and
everything outside printable ASCII, and the JavaScript, Go and Java SDKs never decode: they
would read ``orders/42%20shipped``. Every writer here (broker deliveries and dead letters,
agents' replies and publishes, ``agentfn send``) sends such an event in structured mode, whose
JSON body carries the string exactly, and any other event in binary mode; a Trigger's or
Broker's ``delivery.format`` forces one mode as Knative does.

The subscribers here record the raw request and read it as a non-decoding SDK would: the
string is checked in the JSON body or the raw header, not only after our own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from agentfn.brokers._serving import serve_in_loop
from agentfn.brokers.config import ConfigError, parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent, DeliveryFormat, from_http, to_structured
from agentfn.events.extensions import CHAIN_ID, KNATIVE_ERROR_CODE
from agentfn.events.http import STRUCTURED_CONTENT_TYPE
from agentfn.functions import Agent, Context, Settings
from agentfn.functions._knative import trigger_documents
from agentfn.functions.cli import app as cli
from agentfn.functions.client import send_event
from pydantic import BaseModel
from typer.testing import CliRunner

from tests._servers import free_port, read_body
from tests._waiting import async_wait_until
from tests.brokers.contract import RunningBroker, settled, trigger
from tests.functions._support import serving

#: The strings the HTTP binding requires percent-encoding for, and their encoded form.
MATRIX = {
    "space": ("orders/42 shipped", "orders/42%20shipped"),
    "percent": ("100% done", "100%25%20done"),
    "quote": ('say "hi"', "say%20%22hi%22"),
    "non-ascii": ("caf\u00e9 \U0001f30e", "caf%C3%A9%20%F0%9F%8C%8E"),
}
SAFE = "orders/42-shipped"


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes

    @property
    def structured(self) -> bool:
        return self.headers.get("content-type") == STRUCTURED_CONTENT_TYPE

    @property
    def binary(self) -> bool:
        return "ce-id" in self.headers and not self.structured

    def attribute_as_an_sdk_reads_it(self, name: str) -> Any:
        """The attribute as the JS/Go/Java SDKs read it: the JSON member, or the raw header."""
        if self.structured:
            return json.loads(self.body)[name]
        return self.headers[f"ce-{name}"]

    def event(self) -> CloudEvent:
        (parsed,) = from_http(self.headers, self.body)
        return parsed


@dataclass
class RawSubscriber:
    """A loopback HTTP subscriber recording each request as it came; answers ``status``."""

    status: int = 202
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(Request(headers, body))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> RawSubscriber:
        self._server, self.port = await serve_in_loop(self, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown()


Start = Callable[..., Awaitable[RunningBroker]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    servers: list[BrokerServer] = []

    async def starting(
        documents: Sequence[Mapping[str, Any]],
        services: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> RunningBroker:
        server = BrokerServer(
            parse_documents(documents),
            SqliteEventLog(tmp_path / f"log{len(servers)}", fsync=False),
            services=services,
        )
        await server.start()
        servers.append(server)
        return RunningBroker(server, await server.listen("127.0.0.1", port))

    yield starting
    for server in servers:
        await server.stop(grace=0.5)


@pytest.fixture
async def subscriber() -> AsyncIterator[Callable[..., Awaitable[RawSubscriber]]]:
    started: list[RawSubscriber] = []

    async def starting(status: int = 202) -> RawSubscriber:
        started.append(await RawSubscriber(status).start())
        return started[-1]

    yield starting
    for sub in started:
        await sub.stop()


def broker_doc(delivery: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "default"},
        "spec": {"delivery": dict(delivery)},
    }


async def ingest(broker: RunningBroker, *events: CloudEvent) -> None:
    # Structured, so the ingress reads each string exactly whatever the delivery does.
    async with aiohttp.ClientSession() as session:
        for sent in events:
            headers, body = to_structured(sent)
            async with session.post(broker.url(), headers=headers, data=body) as response:
                assert response.status == 202


def order(subject: str, **extensions: object) -> CloudEvent:
    return CloudEvent.new("t.order", "/shop", {"sku": "a1"}, subject=subject, **extensions)


# ---------------------------------------------------------------------- the broker's deliveries


@pytest.mark.parametrize("case", list(MATRIX))
async def test_a_delivery_whose_string_needs_encoding_goes_structured_and_arrives_intact(
    start: Start, subscriber: Callable[..., Awaitable[RawSubscriber]], case: str
) -> None:
    value, _ = MATRIX[case]
    sub = await subscriber()
    broker = await start([trigger("all", sub.url)])
    needs, safe = order(value, comexamplenote=value), order(SAFE)
    await ingest(broker, needs, safe)
    await async_wait_until(lambda: len(sub.requests) == 2, message="both deliveries")
    by_id = {r.event().id: r for r in sub.requests}
    structured, binary = by_id[needs.id], by_id[safe.id]
    assert structured.structured
    assert not any(name.startswith("ce-") for name in structured.headers)
    assert structured.attribute_as_an_sdk_reads_it("subject") == value
    assert structured.attribute_as_an_sdk_reads_it("comexamplenote") == value
    assert structured.event().attributes["subject"] == value
    # The rest stays in binary mode, its header read as it is.
    assert binary.binary
    assert binary.attribute_as_an_sdk_reads_it("subject") == SAFE
    assert binary.headers["content-type"] == "application/json"


@pytest.mark.parametrize("case", list(MATRIX))
async def test_delivery_format_binary_percent_encodes_as_the_binding_requires(
    start: Start, subscriber: Callable[..., Awaitable[RawSubscriber]], case: str
) -> None:
    value, encoded = MATRIX[case]
    sub = await subscriber()
    broker = await start([trigger("all", sub.url, delivery={"format": "binary"})])
    sent = order(value)
    await ingest(broker, sent)
    await async_wait_until(lambda: sub.requests, message="the delivery")
    (arrived,) = sub.requests
    assert arrived.binary
    assert arrived.headers["ce-subject"] == encoded
    assert arrived.event().attributes["subject"] == value  # a decoding reader gets it back


@pytest.mark.parametrize("where", ["trigger", "broker"])
async def test_delivery_format_json_sends_even_a_safe_event_structured(
    start: Start, subscriber: Callable[..., Awaitable[RawSubscriber]], where: str
) -> None:
    sub = await subscriber()
    json_delivery = {"format": "json"}
    documents = (
        [trigger("all", sub.url, delivery=json_delivery)]
        if where == "trigger"
        else [broker_doc(json_delivery), trigger("all", sub.url)]
    )
    broker = await start(documents)
    assert broker.server.topology.delivery_for(broker.server.topology.triggers[0]).format is (
        DeliveryFormat.JSON
    )
    sent = order(SAFE, flag=True)
    await ingest(broker, sent)
    await async_wait_until(lambda: sub.requests, message="the delivery")
    (arrived,) = sub.requests
    assert arrived.structured
    assert arrived.attribute_as_an_sdk_reads_it("subject") == SAFE
    assert arrived.attribute_as_an_sdk_reads_it("flag") is True


def test_a_bad_delivery_format_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"Trigger default/t: spec\.delivery\.format: 'xml'"):
        parse_documents([trigger("t", "http://x/", delivery={"format": "xml"})])
    with pytest.raises(ConfigError, match=r"Broker default/default: spec\.delivery\.format"):
        parse_documents([broker_doc({"format": "JSON "})])


@pytest.mark.parametrize(
    ("delivery", "structured"), [({}, True), ({"format": "binary"}, False)], ids=["auto", "binary"]
)
async def test_dead_letters_follow_the_same_rule(
    start: Start,
    subscriber: Callable[..., Awaitable[RawSubscriber]],
    delivery: dict[str, Any],
    structured: bool,
) -> None:
    value, encoded = MATRIX["space"]
    refusing = await subscriber(status=422)
    dead_letters = await subscriber()
    broker = await start(
        [
            trigger(
                "all",
                refusing.url,
                delivery={**delivery, "retry": 0, "deadLetterSink": {"uri": dead_letters.url}},
            )
        ]
    )
    await ingest(broker, order(value))
    await async_wait_until(lambda: dead_letters.requests, message="the dead letter")
    await settled(broker, "all")
    (letter,) = dead_letters.requests
    assert letter.event().attributes[KNATIVE_ERROR_CODE] == "422"
    assert letter.structured is structured
    assert letter.attribute_as_an_sdk_reads_it("subject") == (value if structured else encoded)


# --------------------------------------------------------------------- agents' replies, publishes


class Order(BaseModel):
    sku: str


class Shipped(BaseModel):
    sku: str


def shipper() -> Agent:
    agent = Agent("shipper")

    @agent.on("t.order", emits={"t.shipped": Shipped})
    async def ship(received: Order) -> Shipped:
        return Shipped(sku=received.sku)

    @agent.on("t.bulk", emits={"t.shipped": Shipped})
    async def ship_all(received: Order, ctx: Context) -> list[Shipped]:
        return [Shipped(sku=received.sku)]

    return agent


@pytest.mark.parametrize("case", [*MATRIX, "safe"])
@pytest.mark.parametrize("event_type", ["t.order", "t.bulk"], ids=["reply", "publish"])
async def test_an_agents_reply_and_publish_carry_the_chain_id_intact_through_the_broker(
    start: Start,
    subscriber: Callable[..., Awaitable[RawSubscriber]],
    tmp_path: Path,
    case: str,
    event_type: str,
) -> None:
    # The chain id comes from the incoming event and is carried onto the reply (200) and the
    # published events (POSTed by the agent to the ingress).
    value = SAFE if case == "safe" else MATRIX[case][0]
    sink = await subscriber()
    agent = shipper()
    port = free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    async with contextlib.AsyncExitStack() as stack:
        app = agent.app(settings=Settings(idempotency="off", broker_url=ingress))
        stack.push_async_callback(app.aclose)
        agent_url = await stack.enter_async_context(serving(app))
        documents = [
            *trigger_documents(agent.spec),
            trigger("shipped", sink.url, attributes={"type": "t.shipped"}),
        ]
        broker = await start(documents, services={"shipper": agent_url}, port=port)
        sent = CloudEvent.new(event_type, "/shop", {"sku": "a1"}, **{CHAIN_ID: value})
        await ingest(broker, sent)
        await async_wait_until(lambda: sink.requests, message="the agent's event at the sink")
        (arrived,) = sink.requests
    assert arrived.event().type == "t.shipped"
    assert arrived.attribute_as_an_sdk_reads_it(CHAIN_ID) == value
    assert arrived.structured is (case != "safe")


@pytest.mark.parametrize("case", [*MATRIX, "safe"])
async def test_the_agents_own_answer_and_publish_pick_the_mode(
    subscriber: Callable[..., Awaitable[RawSubscriber]], case: str
) -> None:
    # What the agent itself puts on the wire, before any broker re-decides the mode.
    value = SAFE if case == "safe" else MATRIX[case][0]
    ingress = await subscriber()
    agent = shipper()
    app = agent.app(settings=Settings(idempotency="off", broker_url=ingress.url))
    reply_answers: list[Request] = []
    try:
        async with serving(app) as agent_url, aiohttp.ClientSession() as session:
            for event_type in ("t.order", "t.bulk"):
                sent = CloudEvent.new(event_type, "/shop", {"sku": "a1"}, **{CHAIN_ID: value})
                headers, body = to_structured(sent)
                async with session.post(agent_url, headers=headers, data=body) as response:
                    raw = {k.lower(): v for k, v in response.headers.items()}
                    reply_answers.append(Request(raw, await response.read()))
    finally:
        await app.aclose()
    reply, published = reply_answers[0], ingress.requests[0]
    assert reply_answers[1].body == b""  # the list was published, the answer is a bare 202
    for request in (reply, published):
        assert request.structured is (case != "safe")
        assert request.binary is (case == "safe")
        assert request.attribute_as_an_sdk_reads_it(CHAIN_ID) == value
        assert request.event().data == {"sku": "a1"}


# -------------------------------------------------------------------------------- agentfn send


@pytest.mark.parametrize(
    ("chosen", "subject", "structured"),
    [
        (None, MATRIX["space"][0], True),
        (None, SAFE, False),
        (DeliveryFormat.JSON, SAFE, True),
        (DeliveryFormat.BINARY, MATRIX["space"][0], False),
    ],
    ids=["auto-needs-encoding", "auto-safe", "json", "binary"],
)
async def test_send_event_picks_the_mode_or_takes_the_one_forced(
    subscriber: Callable[..., Awaitable[RawSubscriber]],
    chosen: DeliveryFormat | None,
    subject: str,
    structured: bool,
) -> None:
    sub = await subscriber()
    sent = order(subject)
    result = await asyncio.to_thread(send_event, sub.url, sent, format=chosen)
    assert result.status == 202
    (arrived,) = sub.requests
    assert arrived.structured is structured
    expected = subject if structured or chosen is None else MATRIX["space"][1]
    assert arrived.attribute_as_an_sdk_reads_it("subject") == expected
    assert arrived.event().attributes["subject"] == subject


@pytest.mark.parametrize(
    ("flag", "structured"),
    [([], True), (["--binary"], False), (["--structured"], True)],
    ids=["auto", "binary", "structured"],
)
async def test_the_send_command_follows_the_same_rule(
    subscriber: Callable[..., Awaitable[RawSubscriber]], flag: list[str], structured: bool
) -> None:
    sub = await subscriber()
    args = ["send", sub.url, "--type", "t.order", "-e", "subject=orders/42 shipped", *flag]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    (arrived,) = sub.requests
    assert arrived.structured is structured
    assert arrived.event().attributes["subject"] == "orders/42 shipped"
