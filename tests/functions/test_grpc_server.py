"""The gRPC front door against a real ``grpc.aio`` server on loopback (no stubbed servicer).

Each case dials :class:`GrpcServer` over a socket with the generated client stubs, as a peer
agent would; ``agentfn serve --grpc-port`` and ``--protocol h2c`` run as real subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from agentfn.events import CloudEvent, extensions, from_http, from_protobuf, to_protobuf
from agentfn.events.proto import agent_pb2, agent_pb2_grpc, cloudevents_pb2
from agentfn.functions import (
    Agent,
    AgentDefinitionError,
    BreakerPolicy,
    CircuitBreakers,
    Context,
    RetryableError,
    Settings,
)
from agentfn.functions._grpc import SERVICE_NAME, GrpcServer
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.functions._support import binary, serving

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Question(BaseModel):
    n: int


class Answer(BaseModel):
    n: int


class Rig:
    """One agent with a handler per behaviour, and what its handlers did."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        agent = Agent("rpc-rig")
        emits = {"t.answered": Answer}

        @agent.on("t.ask", emits=emits)
        async def ask(question: Question, ctx: Context) -> Answer:
            self.runs.append(ctx.event.id)
            return Answer(n=question.n + 1)

        @agent.on("t.note")
        async def note(question: Question, ctx: Context) -> None:
            self.runs.append(ctx.event.id)

        @agent.on("t.gated", emits=emits)
        async def gated(question: Question, ctx: Context) -> Answer:
            self.runs.append(ctx.event.id)
            self.entered.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return Answer(n=question.n)

        @agent.on("t.busy")
        async def busy(question: Question) -> None:
            raise RetryableError("the model server is warming up", retry_after=3)

        @agent.on("t.guarded")
        async def guarded(question: Question, ctx: Context) -> None:
            async with ctx.guard("llm"):
                raise RuntimeError("llm refused the prompt")

        @agent.on("t.count", emits=emits)
        async def count(question: Question, ctx: Context) -> AsyncIterator[Answer]:
            self.runs.append(ctx.event.id)
            for index in range(question.n):
                yield Answer(n=index)
                if index == 0:
                    # The next one only once the caller has the first: streamed as yielded.
                    await self.gate.wait()

        self.agent = agent


@contextlib.asynccontextmanager
async def served(
    rig: Rig, **app_options: Any
) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    app_options.setdefault("settings", Settings(idempotency="embedded"))
    app = rig.agent.app(**app_options)
    async with (
        app,
        GrpcServer(app, host="127.0.0.1") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        yield server, channel


def ask(n: int = 1, type_: str = "t.ask", **attributes: object) -> CloudEvent:
    return CloudEvent.new(type_, "/tests/caller", {"n": n}, **attributes)


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {key: str(value) for key, value in error.trailing_metadata() or ()}


async def failed_call(
    channel: grpc.aio.Channel, event: CloudEvent | bytes, **options: Any
) -> grpc.aio.AioRpcError:
    raw = channel.unary_unary("/agentfn.v1.Agent/Call")
    payload = event if isinstance(event, bytes) else to_protobuf(event).SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(payload, **options)
    return caught.value


# -- unary ---------------------------------------------------------------------------------------


async def test_a_unary_call_answers_with_the_reply_event() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        question = ask(41)
        reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(question))
    assert reply.HasField("event")
    answer = from_protobuf(reply.event)
    assert (answer.type, answer.source, answer.data) == (
        "t.answered",
        "/agentfn/agents/rpc-rig",
        {"n": 42},
    )
    assert rig.runs == [question.id]


async def test_a_handler_that_returns_nothing_answers_a_reply_without_event() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(ask(type_="t.note")))
    assert not reply.HasField("event")
    assert len(rig.runs) == 1


async def test_a_retried_call_is_answered_from_the_record_byte_for_byte() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        raw = channel.unary_unary("/agentfn.v1.Agent/Call")  # bytes out, undecoded
        request = to_protobuf(ask(7)).SerializeToString()
        first = await raw(request)
        again = await raw(request)
    assert first == again
    assert len(rig.runs) == 1  # one side effect
    assert agent_pb2.Reply.FromString(first).event.type == "t.answered"


