"""``agentfn send``: POST one CloudEvent and show the answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from agentfn.events import CloudEvent, DeliveryFormat, InvalidEventError
from agentfn.functions.client import send_event
from rich.console import Console

console = Console()


def _parse_data(raw: str | None) -> Any:
    if raw is None:
        return None
    text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--data") from None


def _parse_extensions(pairs: list[str]) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r} is not k=v", param_hint="--extension")
        extensions[name.strip()] = value
    return extensions


def send(
    url: Annotated[
        str, typer.Argument(help="Where to POST, e.g. http://localhost:8080/default/default")
    ],
    event_type: Annotated[str, typer.Option("--type", "-t", help="CloudEvent type")],
    source: Annotated[
        str, typer.Option("--source", "-s", help="CloudEvent source (URI-reference)")
    ] = "/agentfn/cli",
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON data, or @file")] = None,
    extension: Annotated[
        list[str] | None,
        typer.Option("--extension", "-e", help="k=v extension attribute, repeatable"),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id (default: a new UUIDv7)")
    ] = None,
    structured: Annotated[
        bool | None,
        typer.Option(
            "--structured/--binary",
            help="Force structured or binary mode (default: binary, structured when a string "
            "attribute would need percent-encoding in a header)",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 10.0,
) -> None:
    """POST one CloudEvent and print the status and any reply event."""
    attributes: dict[str, object] = dict(_parse_extensions(extension or []))
    if event_id is not None:
        attributes["id"] = event_id
    try:
        event = CloudEvent.new(event_type, source, _parse_data(data), **attributes)
    except InvalidEventError as error:
        raise typer.BadParameter(str(error)) from None
    chosen = {None: None, True: DeliveryFormat.JSON, False: DeliveryFormat.BINARY}[structured]
    try:
        result = send_event(url, event, format=chosen, timeout=timeout)
    except OSError as error:
        console.print(f"[red]could not reach {url}: {error}[/red]")
        raise typer.Exit(2) from None
    style = "green" if 200 <= result.status < 300 else "red"
    console.print(f"[{style}]{result.status}[/{style}] {event.type} id={event.id}")
    if result.reply is not None:
        console.print("reply:", json.dumps(dict(result.reply.attributes)), result.reply.data)
    elif result.reply_error:
        console.print(f"[yellow]answer is not a CloudEvent: {result.reply_error}[/yellow]")
    elif result.body and result.status >= 300:
        console.print(result.body.decode("utf-8", "replace"))
    if result.status >= 300:
        raise typer.Exit(1)
