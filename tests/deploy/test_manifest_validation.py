"""Every object ``agentfn render`` writes, against the schema the API server would check it by.

No cluster runs where this project is built, so ``kubectl apply --dry-run=server`` is out of
reach. What stands in for it:

- objects of CRD kinds (Knative Serving and Eventing, SinkBinding, prometheus-operator, the
  OpenTelemetry operator, KServe, Kueue) against their CRD's ``openAPIV3Schema`` from
  ``../shared/spec``, with jsonschema;
- core kinds with ``kubernetes-validate`` in strict mode (an unknown field is an error), for the
  Kubernetes release the kind node image of ``scripts/versions.env`` runs; each Knative
  Service's pod template also as a Kubernetes PodSpec, since the Knative CRD leaves unknown
  fields open;
- the checks the schemas leave open, each a function returning its problems, each shown to
  catch a broken copy of a rendered document: names, labels and port names as Kubernetes
  spells them; Knative autoscaling annotations known and well-valued; one container port, named
  ``http1`` or ``h2c``, probed in its protocol (gRPC health checks on ``h2c``); every
  Trigger's delivery complete with a dead-letter sink in the render;
  every reference (Destination, ConfigMap, Secret and their keys, volume, selector, in-cluster
  URL) resolving inside the render; the ResourceQuota covering every pod at its largest; every
  pod passing the Pod Security level the Namespace enforces.

Rendered: the reference agents with the model servers (``knative/`` and ``kserve/``, both
InferenceService variants and the Kueue set), for both profiles and the three collector modes,
once in another namespace and broker, so nothing is tied to ``default``, and once with another
MIG profile, more replicas and Kueue. A model server's predictor is checked as the pod KServe
makes of it (its pod fields as a Kubernetes PodSpec, its labels and annotations as the pod's).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from agentfn.functions._cli.render import model_servers
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.render import render, render_kserve
from agentfn.functions._manifests.sizing import (
    GPU_RESOURCE,
    ROLLOUT_SURGE,
    UNBOUNDED_MAX_SCALE,
    parse_quantity,
)

PROJECT = Path(__file__).resolve().parents[2]
Document = dict[str, Any]

RENDERS = [
    RenderOptions(profile=profile, otel=otel)
    for profile in ("local", "prod")
    for otel in ("shared", "sidecar", "off")
] + [
    RenderOptions(namespace="agents", broker="events", otel="sidecar"),
    RenderOptions(mig_profile="3g.40gb", model_max_replicas=7, kueue=True),
]

#: (apiVersion, kind) -> the CRD file under ../shared/spec that defines it.
CRDS: dict[tuple[str, str], str] = {
    ("serving.knative.dev/v1", "Service"): "knative-serving/service.yaml",
    ("eventing.knative.dev/v1", "Broker"): "knative-eventing/broker.yaml",
    ("eventing.knative.dev/v1", "Trigger"): "knative-eventing/trigger.yaml",
    ("sources.knative.dev/v1", "SinkBinding"): "knative-eventing/sinkbindings.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml"
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): (
        "prometheus-operator/monitoring.coreos.com_podmonitors.yaml"
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml"
    ),
    ("opentelemetry.io/v1beta1", "OpenTelemetryCollector"): (
        "opentelemetry-operator/opentelemetry.io_opentelemetrycollectors.yaml"
    ),
    ("serving.kserve.io/v1beta1", "InferenceService"): (
        "kserve/serving.kserve.io_inferenceservices.yaml"
    ),
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): "kueue/kueue.x-k8s.io_localqueues.yaml",
    ("kueue.x-k8s.io/v1beta2", "LocalQueue"): "kueue/kueue.x-k8s.io_localqueues.yaml",
    ("kueue.x-k8s.io/v1beta2", "ClusterQueue"): "kueue/kueue.x-k8s.io_clusterqueues.yaml",
    ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"): "kueue/kueue.x-k8s.io_resourceflavors.yaml",
}
#: What kubernetes-validate checks: the API groups of Kubernetes itself.
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2"}
KNATIVE_SERVICE = "serving.knative.dev/v1"
ISVC = ("serving.kserve.io/v1beta1", "InferenceService")
#: Fields of a KServe predictor that are KServe's own, not its pod's.
PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleMetricType",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "labels",
    "annotations",
    "batcher",
    "logger",
    "autoScaling",
    "deploymentStrategy",
}
#: Kinds without a namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterQueue", "ResourceFlavor"}
#: Fields a Knative revision's spec adds to a Kubernetes PodSpec.
KNATIVE_POD_FIELDS = {
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
}


# --- the renders -------------------------------------------------------------------------


@functools.cache
def reference_agents() -> tuple[DiscoveredAgent, ...]:
    agents, errors = discover_agents("agentfn.functions.agents")
    assert errors == []
    return tuple(agents)


@functools.cache
def _rendered(options: RenderOptions) -> tuple[tuple[str, Document], ...]:
    servers = model_servers()
    files = render(reference_agents(), options, servers)
    kserve = render_kserve(reference_agents(), options, servers)
    files |= {f"kserve/{name}": documents for name, documents in kserve.items()}
    return tuple((name, document) for name, documents in files.items() for document in documents)


def documents_of(options: RenderOptions) -> list[Document]:
    """A fresh copy of every document of one render (tests may break it freely)."""
    return [copy.deepcopy(document) for _, document in _rendered(options)]


def render_id(options: RenderOptions) -> str:
    return f"{options.profile}-{options.otel}-{options.namespace}"


def every_document() -> list[Any]:
    return [
        pytest.param(
            options,
            index,
            id=f"{render_id(options)}/{file}/{document['kind']}/{document['metadata']['name']}",
        )
        for options in RENDERS
        for index, (file, document) in enumerate(_rendered(options))
    ]


def rendered_document(options: RenderOptions, index: int) -> Document:
    return copy.deepcopy(_rendered(options)[index][1])


def find(documents: Sequence[Document], kind: str, name: str, api: str | None = None) -> Document:
    """The one document of ``kind`` named ``name`` (and ``api``, to tell the two Services apart)."""
    (found,) = [
        d
        for d in documents
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (api is None or d["apiVersion"] == api)
    ]
    return found


# --- schemas -----------------------------------------------------------------------------


@functools.cache
def kubernetes_version() -> str:
    """The Kubernetes minor release the kind node image of scripts/versions.env runs."""
    text = (PROJECT / "scripts" / "versions.env").read_text()
    match = re.search(r"^KIND_NODE_IMAGE=kindest/node:v(\d+\.\d+)\.", text, re.MULTILINE)
    assert match, "scripts/versions.env names no kindest/node image"
    return match[1]


@functools.cache
def crd_schema(shared_spec: Path, api_version: str, kind: str) -> dict[str, Any]:
    path = shared_spec / CRDS[api_version, kind]
    group, _, version = api_version.rpartition("/")
    for crd in yaml.safe_load_all(path.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        if spec["group"] != group or spec["names"]["kind"] != kind:
            continue
        for served in spec["versions"]:
            if served["name"] == version:
                schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
                return schema
    raise LookupError(f"{path} defines no {kind} in {api_version}")


def validate_schema(shared_spec: Path, document: Document) -> None:
    """Raises when ``document`` breaks its schema; a kind with no known schema is an error."""
    key = (document["apiVersion"], document["kind"])
    if key in CRDS:
        # Not jsonschema.validate: it checks the schema first, and CRDs hold Go regular
        # expressions Python's re refuses ("^(?i)..."), in fields nothing here sets.
        jsonschema.Draft202012Validator(crd_schema(shared_spec, *key)).validate(document)
        if key == (KNATIVE_SERVICE, "Service"):
            kubernetes_validate.validate(
                revision_as_pod(document), kubernetes_version(), strict=True
            )
        if key == ISVC:
            kubernetes_validate.validate(
                predictor_as_pod(document), kubernetes_version(), strict=True
            )
    elif document["apiVersion"] in CORE_API_VERSIONS:
        kubernetes_validate.validate(document, kubernetes_version(), strict=True)
    else:
        raise LookupError(f"no schema known for {key}: add its CRD or validator here")


def predictor_as_pod(isvc: Document) -> Document:
    """An InferenceService's predictor as the Pod KServe (through Knative) makes of it: its pod
    fields, the container's probes given their port as Knative's defaulting does."""
    predictor = isvc["spec"]["predictor"]
    spec = {k: v for k, v in copy.deepcopy(predictor).items() if k not in PREDICTOR_FIELDS}
    service = {
        "metadata": {"name": f"{isvc['metadata']['name']}-predictor"},
        "spec": {
            "template": {
                "metadata": {
                    "labels": predictor.get("labels") or {},
                    "annotations": predictor.get("annotations") or {},
                },
                "spec": spec,
            }
        },
    }
    return revision_as_pod(service)


def revision_as_pod(service: Document) -> Document:
    """A Knative Service's revision template as the Pod Knative makes of it.

    Knative's own fields go, and an HTTP probe without a port gets the serving container's port,
    as Knative's defaulting does before the pod exists.
    """
    template = service["spec"]["template"]
    spec = {k: v for k, v in copy.deepcopy(template["spec"]).items() if k not in KNATIVE_POD_FIELDS}
    for container in spec["containers"]:
        ports = container.get("ports") or []
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            http = container.get(probe, {}).get("httpGet")
            if http is not None and "port" not in http and ports:
                http["port"] = ports[0]["containerPort"]
    metadata = {"name": f"{service['metadata']['name']}-00001-deployment"}
    metadata.update({k: v for k, v in template.get("metadata", {}).items() if k != "name"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@pytest.mark.parametrize(("options", "index"), every_document())
def test_document_is_valid_against_its_schema(
    shared_spec: Path, options: RenderOptions, index: int
) -> None:
    validate_schema(shared_spec, rendered_document(options, index))


def test_every_render_has_the_parts_the_cluster_needs() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in documents_of(RenderOptions())}
    assert {
        ("v1", "Namespace"),
        ("v1", "ResourceQuota"),
        ("v1", "LimitRange"),
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        (KNATIVE_SERVICE, "Service"),
        ("eventing.knative.dev/v1", "Broker"),
        ("eventing.knative.dev/v1", "Trigger"),
        ("sources.knative.dev/v1", "SinkBinding"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    } <= kinds


def test_crd_schema_check_catches_a_wrong_type(shared_spec: Path) -> None:
    documents = documents_of(RenderOptions())
    trigger = next(d for d in documents if d["kind"] == "Trigger")
    trigger["spec"]["delivery"]["retry"] = "ten"
    with pytest.raises(jsonschema.ValidationError, match=r"retry|ten"):
        validate_schema(shared_spec, trigger)


def test_core_schema_check_catches_a_wrong_type_and_an_unknown_field(shared_spec: Path) -> None:
    documents = documents_of(RenderOptions())
    redis = find(documents, "Deployment", "redis")
    redis["spec"]["replicas"] = "1"
    with pytest.raises(kubernetes_validate.ValidationError, match=r"replicas|'1'"):
        validate_schema(shared_spec, redis)
    quota = find(documents, "ResourceQuota", "agentfn")
    quota["spec"]["hardd"] = quota["spec"].pop("hard")
    with pytest.raises(kubernetes_validate.ValidationError, match="hardd"):
        validate_schema(shared_spec, quota)


def test_knative_pod_spec_check_catches_what_the_crd_leaves_open(shared_spec: Path) -> None:
    # The Knative CRD lets an unknown container field through; the PodSpec does not.
    service = find(documents_of(RenderOptions()), "Service", "planner", KNATIVE_SERVICE)
    service["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    jsonschema.Draft202012Validator(crd_schema(shared_spec, KNATIVE_SERVICE, "Service")).validate(
        service
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        validate_schema(shared_spec, service)


def test_a_kind_without_a_schema_is_an_error(shared_spec: Path) -> None:
    with pytest.raises(LookupError, match="no schema known"):
        validate_schema(
            shared_spec,
            {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}},
        )


# --- semantic checks: each returns its problems ---------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
#: Kinds whose name becomes a DNS label (a host name or a revision prefix), not a subdomain.
_LABEL_NAMED = {"Namespace", "Service"}


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _is_port_name(name: str) -> bool:
    # IANA_SVC_NAME: at most 15 characters, a letter among them, no leading, trailing or "--".
    return (
        len(name) <= 15
        and bool(_PORT_NAME.fullmatch(name))
        and "--" not in name
        and any(c.isalpha() for c in name)
    )


def pod_templates(document: Document) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(template metadata, pod spec) of a workload document; none for other kinds."""
    if document["kind"] == "Deployment" or (
        document["apiVersion"] == KNATIVE_SERVICE and document["kind"] == "Service"
    ):
        template = document["spec"]["template"]
        return [(template.get("metadata", {}), template["spec"])]
    if (document["apiVersion"], document["kind"]) == ISVC:
        pod = predictor_as_pod(document)
        return [(pod["metadata"], pod["spec"])]
    return []