async def test_http_and_grpc_share_one_runtime_and_its_records(tmp_path: Path) -> None:
    """The same event by both doors of one app runs once: one pipeline, one store."""
    rig = Rig()
    app = rig.agent.app(settings=Settings(idempotency="embedded"))
    async with app, GrpcServer(app, host="127.0.0.1") as server, serving(app) as base:
        question = ask(2)
        headers, body = binary(question)
        async with httpx.AsyncClient(base_url=base) as client:
            posted = await client.post("/", headers=headers, content=body)
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(question))
    over_http = from_http(list(posted.headers.items()), posted.content)[0]
    assert from_protobuf(reply.event).id == over_http.id
    assert rig.runs == [question.id]


# -- streaming -----------------------------------------------------------------------------------


async def test_a_session_answers_each_event_in_order() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        session = agent_pb2_grpc.AgentStub(channel).Session()
        for n in (1, 2, 3):
            await session.write(to_protobuf(ask(n)))
        await session.write(to_protobuf(ask(type_="t.note")))  # no reply: nothing out
        await session.write(to_protobuf(ask(9)))
        await session.done_writing()
        replies = [from_protobuf(message).data async for message in session]
        code = await session.code()
    assert replies == [{"n": 2}, {"n": 3}, {"n": 4}, {"n": 10}]
    assert code is grpc.StatusCode.OK


