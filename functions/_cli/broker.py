"""``agentfn broker``: the embedded broker (or, with ``--kafka``, the Kafka-backed one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from agentfn.brokers.config import ConfigError, load_topology, parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.log import EventLog, LogUnavailableError
from agentfn.brokers.server import BrokerServer
from agentfn.brokers.settings import BrokerSettings
from agentfn.functions._cli._process import stop_on_signals, tune_gc_for_serving
from rich.console import Console

from agentfn._asgi import run as run_loop

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
    stop = stop_on_signals()
    async with server:
        tune_gc_for_serving()
        bound = await server.listen(host, port)
        paths = ", ".join(spec.path for spec in server.topology.brokers.values())
        console.print(
            f"[green]broker ready[/green] on http://{host}:{bound} "
            f"(brokers: {paths}; triggers: {len(server.topology.triggers)})"
        )
        await stop.wait()
        console.print("broker stopping: draining deliveries in flight")


def broker(
    port: Annotated[int, typer.Option(help="Ingress port")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Where the embedded event log lives")] = Path(
        ".data/broker"
    ),
    triggers: Annotated[
        list[Path] | None,
        typer.Option(
            "--triggers",
            help="YAML file or folder (knative/) of Broker/Trigger objects (repeatable)",
        ),
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
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            metavar="BOOTSTRAP",
            help="Store events in Kafka (host:port[,...]) instead of the embedded log",
        ),
    ] = None,
    kafka_config: Annotated[
        Path | None,
        typer.Option(
            "--kafka-config",
            metavar="FILE",
            help="A kafka-broker-config ConfigMap (YAML): topic partitions, replication, "
            "bootstrap.servers; selects Kafka",
        ),
    ] = None,
    topic_partitions: Annotated[
        int | None,
        typer.Option(help="Partitions of new topics (default: the ConfigMap's, else 10)", min=1),
    ] = None,
    topic_replication: Annotated[
        int | None,
        typer.Option(help="Replication factor of new topics (default: ConfigMap's, else 1)", min=1),
    ] = None,
    kafka_session_timeout: Annotated[
        float,
        typer.Option(help="Consumer group session timeout in seconds (Knative's: 10)", min=1.0),
    ] = 10.0,
    kafka_fetch_max_wait: Annotated[
        float,
        typer.Option(
            help="Longest a Kafka fetch waits for records, in seconds (Knative's: 0.5)", min=0.001
        ),
    ] = 0.5,
) -> None:
    """Run the broker: Knative ingress, Triggers, retries, replies, dead letters.

    Events are stored in the embedded SQLite log, or with --kafka in Kafka, laid out as
    Knative's Kafka Broker lays them out.
    """
    overrides: dict[str, object] = {}
    if max_body is not None:
        overrides["max_body_bytes"] = max_body
    if fsync is not None:
        overrides["fsync"] = fsync
    try:
        settings = BrokerSettings(**overrides)  # type: ignore[arg-type]
        topology = load_topology(triggers) if triggers else parse_documents([])
        event_log: EventLog
        if kafka is not None or kafka_config is not None:
            # Imported here: kafka-python costs every other command a tenth of a second.
            from agentfn.brokers.kafka import (
                RECORD_OVERHEAD_BYTES,
                KafkaBrokerConfig,
                KafkaEventLog,
            )

            config = (
                KafkaBrokerConfig.from_configmap(kafka_config)
                if kafka_config is not None
                else KafkaBrokerConfig()
            )
            bootstrap = kafka or config.bootstrap_servers
            if not bootstrap:
                raise ValueError("--kafka-config has no bootstrap.servers; give --kafka")
            event_log = KafkaEventLog(
                bootstrap,
                partitions=topic_partitions or config.partitions,
                replication_factor=topic_replication or config.replication_factor,
                session_timeout=kafka_session_timeout,
                fetch_max_wait=kafka_fetch_max_wait,
                # Every body the ingress takes fits in a record.
                max_record_bytes=settings.max_body_bytes + RECORD_OVERHEAD_BYTES,
            )
        else:
            event_log = SqliteEventLog(data_dir, fsync=settings.fsync)
        server = BrokerServer(
            topology, event_log, services=parse_services(service or []), settings=settings
        )
    except (ConfigError, ValueError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    try:
        run_loop(_serve(server, host, port))
    except LogUnavailableError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
