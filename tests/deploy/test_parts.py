"""The namespace, collector and Redis parts of the render, and the sizing arithmetic under them.

The quota is asserted to the exact numbers, worked out by hand from the reference agents; the
Redis the ``local`` profile renders is started as a real ``redis-server`` with the rendered
arguments, killed with SIGKILL and restarted, to show what the manifest promises (append-only,
fsynced, no eviction) is what Redis does with them.
"""

from __future__ import annotations

import signal
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from agentfn.functions._agent import Agent
from agentfn.functions._hints import Resources, Scaling
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.namespace import namespace_documents, quota_hard, workloads
from agentfn.functions._manifests.observability import (
    COLLECTOR_CONFIG,
    collector_config,
    collector_sidecar,
    collector_volume,
    observability_documents,
    otlp_endpoint,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.redis import PLACEHOLDER_URL, TEMPLATE_ANNOTATION, redis_documents
from agentfn.functions._manifests.sizing import (
    UNBOUNDED_MAX_SCALE,
    container_resources,
    effective_size,
    format_cpu,
    format_memory,
    max_replicas,
    parse_quantity,
    queue_proxy_annotations,
)

from tests._servers import free_port, wait_for_port
from tests._waiting import wait_until

Document = dict[str, Any]


def reference_agents() -> list[DiscoveredAgent]:
    agents, errors = discover_agents("agentfn.functions.agents")
    assert errors == []
    return agents


def declared(name: str, **hints: Any) -> DiscoveredAgent:
    return DiscoveredAgent("tests.deploy.test_parts", name, Agent(name, **hints))


def kinds(documents: list[Document]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in documents]


# --- quantities and sizes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Fraction(1, 4)),
        ("1", Fraction(1)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("256Mi", Fraction(2**28)),
        ("1G", Fraction(10**9)),
        ("128k", Fraction(128_000)),
        ("1e3", Fraction(1000)),
        ("2E-3", Fraction(2, 1000)),
        (3, Fraction(3)),
    ],
)
def test_quantities_parse_exactly(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.2.3", "10MB", "m", "1 Gi", "-"])
def test_a_malformed_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_cpu_is_written_in_whole_cores_or_millicores_rounded_up() -> None:
    assert format_cpu(Fraction(2)) == "2"
    assert format_cpu(Fraction(5, 4)) == "1250m"
    assert format_cpu(Fraction(1, 3)) == "334m"  # a quota rounded down would be short
    assert format_cpu(parse_quantity("100m") * 3) == "300m"


def test_memory_is_written_with_the_largest_exact_suffix() -> None:
    assert format_memory(parse_quantity("1024Mi")) == "1Gi"
    assert format_memory(parse_quantity("1536Mi")) == "1536Mi"
    assert format_memory(parse_quantity("2G")) == "2G"
    # Binary and decimal summed: neither suffix is exact, so bytes.
    assert format_memory(parse_quantity("256Mi") + parse_quantity("1G")) == "1268435456"
    assert format_memory(Fraction(0)) == "0"
    assert format_memory(Fraction(1, 2)) == "1"


def test_an_undeclared_container_gets_the_limit_range_defaults() -> None:
    assert container_resources(Resources()) == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_a_limit_alone_is_also_the_request_and_a_large_request_raises_the_limit() -> None:
    # The API server copies a lone limit into the request; a request above the default limit
    # would be refused with the default limit injected, so the limit rises to it.
    assert container_resources(Resources(cpu_limit="50m", memory="2Gi")) == {
        "requests": {"cpu": "50m", "memory": "2Gi"},
        "limits": {"cpu": "50m", "memory": "2Gi"},
    }


def test_a_gpu_is_a_limit() -> None:
    resources = container_resources(Resources(cpu="1", memory="4Gi", gpu=2))
    assert resources["limits"]["nvidia.com/gpu"] == 2
    assert "nvidia.com/gpu" not in resources["requests"]


def test_a_request_above_its_own_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="memory request 1Gi is above its limit 512Mi"):
        effective_size(Resources(memory="1Gi", memory_limit="512Mi"))


