"""The ``dead-letters`` sink (``agentfn dlq serve``) as a Knative Service, and its alert.

It never scales to zero (``min-scale`` 1): a sink must not cold-start when things already go
wrong, and a broker whose sink does not answer keeps retrying it instead of the next event. It
stays at one replica (:data:`sizing.DEAD_LETTERS_MAX_SCALE`): the depth gauges and the alarm
are that process's.

Its store is Redis (``AGENTFN_DLQ_STORE=redis``, the URL from the ``agentfn-redis`` Secret) in
both profiles: a revision's filesystem is gone with its pod, so SQLite on an ``emptyDir`` would
lose every waiting letter at the first restart or rollout, and Knative Services take no
persistent volumes by default. The letters are then as durable as that Redis is made
(``appendonly``). Replays go to the Broker's ingress (``AGENTFN_BROKER_URL``), the Kafka
broker's address for ``/<namespace>/<broker>``.

The ``PrometheusRule`` fires per Trigger (one alert per ``trigger_name`` series) when more than
``--alert-depth`` letters wait for :data:`ALERT_FOR`, the same threshold the sink itself logs
and posts at (``AGENTFN_DLQ_ALERT_DEPTH``); a ``PodMonitor`` has Prometheus scrape the sink's
``/metrics`` on its container port.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from agentfn.functions._manifests import sizing
from agentfn.functions._manifests._meta import (
    DEAD_LETTERS,
    HTTP_PORT,
    ROLE_LABEL,
    labels,
    metadata,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.services import AUTOSCALING, SERVING_API, probes, redis_env

if TYPE_CHECKING:
    from agentfn.functions._loader import DiscoveredAgent

__all__ = [
    "ALERT",
    "ALERT_FOR",
    "KAFKA_INGRESS",
    "alert_expression",
    "broker_ingress",
    "deadletters_documents",
]

#: The Kafka broker's ingress Service (its data plane, in knative-eventing).
KAFKA_INGRESS: Final = "http://kafka-broker-ingress.knative-eventing.svc.cluster.local"
ALERT: Final = "AgentfnDeadLettersWaiting"
#: How long a Trigger's depth stays over the threshold before the alert fires: a burst that a
#: replay clears at once pages no one.
ALERT_FOR: Final = "5m"
_ROLE: Final = {ROLE_LABEL: DEAD_LETTERS}


def broker_ingress(options: RenderOptions) -> str:
    """Where events for the rendered Broker are posted (replays, and ``K_SINK``'s value)."""
    return f"{KAFKA_INGRESS}/{options.namespace}/{options.broker}"


def alert_expression(options: RenderOptions) -> str:
    """PromQL: each Trigger of the rendered Broker whose waiting letters exceed the depth."""
    series = (
        f'agentfn_deadletters_depth{{namespace_name="{options.namespace}", '
        f'broker_name="{options.broker}"}}'
    )
    return f"max by (namespace_name, broker_name, trigger_name) ({series}) > {options.alert_depth}"


def _service(options: RenderOptions) -> dict[str, Any]:
    annotations = {
        f"{AUTOSCALING}class": "kpa.autoscaling.knative.dev",
        f"{AUTOSCALING}min-scale": "1",
        f"{AUTOSCALING}max-scale": str(sizing.DEAD_LETTERS_MAX_SCALE),
        **sizing.queue_proxy_annotations(),
    }
    env = [
        {"name": "AGENTFN_DLQ_STORE", "value": "redis"},
        redis_env(),
        {"name": "AGENTFN_DLQ_ALERT_DEPTH", "value": str(options.alert_depth)},
        {"name": "AGENTFN_BROKER_URL", "value": broker_ingress(options)},
    ]
    container = {
        "name": DEAD_LETTERS,
        "image": options.image,
        "command": ["agentfn", "dlq", "serve"],
        "env": env,
        "ports": [{"name": "http1", "containerPort": HTTP_PORT}],
        **probes("/healthz"),
        "resources": sizing.container_resources(sizing.DEAD_LETTERS),
    }
    return {
        "apiVersion": SERVING_API,
        "kind": "Service",
        "metadata": metadata(DEAD_LETTERS, options, extra_labels=_ROLE),
        "spec": {
            "template": {
                "metadata": {
                    "labels": labels(_ROLE),
                    "annotations": dict(sorted(annotations.items())),
                },
                "spec": {"containers": [container]},
            }
        },
    }


def _pod_monitor(options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(DEAD_LETTERS, options, extra_labels=_ROLE),
        "spec": {
            "selector": {"matchLabels": dict(_ROLE)},
            "podMetricsEndpoints": [{"portNumber": HTTP_PORT, "path": "/metrics"}],
        },
    }


def _rule(options: RenderOptions) -> dict[str, Any]:
    where = "{{ $labels.namespace_name }}/{{ $labels.broker_name }}/{{ $labels.trigger_name }}"
    rule = {
        "alert": ALERT,
        "expr": alert_expression(options),
        "for": ALERT_FOR,
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"Dead letters are piling up for Trigger {where}",
            "description": (
                f"{{{{ $value }}}} dead letters of Trigger {where} wait in the dead-letters "
                f"sink (more than {options.alert_depth} for {ALERT_FOR}). "
                "`agentfn dlq list --trigger {{ $labels.trigger_name }}` shows them; after "
                "the fix, `agentfn dlq replay --trigger {{ $labels.trigger_name }}`."
            ),
        },
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(DEAD_LETTERS, options, extra_labels=_ROLE),
        "spec": {"groups": [{"name": "agentfn-dead-letters", "rules": [rule]}]},
    }


def deadletters_documents(
    agents: Iterable[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """The sink's Service, the PodMonitor that scrapes it and the PrometheusRule on its depth."""
    del agents  # one sink for the namespace's Triggers, whoever they route to
    return [_service(options), _pod_monitor(options), _rule(options)]
