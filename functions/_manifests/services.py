"""A Knative Service per agent, and the SinkBinding that gives them the Broker's address.

Every agent runs the same image; ``AGENTFN_AGENT`` (its ``module:attribute`` target) tells
``agentfn serve`` which one to serve. The revision template carries the agent's ``Scaling`` as
Knative's autoscaling annotations:

- ``class``: ``kpa.autoscaling.knative.dev`` unless the agent asks for ``hpa`` (steady load,
  on CPU);
- ``min-scale`` (0: scale to zero), ``max-scale`` (only when bounded), ``metric``, and
  ``target`` (only when declared: Knative's default, 100 requests in flight, otherwise);
- ``target-utilization-percentage`` :data:`TARGET_UTILIZATION` (Knative's own default, written
  out so the committed file says what the autoscaler aims at): new pods are asked for when the
  pods in service are 70% of the way to their target, ahead of the burst;
- ``scale-to-zero-pod-retention-period`` :data:`SCALE_TO_ZERO_RETENTION` on a ``kpa`` agent
  that scales to zero: the autoscaler's 60 s stable window already keeps the last pod that
  long after the traffic stops, so a retention on top of it only costs an idle pod; written
  out, at Knative's default, as the one place to raise it for an agent whose cold start hurts.
  The HPA never scales to zero, so it gets none.

``containerConcurrency`` is the agent's hard limit (0: none). ``timeoutSeconds`` is the
attempt timeout of its Triggers (its ``Delivery.timeout``, else the rendered default of 60 s),
rounded up, plus :data:`TIMEOUT_MARGIN_S`: the broker gives up on an attempt first and retries
it, and Knative never cuts a request the broker still waits for. The container has one port,
``http1`` 8080, readiness on ``/readyz`` (the idempotency store answers), liveness on
``/healthz``, and every request and limit explicit (:func:`sizing.container_resources`).

An agent declared with ``grpc=True`` gets a second Service, ``<agent>-rpc``
(:func:`rpc_service`): the same image, env, size and autoscaling, but its one port is ``h2c``
8080 and ``AGENTFN_PROTOCOL=h2c`` makes ``agentfn serve`` answer only gRPC there. Knative
speaks HTTP/2 cleartext to an ``h2c`` port for every request, which the broker's HTTP/1.1
CloudEvents deliveries cannot share, hence two Services rather than one. Its probes are gRPC
health checks (``grpc.health.v1``), on the container port: Kubernetes requires the port of a
gRPC probe, and Knative's queue-proxy runs the readiness one. Its ``timeoutSeconds`` is
:data:`RPC_TIMEOUT_S`: a unary call carries its own deadline, and the bound is what a
``Session`` stream (one request to Knative) may last. It carries the agent's labels, so the
SinkBinding gives it ``K_SINK`` too (a handler answering a call may publish), plus
``agentfn.dev/protocol: h2c``. Every agent's container is told where the gRPC agents are:
``AGENTFN_RPC_TARGETS`` maps each one's name to ``<agent>-rpc.<namespace>.svc.cluster.local:80``
(the cluster-local address of a Knative Service; :func:`rpc_targets`), and, where the render
has model servers, where each model is served: ``AGENTFN_INFERENCE_TARGETS``
(:func:`.inference.inference_targets`, passed in by the render).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from agentfn.functions._manifests import sizing
from agentfn.functions._manifests._meta import (
    AGENT_LABEL,
    HTTP_PORT,
    REDIS_SECRET,
    REDIS_SECRET_KEY,
    ROLE_LABEL,
    labels,
    metadata,
)
from agentfn.functions._manifests.eventing import trigger_timeout
from agentfn.functions._manifests.observability import (
    collector_sidecar,
    collector_volume,
    otlp_endpoint,
)
from agentfn.functions._manifests.options import RenderOptions

if TYPE_CHECKING:
    from agentfn.functions._hints import Scaling
    from agentfn.functions._loader import DiscoveredAgent

__all__ = [
    "AUTOSCALING",
    "INFERENCE_TARGETS_ENV",
    "PROTOCOL_LABEL",
    "RPC_SUFFIX",
    "RPC_TARGETS_ENV",
    "RPC_TIMEOUT_S",
    "SCALE_TO_ZERO_RETENTION",
    "TARGET_UTILIZATION",
    "TIMEOUT_MARGIN_S",
    "agent_service",
    "autoscaling_annotations",
    "grpc_probes",
    "probes",
    "redis_env",
    "rpc_service",
    "rpc_service_name",
    "rpc_targets",
    "services_documents",
    "sink_binding",
]

SERVING_API: Final = "serving.knative.dev/v1"
AUTOSCALING: Final = "autoscaling.knative.dev/"
TARGET_UTILIZATION: Final = 70
SCALE_TO_ZERO_RETENTION: Final = "0s"
TIMEOUT_MARGIN_S: Final = 5
#: The container of the agent (a sidecar collector sits beside it, portless).
CONTAINER: Final = "agent"
SINK_BINDING: Final = "agentfn-agents"
#: ``<agent>`` + this names the h2c Service of an agent declared with ``grpc=True``.
RPC_SUFFIX: Final = "-rpc"
#: Knative's default ``max-revision-timeout-seconds``: the longest a Session stream may last.
RPC_TIMEOUT_S: Final = 600
PROTOCOL_LABEL: Final = "agentfn.dev/protocol"
#: ``name=host:port,...``: where each gRPC agent is reached (what ``ctx.rpc(name)`` dials).
RPC_TARGETS_ENV: Final = "AGENTFN_RPC_TARGETS"
#: ``model=url,...``: where each model server is reached (what ``ctx.infer(model)`` calls).
INFERENCE_TARGETS_ENV: Final = "AGENTFN_INFERENCE_TARGETS"
#: A Knative Service name is a DNS-1035 label.
_MAX_NAME: Final = 63


def autoscaling_annotations(scaling: Scaling) -> dict[str, str]:
    """The revision-template annotations of ``scaling`` (see the module docstring)."""
    hpa = scaling.autoscaler == "hpa"
    notes = {
        "class": f"{scaling.autoscaler}.autoscaling.knative.dev",
        "metric": scaling.metric,
        "min-scale": str(scaling.min_scale),
    }
    if scaling.max_scale:
        notes["max-scale"] = str(scaling.max_scale)
    if scaling.target_concurrency is not None:
        notes["target"] = str(scaling.target_concurrency)
    if not hpa:
        notes["target-utilization-percentage"] = str(TARGET_UTILIZATION)
        if scaling.min_scale == 0:
            notes["scale-to-zero-pod-retention-period"] = SCALE_TO_ZERO_RETENTION
    return {AUTOSCALING + key: value for key, value in notes.items()}


def probes(readiness: str, liveness: str = "/healthz") -> dict[str, Any]:
    """HTTP probes without a port: Knative points them at the container's one port."""
    return {
        "livenessProbe": {"httpGet": {"path": liveness}},
        "readinessProbe": {"httpGet": {"path": readiness}},
    }


