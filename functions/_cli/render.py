"""``agentfn render``: the agents' declarations as the manifests a cluster (or Compose) runs."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.inference import ModelServer, file_notes
from agentfn.functions._manifests.options import DEFAULT_IMAGE, Otel, Profile, RenderOptions
from agentfn.functions._manifests.render import header, render_compose, render_kserve, write
from agentfn.functions._manifests.render import render as render_files
from pydantic import ValidationError

__all__ = [
    "DEFAULT_TARGETS",
    "AlertDepth",
    "BrokerName",
    "Image",
    "KafkaBootstrap",
    "KueueOption",
    "MigProfile",
    "ModelImage",
    "ModelMaxReplicas",
    "Namespace",
    "OtelOption",
    "ProfileOption",
    "Targets",
    "find_agents",
    "kserve_folder",
    "model_servers",
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
MigProfile = Annotated[
    str,
    typer.Option(
        help="MIG slice per model-server replica: <g>g.<memory>gb, the resource "
        "nvidia.com/mig-<profile> (1g.18gb on an H200)"
    ),
]
ModelMaxReplicas = Annotated[
    int | None,
    typer.Option(help="The model servers' maxReplicas [default: what their agent declares]"),
]
ModelImage = Annotated[
    str | None,
    typer.Option(help="Image of the model servers (the inference extra) [default: --image]"),
]
KueueOption = Annotated[
    bool,
    typer.Option("--kueue", help="Queue the model servers' pods through Kueue (kserve/kueue/)"),
]
NoModelServers = Annotated[
    bool,
    typer.Option(
        "--no-model-servers",
        help="No InferenceService, model Trigger or AGENTFN_INFERENCE_TARGETS",
    ),
]


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def options_or_exit(**values: Any) -> RenderOptions:
    """The render options of the command's flags; a bad one exits 2, naming its flag."""
    try:
        return RenderOptions(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{_flag('.'.join(map(str, e['loc'])))}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from None


async def _not_served(texts: object) -> list[list[float]]:
    # The render reads the event-path agent's declarations; it never embeds anything.
    raise RuntimeError("the render's model-server agents embed nothing")


def model_servers() -> list[ModelServer]:
    """A model server per model ``agentfn model serve`` knows, its event path the embedder."""
    from agentfn.functions.agents import embedder
    from agentfn.inference import MODELS

    return [
        ModelServer(
            DiscoveredAgent(
                embedder.__name__, "build", embedder.build(_not_served, model_name=name)
            ),
            name,
        )
        for name in sorted(MODELS)
    ]


def kserve_folder(out: Path | None, kserve_out: Path | None) -> Path:
    """Where ``kserve/`` goes: ``--kserve-out``, else beside the knative folder."""
    if kserve_out is not None:
        return kserve_out
    return Path("kserve") if out is None else out.parent / "kserve"


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
    mig_profile: MigProfile = _DEFAULTS.mig_profile,
    model_max_replicas: ModelMaxReplicas = None,
    model_image: ModelImage = None,
    kueue: KueueOption = False,
    no_model_servers: NoModelServers = False,
    kserve_out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Folder of the InferenceServices [default: kserve/ beside --out]"
        ),
    ] = None,
    compose: Annotated[
        bool, typer.Option("--compose", help="Write compose.yaml (Docker, no Kubernetes)")
    ] = False,
) -> None:
    """Render the agents' Knative manifests (Services, Broker, Triggers, dead-letter sink, ...)
    and the model servers' KServe InferenceServices."""
    names = list(targets or DEFAULT_TARGETS)
    options = options_or_exit(
        namespace=namespace,
        image=image,
        broker=broker,
        kafka_bootstrap=kafka_bootstrap,
        profile=profile,
        otel=otel,
        alert_depth=alert_depth,
        mig_profile=mig_profile,
        model_max_replicas=model_max_replicas,
        model_image=model_image,
        kueue=kueue,
    )
    agents = find_agents(names)
    servers = [] if no_model_servers else model_servers()
    head = header(names, options, compose=compose, model_servers=not no_model_servers)
    outputs: list[tuple[dict[str, list[dict[str, Any]]], Path, dict[str, str]]] = []
    try:
        if compose:
            outputs.append((render_compose(agents, options, servers), out or Path("."), {}))
        else:
            folder = out if out is not None else Path("knative")
            outputs.append((render_files(agents, options, servers), folder, {}))
            kserve = render_kserve(agents, options, servers)
            if kserve:
                outputs.append(
                    (kserve, kserve_folder(out, kserve_out), file_notes(servers, options))
                )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for rendered, folder, notes in outputs:
        for path in write(rendered, folder, head, notes):
            name = path.relative_to(folder).as_posix()
            typer.echo(f"wrote {path} ({_summary(rendered[name])})")
