"""Tracing: one span per handled event, continued from the event, carried onto everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentfn.events import CloudEvent, extensions
from agentfn.functions import Agent, Context, Settings
from agentfn.functions._tracing import configure_from_env, trace_headers
from opentelemetry import propagate
from opentelemetry.context import Context as TraceContext
from opentelemetry.context import get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel

from tests.functions._support import Sink, asgi_client, event, post, reply_of, serving

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


class Text(BaseModel):
    text: str


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def echo_agent(name: str, consumes: str, emits: str) -> Agent:
    agent = Agent(name)

    @agent.on(consumes, emits={emits: Text})
    async def handle(text: Text, ctx: Context) -> Text:
        return Text(text=f"{text.text}>{name}")

    return agent


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


async def test_a_span_per_event_with_cloudevents_attributes_continuing_the_event(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = echo_agent("upper", "text.in", "text.out").app(
        settings=Settings(idempotency="off"), tracer_provider=provider
    )
    sent = event(
        "text.in", {"text": "x"}, traceparent=TRACEPARENT, subject="doc-1", agentfnchainid="chain-9"
    )
    async with asgi_client(app) as client:
        reply = reply_of(await post(client, sent))
    (span,) = exporter.get_finished_spans()
    assert span.name == "CloudEvents Process text.in"
    assert span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "cloudevents.event_id": sent.id,
        "cloudevents.event_source": "/tests",
        "cloudevents.event_spec_version": "1.0",
        "cloudevents.event_type": "text.in",
        "cloudevents.event_subject": "doc-1",
        "agentfn.agent": "upper",
        "agentfn.chain_id": "chain-9",
        "http.response.status_code": 200,
    }
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert reply.attributes[extensions.TRACEPARENT] == traceparent_of(span)


async def test_the_http_traceparent_is_used_when_the_event_carries_none(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = echo_agent("h", "text.in", "text.out").app(
        settings=Settings(idempotency="off"), tracer_provider=provider
    )
    async with asgi_client(app) as client:
        await post(client, event("text.in", {"text": "x"}), traceparent=TRACEPARENT)
        await post(client, event("text.in", {"text": "y"}))
    with_header, without = exporter.get_finished_spans()
    assert f"{with_header.context.trace_id:032x}" == TRACE_ID
    assert without.parent is None
    assert without.context.trace_id != with_header.context.trace_id


async def test_failures_mark_the_span_and_duplicates_are_flagged(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    agent = Agent("fails")

    @agent.on("boom")
    async def boom(text: Text) -> None:
        raise ValueError("no good")

    @agent.on("fine")
    async def fine(text: Text) -> None:
        return None

    sent = event("fine", {"text": "x"})
    async with asgi_client(agent.app(settings=Settings(), tracer_provider=provider)) as client:
        await post(client, event("boom", {"text": "x"}))
        await post(client, sent)
        await post(client, sent)
    failed, first, duplicate = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"
    assert failed.attributes is not None
    assert failed.attributes["http.response.status_code"] == 500
    assert first.attributes is not None
    assert "agentfn.duplicate" not in first.attributes
    assert duplicate.attributes is not None
    assert duplicate.attributes["agentfn.duplicate"] is True


async def test_outbound_calls_and_published_events_carry_the_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    downstream, broker = Sink(default_status=200), Sink()
    agent = Agent("caller")

    @agent.on("go", emits={"went": Text})
    async def go(text: Text, ctx: Context) -> list[Text]:
        await ctx.http.get(ctx.state["downstream"])
        await ctx.publish(Text(text="direct"))
        return [Text(text="fanned")]

    async with serving(downstream) as down_url, serving(broker) as broker_url:
        app = agent.app(
            settings=Settings(idempotency="off", broker_url=broker_url), tracer_provider=provider
        )
        app.state["downstream"] = down_url
        async with asgi_client(app) as client:
            answer = await post(client, event("go", {"text": "x"}, traceparent=TRACEPARENT))
    assert answer.status_code == 202
    (span,) = exporter.get_finished_spans()
    expected = traceparent_of(span)
    assert downstream.headers[0]["traceparent"] == expected
    assert [e.attributes[extensions.TRACEPARENT] for e in broker.events] == [expected, expected]
    assert [e.data for e in broker.events] == [{"text": "direct"}, {"text": "fanned"}]


async def test_three_agents_in_a_chain_are_one_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Each reply delivered to the next agent as a broker would: one trace id, one chain id."""
    chain = [
        echo_agent("first", "step.one", "step.two"),
        echo_agent("second", "step.two", "step.three"),
        echo_agent("third", "step.three", "step.done"),
    ]
    current: CloudEvent = event("step.one", {"text": "start"})
    for agent in chain:
        app = agent.app(settings=Settings(idempotency="off"), tracer_provider=provider)
        async with asgi_client(app) as client:
            current = reply_of(await post(client, current))
    assert current.data == {"text": "start>first>second>third"}
    spans = exporter.get_finished_spans()
    assert [s.attributes["agentfn.agent"] for s in spans if s.attributes] == [
        "first",
        "second",
        "third",
    ]
    assert len({s.context.trace_id for s in spans}) == 1
    first, second, third = spans
    assert first.parent is None
    assert second.parent is not None
    assert second.parent.span_id == first.context.span_id
    assert third.parent is not None
    assert third.parent.span_id == second.context.span_id
    assert len({s.attributes["agentfn.chain_id"] for s in spans if s.attributes}) == 1
    assert current.attributes[extensions.CHAIN_ID] == spans[0].attributes["agentfn.chain_id"]  # type: ignore[index]


