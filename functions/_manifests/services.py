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
    "SCALE_TO_ZERO_RETENTION",
    "TARGET_UTILIZATION",
    "TIMEOUT_MARGIN_S",
    "agent_service",
    "autoscaling_annotations",
    "probes",
    "redis_env",
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


def redis_env() -> dict[str, Any]:
    """``AGENTFN_REDIS_URL`` from the ``agentfn-redis`` Secret (a template: fill in the URL)."""
    return {
        "name": "AGENTFN_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": REDIS_SECRET_KEY}},
    }


def _env(found: DiscoveredAgent, options: RenderOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "AGENTFN_AGENT", "value": found.target},
        redis_env(),
    ]
    endpoint = otlp_endpoint(options)
    if endpoint is not None:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint})
    env.append({"name": "OTEL_SERVICE_NAME", "value": found.agent.spec.name})
    return env


def _timeout_seconds(found: DiscoveredAgent) -> int:
    attempt = trigger_timeout(found.agent.spec.delivery).total_seconds()
    return math.ceil(attempt) + TIMEOUT_MARGIN_S


def agent_service(found: DiscoveredAgent, options: RenderOptions) -> dict[str, Any]:
    """The ``serving.knative.dev/v1`` Service running ``found``."""
    spec = found.agent.spec
    selector = {AGENT_LABEL: spec.name, ROLE_LABEL: "agent"}
    if spec.scaling.autoscaler == "hpa" and spec.resources.cpu is None:
        raise ValueError(
            f"agent {spec.name}: the hpa autoscaler scales on CPU utilisation, "
            "which needs a cpu request: declare Resources(cpu=...)"
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "env": _env(found, options),
        "ports": [{"name": "http1", "containerPort": HTTP_PORT}],
        **probes("/readyz"),
        "resources": sizing.container_resources(spec.resources),
    }
    pod: dict[str, Any] = {
        "containerConcurrency": spec.scaling.container_concurrency,
        "timeoutSeconds": _timeout_seconds(found),
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
        "metadata": metadata(spec.name, options, extra_labels=selector),
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
    agents: Iterable[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """Every agent's Service (by name), then the SinkBinding."""
    ordered = sorted(agents, key=lambda found: found.agent.spec.name)
    return [*(agent_service(found, options) for found in ordered), sink_binding(options)]
