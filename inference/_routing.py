"""Routes the CloudEvents a Trigger delivers to the events app; all else stays kserve's.

A Trigger delivers to the model server's root (a plain subscriber URI) or to
``/v1/models/<name>:predict`` (the URI a Trigger whose subscriber is an InferenceService uses).
kserve takes CloudEvents on v1 predict itself, but answers them as a protocol converter, not an
agent (a reply of type ``io.kserve.inference.response`` with a fresh id, no chain id, no trace
context, no idempotency), so those requests go to ``events_app``, an agent that answers with our
runtime's semantics. A request is a CloudEvent when it is a ``POST`` in binary mode (a
``ce-specversion`` header) or structured or batched (content type
``application/cloudevents+json`` / ``application/cloudevents-batch+json``). Everything else,
OIP v2, v1 JSON predict, health, metadata, ``/metrics``, goes to kserve unchanged.

The events app also gets the server's lifespan (startup and shutdown), run alongside kserve's:
its connections are opened and closed with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from agentfn._asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloudEventRouter", "is_cloudevent_request"]

log = logging.getLogger(__name__)

_CLOUDEVENT_TYPES: Final = frozenset(
    {"application/cloudevents+json", "application/cloudevents-batch+json"}
)


def is_cloudevent_request(scope: Scope) -> bool:
    """Whether an ``http`` scope carries a CloudEvent (binary, structured or batch mode)."""
    if scope.get("method") != "POST":
        return False
    for name, value in scope.get("headers", ()):
        if name == b"ce-specversion":
            return True
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            if media in _CLOUDEVENT_TYPES:
                return True
    return False


class _Lifespan:
    """Drives another app's lifespan protocol from inside ours."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._app = app
        self._scope = {**scope, "state": {}}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._inbox.get, self._outbox.put)
        except Exception:
            # The ASGI spec: an app that raises on a lifespan scope does not support it.
            log.warning("the events app does not take part in the lifespan", exc_info=True)
        finally:
            await self._outbox.put(None)

    async def _step(self, message: str) -> Message | None:
        if self._task is None:
            return None
        await self._inbox.put({"type": message})
        answer = await self._outbox.get()
        if answer is None:  # it returned or raised: no more lifespan for it
            self._task = None
        return answer

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agentfn-events-lifespan")
        answer = await self._step("lifespan.startup")
        if answer is not None and answer["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the events app failed to start: {answer.get('message', '')}")

    async def shutdown(self) -> None:
        answer = await self._step("lifespan.shutdown")
        if answer is not None and answer["type"] == "lifespan.shutdown.failed":
            log.error("the events app failed to shut down: %s", answer.get("message", ""))
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class CloudEventRouter:
    """ASGI middleware: CloudEvent POSTs on ``/`` and v1 predict to ``events_app``.

    Added to kserve's FastAPI app (``app.add_middleware(CloudEventRouter, events_app=...,
    model_name=...)``) before the server starts.
    """

    def __init__(self, app: ASGIApp, *, events_app: ASGIApp, model_name: str) -> None:
        self._app = app
        self._events_app = events_app
        self.paths: frozenset[str] = frozenset({"/", f"/v1/models/{model_name}:predict"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"] in self.paths and is_cloudevent_request(scope):
            await self._events_app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        events = _Lifespan(self._events_app, scope)

        async def forwarding_send(message: Message) -> None:
            # The events app starts once kserve's app has, and its failure is the server's.
            if message["type"] == "lifespan.startup.complete":
                try:
                    await events.startup()
                except Exception as error:
                    message = {"type": "lifespan.startup.failed", "message": str(error)}
            await send(message)

        async def forwarding_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await events.shutdown()
            return message

        await self._app(scope, forwarding_receive, forwarding_send)
