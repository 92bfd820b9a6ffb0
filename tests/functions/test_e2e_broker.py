"""Agents behind the embedded broker, all on loopback: the chain as Knative would run it.

The broker is the embedded one (``brokers``), composed here as ``agentfn dev`` does; the
agents only ever reach it over HTTP, at its ingress URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.server import BrokerServer
from agentfn.events import extensions
from agentfn.functions import Agent, AgentApp, Context, Delivery, Settings
from agentfn.functions._knative import trigger_documents
from agentfn.functions.agents import _text, aggregator, planner, worker
from agentfn.functions.agents.models import REPORT_READY, TASK_SUBMITTED
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from tests._servers import free_port, read_body
from tests._waiting import async_wait_until
from tests.functions._support import ASGIApp, Receive, Scope, Send, Sink, binary, event, serving

pytestmark = pytest.mark.slow


def sink_trigger(name: str, event_type: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {
            "broker": "default",
            "filter": {"attributes": {"type": event_type}},
            "subscriber": {"uri": url},
        },
    }


@contextlib.asynccontextmanager
async def broker(
    agents: Mapping[Agent, ASGIApp], sinks: Mapping[str, str], data_dir: Path, port: int
) -> AsyncIterator[str]:
    """The embedded broker routing to ``agents`` (by their Triggers) and to sinks by type."""
    async with contextlib.AsyncExitStack() as stack:
        services = {
            agent.name: await stack.enter_async_context(serving(app))
            for agent, app in agents.items()
        }
        documents = [d for agent in agents for d in trigger_documents(agent.spec)]
        documents += [
            sink_trigger(f"sink-{i}", event_type, url)
            for i, (event_type, url) in enumerate(sinks.items())
        ]
        server = BrokerServer(
            parse_documents(documents), SqliteEventLog(data_dir, fsync=False), services=services
        )
        await server.start()
        await server.listen("127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}/default/default"
        finally:
            await server.stop()


async def publish(ingress: str, sent: Any) -> None:
    headers, body = binary(sent)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(ingress, headers=headers, content=body)).status_code == 202


async def test_planner_workers_aggregator_through_the_broker_are_one_trace(
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    port = free_port()
    settings = Settings(broker_url=f"http://127.0.0.1:{port}/default/default")
    agents = {
        a: a.app(settings=settings, tracer_provider=provider)
        for a in (planner.agent, worker.agent, aggregator.agent)
    }
    reports = Sink()
    text = " ".join(f"Sentence {i} talks about brokers and agents." for i in range(12))
    async with (
        serving(reports) as sink_url,
        broker(agents, {REPORT_READY: sink_url}, tmp_path, port) as ingress,
    ):
        await publish(ingress, event(TASK_SUBMITTED, {"text": text, "max_words_per_chunk": 14}))
        await async_wait_until(lambda: reports.events, timeout=20, message="the report")
    for app in agents.values():
        await app.aclose()

    (report,) = reports.events
    chunks = _text.chunk(text, 14)
    assert report.data["chunks"] == len(chunks)
    assert report.data["words"] == len(_text.words(text))
    spans = exporter.get_finished_spans()
    handled = [s.attributes["agentfn.agent"] for s in spans if s.attributes]
    assert sorted(handled) == sorted(
        ["planner"] + ["worker"] * len(chunks) + ["aggregator"] * len(chunks)
    )
    assert len({s.context.trace_id for s in spans}) == 1  # one chain, one trace
    chain_ids = {s.attributes["agentfn.chain_id"] for s in spans if s.attributes}
    assert chain_ids == {report.attributes[extensions.CHAIN_ID]}
    trace_id = report.attributes[extensions.TRACEPARENT].split("-")[1]  # type: ignore[union-attr]
    assert int(trace_id, 16) == spans[0].context.trace_id


class Payment(BaseModel):
    account: str
    cents: int


class Paid(BaseModel):
    account: str
    balance: int


class AckLosingProxy:
    """Forwards to the agent, then loses the first answer (the broker sees a 502)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forwarded = 0
        self.dropped = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k not in ("host", "content-length")]
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(self.upstream, headers=headers, content=body)
        self.forwarded += 1
        if self.dropped == 0:
            self.dropped += 1
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"the ack got lost"})
            return
        out = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k != "content-length"]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})


async def test_a_lost_ack_is_redelivered_the_side_effect_happens_once_and_the_chain_goes_on(
    tmp_path: Path,
) -> None:
    balances: dict[str, int] = {}
    charges: list[str] = []
    agent = Agent("payments", delivery=Delivery(retry=3, backoff_delay=timedelta(milliseconds=50)))

    @agent.on("payment.requested", emits={"payment.done": Paid})
    async def pay(payment: Payment, ctx: Context) -> Paid:
        charges.append(ctx.event.id)  # the side effect
        balances[payment.account] = balances.get(payment.account, 0) - payment.cents
        return Paid(account=payment.account, balance=balances[payment.account])

    port = free_port()
    app: AgentApp = agent.app(
        settings=Settings(broker_url=f"http://127.0.0.1:{port}/default/default")
    )
    done = Sink()
    async with serving(app) as agent_url, serving(done) as done_url:
        proxy = AckLosingProxy(agent_url)
        async with broker({agent: proxy}, {"payment.done": done_url}, tmp_path, port) as ingress:
            sent = event("payment.requested", {"account": "ada", "cents": 250})
            await publish(ingress, sent)
            await async_wait_until(lambda: done.events, timeout=20, message="the reply event")
    await app.aclose()
    assert proxy.forwarded == 2  # the broker delivered twice (the reply came from the second)
    assert charges == [sent.id]  # but the payment ran once
    (reply,) = done.events  # and the chain continued, once
    assert reply.data == {"account": "ada", "balance": -250}
