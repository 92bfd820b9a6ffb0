"""Every answer of the Knative data plane, one handler behaviour at a time (in-process ASGI)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from agentfn.events import CloudEvent, extensions, from_http
from agentfn.events.http import STRUCTURED_CONTENT_TYPE
from agentfn.functions import (
    Agent,
    AgentApp,
    ClaimState,
    Context,
    Delivery,
    InMemoryIdempotencyStore,
    RetryableError,
    Settings,
)
from pydantic import BaseModel, Field

from tests.functions._support import asgi_client, binary, event, post, reply_of, structured


class Numbers(BaseModel):
    values: list[int] = Field(min_length=1)


class Total(BaseModel):
    total: int
    count: int


class Flag(BaseModel):
    on: bool


class OtherError(Exception):
    pass


class DownstreamError(Exception):
    """Declared retryable on one handler."""


@dataclass
class Calls:
    totals: list[list[int]] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    failures_left: int = 0


def build_agent(calls: Calls) -> Agent:
    agent = Agent("summer", delivery=Delivery(timeout=timedelta(milliseconds=500)))

    @agent.on("t.sum", emits={"t.total": Total})
    async def add(numbers: Numbers, ctx: Context) -> Total:
        calls.totals.append(numbers.values)
        if calls.failures_left:
            calls.failures_left -= 1
            raise OtherError("not this time")
        return Total(total=sum(numbers.values), count=len(numbers.values))

    @agent.on("t.sum.sync", emits={"t.total": Total})
    def add_sync(numbers: Numbers) -> Total:
        calls.threads.append(threading.get_ident())
        return Total(total=sum(numbers.values), count=len(numbers.values))

    @agent.on("t.silent")
    async def silent(numbers: Numbers) -> None:
        calls.totals.append(numbers.values)

    @agent.on("t.retryable")
    async def retryable(numbers: Numbers) -> None:
        raise RetryableError("downstream busy", retry_after=numbers.values[0] / 10)

    @agent.on("t.retryable.default")
    async def retryable_default(numbers: Numbers) -> None:
        raise RetryableError("downstream busy")

    @agent.on("t.declared", retry_on=[DownstreamError])
    async def declared(numbers: Numbers) -> None:
        raise DownstreamError("declared retryable")

    @agent.on("t.connection")
    async def connection(numbers: Numbers) -> None:
        raise ConnectionRefusedError("no route")

    @agent.on("t.slow")
    async def slow(numbers: Numbers) -> None:
        await asyncio.Event().wait()  # never set: only the deadline ends it

    @agent.on("t.crash")
    async def crash(numbers: Numbers) -> None:
        raise OtherError("bug in the handler")

    @agent.on("t.undeclared", emits={"t.total": Total})
    async def undeclared(numbers: Numbers) -> Flag:
        return Flag(on=True)

    @agent.on("t.dict")
    async def returns_dict(numbers: Numbers) -> dict[str, int]:
        return {"total": 1}

    @agent.on("t.raw")
    async def raw(received: CloudEvent) -> CloudEvent:
        return CloudEvent.new("t.raw.out", "/elsewhere", {"echo": received.data})

    @agent.on("t.filtered", filters={"subject": "vip"}, emits={"t.total": Total})
    async def vip(numbers: Numbers) -> Total:
        return Total(total=sum(numbers.values) * 100, count=len(numbers.values))

    return agent


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def app(calls: Calls) -> AgentApp:
    return build_agent(calls).app(settings=Settings(idempotency="embedded"))


@pytest.fixture
async def client(app: AgentApp) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def test_a_reply_is_200_with_the_reply_event_in_binary_mode(
    client: httpx.AsyncClient,
) -> None:
    sent = event("t.sum", {"values": [1, 2, 3]})
    response = await post(client, sent)
    reply = reply_of(response)
    assert reply.type == "t.total"
    assert reply.source == "/agentfn/agents/summer"
    assert reply.id != sent.id
    assert reply.data == {"total": 6, "count": 3}
    assert reply.datacontenttype == "application/json"
    assert "time" in reply.attributes
    assert response.headers["content-length"] == str(len(response.content))


async def test_the_first_agent_mints_a_chain_id_from_the_event_and_later_agents_carry_it(
    client: httpx.AsyncClient,
) -> None:
    first = reply_of(await post(client, event("t.sum", {"values": [1]}, id="a-1")))
    again = reply_of(await post(client, event("t.sum", {"values": [1]}, id="a-1", source="/b")))
    chain = first.attributes[extensions.CHAIN_ID]
    assert chain
    assert chain != again.attributes[extensions.CHAIN_ID]
    # A chain id binary mode would percent-encode: the reply goes structured, its JSON body
    # carrying the id exactly for SDKs that never percent-decode a header.
    response = await post(client, event("t.sum", {"values": [1]}, agentfnchainid="run 7"))
    assert response.status_code == 200
    assert response.headers["content-type"] == STRUCTURED_CONTENT_TYPE
    assert "ce-id" not in response.headers
    assert json.loads(response.content)[extensions.CHAIN_ID] == "run 7"
    (carried,) = from_http(list(response.headers.items()), response.content)
    assert carried.attributes[extensions.CHAIN_ID] == "run 7"
    assert carried.data == {"total": 1, "count": 1}


async def test_trace_context_and_broker_ttl_are_carried_onto_the_reply(
    client: httpx.AsyncClient,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sent = event("t.sum", {"values": [1]}, traceparent=traceparent, knativebrokerttl=17)
    reply = reply_of(await post(client, sent))
    # No tracer provider installed: the reply continues the incoming context as it is.
    assert reply.attributes[extensions.TRACEPARENT] == traceparent
    assert reply.attributes[extensions.KNATIVE_BROKER_TTL] == "17"


async def test_structured_mode_events_are_accepted(client: httpx.AsyncClient) -> None:
    headers, body = structured(event("t.sum", {"values": [4, 5]}))
    reply = reply_of(await client.post("/", headers=headers, content=body))
    assert reply.data == {"total": 9, "count": 2}


async def test_a_sync_handler_runs_in_a_worker_thread(
    client: httpx.AsyncClient, calls: Calls
) -> None:
    reply = reply_of(await post(client, event("t.sum.sync", {"values": [2, 2]})))
    assert reply.data == {"total": 4, "count": 2}
    assert calls.threads
    assert calls.threads[0] != threading.get_ident()


async def test_no_reply_is_202_with_an_empty_body(client: httpx.AsyncClient, calls: Calls) -> None:
    for value in (7, 8, 9):
        response = await post(client, event("t.silent", {"values": [value]}))
        assert response.status_code == 202
        assert response.content == b""
        assert response.headers.get_list("content-length") == ["0"]
    assert calls.totals == [[7], [8], [9]]


async def test_a_raw_cloudevent_handler_replies_with_its_event_plus_the_chain(
    client: httpx.AsyncClient,
) -> None:
    reply = reply_of(await post(client, event("t.raw", {"x": 1}, agentfnchainid="c-1")))
    assert (reply.type, reply.source, reply.data) == ("t.raw.out", "/elsewhere", {"echo": {"x": 1}})
    assert reply.attributes[extensions.CHAIN_ID] == "c-1"


async def test_filters_route_to_the_matching_handler(client: httpx.AsyncClient) -> None:
    vip = reply_of(await post(client, event("t.filtered", {"values": [1]}, subject="vip")))
    assert vip.data == {"total": 100, "count": 1}
    other = await post(client, event("t.filtered", {"values": [1]}, subject="nobody"))
    assert other.status_code == 400
    assert other.json()["error"] == "no handler"


@pytest.mark.parametrize(
    ("headers", "body", "attribute"),
    [
        ({"ce-specversion": "1.0", "ce-source": "/x", "ce-type": "t.sum"}, b"{}", "id"),
        (
            {"ce-specversion": "0.3", "ce-id": "1", "ce-source": "/x", "ce-type": "t.sum"},
            b"",
            "specversion",
        ),
        ({"content-type": "application/json"}, b'{"values": [1]}', "content-type"),
        # Not a CloudEvent at all: 400 as well, never 415 (Knative's data plane).
        ({"content-type": "text/plain"}, b"hello", "content-type"),
        ({}, b"", "content-type"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", "body"),
    ],
)
async def test_an_invalid_cloudevent_is_400_naming_the_attribute(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, attribute: str, calls: Calls
) -> None:
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 400
    assert response.json()["attribute"] == attribute
    assert calls.totals == []


async def test_a_batch_of_several_events_is_400(client: httpx.AsyncClient) -> None:
    from agentfn.events import to_batch

    headers, body = to_batch([event("t.sum", {"values": [1]}), event("t.sum", {"values": [2]})])
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 400
    assert "one event per request" in response.json()["message"]


async def test_an_event_no_handler_consumes_is_400(client: httpx.AsyncClient) -> None:
    response = await post(client, event("t.unknown", {"values": [1]}))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "no handler"
    assert "t.sum" in body["consumes"]


async def test_a_payload_failing_the_input_model_is_422_with_the_errors(
    client: httpx.AsyncClient, calls: Calls
) -> None:
    response = await post(client, event("t.sum", {"values": ["x"], "extra": 1}))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors[0]["loc"] == ["values", 0]
    assert errors[0]["type"] == "int_parsing"
    empty = await post(client, event("t.sum", {"values": []}))
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["type"] == "too_short"
    assert calls.totals == []  # the handler never saw them


async def test_non_json_data_is_validated_as_json_text(client: httpx.AsyncClient) -> None:
    response = await post(
        client, event("t.sum", b"\xff\x00binary", datacontenttype="application/octet-stream")
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("event_type", "values", "retry_after"),
    [
        ("t.retryable", [25], "3"),  # 2.5 s, rounded up
        ("t.retryable.default", [1], "1"),  # AGENTFN_RETRY_AFTER_S
        ("t.declared", [1], "1"),  # retry_on
        ("t.connection", [1], "1"),  # an unreachable downstream
    ],
)
async def test_retryable_failures_are_503_with_retry_after(
    client: httpx.AsyncClient, event_type: str, values: list[int], retry_after: str
) -> None:
    response = await post(client, event(event_type, {"values": values}))
    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.json()["error"] == "retryable"


async def test_a_handler_past_its_deadline_is_503(client: httpx.AsyncClient) -> None:
    # Delivery(timeout=0.5s): the handler gets 0.45 s, so the broker hears back before it gives up.
    response = await post(client, event("t.slow", {"values": [1]}))
    assert response.status_code == 503
    assert response.json()["error"] == "timeout"
    assert response.headers["retry-after"] == "1"


async def test_any_other_exception_is_500_and_the_retry_runs_the_handler_again(
    client: httpx.AsyncClient, calls: Calls
) -> None:
    calls.failures_left = 1
    sent = event("t.sum", {"values": [1, 1]})
    failed = await post(client, sent)
    assert failed.status_code == 500
    assert failed.json() == {
        "error": "error",
        "exception": "OtherError",
        "message": "not this time",
    }
    assert "retry-after" not in failed.headers
    retried = reply_of(await post(client, sent))  # the broker's retry: same id
    assert retried.data == {"total": 2, "count": 2}
    assert calls.totals == [[1, 1], [1, 1]]


@pytest.mark.parametrize("event_type", ["t.undeclared", "t.dict"])
async def test_returning_something_not_declared_is_500(
    client: httpx.AsyncClient, event_type: str
) -> None:
    response = await post(client, event(event_type, {"values": [1]}))
    assert response.status_code == 500
    assert response.json()["exception"] == "TypeError"


async def test_health_readiness_description_and_unknown_paths(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).text == "ok"
    assert (await client.get("/readyz")).status_code == 200
    description = (await client.get("/")).json()
    assert description["name"] == "summer"
    assert "t.sum" in description["consumes"]
    assert (await client.get("/nope")).status_code == 404
    head = await client.head("/healthz")
    assert head.status_code == 200
    assert head.content == b""
    put = await client.put("/", content=b"")
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, HEAD, POST"


async def test_metrics_count_handled_duplicates_and_failures_by_kind(
    client: httpx.AsyncClient,
) -> None:
    sent = event("t.sum", {"values": [1]})
    await post(client, sent)
    await post(client, sent)  # a duplicate
    await post(client, event("t.sum", {"values": "x"}))
    await post(client, event("t.crash", {"values": [1]}))
    await post(client, event("t.retryable", {"values": [1]}))
    text = (await client.get("/metrics")).text
    assert 'agentfn_events_handled_total{agent="summer",type="t.sum"} 1.0' in text
    assert 'agentfn_events_duplicate_total{agent="summer",type="t.sum"} 1.0' in text
    assert 'agentfn_events_failed_total{agent="summer",kind="validation",type="t.sum"} 1.0' in text
    assert 'agentfn_events_failed_total{agent="summer",kind="error",type="t.crash"} 1.0' in text
    assert (
        'agentfn_events_failed_total{agent="summer",kind="retryable",type="t.retryable"} 1.0'
        in text
    )
    assert 'agentfn_handler_duration_seconds_count{agent="summer",type="t.sum"} 1.0' in text


async def test_the_functions_framework_target_answers_the_same(calls: Calls) -> None:
    """``agent.http_function()`` inside functions-framework's own ASGI app (its --asgi mode)."""
    from functions_framework.aio import _create_asgi_app_with_function

    agent = build_agent(calls)
    framework_app = _create_asgi_app_with_function(agent.http_function(), "http", False)
    async with asgi_client(framework_app) as client:
        reply = reply_of(await post(client, event("t.sum", {"values": [3, 4]}), path="/any/path"))
        assert reply.data == {"total": 7, "count": 2}
        assert (await post(client, event("t.silent", {"values": [1]}))).status_code == 202
        invalid = await client.post("/", headers={"ce-id": "1"}, content=b"")
        assert invalid.status_code == 400
        busy = await post(client, event("t.retryable", {"values": [10]}))
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
        assert (await client.get("/healthz")).text == "ok"


