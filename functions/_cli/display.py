"""``agentfn display``: print each CloudEvent received (like Knative's event-display)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import typer
import uvicorn
from agentfn.events import InvalidEventError, from_http
from rich.console import Console

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

console = Console(highlight=False)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def display_app(label: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering 202 to each valid CloudEvent after printing it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            events = from_http(headers, body)
            status, answer = 202, b""
        except InvalidEventError as error:  # no CloudEvent at all is a 400 too (Knative)
            status, answer = 400, json.dumps(error.as_dict()).encode()
            events = []
        for event in events:
            attrs = "  ".join(f"{k}={v}" for k, v in event.attributes.items())
            console.print(f"[bold cyan]{label}[/bold cyan] {attrs}")
            if event.data is not None:
                console.print(f"[bold cyan]{label}[/bold cyan]   data: {event.data!r}")
        if not events and status != 202:
            console.print(f"[red]{label} rejected ({status}): {answer.decode()}[/red]")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    return app


def display(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    label: Annotated[str, typer.Option(help="Prefix of each printed line")] = "display",
) -> None:
    """Listen for CloudEvents and print each one (a sink for Triggers and dead letters)."""
    uvicorn.run(display_app(label), host=host, port=port, log_level="warning")
