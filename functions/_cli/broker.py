"""``agentfn broker``: the embedded broker (or, with ``--kafka``, the Kafka-backed one)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from brokers.config import ConfigError, load_topology, parse_documents
from brokers.embedded import SqliteEventLog
from brokers.server import BrokerServer
from brokers.settings import BrokerSettings

console = Console(stderr=True)


def parse_services(pairs: list[str]) -> dict[str, str]:
    services: dict[str, str] = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url:
            raise typer.BadParameter(f"{pair!r} is not NAME=URL", param_hint="--service")
        services[name] = url
    return services


async def _serve(server: BrokerServer, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    bound = await server.listen(host, port)
    paths = ", ".join(spec.path for spec in server.topology.brokers.values())
    console.print(
        f"[green]broker ready[/green] on http://{host}:{bound} "
        f"(brokers: {paths}; triggers: {len(server.topology.triggers)})"
    )
    await stop.wait()
    console.print("broker stopping: draining deliveries in flight")
    await server.stop()


def broker(
    port: Annotated[int, typer.Option(help="Ingress port")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Where the embedded event log lives")] = Path(
        ".data/broker"
    ),
    triggers: Annotated[
        list[Path] | None,
        typer.Option("--triggers", help="YAML with Broker/Trigger objects (repeatable)"),
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option("--service", help="NAME=URL for subscriber refs (repeatable)"),
    ] = None,
    max_body: Annotated[
        int | None, typer.Option(help="Largest accepted request in bytes (>= 65536)")
    ] = None,
    fsync: Annotated[
        bool | None, typer.Option("--fsync/--no-fsync", help="fsync every group commit")
    ] = None,
) -> None:
    """Run the embedded broker: Knative ingress, Triggers, retries, replies, dead letters."""
    overrides: dict[str, object] = {}
    if max_body is not None:
        overrides["max_body_bytes"] = max_body
    if fsync is not None:
        overrides["fsync"] = fsync
    try:
        settings = BrokerSettings(**overrides)  # type: ignore[arg-type]
        topology = load_topology(triggers) if triggers else parse_documents([])
        event_log = SqliteEventLog(data_dir, fsync=settings.fsync)
        server = BrokerServer(
            topology, event_log, services=parse_services(service or []), settings=settings
        )
    except (ConfigError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    _run(_serve(server, host, port))


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency through uvicorn[standard]
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]
