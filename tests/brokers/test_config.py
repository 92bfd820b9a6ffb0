"""Broker and Trigger documents read from the same YAML that is applied to Knative."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentfn.brokers.config import (
    DEFAULT_BROKER,
    DELIVERY_ORDER_ANNOTATION,
    BrokerSpec,
    ConfigError,
    DeliveryOrder,
    Topology,
    TriggerSpec,
    load_topology,
    parse_documents,
)
from agentfn.brokers.delivery import (
    KNATIVE_DEFAULT_DELIVERY,
    BackoffPolicy,
    DeliveryPolicy,
    Destination,
)
from agentfn.brokers.filters import match_all

API = "eventing.knative.dev/v1"

MANIFEST = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: summarizer
  namespace: agents
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/agentfn/summarizer:latest
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-br-defaults
  namespace: knative-eventing
data:
  default-br-config: |
    clusterDefault:
      brokerClass: Kafka
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: agents
  namespace: agents
  annotations:
    eventing.knative.dev/broker.class: Kafka
spec:
  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT1S
    deadLetterSink:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: dead-letters
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: summarize
  namespace: agents
  annotations:
    kafka.eventing.knative.dev/delivery.order: ordered
spec:
  broker: agents
  filter:
    attributes:
      type: dev.agentfn.document.uploaded
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: summarizer
    uri: /summarize
  delivery:
    retry: 5
    backoffDelay: PT0.5S
    timeout: PT30S
    retryAfterMax: PT2M
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: audit
  namespace: agents
spec:
  broker: agents
  subscriber:
    uri: http://audit.agents.svc.cluster.local/events
"""


def trigger_doc(
    name: str = "t",
    *,
    namespace: str | None = None,
    broker: str = "default",
    subscriber: Any = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Trigger document as ``yaml.safe_load`` returns it."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    body: dict[str, Any] = {
        "broker": broker,
        "subscriber": subscriber or {"uri": "http://sink.default.svc.cluster.local"},
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "Trigger", "metadata": metadata, "spec": body}


def broker_doc(name: str, *, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API, "kind": "Broker", "metadata": metadata, "spec": spec}


def only_trigger(topology: Topology) -> TriggerSpec:
    (trigger,) = topology.triggers
    return trigger


# --- multi-document YAML --------------------------------------------------------------------


def test_manifest_yields_brokers_and_triggers_and_skips_other_kinds() -> None:
    topology = parse_documents(yaml.safe_load_all(MANIFEST))

    assert set(topology.brokers) == {("agents", "agents"), DEFAULT_BROKER}
    assert [(t.namespace, t.name) for t in topology.triggers] == [
        ("agents", "summarize"),
        ("agents", "audit"),
    ]


def test_manifest_broker_delivery_and_annotations() -> None:
    broker = parse_documents(yaml.safe_load_all(MANIFEST)).brokers[("agents", "agents")]

    assert broker.path == "/agents/agents"
    assert broker.annotations == {"eventing.knative.dev/broker.class": "Kafka"}
    assert broker.delivery == DeliveryPolicy(
        retry=3,
        backoff_policy=BackoffPolicy.LINEAR,
        backoff_delay=1.0,
        dead_letter_sink=Destination(ref_name="dead-letters", ref_kind="Service"),
    )


def test_manifest_trigger_fields() -> None:
    topology = parse_documents(yaml.safe_load_all(MANIFEST))
    summarize = topology.triggers[0]

    assert summarize.broker == "agents"
    assert summarize.order is DeliveryOrder.ORDERED
    assert summarize.subscriber == Destination(
        uri="/summarize", ref_name="summarizer", ref_kind="Service"
    )
    assert summarize.delivery == DeliveryPolicy(
        retry=5, backoff_delay=0.5, timeout=30.0, retry_after_max=120.0
    )
    assert summarize.filter({"type": "dev.agentfn.document.uploaded", "source": "/uploads"})
    assert not summarize.filter({"type": "dev.agentfn.document.deleted", "source": "/uploads"})


def test_triggers_of_a_broker() -> None:
    topology = parse_documents(yaml.safe_load_all(MANIFEST))

    agents = topology.brokers[("agents", "agents")]
    default = topology.brokers[DEFAULT_BROKER]
    assert [t.name for t in topology.triggers_of(agents)] == ["summarize", "audit"]
    assert topology.triggers_of(default) == []


