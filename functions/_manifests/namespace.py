"""The namespace the agents run in: its labels, its ResourceQuota and its LimitRange.

The quota is sized from what the render puts in the namespace, at its largest: every agent at
its ``max_scale`` (an unbounded agent at :data:`~.sizing.UNBOUNDED_MAX_SCALE` replicas, so the
quota is what bounds it; a gRPC agent twice, its ``-rpc`` Service scaling on its own), one
rollout pod more per workload (:data:`~.sizing.ROLLOUT_SURGE`),
each pod with its containers as admitted: the agent's own (its ``Resources``, or the
LimitRange's defaults where it declares none), Knative's queue-proxy (:data:`~.sizing.QUEUE_PROXY`)
and, with ``--otel sidecar``, the collector; then the platform's pods: the ``dead-letters``
sink, the shared collector (``--otel shared``) and the single-node Redis (``--profile local``);
and each model server's predictor pods (:mod:`.inference`: ``maxReplicas`` plus a rollout pod,
its container and queue-proxy), whose CPU and memory this quota binds as it binds the agents'
(their GPU slices are capped by ``kserve/quota.yaml``).
The LimitRange gives an unsized container its size, so the quota (which needs every pod to
declare limits) never refuses a pod for lacking one. :mod:`.sizing` holds every number.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from agentfn.functions._loader import DiscoveredAgent
from agentfn.functions._manifests._meta import DEAD_LETTERS as DEAD_LETTERS_SERVICE
from agentfn.functions._manifests._meta import labels, metadata
from agentfn.functions._manifests.inference import ModelServer, model_pod, model_replicas
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.services import rpc_service_name
from agentfn.functions._manifests.sizing import (
    COLLECTOR,
    DEAD_LETTERS,
    DEAD_LETTERS_MAX_SCALE,
    DEFAULT_LIMIT,
    DEFAULT_REQUEST,
    GPU_RESOURCE,
    QUEUE_PROXY,
    REDIS,
    ROLLOUT_SURGE,
    Size,
    effective_size,
    format_cpu,
    format_memory,
    max_replicas,
)

__all__ = [
    "LIMIT_RANGE_NAME",
    "QUOTA_NAME",
    "SINK_BINDING_INCLUDE",
    "Workload",
    "namespace_documents",
    "quota_hard",
    "workloads",
]

QUOTA_NAME: Final = "agentfn"
LIMIT_RANGE_NAME: Final = "agentfn"

#: Pod Security: every pod here passes ``baseline`` (nothing privileged, no host paths), so it is
#: enforced; ``restricted`` is warned about, since the agents' image decides the rest.
_POD_SECURITY: Final = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "restricted",
}

#: Knative's SinkBinding webhook injects ``K_SINK`` only into namespaces so labelled when it
#: runs in inclusion mode (``SINK_BINDING_SELECTION_MODE=inclusion``); exclusion mode, the
#: default, ignores it. Without ``K_SINK`` an agent has nowhere to publish its fan-out.
SINK_BINDING_INCLUDE: Final = {"bindings.knative.dev/include": "true"}


@dataclass(frozen=True, slots=True)
class Workload:
    """Pods of one kind at their most: ``replicas`` pods, each of ``containers``."""

    name: str
    replicas: int
    containers: tuple[Size, ...]


def workloads(
    agents: Sequence[DiscoveredAgent],
    options: RenderOptions,
    servers: Sequence[ModelServer] = (),
) -> list[Workload]:
    """Everything the namespace runs at once at its largest, as the module docstring counts it."""
    queue_proxy = effective_size(QUEUE_PROXY)
    collector = effective_size(COLLECTOR)
    sidecar = (collector,) if options.otel == "sidecar" else ()
    counted: list[Workload] = []
    for found in sorted(agents, key=lambda found: found.agent.spec.name):
        spec = found.agent.spec
        pod = (effective_size(spec.resources), queue_proxy, *sidecar)
        replicas = max_replicas(spec.scaling) + ROLLOUT_SURGE
        counted.append(Workload(spec.name, replicas, pod))
        if spec.grpc:  # its ``-rpc`` Service scales on its own, to the same bound
            counted.append(Workload(rpc_service_name(spec.name), replicas, pod))
    counted.append(
        Workload(
            DEAD_LETTERS_SERVICE,
            DEAD_LETTERS_MAX_SCALE + ROLLOUT_SURGE,
            (effective_size(DEAD_LETTERS), queue_proxy),
        )
    )
    counted.extend(
        Workload(
            server.predictor,
            model_replicas(server, options) + ROLLOUT_SURGE,
            model_pod(server, options),
        )
        for server in sorted(servers, key=lambda server: server.name)
    )
    if options.otel == "shared":
        counted.append(Workload("otel-collector", 1 + ROLLOUT_SURGE, (collector,)))
    if options.profile == "local":
        # Recreate, not rolling: two Redis on one emptyDir are never up together.
        counted.append(Workload("redis", 1, (effective_size(REDIS),)))
    return counted


def quota_hard(counted: Sequence[Workload]) -> dict[str, Any]:
    """The quota's ``spec.hard``: the exact sums over every pod of ``counted``."""
    cpu = memory = cpu_limit = memory_limit = Fraction(0)
    gpus = 0
    for workload in counted:
        for size in workload.containers:
            cpu += size.cpu * workload.replicas
            memory += size.memory * workload.replicas
            cpu_limit += size.cpu_limit * workload.replicas
            memory_limit += size.memory_limit * workload.replicas
            gpus += size.gpu * workload.replicas
    hard: dict[str, Any] = {
        "pods": str(sum(workload.replicas for workload in counted)),
        "requests.cpu": format_cpu(cpu),
        "requests.memory": format_memory(memory),
        "limits.cpu": format_cpu(cpu_limit),
        "limits.memory": format_memory(memory_limit),
    }
    if gpus:
        hard[f"requests.{GPU_RESOURCE}"] = str(gpus)
    return hard


def _limit_range_max(counted: Sequence[Workload]) -> dict[str, str]:
    # No rendered container may exceed it, and nothing else bigger than the largest one fits.
    sizes = [size for workload in counted for size in workload.containers]
    return {
        "cpu": format_cpu(max(size.cpu_limit for size in sizes)),
        "memory": format_memory(max(size.memory_limit for size in sizes)),
    }


def namespace_documents(
    agents: Sequence[DiscoveredAgent],
    options: RenderOptions,
    servers: Sequence[ModelServer] = (),
) -> list[dict[str, Any]]:
    """The Namespace, its ResourceQuota and its LimitRange (``servers``: the model servers)."""
    counted = workloads(agents, options, servers)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": options.namespace,
            "labels": labels({**_POD_SECURITY, **SINK_BINDING_INCLUDE}),
        },
    }
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(QUOTA_NAME, options),
        "spec": {"hard": quota_hard(counted)},
    }
    limit_range = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(LIMIT_RANGE_NAME, options),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": dict(DEFAULT_REQUEST),
                    "default": dict(DEFAULT_LIMIT),
                    "max": _limit_range_max(counted),
                }
            ]
        },
    }
    return [namespace, quota, limit_range]
