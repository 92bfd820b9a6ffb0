"""Dead letters end to end: the embedded broker, agents over HTTP, and the real dead-letter sink.

Every Trigger gets its ``deadLetterSink`` as ``agentfn dev`` gives it one
(:meth:`Topology.with_dead_letter_sink`, ``<sink>/<namespace>/<broker>/<trigger>``), so the
sink learns the Trigger from the path. Absence ("stored once", "no second side effect") is
proven with a marker that went the same way after the event in question, never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.deadletters.letters import REPLAY_OF
from agentfn.brokers.deadletters.settings import DeadLetterSettings
from agentfn.brokers.deadletters.sink import DeadLetterSink
from agentfn.brokers.deadletters.store import open_store
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.retries import RetryRecord
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent
from agentfn.functions import Agent, AgentApp, Context, Delivery, InMemoryIdempotencyStore, Settings
from agentfn.functions._knative import trigger_documents
from pydantic import BaseModel, Field

from tests._servers import free_port, read_body, wait_for_port
from tests._waiting import async_wait_until
from tests.functions._support import (
    ASGIApp,
    FakeClock,
    Receive,
    Scope,
    Send,
    Sink,
    event,
    serving,
)
from tests.functions.test_e2e_broker import publish, sink_trigger

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
ORDER_PLACED = "order.placed"
ORDERS_TRIGGER = "orders-order-placed"  # the name trigger_documents gives it
FAST = Delivery(retry=2, backoff_policy="linear", backoff_delay=timedelta(milliseconds=10))


# -- agents --------------------------------------------------------------------------------------


class StrictOrder(BaseModel):
    """Version 1 of the orders agent: a free order (0 cents) is refused (422)."""

    order: str
    cents: int = Field(gt=0)


class Order(BaseModel):
    """Version 2, the fix: free orders are orders too."""

    order: str
    cents: int = Field(ge=0)


class Charged(BaseModel):
    order: str
    cents: int


def orders_agent(model: type[BaseModel], effects: list[str], *, delivery: Delivery = FAST) -> Agent:
    """An orders agent whose side effect is appending the event id to ``effects``."""
    agent = Agent("orders", delivery=delivery)

    @agent.on(ORDER_PLACED, input=model)
    async def place(order: BaseModel, ctx: Context) -> None:
        effects.append(ctx.event.id)

    return agent


class Revisions:
    """One Service URL in front of an agent's revisions: ``current`` takes the traffic.

    As a Knative Service rolls out a fixed revision: the URL stays, the code changes. The
    revisions share one idempotency store, as revisions on a cluster share one Redis.
    """

    def __init__(self, current: AgentApp) -> None:
        self.current = current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # each revision is started by the test itself
            await Sink()(scope, receive, send)
            return
        await self.current(scope, receive, send)


class AnswerLosingGateway:
    """Forwards every request to the agent; while ``broken``, loses the agent's answer (502).

    The agent has run, recorded the outcome in its idempotency store and answered: only the
    way back failed, as with a proxy or load balancer that drops answers.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.broken = True
        self.forwarded = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await Sink()(scope, receive, send)
            return
        body = await read_body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = [(k, v) for k, v in headers if k not in ("host", "content-length")]
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(self.upstream, headers=headers, content=body)
        self.forwarded += 1
        if self.broken:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"bad gateway: answer lost"})
            return
        out = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k != "content-length"]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})


# -- the broker and the sink ---------------------------------------------------------------------


@dataclass
class Stack:
    """A broker routing to agents, with its dead letters going to ``sink_url``."""

    server: BrokerServer
    ingress: str
    sink_url: str
    retries: RetryRecord
    services: dict[str, str] = field(default_factory=dict)

    def dead_lettered(self, trigger: str, outcome: str = "sent") -> float:
        value = self.server.metrics.registry.get_sample_value(
            "broker_filter_dead_letter_count_total",
            {
                "namespace_name": "default",
                "broker_name": "default",
                "trigger_name": trigger,
                "outcome": outcome,
            },
        )
        return value or 0.0

    def answered_2xx(self, trigger: str) -> float:
        """Deliveries of ``trigger`` its subscriber answered with a 2xx."""
        return sum(
            sample.value
            for family in self.server.metrics.registry.collect()
            if family.name == "broker_filter_event_count"
            for sample in family.samples
            if sample.name == "broker_filter_event_count_total"
            and sample.labels.get("trigger_name") == trigger
            and sample.labels.get("response_code_class") == "2xx"
        )


