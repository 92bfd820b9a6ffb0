"""The Kafka-backed Broker, its ConfigMap, and a Trigger per subscription: routing and delivery.

One Trigger per (handler, event type), named ``<agent>-<type>`` (``-<handler>`` added where two
handlers of one agent share a type), selecting with Knative's ``filters``: an ``exact``
expression for the type, then one per attribute filter of the handler (Knative allows one
attribute per ``exact``; the list is ANDed). Its subscriber is the agent's
Knative Service. ``agentfn dev`` builds its Triggers with the same :func:`trigger_documents`,
so local runs and the cluster route alike.

A rendered Trigger's ``delivery`` is complete: every field the agent's :class:`Delivery` leaves
unset is written out from :data:`BROKER_DELIVERY` rather than left to the cluster's
``config-br-defaults``, so what is committed is what runs. Those defaults are Knative's own
(``default-broker``: retry 10, exponential, ``PT0.2S``) plus a ``PT60S`` attempt timeout, which
is what the embedded broker waits when none is set. The dead-letter sink is the
``dead-letters`` Service with the path ``/<namespace>/<broker>/<trigger>``, from which the sink
reads where a letter came from (the Broker's own default stops at ``/<namespace>/<broker>``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from agentfn.events import DELIVERY_ORDER_ANNOTATION
from agentfn.functions._hints import Delivery
from agentfn.functions._manifests._meta import (
    AGENT_LABEL,
    DEAD_LETTERS,
    labels,
    metadata,
    service_ref,
)
from agentfn.functions._manifests.options import RenderOptions

if TYPE_CHECKING:
    from agentfn.functions._loader import DiscoveredAgent
    from agentfn.functions._spec import AgentSpec

__all__ = [
    "BROKER_CLASS_ANNOTATION",
    "BROKER_CONFIG",
    "BROKER_DELIVERY",
    "DELIVERY_ORDER_ANNOTATION",
    "PARTITIONS",
    "DeliveryDefaults",
    "broker_documents",
    "dead_letter_uri",
    "iso_duration",
    "trigger_documents",
    "trigger_timeout",
    "triggers_documents",
]

EVENTING_API: Final = "eventing.knative.dev/v1"
BROKER_CLASS_ANNOTATION: Final = "eventing.knative.dev/broker.class"
#: The Broker's ConfigMap (the Kafka broker's own name for it, in the agents' namespace).
BROKER_CONFIG: Final = "kafka-broker-config"
#: ``default.topic.partitions``: the Kafka broker's default; the most consumers one Trigger has.
PARTITIONS: Final = 10
_MAX_NAME: Final = 63  # a DNS-1123 label: Trigger names become consumer-group and topic parts


@dataclass(frozen=True, slots=True)
class DeliveryDefaults:
    """What a complete ``delivery`` holds where the agent declares nothing."""

    retry: int = 10
    backoff_policy: Literal["exponential", "linear"] = "exponential"
    backoff_delay: timedelta = timedelta(milliseconds=200)
    timeout: timedelta = timedelta(seconds=60)


#: Knative's ``default-broker`` delivery, plus the embedded broker's 60 s attempt timeout.
BROKER_DELIVERY: Final = DeliveryDefaults()


def iso_duration(value: timedelta) -> str:
    """An ISO 8601 duration in seconds (``PT0.2S``), the form Knative's delivery fields take."""
    return f"PT{value.total_seconds():g}S"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _name(*parts: str) -> str:
    return "-".join(_slug(part) for part in parts)[:_MAX_NAME].rstrip("-")


def dead_letter_uri(namespace: str, broker: str, trigger: str | None = None) -> str:
    """The path the dead-letter sink reads a letter's origin from."""
    return f"/{namespace}/{broker}" + ("" if trigger is None else f"/{trigger}")


def _sink(sink: str, path: str) -> dict[str, Any]:
    """A Destination: a URL as it is; a Service by ``ref`` (``dead-letters`` with ``path``)."""
    if "://" in sink:
        return {"uri": sink}
    if sink == DEAD_LETTERS:
        return {"ref": service_ref(sink), "uri": path}
    return {"ref": service_ref(sink)}


def trigger_timeout(hints: Delivery) -> timedelta:
    """How long one delivery attempt to the agent may take: its own, else the default."""
    return hints.timeout if hints.timeout is not None else BROKER_DELIVERY.timeout


def _delivery(hints: Delivery, defaults: DeliveryDefaults | None) -> dict[str, Any]:
    """The Knative ``delivery`` fields of ``hints``, the unset ones from ``defaults``."""
    retry = hints.retry
    policy = hints.backoff_policy
    delay = hints.backoff_delay
    timeout = hints.timeout
    if defaults is not None:
        retry = defaults.retry if retry is None else retry
        policy = policy or defaults.backoff_policy
        delay = delay or defaults.backoff_delay
        timeout = timeout or defaults.timeout
    fields: dict[str, Any] = {}
    if retry is not None:
        fields["retry"] = retry
    if policy is not None:
        fields["backoffPolicy"] = policy
    if delay is not None:
        fields["backoffDelay"] = iso_duration(delay)
    if timeout is not None:
        fields["timeout"] = iso_duration(timeout)
    return fields


