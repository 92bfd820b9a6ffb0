"""``ctx.rpc`` and :class:`AgentClient` against real ``grpc.aio`` servers on loopback.

The recording server here is a plain ``agentfn.v1.Agent`` servicer (the generated stubs, no
agent runtime) that answers by event type and keeps what each attempt carried: its metadata,
the deadline left, the peer's address, the event. It shows what the client put on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from agentfn.events import CloudEvent, extensions
from agentfn.events.proto import agent_pb2, agent_pb2_grpc, cloudevents_pb2
from agentfn.events.protobuf import from_protobuf, to_protobuf
from agentfn.functions import (
    Agent,
    BreakerPolicy,
    BreakerState,
    CircuitBreakers,
    CircuitOpenError,
    Context,
    Delivery,
    RetryableError,
    Settings,
)
from agentfn.functions._grpc import GrpcServer
from agentfn.functions._rpc import (
    AgentClient,
    ChannelPool,
    RpcError,
    RpcPolicy,
    RpcUnavailableError,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from tests._servers import free_port
from tests.functions._support import event, post, serving

#: Fast retries: the attempts are what is asserted, never how long they took.
FAST = {"rpc_initial_backoff_s": 0.01, "rpc_max_backoff_s": 0.02, "idempotency": "off"}


class Ask(BaseModel):
    text: str


@dataclass
class Attempt:
    event: CloudEvent
    metadata: dict[str, str]
    remaining: float | None
    peer: str


@dataclass
class Recorder(agent_pb2_grpc.AgentServicer):  # type: ignore[misc]
    """Answers by type: ``t.echo`` replies, ``t.none`` replies nothing, ``t.down`` is
    UNAVAILABLE, ``t.busy`` UNAVAILABLE asking for 7 s, ``t.bad`` INVALID_ARGUMENT,
    ``t.slow`` never answers."""

    attempts: list[Attempt] = field(default_factory=list)

    def _record(self, message: cloudevents_pb2.CloudEvent, context: Any) -> CloudEvent:
        received = from_protobuf(message)
        self.attempts.append(
            Attempt(
                received,
                {k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
                context.time_remaining(),
                context.peer(),
            )
        )
        return received

    async def Call(self, request: cloudevents_pb2.CloudEvent, context: Any) -> agent_pb2.Reply:
        received = self._record(request, context)
        kind = received.type
        if kind == "t.none":
            return agent_pb2.Reply()
        if kind == "t.down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not ready")
        if kind == "t.busy":
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "busy",
                (("retry-after", "7"), ("grpc-retry-pushback-ms", "-1")),
            )
        if kind == "t.bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "data.text: missing")
        if kind == "t.slow":
            await asyncio.Event().wait()
        reply = CloudEvent.new("t.echoed", "/tests/recorder", received.data)
        return agent_pb2.Reply(event=to_protobuf(reply))

    async def Session(
        self, request_iterator: AsyncIterator[cloudevents_pb2.CloudEvent], context: Any
    ) -> AsyncIterator[cloudevents_pb2.CloudEvent]:
        async for message in request_iterator:
            received = self._record(message, context)
            if received.type == "t.down":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
            for n in range(2):
                yield to_protobuf(
                    CloudEvent.new("t.echoed", "/tests/recorder", {"n": n, "of": received.data})
                )


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, Recorder]]:
    servicer = Recorder()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


def _client(target: str, **options: Any) -> AgentClient:
    policy = RpcPolicy(initial_backoff_s=0.01, max_backoff_s=0.02, **options)
    return AgentClient(target, policy=policy)


# -- calls ----------------------------------------------------------------------------------


async def test_a_call_returns_the_reply_event_or_none(recorder: tuple[str, Recorder]) -> None:
    target, server = recorder
    async with _client(target) as client:
        reply = await client.call(Ask(text="hi"), type="t.echo")
        assert reply is not None
        assert (reply.type, reply.data) == ("t.echoed", {"text": "hi"})
        assert await client.call(Ask(text="hi"), type="t.none") is None
    sent = server.attempts[0].event
    assert (sent.type, sent.source, sent.data) == ("t.echo", "/agentfn/client", {"text": "hi"})


async def test_a_session_streams_replies_both_ways(recorder: tuple[str, Recorder]) -> None:
    target, server = recorder
    async with _client(target) as client, client.session() as stream:
        await stream.send(Ask(text="one"), type="t.echo")
        first = [await stream.recv(), await stream.recv()]
        await stream.send(Ask(text="two"), type="t.echo")
        await stream.done_writing()
        rest = [reply async for reply in stream]
    assert [r.data for r in first if r is not None] == [
        {"n": 0, "of": {"text": "one"}},
        {"n": 1, "of": {"text": "one"}},
    ]
    assert [r.data for r in rest] == [
        {"n": 0, "of": {"text": "two"}},
        {"n": 1, "of": {"text": "two"}},
    ]
    assert [a.event.data for a in server.attempts] == [{"text": "one"}, {"text": "two"}]


async def test_a_session_the_target_ends_in_error_raises_as_a_call_would(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    client = AgentClient(target, breakers=breakers, policy=RpcPolicy(initial_backoff_s=0.01))

    async def converse() -> None:
        async with client.session() as stream:
            await stream.send(Ask(text="x"), type="t.down")
            await stream.recv()

    async with client:
        with pytest.raises(RpcUnavailableError) as raised:
            await converse()
    assert raised.value.code == "UNAVAILABLE"
    assert breakers.last_state(target) is BreakerState.OPEN
    # Ended before any reply, the stream was retried like a call, its event sent again.
    assert len(server.attempts) == 4
    assert len({a.event.id for a in server.attempts}) == 1


async def test_a_refusal_is_not_retried_nor_counted_against_the_target(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    breakers = CircuitBreakers(BreakerPolicy(failures=2))
    client = AgentClient(target, breakers=breakers, policy=RpcPolicy(initial_backoff_s=0.01))
    async with client:
        for _ in range(3):
            with pytest.raises(RpcError) as raised:
                await client.call(Ask(text="x"), type="t.bad")
    assert (raised.value.code, raised.value.details) == ("INVALID_ARGUMENT", "data.text: missing")
    assert not isinstance(raised.value, RetryableError)
    assert len(server.attempts) == 3
    assert breakers.last_state(target) is BreakerState.CLOSED


# -- retries and the breaker ------------------------------------------------------------------


async def test_unavailable_is_retried_by_grpc_then_the_breaker_opens(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    now = [1000.0]
    breakers = CircuitBreakers(BreakerPolicy(failures=2, reset_s=30.0), clock=lambda: now[0])
    policy = RpcPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    async with AgentClient(target, breakers=breakers, policy=policy) as client:
        for calls in (1, 2):
            with pytest.raises(RpcUnavailableError) as raised:
                await client.call(Ask(text="x"), type="t.down")
            assert len(server.attempts) == 3 * calls  # every attempt gRPC's retryPolicy made
        assert raised.value.code == "UNAVAILABLE"
        assert target in str(raised.value)
        assert breakers.last_state(target) is BreakerState.OPEN

        with pytest.raises(CircuitOpenError) as refused:
            await client.call(Ask(text="x"), type="t.echo")
        assert refused.value.retry_after == 30.0
        assert len(server.attempts) == 6  # refused here: the target saw nothing

        now[0] += 30.0  # half-open: one probe goes through and closes the circuit
        assert await client.call(Ask(text="x"), type="t.echo") is not None
        assert breakers.last_state(target) is BreakerState.CLOSED
    # The same event each attempt: a retry is the call again, never a new event.
    assert len({a.event.id for a in server.attempts[:3]}) == 1


async def test_a_delay_the_target_asks_for_is_kept_and_its_pushback_obeyed(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    async with _client(target) as client:
        with pytest.raises(RpcUnavailableError) as raised:
            await client.call(Ask(text="x"), type="t.busy")
    # A negative pushback tells gRPC not to retry: one attempt, and the target's 7 s kept.
    assert len(server.attempts) == 1
    assert raised.value.retry_after == 7.0
    assert "busy" in str(raised.value)


def test_the_service_config_retries_unavailable_only() -> None:
    config = RpcPolicy(max_attempts=5, initial_backoff_s=0.25, max_backoff_s=3.0).service_config()
    assert config == {
        "methodConfig": [
            {
                "name": [{"service": "agentfn.v1.Agent"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.25s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2.0,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    assert RpcPolicy(max_attempts=1).service_config() == {
        "methodConfig": [{"name": [{"service": "agentfn.v1.Agent"}]}]
    }
    with pytest.raises(ValueError, match="1 to 5"):
        RpcPolicy(max_attempts=6)


def test_keepalive_options_are_on_every_channel() -> None:
    options = dict(RpcPolicy.from_settings(Settings()).channel_options())
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.enable_retries"] == 1


# -- deadlines --------------------------------------------------------------------------------


def test_the_deadline_is_what_is_left_of_the_handlers() -> None:
    now = [40.0]
    client = AgentClient("localhost:1", deadline=100.0, clock=lambda: now[0])
    assert client.timeout() == 60.0
    assert client.timeout(5.0) == 5.0
    assert client.timeout(90.0) == 60.0  # never past the handler's own
    now[0] = 70.0
    assert client.timeout() == 30.0
    assert AgentClient("localhost:1", policy=RpcPolicy(timeout_s=12.0)).timeout() == 12.0


async def test_a_call_after_the_handlers_deadline_is_not_made(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    async with AgentClient(target, deadline=10.0, clock=lambda: 10.0) as client:
        with pytest.raises(RpcUnavailableError) as raised:
            await client.call(Ask(text="x"), type="t.echo")
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert server.attempts == []


async def test_a_target_slower_than_the_deadline_is_deadline_exceeded(
    recorder: tuple[str, Recorder],
) -> None:
    target, _ = recorder
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    async with AgentClient(target, breakers=breakers) as client:
        with pytest.raises(RpcUnavailableError) as raised:
            await client.call(Ask(text="x"), type="t.slow", timeout=0.05)
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert breakers.last_state(target) is BreakerState.OPEN


async def test_a_handlers_calls_carry_its_remaining_deadline(
    recorder: tuple[str, Recorder],
) -> None:
    """Which deadline a handler's call gets is asserted where it is decided (the client's
    deadline is the handling's own, exactly; a given timeout; the default); what reached the
    target is that each call carried a deadline, ordered as the three sources are."""
    target, server = recorder
    agent = Agent("caller", delivery=Delivery(timeout=timedelta(seconds=100)))
    chosen: dict[str, Any] = {}

    @agent.on("t.start")
    async def start(ask: Ask, ctx: Context) -> None:
        client = ctx.rpc(target)
        chosen["handling"] = ctx.deadline
        chosen["client"] = client.deadline
        chosen["own"] = client.timeout()
        await client.call(ask, type="t.echo")
        chosen["given"] = client.timeout(5.0)
        await client.call(ask, type="t.echo", timeout=5.0)

    unbounded = Agent("unbounded")

    @unbounded.on("t.start")
    async def start_unbounded(ask: Ask, ctx: Context) -> None:
        client = ctx.rpc(target)
        chosen["unbounded_deadline"] = client.deadline
        chosen["default"] = client.timeout()
        await client.call(ask, type="t.echo")

    settings = Settings(rpc_timeout_s=1000.0, **FAST)
    for built in (agent, unbounded):
        async with built.app(settings=settings) as app:
            answer = await app.deliver(event("t.start", {"text": "go"}))
            assert answer[0] == 202, answer
    assert agent.spec.delivery.handler_deadline() == 99.0
    # The decisions: the handling's deadline (its 99 s), the given 5 s, the 1000 s default.
    assert chosen["client"] == chosen["handling"] is not None
    assert chosen["own"] <= 99.0
    assert chosen["given"] == 5.0
    assert chosen["unbounded_deadline"] is None
    assert chosen["default"] == 1000.0
    # What the target saw: each call came with a deadline, in the order of the three sources
    # (gRPC's wire encoding rounds a timeout up, so the values themselves are not compared).
    remaining = [a.remaining for a in server.attempts]
    assert None not in remaining
    first, given, default = (float(r or 0.0) for r in remaining)
    assert 0.0 < given < first < default


# -- unreachable ----------------------------------------------------------------------------


async def test_an_unreachable_target_is_a_retryable_error_naming_it() -> None:
    target = f"127.0.0.1:{free_port()}"  # nothing listens
    async with _client(target) as client:
        with pytest.raises(RpcUnavailableError) as raised:
            await client.call(Ask(text="x"), type="t.echo")
    error = raised.value
    assert isinstance(error, RetryableError)
    assert error.code == "UNAVAILABLE"
    assert str(error).startswith(
        f"gRPC target {target}: unreachable (UNAVAILABLE after 4 attempts)"
    )


async def test_a_handler_calling_an_unreachable_target_answers_503() -> None:
    target = f"127.0.0.1:{free_port()}"
    agent = Agent("stranded")

    @agent.on("t.start")
    async def start(ask: Ask, ctx: Context) -> None:
        await ctx.rpc(target).call(ask, type="t.echo")

    async with agent.app(settings=Settings(retry_after_s=3.0, **FAST)) as app:
        status, headers, body = await app.deliver(event("t.start", {"text": "go"}))
    assert status == 503
    assert (b"retry-after", b"3") in headers
    assert target.encode() in body


# -- channels -------------------------------------------------------------------------------


async def test_one_channel_per_target_reused_by_every_handling_and_closed_with_the_app(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    agent = Agent("reuser")

    @agent.on("t.start")
    async def start(ask: Ask, ctx: Context) -> None:
        await ctx.rpc(target).call(ask, type="t.echo")
        await ctx.rpc(target).call(ask, type="t.echo")

    app = agent.app(settings=Settings(**FAST))
    async with app:
        for n in range(3):
            assert (await app.deliver(event("t.start", {"text": str(n)})))[0] == 202
        channels: ChannelPool = app._pipeline._services.channels  # type: ignore[assignment]
        assert channels.targets == (target,)
        channel = channels.channel(target)
        assert channels.channel(target) is channel
    # Six calls from three handlings, one connection (one client port on the server's side).
    assert len(server.attempts) == 6
    assert len({a.peer for a in server.attempts}) == 1
    assert channels.targets == ()
    assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


# -- trace and identity ----------------------------------------------------------------------


async def test_trace_and_chain_continue_from_an_http_event_through_its_call(
    recorder: tuple[str, Recorder],
) -> None:
    target, server = recorder
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agent = Agent("tracer")

    @agent.on("t.start")
    async def start(ask: Ask, ctx: Context) -> None:
        await ctx.rpc(target).call(ask, type="t.echo")

    incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    app = agent.app(settings=Settings(**FAST), tracer_provider=provider)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        started = event("t.start", {"text": "go"})
        response = await post(http, started, traceparent=f"00-{incoming_trace}-00f067aa0ba902b7-01")
        assert response.status_code == 202, response.text
    (span,) = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    assert f"{context.trace_id:032x}" == incoming_trace
    expected = f"00-{incoming_trace}-{context.span_id:016x}-01"
    (attempt,) = server.attempts
    # The call's metadata and its event both carry the handler's span as the parent.
    assert attempt.metadata["traceparent"] == expected
    assert attempt.event.attributes[extensions.TRACEPARENT] == expected
    assert attempt.event.attributes[extensions.CHAIN_ID] == span.attributes["agentfn.chain_id"]
    assert attempt.event.source == "/agentfn/agents/tracer"


async def test_a_retried_handler_sends_the_same_event_ids(recorder: tuple[str, Recorder]) -> None:
    target, server = recorder
    agent = Agent("repeater")

    @agent.on("t.start")
    async def start(ask: Ask, ctx: Context) -> None:
        await ctx.rpc(target).call(ask, type="t.echo")
        await ctx.rpc(target).call(ask, type="t.echo")

    started = event("t.start", {"text": "go"})
    async with agent.app(settings=Settings(**FAST)) as app:
        for _ in range(2):  # the broker's redelivery of one event (idempotency off)
            assert (await app.deliver(started))[0] == 202
    ids = [a.event.id for a in server.attempts]
    assert ids[:2] == ids[2:]  # the same two calls, so the target can answer from its store
    assert ids[0] != ids[1]


# -- against the agent runtime's own gRPC server ----------------------------------------------


class Told(BaseModel):
    text: str
    runs: int


@contextlib.asynccontextmanager
async def grpc_agent(agent: Agent, **options: Any) -> AsyncIterator[str]:
    """``agent`` served by :class:`GrpcServer` on loopback; the target to dial."""
    app = agent.app(**options)
    async with app, GrpcServer(app, host="127.0.0.1") as server:
        yield server.address


def _teller(runs: list[str]) -> Agent:
    peer = Agent("teller")

    @peer.on("t.ask", emits={"t.told": Told})
    async def tell(ask: Ask, ctx: Context) -> Told:
        runs.append(f"{ctx.span.get_span_context().trace_id:032x}")
        return Told(text=ask.text.upper(), runs=len(runs))

    return peer


def _asker(target: str) -> Agent:
    asker = Agent("asker")

    @asker.on("t.start", emits={"t.done": Told})
    async def start(ask: Ask, ctx: Context) -> Told:
        reply = await ctx.rpc(target).call(ask, type="t.ask")
        assert reply is not None
        return Told.model_validate(reply.data)

    return asker


async def test_a_call_through_the_peers_server_continues_the_trace_from_http() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runs: list[str] = []
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    settings = Settings(**FAST)
    async with grpc_agent(_teller(runs), settings=settings, tracer_provider=provider) as target:
        app = _asker(target).app(settings=settings, tracer_provider=provider)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            response = await post(
                http,
                event("t.start", {"text": "hi"}),
                traceparent=f"00-{trace_id}-b7ad6b7169203331-01",
            )
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "HI", "runs": 1}
    assert runs == [trace_id]
    spans = {span.attributes["agentfn.agent"]: span for span in exporter.get_finished_spans()}
    asker, teller = spans["asker"], spans["teller"]
    assert teller.parent is not None
    assert teller.parent.span_id == asker.get_span_context().span_id


async def test_a_retried_handlers_call_is_answered_from_the_peers_record() -> None:
    runs: list[str] = []
    started = event("t.start", {"text": "once"})
    async with (
        grpc_agent(_teller(runs), settings=Settings(rpc_initial_backoff_s=0.01)) as target,
        _asker(target).app(settings=Settings(**FAST)) as app,
    ):
        answers = [await app.deliver(started) for _ in range(2)]
    assert [a[0] for a in answers] == [200, 200]
    assert answers[0][2] == answers[1][2] == b'{"text":"ONCE","runs":1}'
    assert len(runs) == 1  # the peer ran once: the second call had the same source and id


async def test_a_peers_retryable_failure_is_retried_with_its_pushback_then_answers_503() -> None:
    runs: list[int] = []
    peer = Agent("flaky")

    @peer.on("t.ask", emits={"t.told": Told})
    async def tell(ask: Ask) -> Told:
        runs.append(1)
        raise RetryableError("warming up", retry_after=0.2)

    settings = Settings(rpc_max_attempts=2, **FAST)
    async with (
        grpc_agent(peer, settings=settings) as target,
        _asker(target).app(settings=settings) as app,
    ):
        status, headers, body = await app.deliver(event("t.start", {"text": "x"}))
        breakers = app.breakers
    # gRPC retried once (max 2 attempts), after the delay the peer's trailers asked for.
    assert len(runs) == 2
    assert status == 503
    assert (b"retry-after", b"1") in headers  # the peer's whole-second retry-after, carried on
    assert f"gRPC target {target}: answered UNAVAILABLE".encode() in body
    assert breakers.last_state(target) is BreakerState.CLOSED  # one failure of five