@pytest.mark.parametrize(
    "documents",
    [
        [],
        [None],  # an empty "---" document
        ["just a string", 42, ["a", "list"]],
        [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
        [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}],
        # Unrelated kinds are skipped whatever their apiVersion.
        [{"apiVersion": "serving.knative.dev/v1", "kind": "Service"}],
    ],
)
def test_default_broker_exists_even_without_broker_documents(documents: list[Any]) -> None:
    topology = parse_documents(documents)

    assert topology.brokers == {DEFAULT_BROKER: BrokerSpec("default", "default")}
    assert topology.brokers[DEFAULT_BROKER].delivery is KNATIVE_DEFAULT_DELIVERY
    assert topology.triggers == ()


def test_declared_default_broker_is_kept_not_replaced() -> None:
    topology = parse_documents([broker_doc("default", delivery={"retry": 1})])

    assert topology.brokers[DEFAULT_BROKER].delivery.retry == 1


def test_namespace_defaults_to_default() -> None:
    topology = parse_documents([broker_doc("orders"), trigger_doc("t", broker="orders")])

    assert ("default", "orders") in topology.brokers
    trigger = only_trigger(topology)
    assert (trigger.namespace, trigger.broker) == ("default", "orders")


def test_trigger_on_the_implicit_default_broker() -> None:
    trigger = only_trigger(parse_documents([trigger_doc("t")]))

    assert trigger.broker == "default"
    assert trigger.delivery is None
    assert trigger.order is DeliveryOrder.UNORDERED
    assert trigger.filter is match_all


# --- errors that name the document and the field --------------------------------------------


def test_trigger_on_an_undeclared_broker() -> None:
    with pytest.raises(
        ConfigError, match=r"Trigger default/t: broker 'orders' is not declared in namespace"
    ):
        parse_documents([trigger_doc("t", broker="orders")])


def test_broker_must_be_in_the_triggers_namespace() -> None:
    # default/default always exists, but a Trigger in "team" needs team/default.
    with pytest.raises(ConfigError, match=r"Trigger team/t: broker 'default' .* 'team'"):
        parse_documents([trigger_doc("t", namespace="team")])


def test_broker_declared_after_its_trigger_is_found() -> None:
    topology = parse_documents([trigger_doc("t", broker="late"), broker_doc("late")])

    assert only_trigger(topology).broker == "late"


def test_duplicate_trigger() -> None:
    with pytest.raises(ConfigError, match=r"^Trigger default/t: declared twice$"):
        parse_documents([trigger_doc("t"), trigger_doc("t")])


def test_same_trigger_name_in_two_namespaces_is_fine() -> None:
    topology = parse_documents(
        [
            broker_doc("default", namespace="a"),
            trigger_doc("t", namespace="a"),
            trigger_doc("t", namespace="b", broker="default"),
            broker_doc("default", namespace="b"),
        ]
    )

    assert sorted((t.namespace, t.name) for t in topology.triggers) == [("a", "t"), ("b", "t")]


@pytest.mark.parametrize("kind", ["Broker", "Trigger"])
@pytest.mark.parametrize("api", ["eventing.knative.dev/v1beta1", "v1", None])
def test_wrong_api_version(kind: str, api: str | None) -> None:
    doc = trigger_doc("x") if kind == "Trigger" else broker_doc("x")
    doc["apiVersion"] = api

    with pytest.raises(
        ConfigError,
        match=rf"^{kind} default/x: apiVersion must be eventing\.knative\.dev/v1, "
        rf"not {re.escape(repr(api))}$",
    ):
        parse_documents([doc])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["spec"].pop("broker"), "Trigger default/t: spec.broker is required"),
        (lambda d: d["spec"].update(broker=""), "Trigger default/t: spec.broker is required"),
        (lambda d: d["spec"].update(broker=7), "Trigger default/t: spec.broker is required"),
        (lambda d: d["spec"].pop("subscriber"), "Trigger default/t: spec.subscriber is required"),
        (lambda d: d.pop("spec"), "Trigger default/t: spec is required"),
        (lambda d: d["metadata"].pop("name"), "Trigger default/?: metadata.name is required"),
        (lambda d: d.pop("metadata"), "Trigger default/?: metadata.name is required"),
    ],
)
def test_trigger_missing_fields(mutate: Callable[[dict[str, Any]], object], message: str) -> None:
    doc = trigger_doc("t")
    mutate(doc)

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_documents([doc])