async def test_an_async_generator_streams_each_event_as_it_is_yielded() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        session = agent_pb2_grpc.AgentStub(channel).Session()
        started = ask(3, type_="t.count")
        await session.write(to_protobuf(started))
        # The handler waits after its first yield until we hold it: no gate, no second event.
        first = from_protobuf(await asyncio.wait_for(session.read(), timeout=10))
        rig.gate.set()
        rest = [from_protobuf(await session.read()) for _ in range(2)]
        await session.done_writing()
        assert await session.read() is grpc.aio.EOF
    streamed = [first, *rest]
    assert [e.data for e in streamed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {e.type for e in streamed} == {"t.answered"}
    # Ids derived from the incoming event and the position: a rerun yields the same ones.
    assert len({e.id for e in streamed}) == 3
    assert all(e.attributes[extensions.CHAIN_ID] for e in streamed)


async def test_a_duplicate_of_a_streamed_run_gets_the_same_events_again() -> None:
    rig = Rig()
    rig.gate.set()
    async with served(rig) as (_, channel):
        raw_session = channel.stream_stream("/agentfn.v1.Agent/Session")  # bytes out
        request = to_protobuf(ask(3, type_="t.count")).SerializeToString()
        runs = []
        for _ in range(2):
            session = raw_session()
            await session.write(request)
            runs.append([await session.read() for _ in range(3)])
            await session.done_writing()
            assert await session.read() is grpc.aio.EOF
    assert runs[0] == runs[1]
    assert len(rig.runs) == 1


async def test_over_a_unary_call_an_async_generators_events_are_published() -> None:
    received: list[CloudEvent] = []

    async def ingress(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        received.extend(from_http(headers, body))
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    rig = Rig()
    rig.gate.set()
    async with serving(ingress, lifespan="off") as broker:
        settings = Settings(idempotency="embedded", broker_url=broker)
        async with served(rig, settings=settings) as (_, channel):
            reply = await agent_pb2_grpc.AgentStub(channel).Call(
                to_protobuf(ask(3, type_="t.count"))
            )
    assert not reply.HasField("event")
    assert sorted(e.data["n"] for e in received) == [0, 1, 2]


def test_a_plain_generator_handler_is_refused_at_declaration() -> None:
    agent = Agent("plain-generator")
    with pytest.raises(AgentDefinitionError, match="async generator"):

        @agent.on("t.ask", emits={"t.answered": Answer})
        def numbers(question: Question) -> Iterator[Answer]:
            yield Answer(n=question.n)


# -- errors --------------------------------------------------------------------------------------


async def test_the_callers_deadline_cancels_the_handling_and_frees_the_event() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        question = ask(5, type_="t.gated")
        # The deadline must pass while the handler is parked at the gate, not before it ran:
        # wait for it to enter (a loaded machine may take a while to get there), then let the
        # rest of the deadline run out.
        call = asyncio.ensure_future(failed_call(channel, question, timeout=3.0))
        await async_wait_until(lambda: rig.runs == [question.id], message="the handler to run")
        error = await call
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # The server learns of the deadline on its own timer, which a loaded machine may run a
        # little after the caller's: the gate opens only once the handling was cancelled, else
        # the handler would complete and the retry be answered from its record.
        await asyncio.wait_for(rig.cancelled.wait(), timeout=10)
        # Cancelled, not completed: the claim is released and a retry runs the handler again.
        rig.gate.set()
        reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(question), timeout=10)
    assert from_protobuf(reply.event).data == {"n": 5}
    assert rig.runs == [question.id, question.id]


async def test_a_duplicate_in_flight_is_aborted_with_the_lease_left() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        stub = agent_pb2_grpc.AgentStub(channel)
        question = to_protobuf(ask(type_="t.gated"))
        first = asyncio.ensure_future(stub.Call(question))
        await asyncio.wait_for(rig.entered.wait(), timeout=10)
        error = await failed_call(channel, question.SerializeToString())
        rig.gate.set()
        await first
    assert error.code() is grpc.StatusCode.ABORTED
    assert json.loads(error.details())["error"] == "in flight"
    assert int(trailers(error)["retry-after"]) >= 1
    assert len(rig.runs) == 1


@pytest.mark.parametrize(
    ("message", "attribute"),
    [
        (cloudevents_pb2.CloudEvent(id="1", spec_version="1.0", type="t.ask"), "source"),
        (cloudevents_pb2.CloudEvent(id="1", source="/s", spec_version="0.3", type="t"), None),
        (b"\xff\xff\xff", "body"),
    ],
)
async def test_an_invalid_event_is_invalid_argument_naming_the_field(
    message: cloudevents_pb2.CloudEvent | bytes, attribute: str | None
) -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        error = await failed_call(channel, payload)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = json.loads(error.details())
    assert details["error"] == "invalid CloudEvent"
    assert details["attribute"] == (attribute or "specversion")


async def test_a_payload_that_fails_the_model_is_invalid_argument_with_its_errors() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        error = await failed_call(channel, CloudEvent.new("t.ask", "/s", {"n": "many"}))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = json.loads(error.details())
    assert details["error"] == "validation"
    assert [e["loc"] for e in details["errors"]] == [["n"]]
    assert rig.runs == []


async def test_an_event_no_handler_consumes_is_invalid_argument_naming_its_type() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        error = await failed_call(channel, ask(type_="t.unknown"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(error.details())["type"] == "t.unknown"


async def test_a_retryable_failure_is_unavailable_with_its_delay_in_the_trailers() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        error = await failed_call(channel, ask(type_="t.busy"))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert trailers(error) == {"retry-after": "3", "grpc-retry-pushback-ms": "3000"}
    assert json.loads(error.details())["message"] == "the model server is warming up"


async def test_an_open_breaker_is_unavailable_until_it_may_close() -> None:
    now = 1_000.0
    breakers = CircuitBreakers(BreakerPolicy(failures=1, reset_s=30.0), clock=lambda: now)
    rig = Rig()
    async with served(rig, breakers=breakers) as (_, channel):
        failure = await failed_call(channel, ask(type_="t.guarded"))
        now += 12.0
        refused = await failed_call(channel, ask(type_="t.guarded"))
    # The first failure is the handler's own (INTERNAL) and opens the breaker.
    assert failure.code() is grpc.StatusCode.INTERNAL
    assert json.loads(failure.details())["message"] == "llm refused the prompt"
    assert refused.code() is grpc.StatusCode.UNAVAILABLE
    assert json.loads(refused.details())["exception"] == "CircuitOpenError"
    assert trailers(refused) == {"retry-after": "18", "grpc-retry-pushback-ms": "18000"}


async def test_a_failure_in_a_session_ends_it_with_that_status() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        session = agent_pb2_grpc.AgentStub(channel).Session()
        await session.write(to_protobuf(ask(1)))
        await session.write(to_protobuf(ask(type_="t.busy")))
        first = from_protobuf(await session.read())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await session.read()
    assert first.data == {"n": 2}
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert trailers(caught.value)["retry-after"] == "3"


# -- trace context -------------------------------------------------------------------------------


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_the_callers_traceparent_metadata_is_the_handlings_parent(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rig = Rig()
    async with served(rig, tracer_provider=provider) as (_, channel):
        stub = agent_pb2_grpc.AgentStub(channel)
        metadata = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),)
        # The metadata is the calling span itself: it wins over the event's own extension.
        reply = await stub.Call(to_protobuf(ask(traceparent=other)), metadata=metadata)
        untraced_call = await stub.Call(to_protobuf(ask(traceparent=other)))
    (handling, fallback) = exporter.get_finished_spans()
    assert handling.context is not None
    assert handling.parent is not None
    assert f"{handling.context.trace_id:032x}" == TRACE_ID
    assert f"{handling.parent.span_id:016x}" == CALLER_SPAN
    traceparent = str(from_protobuf(reply.event).attributes[extensions.TRACEPARENT])
    assert traceparent.split("-")[1] == TRACE_ID
    assert traceparent.split("-")[2] == f"{handling.context.span_id:016x}"
    # Without metadata, the event's extension is the parent.
    assert fallback.context is not None
    assert f"{fallback.context.trace_id:032x}" == other.split("-")[1]
    assert from_protobuf(untraced_call.event).attributes[extensions.TRACEPARENT]


# -- health and reflection -----------------------------------------------------------------------


async def test_health_is_serving_once_started_and_not_serving_once_stopping() -> None:
    rig = Rig()
    app = rig.agent.app(settings=Settings(idempotency="embedded"))
    async with app:
        server = GrpcServer(app, host="127.0.0.1", grace_s=10)
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            checked = {
                name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("", SERVICE_NAME)
            }
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # A call in flight keeps the server in its grace while health already says so.
            in_flight = asyncio.ensure_future(
                agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(ask(type_="t.gated")))
            )
            await asyncio.wait_for(rig.entered.wait(), timeout=10)
            stopping = asyncio.ensure_future(server.aclose())
            after = (await asyncio.wait_for(watch.read(), timeout=10)).status
            rig.gate.set()
            reply = await in_flight
            await stopping
    serving = health_pb2.HealthCheckResponse.SERVING
    assert checked == {"": serving, SERVICE_NAME: serving}
    assert after == health_pb2.HealthCheckResponse.NOT_SERVING
    assert from_protobuf(reply.event).type == "t.answered"


async def test_reflection_lists_the_agent_service_and_describes_it() -> None:
    rig = Rig()
    async with served(rig) as (_, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
        ]
        listed, described = [response async for response in stub.ServerReflectionInfo(requests)]
    names = {service.name for service in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    agent_file = next(f for f in files if f.package == "agentfn.v1")
    (service,) = agent_file.service
    assert [m.name for m in service.method] == ["Call", "Session"]


# -- agentfn serve ---------------------------------------------------------------------------------

_SERVED_AGENT = """
from pydantic import BaseModel

from agentfn.functions import Agent


class Question(BaseModel):
    n: int


class Answer(BaseModel):
    n: int


agent = Agent("served", grpc=True)


@agent.on("t.ask", emits={"t.answered": Answer})
async def ask(question: Question) -> Answer:
    return Answer(n=question.n + 1)
"""


@contextlib.contextmanager
def agentfn_serve(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    (tmp_path / "served_agent.py").write_text(_SERVED_AGENT)
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", "from agentfn.functions.cli import main; main()", "serve"),
            *("served_agent:agent", "--host", "127.0.0.1", *args),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTFN_IDEMPOTENCY": "embedded", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
async def test_serve_with_a_grpc_port_serves_both_doors_and_stops_cleanly(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    with agentfn_serve(
        tmp_path, "--port", str(http_port), "--grpc-port", str(grpc_port), env={}
    ) as process:
        wait_for_port(http_port, timeout=30)
        wait_for_port(grpc_port, timeout=30)
        question = ask(1)
        headers, body = binary(question)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            posted = await client.post("/", headers=headers, content=body)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(question))
            status = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert posted.status_code == 200
    # One runtime behind both doors: the gRPC call is the HTTP event's duplicate.
    assert from_protobuf(reply.event).id == posted.headers["ce-id"]
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert process.returncode == 0, errors.decode()
    assert b"Traceback" not in errors


@pytest.mark.slow
async def test_serve_h2c_serves_only_grpc_on_port(tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "AGENTFN_PROTOCOL": "h2c"}
    with agentfn_serve(tmp_path, env=env) as process:
        wait_for_port(port, timeout=30)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(ask(4)))
        async with httpx.AsyncClient() as client:
            # HTTP/1.1 to the h2c port: no CloudEvents server there, the connection is refused.
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert from_protobuf(reply.event).data == {"n": 5}
    assert process.returncode == 0, errors.decode()


def test_serve_refuses_a_grpc_port_with_h2c(tmp_path: Path) -> None:
    with agentfn_serve(tmp_path, "--protocol", "h2c", "--grpc-port", "9", env={}) as process:
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"AGENTFN_GRPC_PORT" in errors
