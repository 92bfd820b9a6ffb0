"""The Compose document: the agents on Docker without Kubernetes (``agentfn render --compose``).

The seed's three-container pattern, per agent the agent and its collector, around shared infra:

* per agent a service ``<agent>`` running ``agentfn serve`` from the one image (the agent chosen
  by ``AGENTFN_AGENT``, as in the cluster; an agent declared with ``grpc=True`` also serves
  gRPC on :data:`GRPC_PORT`, ``serve --grpc-port``, where the cluster runs a second, ``h2c``
  Service: Compose puts no proxy in front that speaks one protocol per port, so one container
  answers both, and every agent finds it by ``AGENTFN_RPC_TARGETS``, ``<agent>:8081``), and
  ``<agent>-collector``, an OpenTelemetry Collector that joins the agent's network namespace
  (``network_mode: service:<agent>``), so the agent exports to ``localhost:4318`` as it would
  to a sidecar in its pod;
* ``kafka``: one Apache Kafka node in KRaft mode (broker and controller, no ZooKeeper);
* ``redis``: idempotency records and the dead letters, append-only;
* ``broker``: ``agentfn broker --kafka``, routing by the rendered ``knative/`` mounted read-only,
  the same Triggers the cluster applies; each Service ``ref`` maps to its Compose service;
* ``dead-letters``: ``agentfn dlq serve`` on the Redis store;
* per model server (:mod:`.inference`) a service ``<name>`` running ``agentfn model serve``
  from the image built with the ``inference`` extra and CPU torch (:func:`model_build`), OIP
  REST on 8080 and gRPC on 8081 (published on ``127.0.0.1:8082`` and ``:8083``), healthy once
  ``/v2/health/ready`` answers (the model loaded); the broker maps it for the model's Trigger
  and every agent is told where it is (``AGENTFN_INFERENCE_TARGETS``,
  ``<model>=http://<name>:8080``) and starts after it.

Healthchecks and ``depends_on`` conditions start it in order: kafka and redis, then the sink
and the broker, then the agents, then their collectors. The broker's ingress is published on
``127.0.0.1:8080`` and the sink's API on ``127.0.0.1:8081`` (what ``agentfn dlq`` talks to by
default), loopback only: nothing here asks for authentication.

What the cluster render already decides is taken from it, not repeated: every container's
size (``deploy.resources``, from :func:`sizing.effective_size`, the LimitRange's defaults for
what an agent leaves out), the Redis and collector images, and the collector's config and
command (:mod:`observability`'s sidecar). ``--otel off`` drops the collectors and the
``OTEL_*`` variables; ``shared`` and ``sidecar`` both give each agent its sidecar, which costs
Compose no scheduling and keeps each agent's telemetry beside it. The collectors print what
they receive (the ``debug`` exporter); the config says how to send it on to a backend.

For the render CLI: ``compose_document(agents, options)`` returns one document, to be written
as ``compose.yaml`` at the repository root, beside ``knative/`` (the broker mounts
``./knative``, so the Triggers must be rendered there with the same options). Its key order is
the order to write (no key sorting); it is deterministic for a given set of agents. Each
agent's target must import inside the image, as on the cluster: a module the image installs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from agentfn.functions._hints import Resources
from agentfn.functions._loader import DiscoveredAgent
from agentfn.functions._manifests import sizing
from agentfn.functions._manifests.inference import INFERENCE_TARGETS_ENV, ModelServer
from agentfn.functions._manifests.observability import (
    COLLECTOR_CONFIG_KEY,
    COLLECTOR_IMAGE,
    collector_config,
    collector_sidecar,
    otlp_endpoint,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.redis import REDIS_IMAGE
from agentfn.functions._manifests.sizing import effective_size

__all__ = [
    "BROKER",
    "COLLECTOR_IMAGE",
    "DEAD_LETTERS",
    "GRPC_PORT",
    "KAFKA",
    "KAFKA_IMAGE",
    "MODEL_PORTS",
    "REDIS",
    "REDIS_IMAGE",
    "TRIGGERS_MOUNT",
    "collector_name",
    "compose_document",
    "model_build",
]

#: The Kafka release scripts/versions.env gives Strimzi on kind (KAFKA_VERSION), as Apache's
#: own image; kafka-python (the broker's client) speaks its protocol.
KAFKA_IMAGE: Final = "apache/kafka:4.0.0"

KAFKA: Final = "kafka"
REDIS: Final = "redis"
BROKER: Final = "broker"
DEAD_LETTERS: Final = "dead-letters"
_INFRA: Final = (KAFKA, REDIS, DEAD_LETTERS, BROKER)

#: Where the broker container reads the rendered manifests (mounted from ``./knative``).
TRIGGERS_MOUNT: Final = "/app/knative"
_MANIFESTS: Final = "./knative"

_PORT: Final = 8080
#: Where a model server's OIP REST and gRPC are published on the host (loopback), the first
#: model's; a further model's two ports follow.
MODEL_PORTS: Final = (8082, 8083)
#: What the Dockerfile builds for a model server on a laptop: the inference extra on CPU torch.
_CPU_TORCH: Final = "https://download.pytorch.org/whl/cpu"
#: Where an agent declared with ``grpc=True`` answers gRPC, beside HTTP on 8080.
GRPC_PORT: Final = 8081
_REDIS_URL: Final = f"redis://{REDIS}:6379/0"
_KAFKA_BOOTSTRAP: Final = f"{KAFKA}:9092"
#: A KRaft cluster id is a base64url UUID; a fixed one keeps the render deterministic.
_KAFKA_CLUSTER_ID: Final = "QYDFqxy6W1-vd2dvZhaHGg"
#: The Compose config holding the collector's file (the cluster's ConfigMap key, as a name).
_COLLECTOR_CONFIG: Final = "otel-collector"


def collector_name(agent: str) -> str:
    """The Compose service of an agent's collector sidecar."""
    return f"{agent}-collector"