def _containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def naming_problems(documents: Sequence[Document], options: RenderOptions) -> list[str]:
    """Names, namespaces, label and annotation keys, label values and port names."""
    problems: list[str] = []
    for document in documents:
        meta = document["metadata"]
        what = f"{document['kind']}/{meta['name']}"
        pattern = _DNS_LABEL if document["kind"] in _LABEL_NAMED else _DNS_SUBDOMAIN
        limit = 63 if document["kind"] in _LABEL_NAMED else 253
        if len(meta["name"]) > limit or not pattern.fullmatch(meta["name"]):
            shape = "label" if pattern is _DNS_LABEL else "subdomain"
            problems.append(f"{what}: name is not a DNS-1123 {shape}")
        expected = None if document["kind"] in CLUSTER_SCOPED else options.namespace
        if meta.get("namespace") != expected:
            problems.append(f"{what}: namespace {meta.get('namespace')!r}, not {expected!r}")
        metas = [meta, *(template for template, _ in pod_templates(document))]
        for labelled in metas:
            for key, value in (labelled.get("labels") or {}).items():
                if not _is_qualified_name(key):
                    problems.append(f"{what}: label key {key!r}")
                if not isinstance(value, str) or (
                    value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value))
                ):
                    problems.append(f"{what}: label {key}={value!r}")
            problems += [
                f"{what}: annotation key {key!r}"
                for key in labelled.get("annotations") or {}
                if not _is_qualified_name(key)
            ]
        problems += [
            f"{what}: container port name {port['name']!r}"
            for _, spec in pod_templates(document)
            for container in _containers(spec)
            for port in container.get("ports", [])
            if "name" in port and not _is_port_name(port["name"])
        ]
        if document["apiVersion"] == "v1" and document["kind"] == "Service":
            problems += [
                f"{what}: Service port name {port.get('name')!r}"
                for port in document["spec"].get("ports", [])
                if not _is_port_name(port.get("name", ""))
            ]
    return problems


