"""Broker and Trigger objects read from the same YAML that is applied to Knative.

Only ``eventing.knative.dev/v1`` ``Broker`` and ``Trigger`` documents are read; every other
document in the file (Services, ConfigMaps, ...) is skipped, so one manifest, or the whole
rendered ``knative/`` folder, serves both the cluster and the embedded broker. Errors name
the document and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml
from agentfn.brokers.delivery import (
    KNATIVE_DEFAULT_DELIVERY,
    BackoffPolicy,
    DeliveryPolicy,
    Destination,
    parse_duration,
)
from agentfn.brokers.filters import TriggerFilter, compile_filter
from agentfn.events import DELIVERY_ORDER_ANNOTATION, DeliveryFormat

__all__ = [
    "DEFAULT_BROKER",
    "DELIVERY_ORDER_ANNOTATION",
    "BrokerSpec",
    "ConfigError",
    "DeliveryOrder",
    "Topology",
    "TriggerSpec",
    "load_topology",
    "parse_documents",
]

EVENTING_API: Final = "eventing.knative.dev/v1"
DEFAULT_BROKER: Final = ("default", "default")


class ConfigError(ValueError):
    """A Broker or Trigger document that cannot be used, with where and why."""


class DeliveryOrder(StrEnum):
    UNORDERED = "unordered"
    ORDERED = "ordered"


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    namespace: str
    name: str
    delivery: DeliveryPolicy = KNATIVE_DEFAULT_DELIVERY
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    namespace: str
    name: str
    broker: str
    subscriber: Destination
    filter: TriggerFilter
    delivery: DeliveryPolicy | None = None
    order: DeliveryOrder = DeliveryOrder.UNORDERED

    @property
    def group(self) -> str:
        """The consumer group of this Trigger, named as Knative's Kafka Broker names it."""
        return f"knative-trigger-{self.namespace}-{self.name}"


@dataclass(frozen=True, slots=True)
class Topology:
    """Every broker and trigger the process serves."""

    brokers: Mapping[tuple[str, str], BrokerSpec]
    triggers: tuple[TriggerSpec, ...]

    def triggers_of(self, broker: BrokerSpec) -> list[TriggerSpec]:
        return [
            t for t in self.triggers if t.namespace == broker.namespace and t.broker == broker.name
        ]

    def delivery_for(self, trigger: TriggerSpec) -> DeliveryPolicy:
        """The Trigger's own delivery, else its Broker's, else Knative's defaults."""
        if trigger.delivery is not None:
            return trigger.delivery
        return self.brokers[(trigger.namespace, trigger.broker)].delivery

    def with_dead_letter_sink(self, url_for: Callable[[TriggerSpec], str]) -> Topology:
        """This topology with a ``deadLetterSink`` on every Trigger that would have none.

        A Trigger whose effective delivery (its own, else its Broker's) names no sink gets that
        delivery with ``url_for(trigger)`` as the sink: a local default (``agentfn dev``'s
        dead-letter sink) that never overrides a sink the YAML chose. The copy lands on the
        Trigger, so a Broker's retries and backoff still apply to it unchanged.
        """
        triggers = tuple(
            trigger
            if (policy := self.delivery_for(trigger)).dead_letter_sink is not None
            else replace(
                trigger,
                delivery=replace(policy, dead_letter_sink=Destination(uri=url_for(trigger))),
            )
            for trigger in self.triggers
        )
        return replace(self, triggers=triggers)


