"""The OpenTelemetry Collector the agents export traces to: shared, per-agent sidecar, or none.

``--otel shared`` (the default) renders the collector's ConfigMap, one ``otel-collector``
Deployment and its Service: agents export OTLP/HTTP to
``http://otel-collector.<namespace>.svc.cluster.local:4318``. A scaled-to-zero agent costs
nothing, and its last spans are not lost with its pod, since the collector outlives it.

``--otel sidecar`` renders only the ConfigMap; the agents' Services (``services.py``) add to
each pod the container :func:`collector_sidecar` gives and the volume :func:`collector_volume`
gives (both ``None`` in the other modes), and the agent exports to ``http://localhost:4318``.
The sidecar declares no ports (Knative allows one, on the serving container) and listens on
localhost only; it has no probes (Knative probes the serving container).

``--otel off`` renders nothing, and :func:`otlp_endpoint` is ``None``: the runtime's tracing
stays a no-op.

The collector runs the ``debug`` exporter; the config carries a commented ``otlp/upstream``
exporter to fill in for a real backend (edit the ConfigMap, or the config text here).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Final

from agentfn.functions._loader import DiscoveredAgent
from agentfn.functions._manifests._meta import labels, metadata
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.sizing import (
    COLLECTOR,
    container_resources,
    effective_size,
)

__all__ = [
    "COLLECTOR_CONFIG",
    "COLLECTOR_CONFIG_KEY",
    "COLLECTOR_IMAGE",
    "COLLECTOR_NAME",
    "GRPC_PORT",
    "HEALTH_PORT",
    "HTTP_PORT",
    "collector_config",
    "collector_sidecar",
    "collector_volume",
    "observability_documents",
    "otlp_endpoint",
]

COLLECTOR_NAME: Final = "otel-collector"
#: The ConfigMap holding the collector's config, under :data:`COLLECTOR_CONFIG_KEY`.
COLLECTOR_CONFIG: Final = "otel-collector-config"
COLLECTOR_CONFIG_KEY: Final = "config.yaml"
#: The contrib distribution: it has the health_check extension the probes use.
COLLECTOR_IMAGE: Final = "otel/opentelemetry-collector-contrib:0.136.0"
GRPC_PORT: Final = 4317
HTTP_PORT: Final = 4318
HEALTH_PORT: Final = 13133
#: Where the config is mounted: beside, not over, the image's own /etc/otelcol-contrib.
_CONFIG_DIR: Final = "/conf"
#: The image's non-root user.
_COLLECTOR_UID: Final = 10001
_SELECTOR: Final = {
    "app.kubernetes.io/name": COLLECTOR_NAME,
    "app.kubernetes.io/part-of": "agentfn",
}


def otlp_endpoint(options: RenderOptions) -> str | None:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` of every agent (OTLP/HTTP), ``None`` with ``--otel off``."""
    if options.otel == "shared":
        return f"http://{COLLECTOR_NAME}.{options.namespace}.svc.cluster.local:{HTTP_PORT}"
    if options.otel == "sidecar":
        return f"http://localhost:{HTTP_PORT}"
    return None


def collector_config(options: RenderOptions) -> str:
    """The collector's config file: OTLP in, memory_limiter and batch, debug out.

    Written as text, not data, so its comments (the upstream exporter to fill in) reach the
    ConfigMap. A sidecar listens on localhost: only its own pod's agent sends to it.
    """
    host = "localhost" if options.otel == "sidecar" else "0.0.0.0"
    return f"""\
# The OpenTelemetry Collector of the agentfn agents (agentfn render --otel {options.otel}).
extensions:
  health_check:
    endpoint: {host}:{HEALTH_PORT}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{GRPC_PORT}
      http:
        endpoint: {host}:{HTTP_PORT}
processors:
  # Refuses data before the container's memory limit is reached, rather than being killed.
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 25
  batch: {{}}
exporters:
  debug:
    verbosity: basic
  # To send traces on to a backend, uncomment this exporter, set its endpoint, and add
  # otlp/upstream to the exporters of the traces pipeline below.
  # otlp/upstream:
  #   endpoint: tempo.observability.svc.cluster.local:4317
  #   tls:
  #     insecure: true
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [debug]
"""


def _env() -> list[dict[str, Any]]:
    # The Go runtime's soft limit at 80% of the container's, as memory_limiter's limit.
    mebibytes = math.floor(effective_size(COLLECTOR).memory_limit * 8 / 10 / 2**20)
    return [{"name": "GOMEMLIMIT", "value": f"{mebibytes}MiB"}]


def _container() -> dict[str, Any]:
    return {
        "name": COLLECTOR_NAME,
        "image": COLLECTOR_IMAGE,
        "args": [f"--config={_CONFIG_DIR}/{COLLECTOR_CONFIG_KEY}"],
        "env": _env(),
        "resources": container_resources(COLLECTOR),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": _COLLECTOR_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Knative refuses a writable mount of a ConfigMap.
        "volumeMounts": [{"name": COLLECTOR_CONFIG, "mountPath": _CONFIG_DIR, "readOnly": True}],
    }


def collector_volume(options: RenderOptions) -> dict[str, Any] | None:
    """The pod volume the sidecar mounts (``--otel sidecar``), else ``None``."""
    if options.otel != "sidecar":
        return None
    return {"name": COLLECTOR_CONFIG, "configMap": {"name": COLLECTOR_CONFIG}}


def collector_sidecar(options: RenderOptions) -> dict[str, Any] | None:
    """The collector container beside each agent (``--otel sidecar``), else ``None``.

    No ports and no probes (Knative allows them on the serving container only); it mounts
    :func:`collector_volume`, which the pod must list in ``volumes``.
    """
    if options.otel != "sidecar":
        return None
    return _container()


def _config_map(options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(COLLECTOR_CONFIG, options, extra_labels=_SELECTOR),
        "data": {COLLECTOR_CONFIG_KEY: collector_config(options)},
    }


def _deployment(options: RenderOptions) -> dict[str, Any]:
    container = _container()
    container["ports"] = [
        {"name": "grpc-otlp", "containerPort": GRPC_PORT, "protocol": "TCP"},
        {"name": "http-otlp", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
    ]
    probe = {"httpGet": {"path": "/", "port": "health"}, "periodSeconds": 10}
    container["readinessProbe"] = {**probe, "initialDelaySeconds": 1}
    container["livenessProbe"] = {**probe, "initialDelaySeconds": 5, "failureThreshold": 3}
    # A changed config changes the pod template, so apply rolls the collector onto it.
    digest = hashlib.sha256(collector_config(options).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(COLLECTOR_NAME, options, extra_labels=_SELECTOR),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(_SELECTOR)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels(_SELECTOR),
                    "annotations": {"agentfn.dev/config-sha256": digest},
                },
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": COLLECTOR_CONFIG, "configMap": {"name": COLLECTOR_CONFIG}}
                    ],
                },
            },
        },
    }


def _service(options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(COLLECTOR_NAME, options, extra_labels=_SELECTOR),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(_SELECTOR),
            "ports": [
                {
                    "name": "grpc-otlp",
                    "port": GRPC_PORT,
                    "targetPort": "grpc-otlp",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "http-otlp",
                    "port": HTTP_PORT,
                    "targetPort": "http-otlp",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def observability_documents(
    agents: Sequence[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """The collector's ConfigMap, plus its Deployment and Service when it is shared."""
    del agents  # one collector serves them all; its config names none
    if options.otel == "off":
        return []
    documents = [_config_map(options)]
    if options.otel == "shared":
        documents += [_deployment(options), _service(options)]
    return documents
