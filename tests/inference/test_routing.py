"""CloudEventRouter: which requests reach the events app, and the lifespan it is given.

The two apps behind the router record what reaches them; the router is the unit under test
(the real server's routing is exercised over sockets in test_model_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from agentfn.inference._routing import CloudEventRouter, is_cloudevent_request

from tests._waiting import async_wait_until

MODEL = "all-minilm-l6-v2"


class Recorder:
    """An ASGI app answering 200 with its name; records the scopes and lifespan it saw."""

    def __init__(self, name: str, log: list[str], *, lifespan: str = "ok") -> None:
        self.name = name
        self.log = log
        self.lifespan = lifespan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if self.lifespan == "unsupported":
                raise RuntimeError("no lifespan here")
            while True:
                message = await receive()
                self.log.append(f"{self.name}:{message['type']}")
                if message["type"] == "lifespan.startup":
                    if self.lifespan == "fails":
                        await send({"type": "lifespan.startup.failed", "message": "no redis"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.log.append(f"{self.name}:{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.name.encode()})


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def route(method: str, path: str, headers: dict[str, str]) -> str:
    log: list[str] = []
    router = CloudEventRouter(
        Recorder("kserve", log), events_app=Recorder("events", log), model_name=MODEL
    )

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(_: Any) -> None:
        return None

    await router(http_scope(method, path, headers), receive, send)
    (entry,) = log
    return entry.split(":", 1)[0]


BINARY = {"ce-specversion": "1.0", "ce-id": "1", "content-type": "application/json"}
STRUCTURED = {"content-type": "application/cloudevents+json; charset=utf-8"}
BATCH = {"content-type": "application/cloudevents-batch+json"}
PLAIN = {"content-type": "application/json"}


@pytest.mark.parametrize("path", ["/", f"/v1/models/{MODEL}:predict"])
@pytest.mark.parametrize(
    "headers", [BINARY, STRUCTURED, BATCH], ids=["binary", "structured", "batch"]
)
async def test_cloudevent_posts_on_root_and_v1_predict_go_to_the_events_app(
    path: str, headers: dict[str, str]
) -> None:
    assert await route("POST", path, headers) == "events"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", f"/v1/models/{MODEL}:predict", PLAIN),  # v1 JSON predict
        ("POST", f"/v2/models/{MODEL}/infer", BINARY),  # OIP v2, whatever its headers
        ("POST", "/v1/models/other-model:predict", BINARY),  # not this model's path
        ("GET", "/", BINARY),  # liveness
        ("GET", "/metrics", {}),
    ],
)
async def test_everything_else_goes_to_kserve(
    method: str, path: str, headers: dict[str, str]
) -> None:
    assert await route(method, path, headers) == "kserve"


def test_a_cloudevent_request_is_recognised_by_its_headers_only() -> None:
    assert is_cloudevent_request(http_scope("POST", "/", {"CE-SpecVersion".lower(): "1.0"}))
    assert not is_cloudevent_request(http_scope("POST", "/", {"content-type": "text/plain"}))
    assert not is_cloudevent_request(http_scope("PUT", "/", BINARY))


async def run_lifespan(events_lifespan: str) -> tuple[list[str], list[str]]:
    """The server's side of a lifespan: startup, then shutdown when startup completed."""
    log: list[str] = []
    router = CloudEventRouter(
        Recorder("kserve", log),
        events_app=Recorder("events", log, lifespan=events_lifespan),
        model_name=MODEL,
    )
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({"type": "lifespan.shutdown"})

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(router({"type": "lifespan", "state": {}}, inbox.get, send))
    # After a failed startup a server sends nothing more (it exits): stop waiting there.
    await async_wait_until(
        lambda: task.done() or "lifespan.startup.failed" in sent, message="the lifespan's end"
    )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return log, sent


async def test_the_events_app_starts_after_kserve_and_stops_before_it() -> None:
    log, sent = await run_lifespan("ok")
    assert log == [
        "kserve:lifespan.startup",
        "events:lifespan.startup",
        "events:lifespan.shutdown",
        "kserve:lifespan.shutdown",
    ]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_a_failed_events_startup_fails_the_servers() -> None:
    log, sent = await run_lifespan("fails")
    assert log == ["kserve:lifespan.startup", "events:lifespan.startup"]
    assert sent == ["lifespan.startup.failed"]


async def test_an_events_app_without_lifespan_does_not_stop_the_server() -> None:
    log, sent = await run_lifespan("unsupported")
    assert log == ["kserve:lifespan.startup", "kserve:lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