def test_broker_without_a_name() -> None:
    doc = broker_doc("b", namespace="agents")
    del doc["metadata"]["name"]

    with pytest.raises(ConfigError, match=r"^Broker agents/\?: metadata\.name is required$"):
        parse_documents([doc])


@pytest.mark.parametrize(
    ("subscriber", "message"),
    [
        ({}, "Trigger default/t: spec.subscriber: needs uri or ref"),
        ({"uri": ""}, "Trigger default/t: spec.subscriber: needs uri or ref"),
        ("http://sink", "Trigger default/t: spec.subscriber: must be an object with uri or ref"),
        ({"ref": {"kind": "Service"}}, "Trigger default/t: spec.subscriber.ref: needs a name"),
        ({"ref": "sink"}, "Trigger default/t: spec.subscriber.ref: needs a name"),
    ],
)
def test_bad_subscriber(subscriber: Any, message: str) -> None:
    doc = trigger_doc("t")
    doc["spec"]["subscriber"] = subscriber

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_documents([doc])


@pytest.mark.parametrize(
    ("subscriber", "expected"),
    [
        ({"uri": "http://sink.default.svc"}, Destination(uri="http://sink.default.svc")),
        (
            {"ref": {"apiVersion": "v1", "kind": "Service", "name": "sink"}},
            Destination(ref_name="sink", ref_kind="Service"),
        ),
        (
            {"ref": {"name": "sink", "namespace": "other"}},
            Destination(ref_name="sink", ref_namespace="other", ref_kind="Service"),
        ),
        (
            {"ref": {"kind": "Service", "name": "sink"}, "uri": "/hooks/cloudevents"},
            Destination(uri="/hooks/cloudevents", ref_name="sink", ref_kind="Service"),
        ),
        (
            {"ref": {"kind": "Broker", "name": "next"}, "uri": ""},
            Destination(ref_name="next", ref_kind="Broker"),
        ),
    ],
)
def test_subscriber_uri_and_ref(subscriber: dict[str, Any], expected: Destination) -> None:
    assert only_trigger(parse_documents([trigger_doc(subscriber=subscriber)])).subscriber == (
        expected
    )


# --- delivery -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        ({}, KNATIVE_DEFAULT_DELIVERY),
        ({"retry": 0}, DeliveryPolicy(retry=0)),
        ({"backoffPolicy": "linear"}, DeliveryPolicy(backoff_policy=BackoffPolicy.LINEAR)),
        ({"backoffDelay": "PT2S"}, DeliveryPolicy(backoff_delay=2.0)),
        ({"timeout": "PT1M"}, DeliveryPolicy(timeout=60.0)),
        ({"retryAfterMax": "PT10S"}, DeliveryPolicy(retry_after_max=10.0)),
        (
            {"deadLetterSink": {"uri": "http://dlq.default.svc.cluster.local"}},
            DeliveryPolicy(
                dead_letter_sink=Destination(uri="http://dlq.default.svc.cluster.local")
            ),
        ),
        (
            {"deadLetterSink": {"ref": {"kind": "Service", "name": "dlq", "namespace": "ops"}}},
            DeliveryPolicy(
                dead_letter_sink=Destination(
                    ref_name="dlq", ref_namespace="ops", ref_kind="Service"
                )
            ),
        ),
    ],
)
def test_trigger_delivery_fields(delivery: dict[str, Any], expected: DeliveryPolicy) -> None:
    assert only_trigger(parse_documents([trigger_doc(delivery=delivery)])).delivery == expected