def test_configuration_from_the_environment_is_opt_in() -> None:
    assert configure_from_env({}) is False
    assert configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert (
        configure_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
        is False
    )


SCRIPT = """
import asyncio, json
import httpx
from pydantic import BaseModel
from agentfn.functions import Agent
from tests.functions._support import asgi_client, event, post

class Text(BaseModel):
    text: str

agent = Agent("exported")

@agent.on("in", emits={"out": Text})
async def handle(text: Text) -> Text:
    return Text(text=text.text)

async def main():
    app = agent.app(configure_tracing=True)  # settings and OTEL_* from the environment
    async with asgi_client(app) as client:
        answer = await post(client, event("in", {"text": "x"}))
        traceparent = answer.headers.get("ce-traceparent")
        print(json.dumps({"status": answer.status_code, "traceparent": traceparent}))

asyncio.run(main())
"""


def _run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.mark.slow
def test_otel_variables_turn_on_console_export() -> None:
    result = _run_script({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "exported-svc"})
    assert result.returncode == 0, result.stderr
    first_line, exported = result.stdout.split("\n", 1)
    answer = json.loads(first_line)
    assert answer["status"] == 200
    assert answer["traceparent"]
    span = json.loads(exported[: exported.rindex("}") + 1])
    assert span["name"] == "CloudEvents Process in"
    assert span["resource"]["attributes"]["service.name"] == "exported-svc"
    assert answer["traceparent"].split("-")[1] == span["context"]["trace_id"].removeprefix("0x")


@pytest.mark.slow
async def test_otel_variables_turn_on_otlp_export() -> None:
    collector = Sink(default_status=200)
    async with serving(collector) as url:
        import asyncio

        result = await asyncio.to_thread(
            _run_script,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        )
    assert result.returncode == 0, result.stderr
    assert collector.paths == ["/v1/traces"]
    assert collector.headers[0]["content-type"] == "application/x-protobuf"


class TenantPropagator(TextMapPropagator):
    """A propagator of this deployment's own: the tenant id, and a field no event can carry."""

    def inject(
        self,
        carrier: Any,
        context: TraceContext | None = None,
        setter: Setter[Any] = default_setter,
    ) -> None:
        setter.set(carrier, "agentfntenant", "tenant-7")
        setter.set(carrier, "X-Tenant-Region", "eu")  # an HTTP header, not an attribute name

    def extract(
        self,
        carrier: Any,
        context: TraceContext | None = None,
        getter: Getter[Any] = default_getter,
    ) -> TraceContext:
        return context if context is not None else get_current()

    @property
    def fields(self) -> set[str]:
        return {"agentfntenant", "X-Tenant-Region"}