@contextlib.asynccontextmanager
async def broker(
    tmp_path: Path,
    agents: Mapping[Agent, ASGIApp],
    *,
    sink_url: str,
    port: int,
    extra: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        services = {
            agent.name: await stack.enter_async_context(serving(app))
            for agent, app in agents.items()
        }
        documents = [d for agent in agents for d in trigger_documents(agent.spec)]
        topology = parse_documents([*documents, *extra]).with_dead_letter_sink(
            lambda t: f"{sink_url}/{t.namespace}/{t.broker}/{t.name}"
        )
        retries = RetryRecord()
        server = BrokerServer(
            topology,
            SqliteEventLog(tmp_path / "log", fsync=False),
            services=services,
            retry_observer=retries,
        )
        await server.start()
        await server.listen("127.0.0.1", port)
        try:
            yield Stack(
                server, f"http://127.0.0.1:{port}/default/default", sink_url, retries, services
            )
        finally:
            await server.stop()


@contextlib.asynccontextmanager
async def dead_letter_sink(
    tmp_path: Path, *, ingress: str, port: int = 0
) -> AsyncIterator[DeadLetterSink]:
    settings = DeadLetterSettings(
        store=f"sqlite:///{tmp_path / 'letters.sqlite3'}", broker_url=ingress
    )
    sink = DeadLetterSink(open_store(settings.store), settings=settings, clock=FakeClock())
    async with sink:
        await sink.listen("127.0.0.1", port)
        yield sink


async def letters(sink_url: str, **query: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{sink_url}/v1/letters", params=query)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["letters"]
    return found


async def letter_of(sink_url: str, sent: CloudEvent) -> dict[str, Any]:
    """The letter of ``sent`` once it is stored (exactly one)."""
    (found,) = await async_wait_until(
        lambda: letters(sink_url, event_id=sent.id), timeout=20, message=f"the letter of {sent.id}"
    )
    return found


async def replay(sink_url: str, key: str, *, status: int = 200, **options: bool) -> dict[str, Any]:
    """``POST /v1/letters/<key>/replay`` (what ``agentfn dlq replay`` sends); its JSON answer."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{sink_url}/v1/letters/{key}/replay", json=options)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def sink_counter(sink_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{sink_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{name}_total{{") or line == f"{name}_total"
    )


def order(cents: int, name: str = "o-1") -> CloudEvent:
    return event(ORDER_PLACED, {"order": name, "cents": cents})


# -- tests ---------------------------------------------------------------------------------------


async def test_a_422_is_stored_once_with_the_error_and_the_trigger_it_came_from(
    tmp_path: Path,
) -> None:
    effects: list[str] = []
    port = free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    agent = orders_agent(StrictOrder, effects)
    app = agent.app(settings=Settings(broker_url=ingress))
    async with (
        dead_letter_sink(tmp_path, ingress=ingress) as sink,
        serving(sink.app) as sink_url,
        broker(tmp_path, {agent: app}, sink_url=sink_url, port=port) as stack,
    ):
        refused = order(0)
        await publish(stack.ingress, refused)
        letter = await letter_of(sink_url, refused)
        marker = order(0, name="marker")  # dead-lettered the same way, after it
        await publish(stack.ingress, marker)
        await letter_of(sink_url, marker)

        assert [found["id"] for found in await letters(sink_url)] == [refused.id, marker.id]
        assert await sink_counter(sink_url, "agentfn_deadletters_duplicates") == 0
        assert stack.dead_lettered(ORDERS_TRIGGER) == 2
    assert effects == []
    assert (letter["namespace"], letter["broker"], letter["trigger"]) == (
        "default",
        "default",
        ORDERS_TRIGGER,
    )
    assert letter["arrivals"] == 1
    assert letter["replayed_at"] is None
    error = letter["error"]
    assert error["code"] == "422"
    assert error["dest"] == stack.services["orders"]
    body = error["data"]
    assert body["redacted"] is False
    assert '"error":"validation"' in body["text"].replace(" ", "")
    kept = letter["event"]  # the event whole: attributes, data, Knative's extensions
    assert (kept["id"], kept["source"], kept["type"]) == (refused.id, refused.source, ORDER_PLACED)
    assert kept["data"] == {"order": "o-1", "cents": 0}
    assert kept["knativeerrorcode"] == "422"
    assert kept["knativeerrordest"] == stack.services["orders"]
    assert kept["knativeerrordata"] == body["raw"]


async def test_a_sink_that_is_down_for_a_while_still_ends_with_one_record(
    tmp_path: Path,
) -> None:
    effects: list[str] = []
    port, sink_port = free_port(), free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    sink_url = f"http://127.0.0.1:{sink_port}"  # nothing listens there yet
    # The sink's retries follow the Trigger's delivery: many, closely spaced.
    patient = Delivery(retry=40, backoff_policy="linear", backoff_delay=timedelta(milliseconds=20))
    agent = orders_agent(StrictOrder, effects, delivery=patient)
    app = agent.app(settings=Settings(broker_url=ingress))
    async with broker(tmp_path, {agent: app}, sink_url=sink_url, port=port) as stack:
        refused = order(0)
        await publish(stack.ingress, refused)

        def refused_by_the_sink() -> list[Any]:
            return [r for r in stack.retries if r.dead_letter and r.event_id == refused.id]

        await async_wait_until(
            lambda: len(refused_by_the_sink()) >= 2, message="the broker retrying the sink"
        )
        assert {r.status for r in refused_by_the_sink()} == {None}  # no answer: nobody there
        assert stack.dead_lettered(ORDERS_TRIGGER) == 0

        async with dead_letter_sink(tmp_path, ingress=ingress, port=sink_port):
            letter = await letter_of(sink_url, refused)
            marker = order(0, name="marker")
            await publish(stack.ingress, marker)
            await letter_of(sink_url, marker)

            assert [found["id"] for found in await letters(sink_url)] == [refused.id, marker.id]
            assert await sink_counter(sink_url, "agentfn_deadletters_stored") == 2
            assert await sink_counter(sink_url, "agentfn_deadletters_duplicates") == 0
            assert stack.dead_lettered(ORDERS_TRIGGER) == 2
            assert stack.dead_lettered(ORDERS_TRIGGER, "lost") == 0
    assert letter["arrivals"] == 1
    assert letter["error"]["code"] == "422"
    assert letter["trigger"] == ORDERS_TRIGGER


@contextlib.asynccontextmanager
async def rollout(tmp_path: Path) -> AsyncIterator[tuple[Stack, Revisions, AgentApp, list[str]]]:
    """Orders v1 (refuses free orders) behind one URL, v2 (the fix) ready to take over."""
    effects: list[str] = []
    port = free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    settings = Settings(broker_url=ingress)
    shared = InMemoryIdempotencyStore()
    v1 = orders_agent(StrictOrder, effects).app(settings=settings, store=shared)
    v2 = orders_agent(Order, effects).app(settings=settings, store=shared)
    await v1.start()
    await v2.start()
    revisions = Revisions(v1)
    try:
        async with (
            dead_letter_sink(tmp_path, ingress=ingress) as sink,
            serving(sink.app) as sink_url,
            broker(
                tmp_path, {orders_agent(Order, []): revisions}, sink_url=sink_url, port=port
            ) as stack,
        ):
            yield stack, revisions, v2, effects
    finally:
        await v1.aclose()
        await v2.aclose()


async def test_a_replay_after_the_fix_runs_once_and_a_forced_second_replay_changes_nothing(
    tmp_path: Path,
) -> None:
    async with rollout(tmp_path) as (stack, revisions, fixed, effects):
        free = order(0)
        await publish(stack.ingress, free)
        letter = await letter_of(stack.sink_url, free)
        assert effects == []

        revisions.current = fixed
        answered = stack.answered_2xx(ORDERS_TRIGGER)
        first = await replay(stack.sink_url, letter["key"])
        assert first["replay"]["ok"] is True
        assert first["replay"]["status"] == 202
        assert first["replay"]["event_id"] == free.id
        await async_wait_until(lambda: effects, message="the replayed order")
        assert effects == [free.id]

        again = await replay(stack.sink_url, letter["key"], status=409)  # needs force now
        assert "force" in again["error"]
        forced = await replay(stack.sink_url, letter["key"], force=True)
        assert forced["replay"]["ok"] is True
        # Settled: the broker saw the agent answer the forced replay as well.
        await async_wait_until(
            lambda: stack.answered_2xx(ORDERS_TRIGGER) >= answered + 2,
            message="the forced replay answered",
        )
        assert effects == [free.id]  # answered from the idempotency record
        (stored,) = await letters(stack.sink_url)
        assert [r["status"] for r in stored["replays"]] == [202, 202]
        assert stored["replayed_at"] is not None


async def test_replay_with_a_new_id_runs_the_event_again(tmp_path: Path) -> None:
    async with rollout(tmp_path) as (stack, revisions, fixed, effects):
        free = order(0)
        await publish(stack.ingress, free)
        letter = await letter_of(stack.sink_url, free)
        revisions.current = fixed
        assert (await replay(stack.sink_url, letter["key"]))["replay"]["ok"] is True
        await async_wait_until(lambda: effects, message="the replayed order")

        rerun = await replay(stack.sink_url, letter["key"], new_id=True, force=True)
        assert rerun["replay"]["ok"] is True
        new_id = rerun["replay"]["event_id"]
        assert new_id != free.id
        assert rerun["event"]["id"] == new_id
        assert rerun["event"][REPLAY_OF] == free.id
        assert rerun["event"]["source"] == free.source
        await async_wait_until(lambda: len(effects) == 2, message="the re-run")
        assert effects == [free.id, new_id]


async def test_a_replay_of_a_half_done_delivery_reaches_the_chain_without_a_second_effect(
    tmp_path: Path,
) -> None:
    """The original half-succeeded: the handler ran and its idempotency record was written, but
    the delivery failed: a gateway in front of the agent lost every answer (502), the broker
    retried (each retry answered from the record, so no second charge), then dead-lettered it.

    Once the gateway is fixed, the replay (same id and source) is answered from the record: the
    reply the first run produced goes down the chain, once, and the charge stays single.
    """
    charges: list[str] = []
    port = free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    agent = Agent("payments", delivery=FAST)

    @agent.on(ORDER_PLACED, emits={"order.charged": Charged})
    async def charge(placed: Order, ctx: Context) -> Charged:
        charges.append(ctx.event.id)  # the side effect
        return Charged(order=placed.order, cents=placed.cents)

    app = agent.app(settings=Settings(broker_url=ingress))
    done = Sink()
    async with (
        serving(app) as agent_url,
        serving(done) as done_url,
        dead_letter_sink(tmp_path, ingress=ingress) as sink,
        serving(sink.app) as sink_url,
    ):
        gateway = AnswerLosingGateway(agent_url)
        async with broker(
            tmp_path,
            {agent: gateway},
            sink_url=sink_url,
            port=port,
            extra=[sink_trigger("charged", "order.charged", done_url)],
        ) as stack:
            paid = order(250)
            await publish(stack.ingress, paid)
            letter = await letter_of(sink_url, paid)
            assert letter["error"]["code"] == "502"
            assert gateway.forwarded == 1 + FAST.retry  # every attempt reached the agent
            assert charges == [paid.id]  # which charged once: the retries hit the record

            gateway.broken = False
            replayed = await replay(sink_url, letter["key"])
            assert replayed["replay"]["ok"] is True
            await async_wait_until(lambda: done.events, message="the reply of the replay")
            marker = order(100, name="marker")
            await publish(stack.ingress, marker)
            await async_wait_until(lambda: len(done.events) == 2, message="the marker's reply")
    await app.aclose()
    assert [e.data for e in done.events] == [
        {"order": "o-1", "cents": 250},
        {"order": "marker", "cents": 100},
    ]
    assert charges == [paid.id, marker.id]


async def test_a_kill_9_right_after_the_202_loses_nothing(tmp_path: Path) -> None:
    effects: list[str] = []
    port, sink_port = free_port(), free_port()
    ingress = f"http://127.0.0.1:{port}/default/default"
    sink_url = f"http://127.0.0.1:{sink_port}"
    store = f"sqlite:///{tmp_path / 'letters.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}

    def start_sink() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "agentfn.functions.cli", "dlq", "serve",
                "--host", "127.0.0.1", "--port", str(sink_port), "--store", store,
            ],
            cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(sink_port, timeout=30)
        return process

    agent = orders_agent(StrictOrder, effects)
    app = agent.app(settings=Settings(broker_url=ingress))
    process = await asyncio.to_thread(start_sink)
    try:
        async with broker(tmp_path, {agent: app}, sink_url=sink_url, port=port) as stack:
            refused = order(0)
            await publish(stack.ingress, refused)
            # The broker counts a letter as sent when the sink has answered it 2xx.
            await async_wait_until(
                lambda: stack.dead_lettered(ORDERS_TRIGGER) == 1, message="the sink's 202"
            )
            process.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(process.wait, 10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    process = await asyncio.to_thread(start_sink)
    try:
        (letter,) = await async_wait_until(
            lambda: letters(sink_url), timeout=20, message="the letter after the restart"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert letter["id"] == refused.id
    assert letter["trigger"] == ORDERS_TRIGGER
    assert letter["error"]["code"] == "422"


@pytest.mark.parametrize("in_process", [False, True], ids=["agent-processes", "in-process"])
async def test_agentfn_dev_gives_generated_triggers_its_dead_letter_sink(
    tmp_path: Path, in_process: bool
) -> None:
    port, dlq_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
    command = [
        sys.executable, "-m", "agentfn.functions.cli", "dev", "tests.functions._agents",
        "--port", str(port), "--dlq-port", str(dlq_port), "--data-dir", str(tmp_path / "data"),
        "--no-model",
    ]  # fmt: skip
    process = subprocess.Popen(
        [*command, *(["--in-process"] if in_process else [])],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sink_url = f"http://127.0.0.1:{dlq_port}"
    try:
        await asyncio.to_thread(wait_for_port, port, timeout=60)
        refused = event("test.job", {"text": "no ledger named"})  # Job needs a ledger: 422
        await publish(f"http://127.0.0.1:{port}/default/default", refused)
        letter = await letter_of(sink_url, refused)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output
    assert (letter["namespace"], letter["broker"], letter["trigger"]) == (
        "default",
        "default",
        "ledger-test-job",
    )
    assert letter["error"]["code"] == "422"
    assert (tmp_path / "data" / "deadletters.sqlite3").exists()
    assert f"dead-letter sink {sink_url}" in " ".join(output.split())
    assert f"agentfn dlq list --url {sink_url}" in " ".join(output.split())


def listening(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def dead_lettered_by(metrics_url: str, outcome: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(metrics_url)).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("broker_filter_dead_letter_count_total{")
        and f'outcome="{outcome}"' in line
    )


@pytest.mark.parametrize("mode", ["service", "no-dlq"])
async def test_agentfn_dev_without_its_own_sink(tmp_path: Path, mode: str) -> None:
    """``--service dead-letters=URL``: that sink takes the letters (by the same paths) and dev
    starts none; ``--no-dlq``: no sink at all, a generated Trigger drops what it gives up on.
    The sink would listen before the broker does, so a closed port once the broker is up
    shows it was never started."""
    port, dlq_port = free_port(), free_port()
    elsewhere = Sink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
    async with serving(elsewhere) as elsewhere_url:
        choice = (
            ["--service", f"dead-letters={elsewhere_url}"] if mode == "service" else ["--no-dlq"]
        )
        process = subprocess.Popen(
            [
                sys.executable, "-m", "agentfn.functions.cli", "dev", "tests.functions._agents",
                "--in-process", "--port", str(port), "--dlq-port", str(dlq_port),
                "--data-dir", str(tmp_path / "data"), "--no-model", *choice,
            ],
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            await asyncio.to_thread(wait_for_port, port, timeout=60)
            assert not listening(dlq_port)
            refused = event("test.job", {"text": "no ledger named"})
            await publish(f"http://127.0.0.1:{port}/default/default", refused)
            if mode == "service":
                await async_wait_until(lambda: elsewhere.events, message="the letter elsewhere")
                (letter,) = elsewhere.events
                assert letter.id == refused.id
                assert elsewhere.paths == ["/default/default/ledger-test-job"]
            else:
                metrics = f"http://127.0.0.1:{port}/metrics"
                await async_wait_until(
                    lambda: dead_lettered_by(metrics, "dropped"), message="the drop"
                )
                assert await dead_lettered_by(metrics, "sent") == 0
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output
    assert not (tmp_path / "data" / "deadletters.sqlite3").exists()