@pytest.mark.parametrize(
    ("delivery", "message"),
    [
        ({"retries": 3}, r"Trigger default/t: spec\.delivery: unknown field\(s\) \['retries'\]"),
        (
            {"retry": 1, "backoff": "PT1S", "deadLetterUri": "x"},
            r"spec\.delivery: unknown field\(s\) \['backoff', 'deadLetterUri'\]",
        ),
        (
            {"backoffPolicy": "fibonacci"},
            r"Trigger default/t: spec\.delivery\.backoffPolicy: 'fibonacci' is not linear or exp",
        ),
        (
            {"backoffPolicy": "Exponential"},
            r"spec\.delivery\.backoffPolicy: 'Exponential' is not",
        ),
        ({"retry": "3"}, r"Trigger default/t: spec\.delivery\.retry: must be an integer"),
        ({"retry": True}, r"Trigger default/t: spec\.delivery\.retry: must be an integer"),
        ({"retry": 2.5}, r"Trigger default/t: spec\.delivery\.retry: must be an integer"),
        ({"retry": -1}, r"Trigger default/t: spec\.delivery: delivery\.retry: must be >= 0"),
        ({"timeout": "PT0S"}, r"Trigger default/t: spec\.delivery: delivery\.timeout: must be > 0"),
        ("retry: 3", r"Trigger default/t: spec\.delivery: must be an object"),
        (
            {"deadLetterSink": {}},
            r"Trigger default/t: spec\.delivery\.deadLetterSink: needs uri or ref",
        ),
        (
            {"deadLetterSink": {"ref": {"kind": "Service"}}},
            r"Trigger default/t: spec\.delivery\.deadLetterSink\.ref: needs a name",
        ),
    ],
)
def test_bad_delivery(delivery: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_documents([trigger_doc(delivery=delivery)])


@pytest.mark.parametrize("field", ["backoffDelay", "timeout", "retryAfterMax"])
@pytest.mark.parametrize("text", ["soon", "200ms", "0.2", 5])
def test_bad_duration_names_the_field_path_once(field: str, text: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_documents([trigger_doc(delivery={field: text})])

    message = str(caught.value)
    assert message.startswith(f"Trigger default/t: spec.delivery.{field}: {text!r} is not")
    assert message.count("Trigger default/t") == 1


def test_bad_broker_delivery_names_the_broker() -> None:
    doc = broker_doc("orders", namespace="shop", delivery={"backoffDelay": "1s"})

    with pytest.raises(
        ConfigError, match=r"^Broker shop/orders: spec\.delivery\.backoffDelay: '1s' is not"
    ):
        parse_documents([doc])


def test_broker_with_null_delivery_gets_knative_defaults() -> None:
    topology = parse_documents([broker_doc("orders", delivery=None)])

    assert topology.brokers[("default", "orders")].delivery is KNATIVE_DEFAULT_DELIVERY


# --- delivery order annotation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "order"),
    [
        (None, DeliveryOrder.UNORDERED),
        ({}, DeliveryOrder.UNORDERED),
        ({"other": "x"}, DeliveryOrder.UNORDERED),
        ({DELIVERY_ORDER_ANNOTATION: "unordered"}, DeliveryOrder.UNORDERED),
        ({DELIVERY_ORDER_ANNOTATION: "ordered"}, DeliveryOrder.ORDERED),
    ],
)
def test_delivery_order_annotation(
    annotations: dict[str, str] | None, order: DeliveryOrder
) -> None:
    doc = trigger_doc("t")
    doc["metadata"]["annotations"] = annotations

    assert only_trigger(parse_documents([doc])).order is order


@pytest.mark.parametrize("value", ["Ordered", "fifo", ""])
def test_invalid_delivery_order_annotation(value: str) -> None:
    doc = trigger_doc("t")
    doc["metadata"]["annotations"] = {DELIVERY_ORDER_ANNOTATION: value}

    with pytest.raises(
        ConfigError,
        match=rf"^Trigger default/t: annotation kafka\.eventing\.knative\.dev/delivery\.order: "
        rf"{re.escape(repr(value))} is not ordered or unordered$",
    ):
        parse_documents([doc])


# --- filters through the config -------------------------------------------------------------


def test_filters_win_over_filter_in_a_trigger() -> None:
    doc = trigger_doc(
        filter={"attributes": {"type": "dev.agentfn.a"}},
        filters=[{"prefix": {"type": "dev.agentfn.b"}}],
    )
    trigger = only_trigger(parse_documents([doc]))

    assert trigger.filter({"type": "dev.agentfn.b.created"})
    assert not trigger.filter({"type": "dev.agentfn.a"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"filters": [{"regex": {"type": ".*"}}]}, "Trigger default/t: filters: unknown dialect"),
        ({"filters": {"exact": {"type": "x"}}}, "Trigger default/t: filters: must be a list"),
        ({"filter": {"attributes": ["type"]}}, "Trigger default/t: filter.attributes: must be"),
        (
            {"filters": [{"exact": {"type": "a", "source": "b"}}]},
            "Trigger default/t: filters.exact: must hold exactly one",
        ),
    ],
)
def test_bad_filter_is_a_config_error_naming_the_trigger(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        parse_documents([trigger_doc(**spec)])


# --- delivery precedence and consumer groups ------------------------------------------------


def test_delivery_for_prefers_trigger_then_broker_then_knative_default() -> None:
    topology = parse_documents(
        [
            broker_doc("tuned", delivery={"retry": 2}),
            broker_doc("plain"),
            trigger_doc("own", broker="tuned", delivery={"retry": 7}),
            trigger_doc("inherits", broker="tuned"),
            trigger_doc("defaults", broker="plain"),
            trigger_doc("implicit", broker="default"),
        ]
    )
    by_name = {t.name: t for t in topology.triggers}

    assert topology.delivery_for(by_name["own"]) == DeliveryPolicy(retry=7)
    assert topology.delivery_for(by_name["inherits"]) == DeliveryPolicy(retry=2)
    assert topology.delivery_for(by_name["defaults"]) is KNATIVE_DEFAULT_DELIVERY
    assert topology.delivery_for(by_name["implicit"]) is KNATIVE_DEFAULT_DELIVERY


def test_trigger_delivery_replaces_the_brokers_wholesale() -> None:
    topology = parse_documents(
        [
            broker_doc("b", delivery={"retry": 2, "backoffPolicy": "linear"}),
            trigger_doc("t", broker="b", delivery={"backoffDelay": "PT1S"}),
        ]
    )

    delivery = topology.delivery_for(only_trigger(topology))
    assert delivery.backoff_policy is BackoffPolicy.EXPONENTIAL
    assert delivery.retry == KNATIVE_DEFAULT_DELIVERY.retry
    assert delivery.backoff_delay == 1.0


def test_a_default_dead_letter_sink_fills_only_triggers_whose_delivery_has_none() -> None:
    own = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "mine"}}
    topology = parse_documents(
        [
            broker_doc("b", delivery={"retry": 2, "backoffPolicy": "linear"}),
            broker_doc("kept", delivery={"retry": 4, "deadLetterSink": {"uri": "http://broker"}}),
            trigger_doc("named", broker="b", delivery={"retry": 1, "deadLetterSink": own}),
            trigger_doc("inherits", broker="b"),
            trigger_doc("own-policy", broker="b", delivery={"retry": 3}),
            trigger_doc("broker-sink", broker="kept"),
            broker_doc("default", namespace="team"),
            trigger_doc("implicit", namespace="team"),
        ]
    )

    filled = topology.with_dead_letter_sink(lambda t: f"http://dlq/{t.namespace}/{t.name}")
    delivery = {t.name: filled.delivery_for(t) for t in filled.triggers}

    # A sink the YAML chose stays, whether the Trigger's own or the Broker's.
    assert delivery["named"] == topology.delivery_for(by_name(topology, "named"))
    assert delivery["broker-sink"].dead_letter_sink == Destination(uri="http://broker")
    assert by_name(filled, "broker-sink").delivery is None
    # The others keep their effective policy and gain the default sink.
    assert delivery["inherits"] == DeliveryPolicy(
        retry=2,
        backoff_policy=BackoffPolicy.LINEAR,
        dead_letter_sink=Destination(uri="http://dlq/default/inherits"),
    )
    assert delivery["own-policy"] == DeliveryPolicy(
        retry=3, dead_letter_sink=Destination(uri="http://dlq/default/own-policy")
    )
    assert delivery["implicit"] == DeliveryPolicy(
        dead_letter_sink=Destination(uri="http://dlq/team/implicit")
    )
    # Pure: the original is unchanged, and the rest of each Trigger is too.
    assert [topology.delivery_for(t).dead_letter_sink for t in topology.triggers] == [
        Destination(ref_name="mine", ref_kind="Service"),
        None,
        None,
        Destination(uri="http://broker"),
        None,
    ]
    assert [(t.name, t.subscriber, t.filter, t.order) for t in filled.triggers] == [
        (t.name, t.subscriber, t.filter, t.order) for t in topology.triggers
    ]
    assert filled.brokers == topology.brokers


