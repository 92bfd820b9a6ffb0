"""Answers of the dead-letter sink, as raw ASGI messages (the broker ingress's style)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from agentfn._asgi import Send

__all__ = ["JSON", "HttpError", "error_body", "respond", "respond_json"]

JSON: Final = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """An answer other than success, raised where the problem is found."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        self.fields = fields

    def body(self) -> bytes:
        return error_body(self.message, **self.fields)


def error_body(message: str, **fields: Any) -> bytes:
    return json.dumps({"error": message, **fields}).encode()


async def respond(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await respond(send, status, json.dumps(payload).encode(), [*JSON, *headers])