def grpc_probes() -> dict[str, Any]:
    """gRPC health probes (``grpc.health.v1``, the server's overall status) on the one port."""
    check = {"port": HTTP_PORT, "service": ""}
    return {"livenessProbe": {"grpc": dict(check)}, "readinessProbe": {"grpc": dict(check)}}


def redis_env() -> dict[str, Any]:
    """``AGENTFN_REDIS_URL`` from the ``agentfn-redis`` Secret (a template: fill in the URL)."""
    return {
        "name": "AGENTFN_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": REDIS_SECRET_KEY}},
    }


def rpc_service_name(name: str) -> str:
    """The h2c Service of agent ``name``."""
    return name + RPC_SUFFIX


def rpc_targets(agents: Iterable[DiscoveredAgent], options: RenderOptions) -> str:
    """``AGENTFN_RPC_TARGETS``: each gRPC agent's cluster-local address, by name ('' if none)."""
    names = sorted(found.agent.spec.name for found in agents if found.agent.spec.grpc)
    return ",".join(
        f"{name}={rpc_service_name(name)}.{options.namespace}.svc.cluster.local:80"
        for name in names
    )


def _env(
    found: DiscoveredAgent, options: RenderOptions, targets: str = "", inference: str = ""
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "AGENTFN_AGENT", "value": found.target},
        redis_env(),
    ]
    if targets:
        env.append({"name": RPC_TARGETS_ENV, "value": targets})
    if inference:
        env.append({"name": INFERENCE_TARGETS_ENV, "value": inference})
    endpoint = otlp_endpoint(options)
    if endpoint is not None:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint})
    env.append({"name": "OTEL_SERVICE_NAME", "value": found.agent.spec.name})
    return env


def _timeout_seconds(found: DiscoveredAgent) -> int:
    attempt = trigger_timeout(found.agent.spec.delivery).total_seconds()
    return math.ceil(attempt) + TIMEOUT_MARGIN_S