def by_name(topology: Topology, name: str) -> TriggerSpec:
    (trigger,) = [t for t in topology.triggers if t.name == name]
    return trigger


@pytest.mark.parametrize(
    ("namespace", "name", "group"),
    [
        ("default", "t", "knative-trigger-default-t"),
        ("agents", "summarize", "knative-trigger-agents-summarize"),
        ("team-a", "on-order-created", "knative-trigger-team-a-on-order-created"),
    ],
)
def test_trigger_consumer_group_is_named_like_knative_kafka(
    namespace: str, name: str, group: str
) -> None:
    trigger = TriggerSpec(
        namespace=namespace,
        name=name,
        broker="default",
        subscriber=Destination(uri="http://sink"),
        filter=match_all,
    )

    assert trigger.group == group


# --- load_topology --------------------------------------------------------------------------


def test_load_topology_from_several_files(tmp_path: Path) -> None:
    manifest = tmp_path / "agents.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    extra = tmp_path / "extra.yml"
    extra.write_text(
        textwrap.dedent(
            """\
            apiVersion: eventing.knative.dev/v1
            kind: Trigger
            metadata:
              name: notify
            spec:
              broker: default
              filters:
                - suffix:
                    type: .failed
              subscriber:
                uri: http://notifier.default.svc.cluster.local
            """
        ),
        encoding="utf-8",
    )

    topology = load_topology([manifest, str(extra)])

    assert [(t.namespace, t.name) for t in topology.triggers] == [
        ("agents", "summarize"),
        ("agents", "audit"),
        ("default", "notify"),
    ]
    notify = topology.triggers[2]
    assert notify.filter({"type": "dev.agentfn.job.failed"})
    assert not notify.filter({"type": "dev.agentfn.job.finished"})