def model_build() -> dict[str, Any]:
    """The ``build`` of a model server's image: the Dockerfile with the inference extra."""
    return {
        "context": ".",
        "dockerfile": "Dockerfile",
        "args": {"EXTRAS": "otlp,inference", "TORCH_INDEX": _CPU_TORCH},
    }


def _healthcheck(test: list[str], *, start_period: str = "20s") -> dict[str, Any]:
    return {
        "test": test,
        "interval": "5s",
        "timeout": "3s",
        "retries": 12,
        "start_period": start_period,
    }


def _http_healthcheck(path: str = "/healthz", *, start_period: str = "20s") -> dict[str, Any]:
    """A GET of ``path`` by the image's own Python: the slim image has no curl."""
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{_PORT}{path}', timeout=2)"
    )
    return _healthcheck(["CMD", "python", "-c", probe], start_period=start_period)


def _healthy(*services: str) -> dict[str, Any]:
    return {name: {"condition": "service_healthy"} for name in services}


def _from_image(options: RenderOptions) -> dict[str, Any]:
    # Every service of the image carries the build, so whichever starts first builds it.
    return {"image": options.image, "build": {"context": ".", "dockerfile": "Dockerfile"}}


def _cpus(cores: Fraction) -> str:
    """Cores as Compose writes them (``0.25``, ``2``): exact, since sizes are whole millicores."""
    return format((Decimal(cores.numerator) / cores.denominator).normalize(), "f")


def _memory(size: Fraction) -> str:
    """Bytes as Compose reads them, in the largest exact unit: Compose's ``k``/``m``/``g`` are
    powers of 1024, so ``256Mi`` is ``256m`` and Kubernetes' ``500M`` is ``500000000``."""
    whole = math.ceil(size)
    for suffix, power in (("g", 3), ("m", 2), ("k", 1)):
        if whole and whole % 1024**power == 0:
            return f"{whole // 1024**power}{suffix}"
    return str(whole)


def _resources(resources: Resources) -> dict[str, Any]:
    """``deploy.resources``: the container's size on the cluster (:func:`effective_size`, the
    LimitRange's defaults for what it leaves out), so a laptop runs it as the cluster does."""
    size = effective_size(resources)
    reservations: dict[str, Any] = {"cpus": _cpus(size.cpu), "memory": _memory(size.memory)}
    if size.gpu:
        reservations["devices"] = [{"driver": "nvidia", "count": size.gpu, "capabilities": ["gpu"]}]
    return {
        "limits": {"cpus": _cpus(size.cpu_limit), "memory": _memory(size.memory_limit)},
        "reservations": reservations,
    }


def _kafka() -> dict[str, Any]:
    return {
        "image": KAFKA_IMAGE,
        "environment": {
            "CLUSTER_ID": _KAFKA_CLUSTER_ID,
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{_KAFKA_BOOTSTRAP}",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@{KAFKA}:9093",
            "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
            # One node: the internal topics cannot be replicated further.
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            # Each Trigger is a consumer group: no reason to wait 3 s before the first assignment.
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        },
        "volumes": ["kafka-data:/var/lib/kafka/data"],
        "healthcheck": _healthcheck(
            [
                "CMD",
                "/opt/kafka/bin/kafka-topics.sh",
                "--bootstrap-server",
                "localhost:9092",
                "--list",
            ],
            start_period="30s",
        )
        | {"interval": "10s", "timeout": "10s"},
    }


