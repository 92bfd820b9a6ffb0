"""``AgentApp.deliver`` (the broker's in-process call) answers exactly as the HTTP path does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from events import CloudEvent, from_http
from functions import AgentApp, Settings
from tests.functions._support import asgi_client, event, post
from tests.functions.test_responses import Calls, build_agent

CASES: list[tuple[str, dict[str, Any]]] = [
    ("t.sum", {"values": [1, 2, 3]}),  # 200 + reply
    ("t.silent", {"values": [1]}),  # 202
    ("t.sum", {"values": []}),  # 422: fails the input model
    ("t.nothing", {"values": [1]}),  # 400: no handler
    ("t.retryable", {"values": [25]}),  # 503 + Retry-After
    ("t.crash", {"values": [1]}),  # 500
    ("t.slow", {"values": [1]}),  # 503: past the handler deadline
    ("t.raw", {"values": [1]}),  # 200 + the handler's own CloudEvent
]


def app() -> AgentApp:
    return build_agent(Calls()).app(settings=Settings(idempotency="embedded"))


def comparable(status: int, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """What must match: status, Retry-After, the reply (less what is fresh per reply)."""
    named = {k.lower(): v for k, v in headers}
    shown: dict[str, Any] = {"status": status, "retry-after": named.get("retry-after")}
    if status == 200:
        (reply,) = from_http(headers, body)
        fresh = {"id", "time", "traceparent"}
        shown["reply"] = ({k: v for k, v in reply.attributes.items() if k not in fresh}, reply.data)
    elif body:
        shown["error"] = httpx.Response(status, content=body).json().get("error")
    return shown


@pytest.mark.parametrize(
    ("event_type", "data"), CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CASES)]
)
async def test_deliver_answers_as_the_http_path(event_type: str, data: dict[str, Any]) -> None:
    sent: CloudEvent = event(event_type, data, id="same-id", agentfnchainid="chain-1")
    over_http, in_process = app(), app()
    async with asgi_client(over_http) as client:
        response = await post(client, sent)
    expected = comparable(response.status_code, list(response.headers.items()), response.content)
    status, headers, body = await in_process.deliver(sent)
    got = comparable(status, [(k.decode(), v.decode()) for k, v in headers], body)
    assert got == expected
    assert expected["status"] in {200, 202, 400, 422, 500, 503}


async def test_a_duplicate_delivered_in_process_gets_the_first_reply_byte_for_byte() -> None:
    hosted = app()
    sent = event("t.sum", {"values": [2, 2]})
    first = await hosted.deliver(sent)
    again = await hosted.deliver(sent)
    assert first[0] == again[0] == 200
    assert (first[1], first[2]) == (again[1], again[2])