def trigger_documents(
    spec: AgentSpec,
    *,
    broker: str = "default",
    namespace: str | None = None,
    dead_letter_sink: str | None = None,
    defaults: DeliveryDefaults | None = None,
    subscriber: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``eventing.knative.dev/v1`` Triggers that route the agent's events to it.

    ``dead_letter_sink`` (a Service name or a URL) applies where the agent names none; the
    ``dead-letters`` Service gets the Trigger's path. ``defaults`` fills every delivery field
    the agent leaves unset (:data:`BROKER_DELIVERY`: what ``agentfn render`` writes); without
    it those fields are left out, to the Broker's delivery. ``namespace`` ``None`` leaves the
    namespace to whoever applies them (the sink's path then says ``default``). ``subscriber``
    (a Destination) is where the agent is served when that is not its own Knative Service: a
    model server's InferenceService and predict path.
    """
    hints = spec.delivery
    delivery = _delivery(hints, defaults)
    sink = hints.dead_letter_sink or dead_letter_sink
    names: list[str] = []
    documents: list[dict[str, Any]] = []
    for handler in spec.handlers:
        for event_type in handler.event_types:
            name = _name(spec.name, event_type)
            if name in names:  # another handler of this agent takes the type, other filters
                # The handler's own name, not its qualified one (<locals> and all).
                name = _name(spec.name, event_type, handler.name.rsplit(".", 1)[-1])
            names.append(name)
            meta: dict[str, Any] = {"name": name}
            if namespace is not None:
                meta["namespace"] = namespace
            meta["labels"] = labels({AGENT_LABEL: spec.name})
            if hints.ordering is not None:
                meta["annotations"] = {DELIVERY_ORDER_ANNOTATION: hints.ordering}
            trigger_delivery = dict(delivery)
            if sink:
                path = dead_letter_uri(namespace or "default", broker, name)
                trigger_delivery["deadLetterSink"] = _sink(sink, path)
            trigger_spec: dict[str, Any] = {
                "broker": broker,
                "filters": [
                    {"exact": {key: value}}
                    for key, value in [("type", event_type), *sorted(handler.filters.items())]
                ],
                "subscriber": (
                    copy.deepcopy(dict(subscriber))
                    if subscriber is not None
                    else {"ref": service_ref(spec.name)}
                ),
            }
            if trigger_delivery:
                trigger_spec["delivery"] = trigger_delivery
            documents.append(
                {
                    "apiVersion": EVENTING_API,
                    "kind": "Trigger",
                    "metadata": meta,
                    "spec": trigger_spec,
                }
            )
    return documents


def _sorted(agents: Iterable[DiscoveredAgent]) -> list[DiscoveredAgent]:
    return sorted(agents, key=lambda found: found.agent.spec.name)


def broker_documents(
    agents: Iterable[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """The ``kafka-broker-config`` ConfigMap and the Kafka-class Broker using it.

    The Broker's own delivery is the default of any Trigger without one (none rendered here;
    one applied by hand), its dead letters the ``dead-letters`` Service at the Broker's path.
    """
    del agents  # one Broker whatever the agents; the parameter keeps every part's signature
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(BROKER_CONFIG, options),
        "data": {
            "bootstrap.servers": options.kafka_bootstrap,
            "default.topic.partitions": str(PARTITIONS),
            "default.topic.replication.factor": str(options.replication_factor),
        },
    }
    delivery = _delivery(Delivery(), BROKER_DELIVERY)
    delivery["deadLetterSink"] = _sink(
        DEAD_LETTERS, dead_letter_uri(options.namespace, options.broker)
    )
    broker: dict[str, Any] = {
        "apiVersion": EVENTING_API,
        "kind": "Broker",
        "metadata": metadata(
            options.broker, options, annotations={BROKER_CLASS_ANNOTATION: "Kafka"}
        ),
        "spec": {
            "config": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": BROKER_CONFIG,
                "namespace": options.namespace,
            },
            "delivery": delivery,
        },
    }
    return [config, broker]


def triggers_documents(
    agents: Iterable[DiscoveredAgent], options: RenderOptions
) -> list[dict[str, Any]]:
    """Every agent's Triggers (agents by name), each with a complete delivery."""
    return [
        document
        for found in _sorted(agents)
        for document in trigger_documents(
            found.agent.spec,
            broker=options.broker,
            namespace=options.namespace,
            dead_letter_sink=DEAD_LETTERS,
            defaults=BROKER_DELIVERY,
        )
    ]