async def test_a_body_over_the_limit_is_413(calls: Calls) -> None:
    app = build_agent(calls).app(settings=Settings(idempotency="embedded", max_body_bytes=64))
    headers, body = binary(event("t.sum", {"values": list(range(40))}))

    async def chunks() -> AsyncIterator[bytes]:  # a chunked body, read piece by piece
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    async with asgi_client(app) as client:
        assert (await client.post("/", headers=headers, content=body)).status_code == 413
        chunked = await client.post("/", headers=headers, content=chunks())
        assert chunked.status_code == 413
        small_headers, small = binary(event("t.sum", {"values": [1]}))
        assert (await client.post("/", headers=small_headers, content=small)).status_code == 200


async def test_the_agent_itself_is_an_asgi_app_configured_from_the_environment(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFN_IDEMPOTENCY", "off")
    agent = build_agent(calls)
    sent = event("t.sum", {"values": [5]})
    async with asgi_client(agent) as client:
        first = reply_of(await post(client, sent))
        second = reply_of(await post(client, sent))
    assert first.id != second.id  # dedupe off: both deliveries ran
    assert calls.totals == [[5], [5]]


async def test_async_with_starts_the_app_and_closes_what_it_opened(
    calls: Calls, tmp_path: Path
) -> None:
    store = InMemoryIdempotencyStore(path=tmp_path / "outcomes.jsonl")
    app = AgentApp.from_settings(build_agent(calls).spec, Settings(), store=store)
    async with app:
        session = app.sessions.get()  # the pooled client ctx.http and the publisher use
        status, _, body = await app.deliver(event("t.sum", {"values": [2, 3]}))
        assert (status, json.loads(body)) == (200, {"total": 5, "count": 2})
    assert session.closed
    # The store was given, not made by the app: the caller's to close, still writing its file.
    assert (await store.claim("later", "token", 10.0)).state is ClaimState.ACQUIRED
    await store.complete("later", "token", b"", 60.0)
    await store.aclose()
    reopened = InMemoryIdempotencyStore(path=tmp_path / "outcomes.jsonl")
    assert (await reopened.claim("later", "other", 10.0)).state is ClaimState.DONE
    await reopened.aclose()
