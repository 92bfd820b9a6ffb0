"""The eventing objects in knative/ against the real CRD schemas of Knative Eventing.

No cluster runs where this project is built, so `kubectl apply --dry-run=server` is out of
reach; the CRDs' openAPIV3Schema (from ../shared/spec) is what the API server would check.
The Triggers that `agentfn dev` generates from agent declarations are checked the same way.
(tests/deploy/ checks every other rendered object, and that knative/ is what `agentfn render`
writes.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agentfn.brokers.config import load_topology
from agentfn.functions._knative import BROKER_DELIVERY, trigger_documents
from agentfn.functions._loader import discover_agents

PROJECT = Path(__file__).resolve().parents[1]
CRD_FILES = {"Broker": "broker.yaml", "Trigger": "trigger.yaml"}


def crd_schema(shared_spec: Path, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((shared_spec / "knative-eventing" / CRD_FILES[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate(shared_spec: Path, document: dict[str, Any]) -> None:
    assert document["apiVersion"] == "eventing.knative.dev/v1"
    jsonschema.validate(document, crd_schema(shared_spec, document["kind"]))


def eventing_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((PROJECT / "knative").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document.get("kind") in CRD_FILES
    ]


def test_knative_manifests_hold_eventing_objects() -> None:
    kinds = [d["kind"] for d in eventing_documents()]
    assert kinds.count("Broker") == 1
    # One per handler: each consumes one type (the planner has two: tasks, and plan requests,
    # which its peers ask over gRPC but the broker may deliver too), and the model server's.
    assert kinds.count("Trigger") == 6


@pytest.mark.parametrize(
    "document", eventing_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_manifest_is_valid_against_its_crd(shared_spec: Path, document: dict[str, Any]) -> None:
    validate(shared_spec, document)


def test_schema_check_catches_a_wrong_field_type(shared_spec: Path) -> None:
    # The check has teeth: the CRD types spec.delivery.retry as an integer.
    bad = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "bad"},
        "spec": {
            "broker": "default",
            "subscriber": {"uri": "http://x"},
            "delivery": {"retry": "ten"},
        },
    }
    with pytest.raises(jsonschema.ValidationError, match="retry"):
        validate(shared_spec, bad)


def test_the_embedded_broker_reads_the_same_manifests() -> None:
    topology = load_topology([PROJECT / "knative"])  # the folder, as `--triggers knative/`
    assert {t.name for t in topology.triggers} == {
        "planner-agentfn-task-submitted",
        "planner-agentfn-plan-requested",
        "worker-agentfn-work-requested",
        "aggregator-agentfn-work-completed",
        "flaky-agentfn-flaky-requested",
        "embedder-agentfn-embedding-requested",
    }
    # knative/'s Broker in the render's namespace; the embedded broker's default one beside it.
    assert list(topology.brokers) == [("agentfn", "default"), ("default", "default")]
    assert {(t.namespace, t.broker) for t in topology.triggers} == {("agentfn", "default")}


def test_generated_triggers_of_the_reference_agents_are_valid(shared_spec: Path) -> None:
    agents, errors = discover_agents("agentfn.functions.agents")
    assert errors == []
    assert {a.agent.spec.name for a in agents} == {"planner", "worker", "aggregator", "flaky"}
    for found in agents:
        for defaults in (None, BROKER_DELIVERY):  # as the agents declare them, and complete
            for document in trigger_documents(
                found.agent.spec, dead_letter_sink="dead-letters", defaults=defaults
            ):
                validate(shared_spec, document)


def test_every_dead_letter_sink_path_names_where_the_letter_came_from() -> None:
    # The sink reads the Trigger from the path (/<namespace>/<broker>/<trigger>); a Broker's
    # sink serves Triggers without their own delivery, so its path stops at the Broker.
    sinks = {}
    for document in eventing_documents():
        sink = (document["spec"].get("delivery") or {}).get("deadLetterSink")
        if sink is None:
            continue
        meta = document["metadata"]
        namespace = meta.get("namespace", "default")
        if document["kind"] == "Broker":
            sinks[f"Broker/{meta['name']}"] = (sink["uri"], f"/{namespace}/{meta['name']}")
        else:
            expected = f"/{namespace}/{document['spec']['broker']}/{meta['name']}"
            sinks[f"Trigger/{meta['name']}"] = (sink["uri"], expected)
        assert sink["ref"]["name"] == "dead-letters"
    assert "Broker/default" in sinks
    assert {name: uri for name, (uri, _) in sinks.items()} == {
        name: expected for name, (_, expected) in sinks.items()
    }