AUTOSCALING = "autoscaling.knative.dev/"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
_METRICS = {KPA: {"concurrency", "rps"}, HPA: {"cpu", "memory"}}
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|0")


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _count(value: str) -> int | None:
    return int(value) if re.fullmatch(r"\d+", value) else None


def _duration_s(value: str) -> float | None:
    if not _DURATION.fullmatch(value):
        return None
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(amount) * units[unit]
        for amount, _, unit in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    )


def _in(low: float, high: float) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        number = _number(value)
        return number is not None and low <= number <= high

    return check


def _count_ok(value: str) -> bool:
    return _count(value) is not None


def _duration_in(high: float) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        seconds = _duration_s(value)
        return seconds is not None and seconds <= high

    return check


#: Knative Serving's revision autoscaling annotations, each with what its value must be.
AUTOSCALING_ANNOTATIONS: dict[str, Callable[[str], bool]] = {
    "class": lambda value: value in _METRICS,
    "metric": lambda value: value in {"concurrency", "rps", "cpu", "memory"},
    "target": lambda value: (_number(value) or 0) >= 0.01,
    "target-utilization-percentage": _in(1, 100),
    "target-burst-capacity": lambda value: (_number(value) or -2) >= -1,
    "min-scale": _count_ok,
    "max-scale": _count_ok,
    "initial-scale": _count_ok,
    "activation-scale": lambda value: (_count(value) or 0) >= 1,
    "window": lambda value: 6 <= (_duration_s(value) or 0) <= 3600,
    "panic-window-percentage": _in(1, 100),
    "panic-threshold-percentage": _in(110, 1000),
    "scale-down-delay": _duration_in(3600),
    "scale-to-zero-pod-retention-period": _duration_in(math.inf),
}
QUEUE_SIDECAR = "queue.sidecar.serving.knative.dev/"
_QUEUE_SIDECAR_KEYS = {
    f"{resource}-resource-{kind}"
    for resource in ("cpu", "memory", "ephemeral-storage")
    for kind in ("request", "limit")
}


def _quantity_ok(value: str) -> bool:
    try:
        parse_quantity(value)
    except ValueError:
        return False
    return True


def autoscaling_problems(documents: Sequence[Document]) -> list[str]:
    """Knative annotations: known names, valid values, a class and metric that agree."""
    problems: list[str] = []
    for document in documents:
        if document["apiVersion"] != KNATIVE_SERVICE or document["kind"] != "Service":
            continue
        what = f"Service/{document['metadata']['name']}"
        outer = document["metadata"].get("annotations") or {}
        problems += [
            f"{what}: {key} on the Service, not its revision template (Knative ignores it)"
            for key in outer
            if key.startswith(AUTOSCALING)
        ]
        template = document["spec"]["template"]
        annotations: dict[str, str] = template.get("metadata", {}).get("annotations") or {}
        for key, value in annotations.items():
            if key.startswith(AUTOSCALING):
                name = key.removeprefix(AUTOSCALING)
                check = AUTOSCALING_ANNOTATIONS.get(name)
                if check is None:
                    problems.append(f"{what}: unknown annotation {key}")
                elif not isinstance(value, str) or not check(value):
                    problems.append(f"{what}: {key}={value!r} is not a valid value")
            elif key.startswith(QUEUE_SIDECAR):
                if key.removeprefix(QUEUE_SIDECAR) not in _QUEUE_SIDECAR_KEYS:
                    problems.append(f"{what}: unknown annotation {key}")
                elif not _quantity_ok(value):
                    problems.append(f"{what}: {key}={value!r} is not a quantity")
        autoscaler = annotations.get(f"{AUTOSCALING}class", KPA)
        metric = annotations.get(f"{AUTOSCALING}metric")
        if autoscaler in _METRICS and metric is not None and metric not in _METRICS[autoscaler]:
            problems.append(f"{what}: metric {metric} does not go with class {autoscaler}")
        low = _count(annotations.get(f"{AUTOSCALING}min-scale", "0"))
        high = _count(annotations.get(f"{AUTOSCALING}max-scale", "0"))
        if low is not None and high and high < low:
            problems.append(f"{what}: max-scale {high} is below min-scale {low}")
        if autoscaler == HPA:
            if not low:
                problems.append(f"{what}: the hpa class never scales to zero: min-scale >= 1")
            serving = _containers(template["spec"])[0]
            if metric in {"cpu", None} and "cpu" not in serving.get("resources", {}).get(
                "requests", {}
            ):
                problems.append(f"{what}: hpa on cpu needs the container's cpu request")
    return problems