def test_queue_proxy_is_sized_by_annotation() -> None:
    assert queue_proxy_annotations() == {
        "queue.sidecar.serving.knative.dev/cpu-resource-request": "25m",
        "queue.sidecar.serving.knative.dev/cpu-resource-limit": "500m",
        "queue.sidecar.serving.knative.dev/memory-resource-request": "50Mi",
        "queue.sidecar.serving.knative.dev/memory-resource-limit": "200Mi",
    }


def test_an_unbounded_agent_is_counted_at_the_cap() -> None:
    assert max_replicas(Scaling(max_scale=7)) == 7
    assert max_replicas(Scaling()) == UNBOUNDED_MAX_SCALE == 10
    assert max_replicas(Scaling(min_scale=15)) == 15


# --- namespace -------------------------------------------------------------------------


def test_the_quota_of_the_reference_agents_is_summed_exactly() -> None:
    documents = namespace_documents(reference_agents(), RenderOptions())
    assert kinds(documents) == [
        ("Namespace", "agentfn"),
        ("ResourceQuota", "agentfn"),
        ("LimitRange", "agentfn"),
    ]
    # Agent pods at max scale plus one rollout pod: aggregator 3+1, flaky unbounded 10+1,
    # planner 5+1 and its gRPC Service planner-rpc 5+1, worker 20+1 = 48; dead-letters 1+1,
    # the shared collector 1+1, Redis 1.
    # Requests: 27 undeclared agent pods at 100m/128Mi, worker 21 at 250m/256Mi, queue-proxy
    # 50 at 25m/50Mi, dead-letters 2 at 100m/128Mi, collector 2 at 50m/64Mi, Redis 100m/128Mi.
    # Limits: agents 48 at 500m/256Mi, queue-proxy 50 at 500m/200Mi, dead-letters 2 at
    # 500m/256Mi, collector 2 at 100m/128Mi, Redis 500m/256Mi.
    assert documents[1]["spec"]["hard"] == {
        "pods": "53",
        "requests.cpu": f"{27 * 100 + 21 * 250 + 50 * 25 + 2 * 100 + 2 * 50 + 100}m",
        "requests.memory": f"{27 * 128 + 21 * 256 + 50 * 50 + 2 * 128 + 2 * 64 + 128}Mi",
        "limits.cpu": f"{48 * 500 + 50 * 500 + 2 * 500 + 2 * 100 + 500}m",
        "limits.memory": f"{48 * 256 + 50 * 200 + 2 * 256 + 2 * 128 + 256}Mi",
    }
    assert documents[2]["spec"]["limits"] == [
        {
            "type": "Container",
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
            "default": {"cpu": "500m", "memory": "256Mi"},
            "max": {"cpu": "500m", "memory": "256Mi"},
        }
    ]


def test_the_platform_pods_follow_the_options() -> None:
    agents = [declared("solo", scaling=Scaling(max_scale=2))]
    names = {
        (profile, otel): [
            w.name for w in workloads(agents, RenderOptions(profile=profile, otel=otel))
        ]
        for profile in ("local", "prod")
        for otel in ("shared", "sidecar", "off")
    }
    assert names[("local", "shared")] == ["solo", "dead-letters", "otel-collector", "redis"]
    assert names[("prod", "shared")] == ["solo", "dead-letters", "otel-collector"]
    assert names[("local", "sidecar")] == ["solo", "dead-letters", "redis"]
    assert names[("prod", "off")] == ["solo", "dead-letters"]
    # A sidecar is one more container in each agent pod: 3 pods of 50m more requested.
    shared = quota_hard(workloads(agents, RenderOptions(profile="prod", otel="off")))
    sidecar = quota_hard(workloads(agents, RenderOptions(profile="prod", otel="sidecar")))
    assert parse_quantity(sidecar["requests.cpu"]) - parse_quantity(shared["requests.cpu"]) == (
        3 * parse_quantity("50m")
    )


