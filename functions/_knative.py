"""Knative Trigger documents for an agent's declaration: what `agentfn dev` routes by.

One Trigger per (handler, event type), named ``<agent>-<type>``, filtering on ``type`` and the
handler's exact-match attributes, delivering to the agent's Knative Service (a ``ref``), with the
agent's delivery hints as ``spec.delivery``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final

from agentfn.events import DELIVERY_ORDER_ANNOTATION
from agentfn.functions._spec import AgentSpec

__all__ = ["DELIVERY_ORDER_ANNOTATION", "iso_duration", "trigger_documents"]

_MAX_NAME: Final = 63  # a DNS-1123 label: Trigger names become consumer-group and topic parts


def iso_duration(value: timedelta) -> str:
    """An ISO 8601 duration in seconds (``PT0.2S``), the form Knative's delivery fields take."""
    return f"PT{value.total_seconds():g}S"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _destination(target: str) -> dict[str, Any]:
    if "://" in target:
        return {"uri": target}
    return {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": target}}


def trigger_documents(
    spec: AgentSpec,
    *,
    broker: str = "default",
    namespace: str | None = None,
    dead_letter_sink: str | None = None,
) -> list[dict[str, Any]]:
    """``eventing.knative.dev/v1`` Triggers that route the agent's events to it.

    ``dead_letter_sink`` (a Service name or a URL) applies where the agent names none.
    """
    hints = spec.delivery
    delivery: dict[str, Any] = {}
    if hints.retry is not None:
        delivery["retry"] = hints.retry
    if hints.backoff_policy is not None:
        delivery["backoffPolicy"] = hints.backoff_policy
    if hints.backoff_delay is not None:
        delivery["backoffDelay"] = iso_duration(hints.backoff_delay)
    if hints.timeout is not None:
        delivery["timeout"] = iso_duration(hints.timeout)
    sink = hints.dead_letter_sink or dead_letter_sink
    if sink:
        delivery["deadLetterSink"] = _destination(sink)
    documents: list[dict[str, Any]] = []
    for handler in spec.handlers:
        for event_type in handler.event_types:
            metadata: dict[str, Any] = {
                "name": f"{_slug(spec.name)}-{_slug(event_type)}"[:_MAX_NAME].rstrip("-"),
                "labels": {"agentfn.dev/agent": _slug(spec.name)},
            }
            if namespace is not None:
                metadata["namespace"] = namespace
            if hints.ordering is not None:
                metadata["annotations"] = {DELIVERY_ORDER_ANNOTATION: hints.ordering}
            trigger_spec: dict[str, Any] = {
                "broker": broker,
                "filter": {"attributes": {"type": event_type, **handler.filters}},
                "subscriber": _destination(spec.name),
            }
            if delivery:
                trigger_spec["delivery"] = dict(delivery)
            documents.append(
                {
                    "apiVersion": "eventing.knative.dev/v1",
                    "kind": "Trigger",
                    "metadata": metadata,
                    "spec": trigger_spec,
                }
            )
    return documents