def port_problems(documents: Sequence[Document]) -> list[str]:
    """Each Knative Service: exactly one container port, named http1 or h2c, probes on it only."""
    problems: list[str] = []
    for document in documents:
        if document["apiVersion"] != KNATIVE_SERVICE or document["kind"] != "Service":
            continue
        what = f"Service/{document['metadata']['name']}"
        containers = _containers(document["spec"]["template"]["spec"])
        ports = [(c, port) for c in containers for port in c.get("ports", [])]
        if len(ports) != 1:
            problems.append(f"{what}: {len(ports)} container ports (Knative takes exactly one)")
        for container, port in ports:
            if port.get("name") not in {"http1", "h2c"}:
                problems.append(f"{what}: port named {port.get('name')!r}, not http1 or h2c")
            if "containerPort" not in port:
                problems.append(f"{what}: port of {container.get('name')} has no containerPort")
        for container, port in ports:
            problems += _probe_protocol_problems(what, container, port)
        names = [c.get("name") for c in containers]
        if len(containers) > 1 and (None in names or len(set(names)) != len(names)):
            problems.append(f"{what}: containers need distinct names: {names}")
        for container in containers:
            probes = [
                p for p in ("readinessProbe", "livenessProbe", "startupProbe") if p in container
            ]
            if probes and not container.get("ports"):
                problems.append(f"{what}: {container.get('name')} is a sidecar with {probes}")
    return problems


def _probe_protocol_problems(
    what: str, container: Mapping[str, Any], port: Mapping[str, Any]
) -> list[str]:
    """Probes the port's protocol can answer: on ``h2c`` (gRPC only, HTTP/2 for every request)
    no HTTP/1.1 GET, on ``http1`` no gRPC health check; a gRPC probe on the container port."""
    problems: list[str] = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind) or {}
        if port.get("name") == "h2c" and "httpGet" in probe:
            problems.append(f"{what}: {kind} is an HTTP GET on the gRPC-only h2c port")
        if port.get("name") == "http1" and "grpc" in probe:
            problems.append(f"{what}: {kind} is a gRPC health check on the http1 port")
        grpc_port = (probe.get("grpc") or {}).get("port")
        if "grpc" in probe and grpc_port != port.get("containerPort"):
            problems.append(f"{what}: {kind} checks gRPC on port {grpc_port}, not the container's")
    return problems


_ISO_DURATION = re.compile(r"P(?!$)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?")


def _namespace_of(document: Document) -> str:
    return str(document["metadata"].get("namespace", "default"))


def _resolves(documents: Sequence[Document], ref: Mapping[str, Any], namespace: str) -> bool:
    return any(
        d["apiVersion"] == ref.get("apiVersion")
        and d["kind"] == ref.get("kind")
        and d["metadata"]["name"] == ref.get("name")
        and _namespace_of(d) == ref.get("namespace", namespace)
        for d in documents
    )


def trigger_problems(documents: Sequence[Document]) -> list[str]:
    """Every Trigger: a Broker in the render and a complete delivery with a dead-letter sink.

    Complete: retry, backoffPolicy, backoffDelay and timeout written out, and a deadLetterSink
    whose Service is rendered and whose path names the Trigger (/<namespace>/<broker>/<name>),
    as the dead-letter sink reads it.
    """
    problems: list[str] = []
    brokers = {
        (_namespace_of(d), d["metadata"]["name"]) for d in documents if d["kind"] == "Broker"
    }
    for document in documents:
        if document["kind"] != "Trigger":
            continue
        namespace = _namespace_of(document)
        name = document["metadata"]["name"]
        what = f"Trigger/{name}"
        broker = document["spec"].get("broker")
        if (namespace, broker) not in brokers:
            problems.append(f"{what}: Broker {broker!r} is not in the render")
        delivery = document["spec"].get("delivery") or {}
        retry = delivery.get("retry")
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 1:
            problems.append(f"{what}: delivery.retry is {retry!r}, not a count of retries")
        if delivery.get("backoffPolicy") not in {"exponential", "linear"}:
            problems.append(f"{what}: delivery.backoffPolicy is {delivery.get('backoffPolicy')!r}")
        problems += [
            f"{what}: delivery.{field} is {delivery.get(field)!r}"
            for field in ("backoffDelay", "timeout")
            if not _ISO_DURATION.fullmatch(str(delivery.get(field, "")))
        ]
        sink = delivery.get("deadLetterSink")
        if not sink or "ref" not in sink:
            problems.append(f"{what}: no deadLetterSink Service")
            continue
        if sink["ref"].get("kind") != "Service" or not _resolves(documents, sink["ref"], namespace):
            problems.append(f"{what}: deadLetterSink {sink['ref']} is not in the render")
        if sink.get("uri") != f"/{namespace}/{broker}/{name}":
            problems.append(f"{what}: deadLetterSink path {sink.get('uri')!r} does not name it")
    return problems


def _keys(document: Document) -> set[str]:
    return {
        *document.get("data", {}),
        *document.get("stringData", {}),
        *document.get("binaryData", {}),
    }