def test_gpus_are_in_the_quota_only_when_asked_for() -> None:
    plain = namespace_documents([declared("cpu")], RenderOptions())[1]["spec"]["hard"]
    assert "requests.nvidia.com/gpu" not in plain
    agents = [
        declared("cpu"),
        declared(
            "infer",
            scaling=Scaling(max_scale=2),
            resources=Resources(cpu="2", memory="8Gi", gpu=1),
        ),
    ]
    documents = namespace_documents(agents, RenderOptions())
    assert documents[1]["spec"]["hard"]["requests.nvidia.com/gpu"] == "3"  # 2 + a rollout pod
    # The LimitRange's max lets the largest container in.
    assert documents[2]["spec"]["limits"][0]["max"] == {"cpu": "2", "memory": "8Gi"}


def test_objects_live_in_the_options_namespace() -> None:
    documents = namespace_documents(reference_agents(), RenderOptions(namespace="agents"))
    assert documents[0]["metadata"]["name"] == "agents"
    assert "namespace" not in documents[0]["metadata"]
    assert {d["metadata"]["namespace"] for d in documents[1:]} == {"agents"}


def test_the_default_namespace_is_a_dedicated_one() -> None:
    # The quota and the LimitRange's max bound every pod in their namespace: on `default` they
    # would refuse a user's unrelated workloads there.
    (namespace, *scoped) = namespace_documents(reference_agents(), RenderOptions())
    assert namespace["metadata"]["name"] == "agentfn"
    assert {d["metadata"]["namespace"] for d in scoped} == {"agentfn"}


def test_the_namespace_opts_into_sink_binding_injection() -> None:
    # A SinkBinding webhook in inclusion mode injects K_SINK only into namespaces so labelled;
    # the Pod Security labels stay beside it.
    (namespace, *_) = namespace_documents(reference_agents(), RenderOptions(namespace="agents"))
    labels = namespace["metadata"]["labels"]
    assert labels["bindings.knative.dev/include"] == "true"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["app.kubernetes.io/part-of"] == "agentfn"


# --- observability -----------------------------------------------------------------------


def test_the_otlp_endpoint_follows_the_collector_mode() -> None:
    assert (
        otlp_endpoint(RenderOptions(namespace="agents"))
        == "http://otel-collector.agents.svc.cluster.local:4318"
    )
    assert otlp_endpoint(RenderOptions(otel="sidecar")) == "http://localhost:4318"
    assert otlp_endpoint(RenderOptions(otel="off")) is None


def test_each_collector_mode_renders_its_objects() -> None:
    agents = reference_agents()
    assert kinds(observability_documents(agents, RenderOptions())) == [
        ("ConfigMap", COLLECTOR_CONFIG),
        ("Deployment", "otel-collector"),
        ("Service", "otel-collector"),
    ]
    assert kinds(observability_documents(agents, RenderOptions(otel="sidecar"))) == [
        ("ConfigMap", COLLECTOR_CONFIG)
    ]
    assert observability_documents(agents, RenderOptions(otel="off")) == []
    for otel in ("shared", "off"):
        assert collector_sidecar(RenderOptions(otel=otel)) is None
        assert collector_volume(RenderOptions(otel=otel)) is None


def test_the_sidecar_has_no_port_no_probe_and_mounts_its_volume() -> None:
    options = RenderOptions(otel="sidecar")
    sidecar, volume = collector_sidecar(options), collector_volume(options)
    assert sidecar is not None
    assert volume == {"name": COLLECTOR_CONFIG, "configMap": {"name": COLLECTOR_CONFIG}}
    assert not {"ports", "readinessProbe", "livenessProbe", "startupProbe"} & set(sidecar)
    (mount,) = sidecar["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": "/conf", "readOnly": True}
    assert sidecar["args"] == ["--config=/conf/config.yaml"]
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "100m", "memory": "128Mi"},
    }


