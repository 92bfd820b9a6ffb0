"""``agentfn render``: the agents' declarations as the manifests a cluster (or Compose) runs."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.options import DEFAULT_IMAGE, Otel, Profile, RenderOptions
from agentfn.functions._manifests.render import header, render_compose, write
from agentfn.functions._manifests.render import render as render_files
from pydantic import ValidationError

__all__ = [
    "DEFAULT_TARGETS",
    "AlertDepth",
    "BrokerName",
    "Image",
    "KafkaBootstrap",
    "Namespace",
    "OtelOption",
    "ProfileOption",
    "Targets",
    "find_agents",
    "options_or_exit",
    "render",
]

DEFAULT_TARGETS = ("agentfn.functions.agents",)
_DEFAULTS = RenderOptions()


# The options `agentfn render` and `agentfn deploy` share, declared once.
Targets = Annotated[
    list[str] | None, typer.Argument(help="Agents: MODULE[:AGENT], package, .py file or folder")
]
Namespace = Annotated[
    str,
    typer.Option(
        help="Namespace of every object: a dedicated one, its quota and LimitRange bound "
        "all it runs"
    ),
]
Image = Annotated[str, typer.Option(help="The image every agent runs")]
BrokerName = Annotated[str, typer.Option(help="Name of the Kafka-backed Broker")]
KafkaBootstrap = Annotated[str, typer.Option(help="bootstrap.servers of the Broker's Kafka")]
ProfileOption = Annotated[
    Profile, typer.Option(help="local: Redis in the namespace, replication 1; prod: replication 3")
]
OtelOption = Annotated[
    Otel, typer.Option(help="OpenTelemetry Collector: one shared, a sidecar per agent, or none")
]
AlertDepth = Annotated[
    int, typer.Option(help="Waiting dead letters of one Trigger that raise the alert", min=0)
]


def options_or_exit(**values: Any) -> RenderOptions:
    """The render options of the command's flags; a bad one exits 2, naming it."""
    try:
        return RenderOptions(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from None


def find_agents(targets: list[str]) -> list[DiscoveredAgent]:
    """The agents under ``targets``, as ``agentfn agents`` finds them; bad targets exit 2."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    found: list[DiscoveredAgent] = []
    for target in targets:
        try:
            agents, errors = discover_agents(target)
        except (ModuleNotFoundError, LookupError) as error:
            raise typer.BadParameter(str(error), param_hint="TARGETS") from None
        for problem in errors:
            typer.echo(f"skipped {problem}", err=True)
        found.extend(agents)
    if not found:
        typer.echo(f"error: no agents under {' '.join(targets)}", err=True)
        raise typer.Exit(2)
    return found


def _summary(documents: list[dict[str, Any]]) -> str:
    """The kinds in a file (``4 Service, SinkBinding``); a Compose file's services."""
    if len(documents) == 1 and "kind" not in documents[0]:
        return f"{len(documents[0].get('services') or {})} Compose services"
    kinds = Counter(str(document.get("kind")) for document in documents)
    return ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in kinds.items())


def render(
    targets: Targets = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write to [default: knative/, with --compose: .]"),
    ] = None,
    namespace: Namespace = _DEFAULTS.namespace,
    image: Image = DEFAULT_IMAGE,
    broker: BrokerName = _DEFAULTS.broker,
    kafka_bootstrap: KafkaBootstrap = _DEFAULTS.kafka_bootstrap,
    profile: ProfileOption = _DEFAULTS.profile,
    otel: OtelOption = _DEFAULTS.otel,
    alert_depth: AlertDepth = _DEFAULTS.alert_depth,
    compose: Annotated[
        bool, typer.Option("--compose", help="Write compose.yaml (Docker, no Kubernetes)")
    ] = False,
) -> None:
    """Render the agents' Knative manifests (Services, Broker, Triggers, dead-letter sink, ...)."""
    names = list(targets or DEFAULT_TARGETS)
    options = options_or_exit(
        namespace=namespace,
        image=image,
        broker=broker,
        kafka_bootstrap=kafka_bootstrap,
        profile=profile,
        otel=otel,
        alert_depth=alert_depth,
    )
    agents = find_agents(names)
    try:
        rendered = render_compose(agents, options) if compose else render_files(agents, options)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    folder = out if out is not None else Path("." if compose else "knative")
    written = write(rendered, folder, header(names, options, compose=compose))
    for path in written:
        typer.echo(f"wrote {path} ({_summary(rendered[path.name])})")