def _pods(documents: Sequence[Document]) -> list[tuple[Document, dict[str, str], dict[str, Any]]]:
    """(owner, pod labels, pod spec) of every workload; a revision's pods carry its labels."""
    return [
        (document, template.get("labels") or {}, spec)
        for document in documents
        for template, spec in pod_templates(document)
    ]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _host_service(
    documents: Sequence[Document], url: str, namespace: str
) -> tuple[str, str | None] | None:
    """The (host, problem) of an in-cluster URL of this namespace; ``None`` for other URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
    if parts.scheme not in {"http", "https", "redis", "rediss"} or match is None:
        return None
    name, in_namespace = match[1], match[2]
    if in_namespace != namespace:
        return None  # another namespace: the platform's (the broker ingress), not the render's
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    for d in documents:
        if d["metadata"]["name"] != name or _namespace_of(d) != namespace:
            continue
        if d["apiVersion"] == "v1" and d["kind"] == "Service":
            if port in {p["port"] for p in d["spec"].get("ports", [])}:
                return host, None
            return host, f"Service {name} has no port {port}"
        if d["apiVersion"] == KNATIVE_SERVICE and d["kind"] == "Service" and port in {80, 443}:
            return host, None
    return host, f"no Service {name} (port {port}) in the render"


def reference_problems(documents: Sequence[Document]) -> list[str]:
    """Every name one object uses for another resolves inside the render."""
    problems: list[str] = []
    by_kind: dict[str, dict[tuple[str, str], Document]] = {}
    for document in documents:
        key = (_namespace_of(document), document["metadata"]["name"])
        by_kind.setdefault(document["kind"], {})[key] = document
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    pods = _pods(documents)

    def keyed(
        kind: str,
        pool: Mapping[tuple[str, str], Document],
        ref: Mapping[str, Any],
        namespace: str,
        what: str,
        key: str | None = None,
    ) -> None:
        if ref.get("optional"):
            return
        found = pool.get((namespace, ref.get("name", "")))
        if found is None:
            problems.append(f"{what}: {kind} {ref.get('name')!r} is not in the render")
        elif key is not None and key not in _keys(found):
            problems.append(f"{what}: {kind} {ref.get('name')} has no key {key!r}")

    for document in documents:
        namespace = _namespace_of(document)
        what = f"{document['kind']}/{document['metadata']['name']}"
        spec = document.get("spec") or {}
        # Knative Destinations and the Broker's config.
        destinations = [spec.get("subscriber"), spec.get("sink")]
        destinations.append((spec.get("delivery") or {}).get("deadLetterSink"))
        problems += [
            f"{what}: {destination['ref']} is not in the render"
            for destination in destinations
            if destination
            and "ref" in destination
            and not _resolves(documents, destination["ref"], namespace)
        ]
        if (
            document["kind"] == "Broker"
            and "config" in spec
            and not _resolves(documents, spec["config"], namespace)
        ):
            problems.append(f"{what}: config {spec['config']} is not in the render")
        if document["kind"] == "SinkBinding":
            subject = spec.get("subject", {})
            selector = subject.get("selector", {}).get("matchLabels", {})
            matched = [
                d
                for d in documents
                if d["apiVersion"] == subject.get("apiVersion")
                and d["kind"] == subject.get("kind")
                and (
                    d["metadata"]["name"] == subject.get("name")
                    or _selects(selector, d["metadata"].get("labels") or {})
                )
            ]
            if not matched:
                problems.append(f"{what}: its subject selects nothing in the render")
        # Pods: env, envFrom, volumes, mounts, in-cluster URLs.
        for template, pod in pod_templates(document):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for volume in volumes.values():
                if "configMap" in volume:
                    keyed("ConfigMap", config_maps, volume["configMap"], namespace, what)
                if "secret" in volume:
                    ref = {"name": volume["secret"].get("secretName"), **volume["secret"]}
                    keyed("Secret", secrets, ref, namespace, what)
            for container in _containers(pod):
                problems += [
                    f"{what}: mount {mount['name']!r} names no pod volume"
                    for mount in container.get("volumeMounts", [])
                    if mount["name"] not in volumes
                ]
                for env in container.get("env", []):
                    source = env.get("valueFrom") or {}
                    if "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        keyed("ConfigMap", config_maps, ref, namespace, what, ref.get("key"))
                    if "secretKeyRef" in source:
                        ref = source["secretKeyRef"]
                        keyed("Secret", secrets, ref, namespace, what, ref.get("key"))
                    if "value" in env:
                        found = _host_service(documents, env["value"], namespace)
                        if found and found[1]:
                            problems.append(f"{what}: {env['name']}={env['value']}: {found[1]}")
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        keyed("ConfigMap", config_maps, source["configMapRef"], namespace, what)
                    if "secretRef" in source:
                        keyed("Secret", secrets, source["secretRef"], namespace, what)
            if document["kind"] == "Deployment":
                selector = spec.get("selector", {}).get("matchLabels", {})
                if not _selects(selector, template.get("labels") or {}):
                    problems.append(f"{what}: its selector does not select its own pods")
        # URLs held in Secrets and ConfigMaps (the Redis URL).
        if document["kind"] in {"Secret", "ConfigMap"}:
            for key, value in {
                **document.get("data", {}),
                **document.get("stringData", {}),
            }.items():
                found = _host_service(documents, str(value), namespace)
                if found and found[1]:
                    problems.append(f"{what}: {key}={value}: {found[1]}")
        # Services and monitors: selectors and the ports they name.
        if document["apiVersion"] == "v1" and document["kind"] == "Service":
            selected = [p for p in pods if _selects(spec.get("selector", {}), p[1])]
            if not selected:
                problems.append(f"{what}: its selector matches no pod in the render")
            for port in spec.get("ports", []):
                target = port.get("targetPort", port["port"])
                offered = {
                    value
                    for _, _, pod in selected
                    for container in _containers(pod)
                    for p in container.get("ports", [])
                    for value in (p.get("name"), p["containerPort"])
                }
                if selected and target not in offered:
                    problems.append(f"{what}: targetPort {target!r} is no port of its pods")
        if document["kind"] in {"PodMonitor", "ServiceMonitor"}:
            selector = spec.get("selector", {}).get("matchLabels", {})
            pool = (
                pods
                if document["kind"] == "PodMonitor"
                else [
                    (d, d["metadata"].get("labels") or {}, {})
                    for d in documents
                    if d["kind"] == "Service"
                ]
            )
            if not any(_selects(selector, labels) for _, labels, _ in pool):
                problems.append(f"{what}: its selector matches nothing in the render")
    return problems


# --- pod security ------------------------------------------------------------------------

#: Capabilities the ``baseline`` Pod Security level lets a container add.
_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def pod_security_problems(documents: Sequence[Document]) -> list[str]:
    """Every pod passes the Pod Security level the rendered Namespace enforces (baseline).

    A pod that fails it is refused at creation, long after ``kubectl apply`` said yes.
    """
    namespaces = [d for d in documents if d["kind"] == "Namespace"]
    level = {
        (ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        for ns in namespaces
    }
    problems = [] if level == {"baseline"} else [f"Namespaces enforce {level}, not baseline"]
    for document, _, pod in _pods(documents):
        what = f"{document['kind']}/{document['metadata']['name']}"
        problems += [
            f"{what}: {field}" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)
        ]
        problems += [
            f"{what}: hostPath volume {v['name']}"
            for v in pod.get("volumes", [])
            if "hostPath" in v
        ]
        contexts = [("pod", pod.get("securityContext") or {})]
        for container in _containers(pod):
            name = container.get("name", "?")
            context = container.get("securityContext") or {}
            contexts.append((name, context))
            if context.get("privileged"):
                problems.append(f"{what}/{name}: privileged")
            added = set((context.get("capabilities") or {}).get("add", [])) - _BASELINE_CAPABILITIES
            if added:
                problems.append(f"{what}/{name}: adds capabilities {sorted(added)}")
            problems += [
                f"{what}/{name}: hostPort {port['hostPort']}"
                for port in container.get("ports", [])
                if port.get("hostPort")
            ]
        problems += [
            f"{what}/{name}: seccomp Unconfined"
            for name, context in contexts
            if (context.get("seccompProfile") or {}).get("type") == "Unconfined"
        ]
    return problems


# --- the quota ---------------------------------------------------------------------------


def _limit_range(documents: Sequence[Document]) -> dict[str, dict[str, Fraction]]:
    """The Container limits of the render's LimitRange: default, defaultRequest, max."""
    ranges = [
        limit
        for document in documents
        if document["kind"] == "LimitRange"
        for limit in document["spec"]["limits"]
        if limit.get("type") == "Container"
    ]
    merged: dict[str, dict[str, Fraction]] = {"default": {}, "defaultRequest": {}, "max": {}}
    for limit in ranges:
        for field, values in merged.items():
            values.update({k: parse_quantity(v) for k, v in limit.get(field, {}).items()})
    return merged


