"""``agentfn dlq serve``: the dead-letter sink, as the Knative Service ``dead-letters`` runs it.

Every option defaults to its ``AGENTFN_DLQ_*`` variable (:class:`DeadLetterSettings`), so the
container needs no arguments; a flag given wins over the variable.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from agentfn.brokers.deadletters.settings import DeadLetterSettings
from agentfn.brokers.deadletters.sink import DeadLetterSink
from agentfn.brokers.deadletters.store import LetterStoreUnavailableError, open_store
from agentfn.functions._cli._process import stop_on_signals
from pydantic import ValidationError
from rich.console import Console

from agentfn._asgi import run as run_loop

__all__ = ["serve"]

console = Console(stderr=True)


def _shown(url: str) -> str:
    """``url`` without a password (a Redis URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def _serve(sink: DeadLetterSink, host: str, port: int) -> None:
    stop = stop_on_signals()
    async with sink:
        bound = await sink.listen(host, port)
        settings = sink.settings
        alert = (
            "off"
            if settings.alert_depth is None
            else f"over {settings.alert_depth} per Trigger"
            + (f" -> {settings.alert_sink}" if settings.alert_sink else "")
        )
        console.print(
            f"[green]dead-letter sink ready[/green] on http://{host}:{bound} "
            f"(store: {_shown(settings.store)}; replays to: {settings.broker_url or 'not set'}; "
            f"alert: {alert}{'; error bodies redacted' if settings.redact_data else ''})"
        )
        await stop.wait()
        console.print("dead-letter sink stopping")


def serve(
    port: Annotated[int, typer.Option(help="Port to serve the sink and its API on")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "0.0.0.0",
    store: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///PATH, redis://HOST:PORT/DB, or redis (AGENTFN_REDIS_URL) "
            "[env AGENTFN_DLQ_STORE; default: sqlite under .data/deadletters]",
        ),
    ] = None,
    alert_depth: Annotated[
        int | None,
        typer.Option(
            help="Warn (and post an alert) when a Trigger has more waiting letters than this "
            "[env AGENTFN_DLQ_ALERT_DEPTH]",
            min=0,
        ),
    ] = None,
    alert_sink: Annotated[
        str | None,
        typer.Option(
            help="Where the threshold CloudEvent is posted [env AGENTFN_DLQ_ALERT_SINK]",
        ),
    ] = None,
    redact_data: Annotated[
        bool | None,
        typer.Option(
            "--redact-data/--keep-data",
            help="Keep only the length and hash of knativeerrordata [env AGENTFN_DLQ_REDACT_DATA]",
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(help="Broker ingress that replays go to [env AGENTFN_BROKER_URL]"),
    ] = None,
    max_body: Annotated[
        int | None,
        typer.Option(
            help="Largest accepted letter in bytes (>= 65536) [env AGENTFN_DLQ_MAX_BODY_BYTES]"
        ),
    ] = None,
) -> None:
    """Run the dead-letter sink: keeps every letter the broker posts, serves the API the
    other ``agentfn dlq`` commands use, watches the depth per Trigger."""
    flags = {
        "store": store,
        "alert_depth": alert_depth,
        "alert_sink": alert_sink,
        "redact_data": redact_data,
        "broker_url": broker_url,
        "max_body_bytes": max_body,
    }
    try:
        settings = DeadLetterSettings(**{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]
        letters = open_store(settings.store, redis_url=settings.redis_url)
    except (ValidationError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    sink = DeadLetterSink(letters, settings=settings)
    try:
        run_loop(_serve(sink, host, port))
    except (LetterStoreUnavailableError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