def test_load_topology_resolves_brokers_across_files(tmp_path: Path) -> None:
    (tmp_path / "trigger.yaml").write_text(yaml.safe_dump(trigger_doc("t", broker="shop")))
    (tmp_path / "broker.yaml").write_text(yaml.safe_dump(broker_doc("shop")))

    topology = load_topology([tmp_path / "trigger.yaml", tmp_path / "broker.yaml"])

    assert only_trigger(topology).broker == "shop"


def test_load_topology_of_no_files_has_the_default_broker() -> None:
    topology = load_topology([])

    assert list(topology.brokers) == [DEFAULT_BROKER]
    assert topology.triggers == ()


def test_load_topology_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: Trigger\nmetadata: {name: t\n  spec: [\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid YAML: "):
        load_topology([path])


def test_load_topology_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: No such file or directory$"):
        load_topology([path])


def test_load_topology_folder_without_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not YAML", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(tmp_path))}: a folder without \.yaml files$"
    ):
        load_topology([tmp_path])


def test_load_topology_reads_a_folder_as_kubectl_apply_does(tmp_path: Path) -> None:
    # Its *.yaml and *.yml files in name order, not its subfolders; other kinds are skipped.
    (tmp_path / "b.yml").write_text(yaml.safe_dump(trigger_doc("second")), encoding="utf-8")
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
             trigger_doc("first")]
        ),
        encoding="utf-8",
    )  # fmt: skip
    (tmp_path / "c.txt").write_text(yaml.safe_dump(trigger_doc("not-yaml")), encoding="utf-8")
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "d.yaml").write_text(yaml.safe_dump(trigger_doc("nested")), encoding="utf-8")

    topology = load_topology([tmp_path])

    assert [t.name for t in topology.triggers] == ["first", "second"]


def test_load_topology_reports_document_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(trigger_doc("t", broker="nowhere")), encoding="utf-8")

    with pytest.raises(ConfigError, match=r"Trigger default/t: broker 'nowhere'"):
        load_topology([path])


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_a_broker_declared_twice_is_rejected() -> None:
    with pytest.raises(ConfigError, match="Broker team/b: declared twice"):
        parse_documents([broker_doc("b", namespace="team"), broker_doc("b", namespace="team")])