def admitted(
    resources: Mapping[str, Any], limit_range: Mapping[str, Mapping[str, Fraction]]
) -> tuple[dict[str, Fraction], dict[str, Fraction]]:
    """A container's (requests, limits) once admitted: API defaulting, then the LimitRange.

    A limit without a request makes the request equal to it; a missing limit is the
    LimitRange's default, a missing request its defaultRequest. An extended resource's
    request is its limit.
    """
    requests = {k: parse_quantity(v) for k, v in (resources.get("requests") or {}).items()}
    limits = {k: parse_quantity(v) for k, v in (resources.get("limits") or {}).items()}
    for name, value in limits.items():
        requests.setdefault(name, value)
    for name in ("cpu", "memory"):
        if name not in limits and name in limit_range["default"]:
            limits[name] = limit_range["default"][name]
        if name not in requests and name in limit_range["defaultRequest"]:
            requests[name] = limit_range["defaultRequest"][name]
    return requests, limits


def _queue_proxy(annotations: Mapping[str, str]) -> dict[str, Any]:
    """queue-proxy's resources as the annotations set them; Knative's default asks 25m CPU."""
    requests = {"cpu": "25m"}
    limits: dict[str, str] = {}
    for resource in ("cpu", "memory"):
        if f"{QUEUE_SIDECAR}{resource}-resource-request" in annotations:
            requests[resource] = annotations[f"{QUEUE_SIDECAR}{resource}-resource-request"]
        if f"{QUEUE_SIDECAR}{resource}-resource-limit" in annotations:
            limits[resource] = annotations[f"{QUEUE_SIDECAR}{resource}-resource-limit"]
    return {"requests": requests, "limits": limits}