def _redis() -> dict[str, Any]:
    return {
        "image": REDIS_IMAGE,
        "command": ["redis-server", "--appendonly", "yes"],
        "volumes": ["redis-data:/data"],
        "healthcheck": _healthcheck(["CMD", "redis-cli", "ping"]),
        "deploy": {"resources": _resources(sizing.REDIS)},
    }


def _dead_letters(options: RenderOptions, ingress: str) -> dict[str, Any]:
    return {
        **_from_image(options),
        "command": ["dlq", "serve", "--host", "0.0.0.0", "--port", str(_PORT), "--store", "redis"],
        "environment": {
            "AGENTFN_REDIS_URL": _REDIS_URL,
            "AGENTFN_BROKER_URL": ingress,
            "AGENTFN_DLQ_ALERT_DEPTH": str(options.alert_depth),
        },
        "ports": [f"127.0.0.1:8081:{_PORT}"],
        "healthcheck": _http_healthcheck(),
        "depends_on": _healthy(REDIS),
        "deploy": {"resources": _resources(sizing.DEAD_LETTERS)},
    }


def _model_server(server: ModelServer, options: RenderOptions, index: int) -> dict[str, Any]:
    rest, grpc = (port + 2 * index for port in MODEL_PORTS)
    environment = {
        "AGENTFN_MODEL_NAME": server.model,
        "AGENTFN_MODEL_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "AGENTFN_REDIS_URL": _REDIS_URL,
    }
    endpoint = otlp_endpoint(options.model_copy(update={"otel": "sidecar"}))
    if options.otel != "off" and endpoint is not None:
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        environment["OTEL_SERVICE_NAME"] = server.name
    command = ["model", "serve", "--model", server.model]
    command += ["--http-port", str(_PORT), "--grpc-port", str(GRPC_PORT)]
    return {
        "image": options.server_image,
        "build": model_build(),
        "command": command,
        "environment": environment,
        "ports": [f"127.0.0.1:{rest}:{_PORT}", f"127.0.0.1:{grpc}:{GRPC_PORT}"],
        # The model loads before it is ready: imports and weights take about 10 s on a CPU.
        "healthcheck": _http_healthcheck("/v2/health/ready", start_period="120s"),
        "depends_on": _healthy(REDIS),
        "deploy": {"resources": _resources(server.found.agent.spec.resources)},
    }


def _inference_targets(servers: Iterable[ModelServer]) -> str:
    """``AGENTFN_INFERENCE_TARGETS``: each model at its service's OIP REST port."""
    return ",".join(
        f"{server.model}=http://{server.name}:{_PORT}"
        for server in sorted(servers, key=lambda server: server.model)
    )


def _broker(options: RenderOptions, agents: Iterable[str]) -> dict[str, Any]:
    command = [
        "broker",
        "--kafka",
        _KAFKA_BOOTSTRAP,
        "--topic-replication",
        "1",
        "--triggers",
        TRIGGERS_MOUNT,
        "--host",
        "0.0.0.0",
        "--port",
        str(_PORT),
    ]
    for name in [*agents, DEAD_LETTERS]:
        command += ["--service", f"{name}=http://{name}:{_PORT}"]
    return {
        **_from_image(options),
        "command": command,
        "volumes": [
            {"type": "bind", "source": _MANIFESTS, "target": TRIGGERS_MOUNT, "read_only": True}
        ],
        "ports": [f"127.0.0.1:8080:{_PORT}"],
        "healthcheck": _http_healthcheck(),
        # The sink first, so no Trigger gives up on an event into a sink not yet listening.
        "depends_on": _healthy(KAFKA, DEAD_LETTERS),
    }


def _rpc_targets(agents: Iterable[DiscoveredAgent]) -> str:
    """``AGENTFN_RPC_TARGETS``: each gRPC agent's service and gRPC port, by name."""
    names = sorted(item.agent.spec.name for item in agents if item.agent.spec.grpc)
    return ",".join(f"{name}={name}:{GRPC_PORT}" for name in names)


def _agent(
    item: DiscoveredAgent,
    options: RenderOptions,
    ingress: str,
    targets: str,
    servers: list[ModelServer],
) -> dict[str, Any]:
    name = item.agent.spec.name
    environment = {
        "AGENTFN_AGENT": item.target,
        "AGENTFN_BROKER_URL": ingress,
        "AGENTFN_REDIS_URL": _REDIS_URL,
    }
    if targets:
        environment["AGENTFN_RPC_TARGETS"] = targets
    if servers:
        environment[INFERENCE_TARGETS_ENV] = _inference_targets(servers)
    endpoint = otlp_endpoint(options.model_copy(update={"otel": "sidecar"}))
    if options.otel != "off" and endpoint is not None:
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        environment["OTEL_SERVICE_NAME"] = name
    return {
        **_from_image(options),
        "command": ["serve", "--grpc-port", str(GRPC_PORT)] if item.agent.spec.grpc else ["serve"],
        "environment": environment,
        "healthcheck": _http_healthcheck(),
        "depends_on": _healthy(BROKER, REDIS, *(server.name for server in servers)),
        "deploy": {"resources": _resources(item.agent.spec.resources)},
    }