@pytest.mark.parametrize("otel", ["shared", "sidecar"])
def test_the_collector_config_wires_every_component_it_names(otel: str) -> None:
    text = collector_config(RenderOptions(otel=otel))  # type: ignore[arg-type]
    config = yaml.safe_load(text)
    (traces,) = config["service"]["pipelines"].values()
    assert traces == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["debug"],
    }
    for section in ("receivers", "processors", "exporters"):
        assert set(traces[section]) <= set(config[section])
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    host = "localhost" if otel == "sidecar" else "0.0.0.0"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"{host}:4318"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == f"{host}:4317"
    # The upstream exporter to fill in is there, commented out.
    assert "# otlp/upstream:" in text
    assert "otlp/upstream" not in config["exporters"]


def test_the_shared_collector_is_probed_on_its_health_port_and_rolls_on_a_new_config() -> None:
    _, deployment, service = observability_documents([], RenderOptions())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc-otlp": 4317, "http-otlp": 4318, "health": 13133}
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": "health"}
    assert container["image"].startswith("otel/opentelemetry-collector-contrib:0.")
    assert {p["port"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        4317: "grpc-otlp",
        4318: "http-otlp",
    }
    annotation = "agentfn.dev/config-sha256"
    digest = deployment["spec"]["template"]["metadata"]["annotations"][annotation]
    again = observability_documents([], RenderOptions(namespace="agents"))[1]
    assert again["spec"]["template"]["metadata"]["annotations"][annotation] == digest


# --- redis -------------------------------------------------------------------------------


def test_the_local_secret_names_the_rendered_redis() -> None:
    secret, deployment, service = redis_documents([], RenderOptions(namespace="agents"))
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"url": "redis://redis.agents.svc.cluster.local:6379/0"}
    assert "annotations" not in secret["metadata"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert service["spec"]["ports"][0]["port"] == 6379
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}]


def test_the_prod_secret_is_a_template_and_no_redis_runs() -> None:
    documents = redis_documents([], RenderOptions(profile="prod"))
    (secret,) = documents
    assert secret["stringData"] == {"url": PLACEHOLDER_URL}
    assert "CHANGE-ME" in PLACEHOLDER_URL
    assert "replace stringData.url" in secret["metadata"]["annotations"][TEMPLATE_ANNOTATION]


def _redis_container() -> dict[str, Any]:
    deployment = redis_documents([], RenderOptions())[1]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _start(args: list[str], data: Path, port: int) -> subprocess.Popen[bytes]:
    # The rendered arguments, on a free port of this machine and a test directory for /data.
    argv = [a if a != "/data" else str(data) for a in args]
    process = subprocess.Popen(
        [*argv, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return process


def _probe(command: list[str], port: int) -> int:
    # The probe as the kubelet runs it in the pod, pointed at this test's port.
    pointed = [word.replace("redis-cli", f"redis-cli -p {port}") for word in command]
    if pointed[0].startswith("redis-cli"):
        pointed = [*pointed[0].split(), *pointed[1:]]
    return subprocess.run(pointed, capture_output=True, check=False, timeout=10).returncode


def test_the_rendered_redis_keeps_what_it_acknowledged_through_a_kill(tmp_path: Path) -> None:
    container = _redis_container()
    assert container["args"][0] == "redis-server"
    port = free_port()
    process = _start(container["args"], tmp_path, port)
    client = redis.Redis(port=port)
    try:
        assert _probe(container["readinessProbe"]["exec"]["command"], port) == 0
        assert _probe(container["livenessProbe"]["exec"]["command"], port) == 0
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(192 * 2**20)}
        client.set("letter", "kept")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert _probe(container["livenessProbe"]["exec"]["command"], port) != 0
        process = _start(container["args"], tmp_path, port)
        wait_until(
            lambda: _probe(container["readinessProbe"]["exec"]["command"], port) == 0,
            message="the restarted Redis to answer PONG",
        )
        assert client.get("letter") == b"kept"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