def _where(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _destination(raw: Any, where: str) -> Destination:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be an object with uri or ref")
    ref = raw.get("ref")
    uri = raw.get("uri")
    if ref is None:
        if not isinstance(uri, str) or not uri:
            raise ConfigError(f"{where}: needs uri or ref")
        return Destination(uri=uri)
    if not isinstance(ref, Mapping) or not ref.get("name"):
        raise ConfigError(f"{where}.ref: needs a name")
    # With a ref, a uri is a path relative to the resolved address (Knative's Destination).
    return Destination(
        uri=uri if isinstance(uri, str) and uri else None,
        ref_name=str(ref["name"]),
        ref_namespace=ref.get("namespace"),
        ref_kind=ref.get("kind", "Service"),
    )


def _duration(raw: Mapping[str, Any], key: str, where: str) -> float:
    try:
        return parse_duration(raw[key], field=f"{where}.{key}")
    except ValueError as error:  # the message already names the document and the field
        raise ConfigError(str(error)) from None


def _format(raw: Any, where: str) -> DeliveryFormat | None:
    """Knative's ``delivery.format``: ``json`` (structured), ``binary``, or unset."""
    if raw is None:
        return None
    try:
        return DeliveryFormat(raw)
    except ValueError:
        raise ConfigError(
            f"{where}.format: {raw!r} is not json (structured mode) or binary"
        ) from None


def _delivery(raw: Any, where: str) -> DeliveryPolicy | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be an object")
    known = {
        "retry",
        "backoffPolicy",
        "backoffDelay",
        "timeout",
        "retryAfterMax",
        "deadLetterSink",
        "format",
    }
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        retry = raw.get("retry", KNATIVE_DEFAULT_DELIVERY.retry)
        if not isinstance(retry, int) or isinstance(retry, bool):
            raise ConfigError(f"{where}.retry: must be an integer")
        policy = raw.get("backoffPolicy", "exponential")
        try:
            backoff_policy = BackoffPolicy(policy)
        except ValueError:
            raise ConfigError(
                f"{where}.backoffPolicy: {policy!r} is not linear or exponential"
            ) from None
        sink = raw.get("deadLetterSink")
        return DeliveryPolicy(
            format=_format(raw.get("format"), where),
            retry=retry,
            backoff_policy=backoff_policy,
            backoff_delay=_duration(raw, "backoffDelay", where)
            if "backoffDelay" in raw
            else KNATIVE_DEFAULT_DELIVERY.backoff_delay,
            timeout=_duration(raw, "timeout", where) if "timeout" in raw else None,
            retry_after_max=_duration(raw, "retryAfterMax", where)
            if "retryAfterMax" in raw
            else None,
            dead_letter_sink=None
            if sink is None
            else _destination(sink, f"{where}.deadLetterSink"),
        )
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from None


def _broker(doc: Mapping[str, Any]) -> BrokerSpec:
    where = _where(doc)
    meta = doc.get("metadata") or {}
    if not meta.get("name"):
        raise ConfigError(f"{where}: metadata.name is required")
    spec = doc.get("spec") or {}
    return BrokerSpec(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        delivery=_delivery(spec.get("delivery"), f"{where}: spec.delivery")
        or KNATIVE_DEFAULT_DELIVERY,
        annotations=dict(meta.get("annotations") or {}),
    )


def _trigger(doc: Mapping[str, Any]) -> TriggerSpec:
    where = _where(doc)
    meta = doc.get("metadata") or {}
    if not meta.get("name"):
        raise ConfigError(f"{where}: metadata.name is required")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: spec is required")
    broker = spec.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ConfigError(f"{where}: spec.broker is required")
    if "subscriber" not in spec:
        raise ConfigError(f"{where}: spec.subscriber is required")
    annotations = meta.get("annotations") or {}
    order_text = annotations.get(DELIVERY_ORDER_ANNOTATION, "unordered")
    try:
        order = DeliveryOrder(order_text)
    except ValueError:
        raise ConfigError(
            f"{where}: annotation {DELIVERY_ORDER_ANNOTATION}: {order_text!r} "
            "is not ordered or unordered"
        ) from None
    try:
        trigger_filter = compile_filter(spec.get("filter"), spec.get("filters"))
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    return TriggerSpec(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        broker=broker,
        subscriber=_destination(spec["subscriber"], f"{where}: spec.subscriber"),
        filter=trigger_filter,
        delivery=_delivery(spec.get("delivery"), f"{where}: spec.delivery"),
        order=order,
    )


def parse_documents(documents: Iterable[Any]) -> Topology:
    """Brokers and Triggers out of already-loaded YAML documents."""
    brokers: dict[tuple[str, str], BrokerSpec] = {}
    triggers: dict[tuple[str, str], TriggerSpec] = {}
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        kind, api = doc.get("kind"), doc.get("apiVersion")
        if kind not in ("Broker", "Trigger"):
            continue
        if api != EVENTING_API:
            raise ConfigError(f"{_where(doc)}: apiVersion must be {EVENTING_API}, not {api!r}")
        if kind == "Broker":
            broker = _broker(doc)
            if (broker.namespace, broker.name) in brokers:
                raise ConfigError(f"Broker {broker.namespace}/{broker.name}: declared twice")
            brokers[(broker.namespace, broker.name)] = broker
        else:
            trigger = _trigger(doc)
            key = (trigger.namespace, trigger.name)
            if key in triggers:
                raise ConfigError(f"Trigger {key[0]}/{key[1]}: declared twice")
            triggers[key] = trigger
    brokers.setdefault(DEFAULT_BROKER, BrokerSpec(*DEFAULT_BROKER))
    for trigger in triggers.values():
        if (trigger.namespace, trigger.broker) not in brokers:
            raise ConfigError(
                f"Trigger {trigger.namespace}/{trigger.name}: broker {trigger.broker!r} "
                f"is not declared in namespace {trigger.namespace!r}"
            )
    return Topology(brokers=brokers, triggers=tuple(triggers.values()))


def _yaml_files(path: str | Path) -> list[Path]:
    """``path`` itself, or a folder's ``*.yaml``/``*.yml`` files in name order."""
    location = Path(path)
    if not location.is_dir():
        return [location]
    files = sorted(
        entry
        for entry in location.iterdir()
        if entry.suffix in (".yaml", ".yml") and entry.is_file()
    )
    if not files:
        raise ConfigError(f"{path}: a folder without .yaml files")
    return files


def load_topology(paths: Iterable[str | Path]) -> Topology:
    """Brokers and Triggers from YAML files (one or many documents each) or folders of them.

    A folder is read as ``kubectl apply -f`` reads one: its ``*.yaml`` and ``*.yml`` files (not
    its subfolders), in name order; what is not a Broker or a Trigger is skipped.
    """
    documents: list[Any] = []
    for path in (file for given in paths for file in _yaml_files(given)):
        try:
            with open(path, encoding="utf-8") as handle:
                documents.extend(yaml.safe_load_all(handle))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        except OSError as error:
            raise ConfigError(f"{path}: {error.strerror}") from None
    return parse_documents(documents)