def _collector(agent: str, options: RenderOptions) -> dict[str, Any]:
    """The cluster's sidecar container (:func:`collector_sidecar`) as a Compose service."""
    container = collector_sidecar(options.model_copy(update={"otel": "sidecar"}))
    assert container is not None
    context = container["securityContext"]
    return {
        "image": container["image"],
        "command": container["args"],
        "environment": {item["name"]: item["value"] for item in container["env"]},
        "network_mode": f"service:{agent}",
        "configs": [{"source": _COLLECTOR_CONFIG, "target": _collector_config_path(container)}],
        "user": str(context["runAsUser"]),
        # Not read_only, unlike the cluster's: Compose copies an inline config into the
        # container, which a read-only root refuses (docker/compose#12031).
        "cap_drop": context["capabilities"]["drop"],
        "security_opt": ["no-new-privileges:true"],
        # restart: a recreated agent is a new network namespace, which the sidecar must rejoin.
        "depends_on": {agent: {"condition": "service_started", "restart": True}},
        "deploy": {"resources": _resources(sizing.COLLECTOR)},
    }


def _collector_config_path(container: dict[str, Any]) -> str:
    """Where the sidecar's ``--config`` reads, in the mount the cluster gives its ConfigMap."""
    (mount,) = container["volumeMounts"]
    return f"{mount['mountPath']}/{COLLECTOR_CONFIG_KEY}"


def _check_names(agents: list[DiscoveredAgent], servers: list[ModelServer]) -> None:
    names = [item.agent.spec.name for item in agents]
    models = [server.name for server in servers]
    taken = set(_INFRA) | {collector_name(name) for name in [*names, *models]} | set(models)
    repeated = sorted({name for name in models if models.count(name) > 1})
    if repeated:
        raise ValueError(f"two model servers are named {repeated}")
    for item in agents:
        spec = item.agent.spec
        if spec.name in taken:
            raise ValueError(f"agent {spec.name!r} ({item.target}) clashes with a Compose service")
        if names.count(spec.name) > 1:
            raise ValueError(f"two agents are named {spec.name!r}")
        sink = spec.delivery.dead_letter_sink
        if sink is not None and "://" not in sink and sink != DEAD_LETTERS:
            raise ValueError(
                f"agent {spec.name!r} sends dead letters to the Service {sink!r}, "
                "which the Compose file has no service for"
            )


def compose_document(
    agents: Iterable[DiscoveredAgent],
    options: RenderOptions,
    servers: Iterable[ModelServer] = (),
) -> dict[str, Any]:
    """The ``compose.yaml`` document for ``agents`` and the model ``servers``, in name order
    (see the module docstring).

    Raises :class:`ValueError` when an agent's name clashes with another service, or an agent
    names a dead-letter Service that Compose does not run.
    """
    ordered = sorted(agents, key=lambda item: item.agent.spec.name)
    models = sorted(servers, key=lambda server: server.name)
    _check_names(ordered, models)
    names = [item.agent.spec.name for item in ordered]
    ingress = f"http://{BROKER}:{_PORT}/{options.namespace}/{options.broker}"
    services: dict[str, Any] = {
        KAFKA: _kafka(),
        REDIS: _redis(),
        DEAD_LETTERS: _dead_letters(options, ingress),
        BROKER: _broker(options, [*names, *(server.name for server in models)]),
    }
    for index, server in enumerate(models):
        services[server.name] = _model_server(server, options, index)
        if options.otel != "off":
            services[collector_name(server.name)] = _collector(server.name, options)
    targets = _rpc_targets(ordered)
    for item in ordered:
        name = item.agent.spec.name
        services[name] = _agent(item, options, ingress, targets, models)
        if options.otel != "off":
            services[collector_name(name)] = _collector(name, options)
    document: dict[str, Any] = {
        "name": "agentfn",
        "services": services,
        "volumes": {"kafka-data": {}, "redis-data": {}},
    }
    if options.otel != "off":
        sidecar = options.model_copy(update={"otel": "sidecar"})
        document["configs"] = {_COLLECTOR_CONFIG: {"content": collector_config(sidecar)}}
    return document