@pytest.fixture
def tenant_propagator() -> Iterator[None]:
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), TenantPropagator()])
    )
    yield
    propagate.set_global_textmap(configured)


@pytest.mark.usefixtures("tenant_propagator")
async def test_the_configured_global_propagator_writes_replies_publishes_and_calls(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    downstream, broker = Sink(default_status=200), Sink()
    agent = Agent("tenanted")

    @agent.on("go", emits={"went": Text})
    async def go(text: Text, ctx: Context) -> Text:
        await ctx.http.get(ctx.state["downstream"])
        await ctx.publish(Text(text="published"))
        return Text(text="reply")

    async with serving(downstream) as down_url, serving(broker) as broker_url:
        app = agent.app(
            settings=Settings(idempotency="off", broker_url=broker_url), tracer_provider=provider
        )
        app.state["downstream"] = down_url
        async with asgi_client(app) as client:
            reply = reply_of(
                await post(client, event("go", {"text": "x"}, traceparent=TRACEPARENT))
            )
    (span,) = exporter.get_finished_spans()
    (published,) = broker.events
    for carried in (reply.attributes, published.attributes, downstream.headers[0]):
        assert carried["agentfntenant"] == "tenant-7"
        assert carried["traceparent"] == traceparent_of(span)
    # A field that cannot be an attribute is left out, and said so once.
    assert not any("region" in name for name in (*reply.attributes, *published.attributes))
    assert "x-tenant-region" not in downstream.headers[0]
    dropped = [r for r in caplog.records if "x-tenant-region" in r.getMessage().lower()]
    assert len(dropped) == 1
    assert all(r.name == "agentfn.functions._tracing" for r in dropped)


def test_the_default_propagators_write_what_the_propagator_itself_writes() -> None:
    """The shortcut for W3C-only propagation agrees with the propagator, tracestate and all."""
    span = NonRecordingSpan(
        SpanContext(
            int(TRACE_ID, 16),
            int(PARENT_SPAN, 16),
            is_remote=False,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "v1")]),
        )
    )
    expected: dict[str, str] = {}
    propagate.get_global_textmap().inject(expected, context=set_span_in_context(span))
    assert trace_headers(span) == expected
    assert expected["tracestate"] == "vendor=v1"
    assert trace_headers(INVALID_SPAN) == {}


PROPAGATORS_SCRIPT = """
import asyncio, json
from opentelemetry import baggage, context
from pydantic import BaseModel
from agentfn.functions import Agent, Context, Settings
from tests.functions._support import Sink, asgi_client, event, post, serving

class Text(BaseModel):
    text: str

agent = Agent("bagged")

@agent.on("in", emits={"out": Text})
async def handle(text: Text, ctx: Context) -> None:
    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        await ctx.publish(Text(text=text.text))
    finally:
        context.detach(token)

async def main():
    broker = Sink()
    async with serving(broker) as url:
        app = agent.app(settings=Settings(idempotency="off", broker_url=url))
        async with asgi_client(app) as client:
            sent = event("in", {"text": "x"}, traceparent="TRACEPARENT")
            answer = await post(client, sent)
    (published,) = broker.events
    print(json.dumps({"status": answer.status_code, "attributes": {
        k: str(v) for k, v in published.attributes.items()}}))

asyncio.run(main())
""".replace("TRACEPARENT", TRACEPARENT)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("propagators", "baggage_carried"),
    [("baggage,tracecontext", "tenant=t1"), ("tracecontext", None)],
)
def test_otel_propagators_chooses_what_published_events_carry(
    propagators: str, baggage_carried: str | None
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROPAGATORS_SCRIPT],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OTEL_PROPAGATORS": propagators},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == 202
    attributes = answer["attributes"]
    assert attributes["traceparent"].split("-")[1] == TRACE_ID  # the chain's trace continues
    assert attributes.get("baggage") == baggage_carried
