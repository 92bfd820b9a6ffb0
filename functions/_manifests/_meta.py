"""Names and labels every rendered object shares, so selectors and references line up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from agentfn.functions._manifests.options import RenderOptions

__all__ = [
    "AGENT_LABEL",
    "COMMON_LABELS",
    "DEAD_LETTERS",
    "HTTP_PORT",
    "REDIS_SECRET",
    "REDIS_SECRET_KEY",
    "ROLE_LABEL",
    "labels",
    "metadata",
    "service_ref",
]

#: On every object: ``kubectl get all -l app.kubernetes.io/part-of=agentfn`` finds them all.
COMMON_LABELS: Final = {
    "app.kubernetes.io/managed-by": "agentfn",
    "app.kubernetes.io/part-of": "agentfn",
}
AGENT_LABEL: Final = "agentfn.dev/agent"
#: ``agent`` on the agents' Services (the SinkBinding selects them), ``dead-letters`` on the sink.
ROLE_LABEL: Final = "agentfn.dev/role"
#: The Knative Service of the dead-letter sink (``agentfn dlq serve``); ``agentfn dev`` maps it.
DEAD_LETTERS: Final = "dead-letters"
#: The Secret holding the Redis URL every agent and the sink read, and its key.
REDIS_SECRET: Final = "agentfn-redis"  # noqa: S105 (a name, not a password)
REDIS_SECRET_KEY: Final = "url"  # noqa: S105
#: What the runtime and the sink listen on (Knative sets ``PORT`` to it).
HTTP_PORT: Final = 8080


def labels(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The common labels plus ``extra``, sorted by key."""
    return dict(sorted({**COMMON_LABELS, **(extra or {})}.items()))


def metadata(
    name: str,
    options: RenderOptions,
    *,
    extra_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``metadata`` of a namespaced object: name, namespace, sorted labels and annotations."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": options.namespace,
        "labels": labels(extra_labels),
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def service_ref(name: str) -> dict[str, str]:
    """A Knative Destination ``ref`` to the Knative Service ``name`` (same namespace)."""
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name}