def _most_pods(document: Document) -> int:
    """Pods a workload may run at once: its most replicas plus a rollout's surge."""
    if (document["apiVersion"], document["kind"]) == ISVC:
        predictor = document["spec"]["predictor"]
        low = int(predictor.get("minReplicas", 1))
        return (predictor.get("maxReplicas") or max(UNBOUNDED_MAX_SCALE, low)) + ROLLOUT_SURGE
    if document["apiVersion"] == KNATIVE_SERVICE:
        annotations = document["spec"]["template"].get("metadata", {}).get("annotations") or {}
        most = int(annotations.get(f"{AUTOSCALING}max-scale", "0"))
        low = int(annotations.get(f"{AUTOSCALING}min-scale", "0"))
        return (most or max(UNBOUNDED_MAX_SCALE, low)) + ROLLOUT_SURGE
    replicas = int(document["spec"].get("replicas", 1))
    strategy = document["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return replicas
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return replicas + math.ceil(replicas * int(surge[:-1]) / 100)
    return replicas + int(surge)


def quota_problems(documents: Sequence[Document]) -> list[str]:
    """The ResourceQuota covers every pod at its most, and every container fits the LimitRange.

    Counted from the documents alone: each Knative Service at its max-scale (an unbounded one at
    the documented cap) plus one rollout pod, with queue-proxy beside each container set; each
    InferenceService likewise at its maxReplicas (its two variants are one InferenceService,
    applied one or the other: counted once, at the larger of each); each Deployment at its
    replicas plus its maxSurge. Every quota naming a resource must cover it (Kubernetes
    enforces each), and a resource the pods ask for must be named by one; extended resources
    (GPUs, MIG slices) are counted by their requests, as Kubernetes counts them.
    """
    problems: list[str] = []
    limit_range = _limit_range(documents)
    needed: dict[str, Fraction] = {
        "pods": Fraction(0),
        "requests.cpu": Fraction(0),
        "requests.memory": Fraction(0),
        "limits.cpu": Fraction(0),
        "limits.memory": Fraction(0),
        f"requests.{GPU_RESOURCE}": Fraction(0),
    }
    # An InferenceService's variants share a name: (namespace, name) -> its largest needs.
    variants: dict[tuple[str, str], dict[str, Fraction]] = {}
    for document, _, pod in _pods(documents):
        what = f"{document['kind']}/{document['metadata']['name']}"
        count = _most_pods(document)
        isvc = (document["apiVersion"], document["kind"]) == ISVC
        own: dict[str, Fraction] = {}
        needs = own if isvc else needed
        needs["pods"] = needs.get("pods", Fraction(0)) + count
        sized = [(c.get("name", "?"), c.get("resources") or {}) for c in _containers(pod)]
        if document["apiVersion"] == KNATIVE_SERVICE or isvc:
            ((template, _),) = pod_templates(document)
            sized.append(("queue-proxy", _queue_proxy(template.get("annotations") or {})))
        for name, resources in sized:
            requests, limits = admitted(resources, limit_range)
            for resource in ("cpu", "memory"):
                if resource not in limits:
                    problems.append(f"{what}/{name}: no {resource} limit and no default for it")
                    continue
                if requests.get(resource, Fraction(0)) > limits[resource]:
                    problems.append(f"{what}/{name}: {resource} request above its limit")
                top = limit_range["max"].get(resource)
                if top is not None and limits[resource] > top:
                    problems.append(f"{what}/{name}: {resource} limit above the LimitRange max")
                for key, amount in (
                    (f"requests.{resource}", requests.get(resource, Fraction(0))),
                    (f"limits.{resource}", limits[resource]),
                ):
                    needs[key] = needs.get(key, Fraction(0)) + amount * count
            for resource, amount in requests.items():
                if resource not in {"cpu", "memory"}:  # extended: GPUs, MIG slices
                    key = f"requests.{resource}"
                    needs[key] = needs.get(key, Fraction(0)) + amount * count
        if isvc:
            largest = variants.setdefault(
                (_namespace_of(document), document["metadata"]["name"]), {}
            )
            for key, amount in own.items():
                largest[key] = max(largest.get(key, Fraction(0)), amount)
    for largest in variants.values():
        for key, amount in largest.items():
            needed[key] = needed.get(key, Fraction(0)) + amount
    quotas = [d for d in documents if d["kind"] == "ResourceQuota"]
    if not quotas:
        return [*problems, "no ResourceQuota in the render"]
    for key, need in needed.items():
        caps = [
            (quota["metadata"]["name"], parse_quantity(quota["spec"]["hard"][key]))
            for quota in quotas
            if key in quota["spec"]["hard"]
        ]
        if not caps and (not key.endswith(GPU_RESOURCE) or need):
            problems.append(f"ResourceQuota: {key} unbounded, {need} needed")
        problems += [
            f"ResourceQuota {name}: {key} is {cap}, below the {need} needed"
            for name, cap in caps
            if cap < need
        ]
    return problems


# --- every check over every render ---------------------------------------------------------


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_names_labels_and_port_names_are_what_kubernetes_accepts(options: RenderOptions) -> None:
    assert naming_problems(documents_of(options), options) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_knative_annotations_are_known_and_well_valued(options: RenderOptions) -> None:
    assert autoscaling_problems(documents_of(options)) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_each_knative_service_has_one_port_named_http1_or_h2c(options: RenderOptions) -> None:
    assert port_problems(documents_of(options)) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_every_trigger_retries_and_dead_letters_to_a_rendered_sink(options: RenderOptions) -> None:
    documents = documents_of(options)
    assert [d for d in documents if d["kind"] == "Trigger"]
    assert trigger_problems(documents) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_every_reference_resolves_inside_the_render(options: RenderOptions) -> None:
    assert reference_problems(documents_of(options)) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_the_quota_covers_every_pod_at_its_most(options: RenderOptions) -> None:
    assert quota_problems(documents_of(options)) == []


@pytest.mark.parametrize("options", RENDERS, ids=render_id)
def test_every_pod_passes_the_enforced_pod_security_level(options: RenderOptions) -> None:
    assert pod_security_problems(documents_of(options)) == []


# --- each check catches a broken copy ------------------------------------------------------

Breakage = Callable[[list[Document]], None]


def _knative(documents: list[Document], name: str) -> Document:
    return find(documents, "Service", name, KNATIVE_SERVICE)


def _annotations(documents: list[Document], name: str) -> dict[str, str]:
    annotations: dict[str, str] = _knative(documents, name)["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


def _first_trigger(documents: list[Document]) -> Document:
    return next(d for d in documents if d["kind"] == "Trigger")


def _serving(documents: list[Document], name: str) -> dict[str, Any]:
    container: dict[str, Any] = _knative(documents, name)["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def _set(mapping: dict[str, Any], key: str, value: Any) -> None:
    mapping[key] = value


def _each_predictor(documents: list[Document], key: str, value: Any) -> None:
    """Both variants of the InferenceService: what the other leaves, the quota counts."""
    for document in documents:
        if (document["apiVersion"], document["kind"]) == ISVC:
            document["spec"]["predictor"][key] = value


def _broken(options: RenderOptions, breakage: Breakage) -> list[Document]:
    documents = documents_of(options)
    breakage(documents)
    return documents


LOCAL_SIDECAR = RenderOptions(otel="sidecar")
BREAKS: dict[str, tuple[Callable[[list[Document]], list[str]], RenderOptions, Breakage, str]] = {
    # naming
    "name-not-dns": (
        lambda ds: naming_problems(ds, RenderOptions()),
        RenderOptions(),
        lambda ds: _set(_knative(ds, "planner")["metadata"], "name", "Planner_1"),
        "not a DNS-1123 label",
    ),
    "label-value": (
        lambda ds: naming_problems(ds, RenderOptions()),
        RenderOptions(),
        lambda ds: _set(find(ds, "Deployment", "redis")["metadata"]["labels"], "tier", "a b"),
        "label tier='a b'",
    ),
    "wrong-namespace": (
        lambda ds: naming_problems(ds, RenderOptions()),
        RenderOptions(),
        lambda ds: _set(find(ds, "Secret", "agentfn-redis")["metadata"], "namespace", "other"),
        "namespace 'other'",
    ),
    "port-name-too-long": (
        lambda ds: naming_problems(ds, RenderOptions()),
        RenderOptions(),
        lambda ds: _set(
            find(ds, "Service", "redis", "v1")["spec"]["ports"][0], "name", "redis-server-port"
        ),
        "Service port name 'redis-server-port'",
    ),
    # autoscaling annotations
    "max-scale-not-integer": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}max-scale", "many"),
        "max-scale='many' is not a valid value",
    ),
    "unknown-annotation": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}maxScale", "3"),
        "unknown annotation autoscaling.knative.dev/maxScale",
    ),
    "unknown-class": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}class", "kpa"),
        "class='kpa' is not a valid value",
    ),
    "metric-against-class": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}class", HPA),
        "metric concurrency does not go with class hpa",
    ),
    "max-below-min": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}min-scale", "50"),
        "max-scale 20 is below min-scale 50",
    ),
    "queue-proxy-quantity": (
        autoscaling_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{QUEUE_SIDECAR}cpu-resource-limit", "lots"),
        "is not a quantity",
    ),
    # ports
    "sidecar-with-a-port": (
        port_problems,
        LOCAL_SIDECAR,
        lambda ds: _set(
            _knative(ds, "planner")["spec"]["template"]["spec"]["containers"][1],
            "ports",
            [{"name": "http", "containerPort": 4318}],
        ),
        "2 container ports",
    ),
    "port-named-http": (
        port_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "planner")["ports"][0], "name", "http"),
        "port named 'http'",
    ),
    "no-port": (
        port_problems,
        RenderOptions(),
        lambda ds: _serving(ds, "planner").pop("ports"),
        "0 container ports",
    ),
    "h2c-probed-over-http": (
        port_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "planner-rpc"), "readinessProbe", {"httpGet": {"path": "/"}}),
        "readinessProbe is an HTTP GET on the gRPC-only h2c port",
    ),
    "http1-probed-over-grpc": (
        port_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "planner"), "livenessProbe", {"grpc": {"port": 8080}}),
        "livenessProbe is a gRPC health check on the http1 port",
    ),
    "grpc-probe-off-port": (
        port_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "planner-rpc")["livenessProbe"]["grpc"], "port", 9090),
        "livenessProbe checks gRPC on port 9090, not the container's",
    ),
    # triggers
    "no-retry": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _first_trigger(ds)["spec"]["delivery"].pop("retry"),
        "delivery.retry is None",
    ),
    "no-dead-letter-sink": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _first_trigger(ds)["spec"]["delivery"].pop("deadLetterSink"),
        "no deadLetterSink Service",
    ),
    "dead-letter-sink-not-rendered": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _set(
            _first_trigger(ds)["spec"]["delivery"]["deadLetterSink"]["ref"], "name", "sink"
        ),
        "is not in the render",
    ),
    "dead-letter-path": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _set(
            _first_trigger(ds)["spec"]["delivery"]["deadLetterSink"], "uri", "/default"
        ),
        "does not name it",
    ),
    "no-backoff-delay": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _first_trigger(ds)["spec"]["delivery"].pop("backoffDelay"),
        "delivery.backoffDelay is None",
    ),
    "unknown-broker": (
        trigger_problems,
        RenderOptions(),
        lambda ds: _set(_first_trigger(ds)["spec"], "broker", "elsewhere"),
        "Broker 'elsewhere' is not in the render",
    ),
    # references
    "secret-renamed": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(find(ds, "Secret", "agentfn-redis")["metadata"], "name", "redis-url"),
        "Secret 'agentfn-redis' is not in the render",
    ),
    "secret-key": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(
            find(ds, "Secret", "agentfn-redis"), "stringData", {"uri": "redis://x:6379/0"}
        ),
        "has no key 'url'",
    ),
    "collector-config-missing": (
        reference_problems,
        LOCAL_SIDECAR,
        lambda ds: ds.remove(find(ds, "ConfigMap", "otel-collector-config")),
        "ConfigMap 'otel-collector-config' is not in the render",
    ),
    "mount-without-volume": (
        reference_problems,
        LOCAL_SIDECAR,
        lambda ds: _knative(ds, "planner")["spec"]["template"]["spec"].pop("volumes"),
        "names no pod volume",
    ),
    "broker-config": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(find(ds, "Broker", "default")["spec"]["config"], "name", "kafka-config"),
        "is not in the render",
    ),
    "subscriber-missing": (
        reference_problems,
        RenderOptions(),
        lambda ds: ds.remove(_knative(ds, "worker")),
        "'name': 'worker'",
    ),
    "sink-binding-selects-nothing": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(
            find(ds, "SinkBinding", "agentfn-agents")["spec"]["subject"]["selector"],
            "matchLabels",
            {"agentfn.dev/role": "agents"},
        ),
        "its subject selects nothing",
    ),
    "otlp-endpoint-port": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(
            _serving(ds, "planner")["env"][
                next(
                    i
                    for i, e in enumerate(_serving(ds, "planner")["env"])
                    if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
                )
            ],
            "value",
            "http://otel-collector.agentfn.svc.cluster.local:4319",
        ),
        "Service otel-collector has no port 4319",
    ),
    "redis-url-host": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(
            find(ds, "Secret", "agentfn-redis")["stringData"],
            "url",
            "redis://valkey.agentfn.svc.cluster.local:6379/0",
        ),
        "no Service valkey",
    ),
    "service-selects-nothing": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(find(ds, "Service", "redis", "v1")["spec"], "selector", {"app": "redis"}),
        "its selector matches no pod",
    ),
    "service-target-port": (
        reference_problems,
        RenderOptions(),
        lambda ds: _set(
            find(ds, "Service", "otel-collector", "v1")["spec"]["ports"][0], "targetPort", "otlp"
        ),
        "targetPort 'otlp' is no port of its pods",
    ),
    # pod security
    "host-network": (
        pod_security_problems,
        RenderOptions(),
        lambda ds: _set(
            find(ds, "Deployment", "redis")["spec"]["template"]["spec"], "hostNetwork", True
        ),
        "Deployment/redis: hostNetwork",
    ),
    "added-capability": (
        pod_security_problems,
        LOCAL_SIDECAR,
        lambda ds: _set(
            _knative(ds, "planner")["spec"]["template"]["spec"]["containers"][1],
            "securityContext",
            {"capabilities": {"add": ["NET_ADMIN"]}},
        ),
        "adds capabilities ['NET_ADMIN']",
    ),
    "privileged": (
        pod_security_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "worker"), "securityContext", {"privileged": True}),
        "worker/agent: privileged",
    ),
    # quota
    "max-scale-raised": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "worker"), f"{AUTOSCALING}max-scale", "30"),
        "below the",
    ),
    "unbounded-agent": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(_annotations(ds, "planner"), f"{AUTOSCALING}max-scale", "0"),
        "below the",
    ),
    "request-raised": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "worker")["resources"]["requests"], "memory", "2Gi"),
        "memory request above its limit",
    ),
    "limit-above-max": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "worker")["resources"]["limits"], "cpu", "8"),
        "cpu limit above the LimitRange max",
    ),
    "replicas-raised": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(find(ds, "Deployment", "otel-collector")["spec"], "replicas", 3),
        "pods is",
    ),
    "gpu-unaccounted": (
        quota_problems,
        RenderOptions(),
        lambda ds: _set(_serving(ds, "worker")["resources"]["limits"], GPU_RESOURCE, 1),
        f"ResourceQuota agentfn-gpu: requests.{GPU_RESOURCE} is 0, below the",
    ),
    "mig-max-replicas-raised": (
        quota_problems,
        RenderOptions(),
        lambda ds: _each_predictor(ds, "maxReplicas", 10),
        "ResourceQuota agentfn-gpu: requests.nvidia.com/mig-1g.10gb is 5, below the 11 needed",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_check_catches_a_broken_document(case: str) -> None:
    check, options, breakage, expected = BREAKS[case]
    assert check(documents_of(options)) == [], "the unbroken render must pass first"
    problems = check(_broken(options, breakage))
    assert any(expected in problem for problem in problems), problems
