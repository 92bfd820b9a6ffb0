"""``AgentApp.deliver`` (the broker's in-process call) answers exactly as the HTTP path does."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from agentfn.events import CloudEvent, from_http
from agentfn.functions import AgentApp, Settings

from tests.functions._support import asgi_client, event, post
from tests.functions.test_responses import Calls, build_agent

JSON = {"content-type": "application/json"}
#: Every type the test agent consumes, in declaration order: what a 400 lists.
CONSUMES = [
    "t.sum",
    "t.sum.sync",
    "t.silent",
    "t.retryable",
    "t.retryable.default",
    "t.declared",
    "t.connection",
    "t.slow",
    "t.crash",
    "t.undeclared",
    "t.dict",
    "t.raw",
    "t.filtered",
]


@dataclass(frozen=True)
class Case:
    """One delivery and the answer it must get, whichever path carries it."""

    type: str
    data: dict[str, Any]
    status: int
    #: Every header but ``content-length`` (HTTP only) and a reply's fresh ``ce-id``/``ce-time``.
    headers: dict[str, str] = field(default_factory=dict)
    #: The JSON body; ``None``: no body at all.
    body: Any = None
    reply: bool = False


CASES = [
    Case(
        "t.sum",
        {"values": [1, 2, 3]},
        200,
        {
            "ce-specversion": "1.0",
            "ce-source": "/agentfn/agents/summer",
            "ce-type": "t.total",
            "ce-agentfnchainid": "chain-1",  # the chain carries on into the reply
            **JSON,
        },
        {"total": 6, "count": 3},
        reply=True,
    ),
    Case("t.silent", {"values": [1]}, 202),
    Case(
        "t.sum",
        {"values": []},
        422,  # fails the input model
        JSON,
        {
            "error": "validation",
            "count": 1,
            "errors": [
                {
                    "type": "too_short",
                    "loc": ["values"],
                    "msg": "List should have at least 1 item after validation, not 0",
                }
            ],
        },
    ),
    Case(
        "t.nothing",
        {"values": [1]},
        400,  # no handler consumes the type
        JSON,
        {"error": "no handler", "type": "t.nothing", "agent": "summer", "consumes": CONSUMES},
    ),
    Case(
        "t.retryable",
        {"values": [25]},
        503,  # the handler asked for 2.5 s: Retry-After counts whole seconds, rounded up
        {**JSON, "retry-after": "3"},
        {"error": "retryable", "exception": "RetryableError", "message": "downstream busy"},
    ),
    Case(
        "t.crash",
        {"values": [1]},
        500,
        JSON,
        {"error": "error", "exception": "OtherError", "message": "bug in the handler"},
    ),
    Case(
        "t.slow",
        {"values": [1]},
        503,  # past the handler's 500 ms deadline
        {**JSON, "retry-after": "1"},
        {"error": "timeout", "exception": "TimeoutError", "message": ""},
    ),
    Case(
        "t.raw",
        {"values": [1]},
        200,  # the handler's own CloudEvent, chain id added
        {
            "ce-specversion": "1.0",
            "ce-source": "/elsewhere",
            "ce-type": "t.raw.out",
            "ce-agentfnchainid": "chain-1",
            **JSON,
        },
        {"echo": {"values": [1]}},
        reply=True,
    ),
]


def app() -> AgentApp:
    return build_agent(Calls()).app(settings=Settings(idempotency="embedded"))


def assert_answer(case: Case, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    named = {k.lower(): v for k, v in headers}
    assert len(named) == len(headers), f"a header repeated: {headers}"
    assert status == case.status
    if case.reply:
        fresh_id, fresh_time = named.pop("ce-id"), named.pop("ce-time")
        assert fresh_id
        assert fresh_id != "same-id"
        assert datetime.fromisoformat(fresh_time).tzinfo is not None
    assert named == case.headers
    assert (json.loads(body) if body else None) == case.body


def comparable(status: int, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """What must match between the paths: status, Retry-After, the reply (less what is fresh)."""
    named = {k.lower(): v for k, v in headers}
    shown: dict[str, Any] = {"status": status, "retry-after": named.get("retry-after")}
    if status == 200:
        (reply,) = from_http(headers, body)
        fresh = {"id", "time", "traceparent"}
        shown["reply"] = ({k: v for k, v in reply.attributes.items() if k not in fresh}, reply.data)
    elif body:
        shown["error"] = httpx.Response(status, content=body).json()
    return shown


@pytest.mark.parametrize("case", CASES, ids=[f"{c.type}-{c.status}" for c in CASES])
async def test_deliver_answers_as_the_http_path(case: Case) -> None:
    sent: CloudEvent = event(case.type, case.data, id="same-id", agentfnchainid="chain-1")
    over_http, in_process = app(), app()
    async with asgi_client(over_http) as client:
        response = await post(client, sent)
    http_headers = list(response.headers.items())
    assert response.headers["content-length"] == str(len(response.content))
    assert_answer(
        case,
        response.status_code,
        [(k, v) for k, v in http_headers if k != "content-length"],
        response.content,
    )

    status, raw_headers, body = await in_process.deliver(sent)
    await in_process.aclose()
    headers = [(k.decode(), v.decode()) for k, v in raw_headers]
    assert_answer(case, status, headers, body)
    assert comparable(status, headers, body) == comparable(
        response.status_code, http_headers, response.content
    )


async def test_a_duplicate_delivered_in_process_gets_the_first_reply_byte_for_byte() -> None:
    hosted = app()
    sent = event("t.sum", {"values": [2, 2]})
    first = await hosted.deliver(sent)
    again = await hosted.deliver(sent)
    await hosted.aclose()
    assert first[0] == again[0] == 200
    assert (first[1], first[2]) == (again[1], again[2])
