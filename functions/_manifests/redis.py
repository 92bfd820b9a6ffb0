"""Redis for the agents and the dead-letter sink: the ``agentfn-redis`` Secret, and for kind a
single-node Redis.

Every agent and the sink read ``AGENTFN_REDIS_URL`` from the Secret ``agentfn-redis`` (key
``url``). With ``--profile local`` the URL is the Redis rendered here,
``redis://redis.<namespace>.svc.cluster.local:6379/0``: one pod, append-only file fsynced on
every write (a dead letter answered 202 and an idempotency record survive a restart of Redis),
``noeviction`` under a ``maxmemory`` below the container's limit (a full Redis refuses writes,
which the agents answer 503 and the broker retries, rather than silently dropping records), on
an ``emptyDir``: it survives a container restart, not the pod's deletion. That is for kind only.
With ``--profile prod`` only the Secret is rendered, a template whose URL
(``redis://CHANGE-ME:6379/0``) must be replaced by the production Redis before applying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from agentfn.functions._loader import DiscoveredAgent
from agentfn.functions._manifests._meta import REDIS_SECRET, REDIS_SECRET_KEY, labels, metadata
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.sizing import REDIS, container_resources, effective_size

__all__ = [
    "PLACEHOLDER_URL",
    "REDIS_IMAGE",
    "REDIS_NAME",
    "REDIS_PORT",
    "TEMPLATE_ANNOTATION",
    "redis_documents",
    "redis_url",
]

REDIS_NAME: Final = "redis"
REDIS_IMAGE: Final = "redis:7.4.2"
REDIS_PORT: Final = 6379
#: The prod Secret's URL: obviously not a host, so an unedited template fails loudly.
PLACEHOLDER_URL: Final = "redis://CHANGE-ME:6379/0"
TEMPLATE_ANNOTATION: Final = "agentfn.dev/template"
#: The image's ``redis`` user and group.
_REDIS_UID: Final = 999
_DATA: Final = "data"
_SELECTOR: Final = {"app.kubernetes.io/name": REDIS_NAME, "app.kubernetes.io/part-of": "agentfn"}


def redis_url(options: RenderOptions) -> str:
    """The URL the Secret holds: the in-cluster Redis (local) or the placeholder (prod)."""
    if options.profile == "local":
        return f"redis://{REDIS_NAME}.{options.namespace}.svc.cluster.local:{REDIS_PORT}/0"
    return PLACEHOLDER_URL


def _secret(options: RenderOptions) -> dict[str, Any]:
    annotations = None
    if options.profile == "prod":
        annotations = {
            TEMPLATE_ANNOTATION: (
                f"a template: replace stringData.{REDIS_SECRET_KEY} ({PLACEHOLDER_URL}) with "
                "the production Redis URL (rediss://user:password@host:port/db) before applying"
            )
        }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(REDIS_SECRET, options, annotations=annotations),
        "type": "Opaque",
        "stringData": {REDIS_SECRET_KEY: redis_url(options)},
    }


def _server_args() -> list[str]:
    # maxmemory at 75% of the limit: the rest is the fork of an AOF rewrite and the buffers.
    maxmemory = math.floor(effective_size(REDIS).memory_limit * 3 / 4 / 2**20)
    return [
        "redis-server",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--dir",
        "/data",
        "--maxmemory",
        f"{maxmemory}mb",
        "--maxmemory-policy",
        "noeviction",
    ]


def _deployment(options: RenderOptions) -> dict[str, Any]:
    container = {
        "name": REDIS_NAME,
        "image": REDIS_IMAGE,
        "args": _server_args(),
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        # Ready once it answers PONG (not LOADING while it replays the append-only file);
        # alive while it answers at all, so a long replay is not killed.
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", 'test "$(redis-cli ping)" = PONG']},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "exec": {"command": ["redis-cli", "ping"]},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": container_resources(REDIS),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": _DATA, "mountPath": "/data"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(REDIS_NAME, options, extra_labels=_SELECTOR),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(_SELECTOR)},
            # Never two Redis on one data set, even for a moment.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels(_SELECTOR)},
                "spec": {
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": _REDIS_UID,
                        "runAsGroup": _REDIS_UID,
                        "fsGroup": _REDIS_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    # kind only: kept across container restarts, gone with the pod.
                    "volumes": [{"name": _DATA, "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def _service(options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(REDIS_NAME, options, extra_labels=_SELECTOR),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(_SELECTOR),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }


def redis_documents(
    agents: Sequence[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """The Secret, then (``local``) the Redis Deployment and its Service."""
    del agents  # one Redis for all of them
    documents = [_secret(options)]
    if options.profile == "local":
        documents += [_deployment(options), _service(options)]
    return documents