def agent_service(
    found: DiscoveredAgent, options: RenderOptions, *, targets: str = "", inference: str = ""
) -> dict[str, Any]:
    """The ``serving.knative.dev/v1`` Service running ``found`` (``targets``: see
    :func:`rpc_targets`; ``inference``: ``AGENTFN_INFERENCE_TARGETS``, the model servers)."""
    spec = found.agent.spec
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "env": _env(found, options, targets, inference),
        "ports": [{"name": "http1", "containerPort": HTTP_PORT}],
        **probes("/readyz"),
        "resources": sizing.container_resources(spec.resources),
    }
    return _service(
        found, options, spec.name, container, timeout_s=_timeout_seconds(found), extra_labels={}
    )


def rpc_service(
    found: DiscoveredAgent, options: RenderOptions, *, targets: str = "", inference: str = ""
) -> dict[str, Any]:
    """The ``<agent>-rpc`` Service: the agent answering gRPC on an ``h2c`` port (module doc)."""
    spec = found.agent.spec
    name = rpc_service_name(spec.name)
    if len(name) > _MAX_NAME:
        raise ValueError(
            f"agent {spec.name}: its gRPC Service {name!r} is longer than {_MAX_NAME} "
            "characters; shorten the agent's name"
        )
    env = [
        *_env(found, options, targets, inference),
        {"name": "AGENTFN_PROTOCOL", "value": "h2c"},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "env": env,
        "ports": [{"name": "h2c", "containerPort": HTTP_PORT}],
        **grpc_probes(),
        "resources": sizing.container_resources(spec.resources),
    }
    return _service(
        found,
        options,
        name,
        container,
        timeout_s=RPC_TIMEOUT_S,
        extra_labels={PROTOCOL_LABEL: "h2c"},
    )


def _service(
    found: DiscoveredAgent,
    options: RenderOptions,
    name: str,
    container: dict[str, Any],
    *,
    timeout_s: int,
    extra_labels: dict[str, str],
) -> dict[str, Any]:
    spec = found.agent.spec
    selector = {AGENT_LABEL: spec.name, ROLE_LABEL: "agent", **extra_labels}
    if spec.scaling.autoscaler == "hpa" and spec.resources.cpu is None:
        raise ValueError(
            f"agent {spec.name}: the hpa autoscaler scales on CPU utilisation, "
            "which needs a cpu request: declare Resources(cpu=...)"
        )
    pod: dict[str, Any] = {
        "containerConcurrency": spec.scaling.container_concurrency,
        "timeoutSeconds": timeout_s,
        "containers": [container],
    }
    sidecar, volume = collector_sidecar(options), collector_volume(options)
    if sidecar is not None:
        pod["containers"].append(sidecar)
    if volume is not None:
        pod["volumes"] = [volume]
    annotations = {**autoscaling_annotations(spec.scaling), **sizing.queue_proxy_annotations()}
    return {
        "apiVersion": SERVING_API,
        "kind": "Service",
        "metadata": metadata(name, options, extra_labels=selector),
        "spec": {
            "template": {
                "metadata": {
                    "labels": labels(selector),
                    "annotations": dict(sorted(annotations.items())),
                },
                "spec": pod,
            }
        },
    }


def sink_binding(options: RenderOptions) -> dict[str, Any]:
    """Points every agent's Service at the Broker: Knative sets ``K_SINK`` in its pods."""
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "SinkBinding",
        "metadata": metadata(SINK_BINDING, options),
        "spec": {
            "subject": {
                "apiVersion": SERVING_API,
                "kind": "Service",
                "selector": {"matchLabels": {ROLE_LABEL: "agent"}},
            },
            "sink": {
                "ref": {
                    "apiVersion": "eventing.knative.dev/v1",
                    "kind": "Broker",
                    "name": options.broker,
                }
            },
        },
    }


def services_documents(
    agents: Iterable[DiscoveredAgent], options: RenderOptions, *, inference: str = ""
) -> list[dict[str, Any]]:
    """Every agent's Service (by name; a gRPC agent's ``-rpc`` Service after its own), then
    the SinkBinding. ``inference`` is ``AGENTFN_INFERENCE_TARGETS`` for every agent ('': none)."""
    ordered = sorted(agents, key=lambda found: found.agent.spec.name)
    targets = rpc_targets(ordered, options)
    documents: list[dict[str, Any]] = []
    for found in ordered:
        documents.append(agent_service(found, options, targets=targets, inference=inference))
        if found.agent.spec.grpc:
            documents.append(rpc_service(found, options, targets=targets, inference=inference))
    return [*documents, sink_binding(options)]
