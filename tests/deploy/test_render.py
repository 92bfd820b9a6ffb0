"""``agentfn render``: knative/ is what it writes, byte for byte, and each mapping from the agents'
declarations to the manifests does what it says.

The drift test runs the real command; the containers the render describes are started for real
where this machine can run them (``agentfn serve`` with the rendered environment and no TARGET,
the planner's ``-rpc`` Service answering its gRPC probe and a call from what its HTTP Service
recorded, ``agentfn dlq serve`` with the rendered command), so the env names, the paths and the
Secret's key are checked against the programs that read them, not against a copy of their names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from agentfn.brokers.config import load_topology, parse_documents
from agentfn.brokers.delivery import DEFAULT_ATTEMPT_TIMEOUT, KNATIVE_DEFAULT_DELIVERY
from agentfn.events import CloudEvent, from_protobuf, to_protobuf
from agentfn.events.proto import agent_pb2_grpc
from agentfn.functions import Agent, Delivery, Resources, Scaling, Settings
from agentfn.functions._cli.dev import _brokers_in_use, _ingress_broker
from agentfn.functions._cli.render import model_servers
from agentfn.functions._knative import BROKER_DELIVERY, trigger_documents
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.deadletters import alert_expression
from agentfn.functions._manifests.inference import model_triggers
from agentfn.functions._manifests.options import Profile, RenderOptions
from agentfn.functions._manifests.render import dump, header, render
from agentfn.functions._manifests.services import (
    RPC_TIMEOUT_S,
    agent_service,
    autoscaling_annotations,
    rpc_service,
    services_documents,
)
from agentfn.functions._rpc import AgentClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, ValidationError

from tests._servers import RedisServer, free_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, binary, serving

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
REFERENCE = "agentfn.functions.agents"
#: Two chunks of five words for the planner to fan out.
TEN_WORDS = "one two three four five six seven eight nine ten"


def _cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentfn.functions.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def reference() -> list[DiscoveredAgent]:
    agents, errors = discover_agents(REFERENCE)
    assert errors == []
    return agents


def _all(rendered: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [document for documents in rendered.values() for document in documents]


def _one(documents: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = service["spec"]["template"]["spec"]["containers"]
    return containers


def _agent(name: str = "probe", **hints: Any) -> DiscoveredAgent:
    class Ping(BaseModel):
        text: str = ""

    agent = Agent(name, **hints)

    @agent.on("test.ping")
    async def ping(event: Ping) -> None:
        return None

    return DiscoveredAgent("tests.deploy.probe", "agent", agent)


# -- knative/ is the render of the reference agents -------------------------------------------


def test_committed_knative_is_what_agentfn_render_writes(tmp_path: Path) -> None:
    # kserve/ goes beside the --out folder: tests/deploy/test_kserve.py checks it.
    out = tmp_path / "knative"
    result = _cli("render", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    committed = sorted(p.name for p in KNATIVE.iterdir())
    assert written == committed, "knative/ is out of date: run `agentfn render`"
    for name in written:
        assert (out / name).read_bytes() == (KNATIVE / name).read_bytes(), (
            f"knative/{name} differs from what `agentfn render` writes: run `agentfn render`"
        )
    # It says what it wrote, each file with its kinds (the model server's Trigger the sixth).
    assert f"wrote {out / 'agents.yaml'} (5 Service, SinkBinding)" in result.stdout
    assert f"wrote {out / 'triggers.yaml'} (6 Trigger)" in result.stdout


def test_the_render_is_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    for seed in ("1", "2"):
        out = tmp_path / seed / "knative"
        result = _cli("render", "--out", str(out), env={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
    for path in (tmp_path / "1").rglob("*.yaml"):
        twin = tmp_path / "2" / path.relative_to(tmp_path / "1")
        assert path.read_bytes() == twin.read_bytes(), path.name


def test_two_renders_in_one_process_are_equal(reference: list[DiscoveredAgent]) -> None:
    options = RenderOptions()
    first = render(reference, options)
    again = render(list(reversed(reference)), options)  # the order found does not matter
    assert {name: dump(docs) for name, docs in first.items()} == {
        name: dump(docs) for name, docs in again.items()
    }


def test_every_file_starts_with_the_header_naming_the_command() -> None:
    for path in KNATIVE.iterdir():
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == (
            "# Generated by `agentfn render agentfn.functions.agents` from "
            "agentfn.functions.agents; do not edit by hand."
        )
    options = RenderOptions(namespace="team-a", otel="off")
    assert header(["pkg.agents", "more.py"], options) == (
        "# Generated by `agentfn render pkg.agents more.py --namespace team-a --otel off` "
        "from pkg.agents, more.py; do not edit by hand.\n"
    )


def test_render_refuses_a_namespace_that_is_no_dns_label(tmp_path: Path) -> None:
    result = _cli("render", "--out", str(tmp_path), "--namespace", "Team_A")
    assert result.returncode == 2
    assert "namespace" in result.stderr
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_render_refuses_two_agents_of_one_name() -> None:
    with pytest.raises(ValueError, match=r"agent names must be unique.*\['probe'\]"):
        render([_agent(), _agent()], RenderOptions())


def test_otel_off_renders_no_collector_and_no_endpoint(reference: list[DiscoveredAgent]) -> None:
    rendered = render(reference, RenderOptions(otel="off"))
    assert "observability.yaml" not in rendered
    for service in rendered["agents.yaml"][:-1]:
        names = [e["name"] for e in _containers(service)[0]["env"]]
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in names


# -- the agents' Services ---------------------------------------------------------------------


def test_autoscaling_annotations_follow_scaling() -> None:
    prefix = "autoscaling.knative.dev/"
    assert autoscaling_annotations(Scaling()) == {
        prefix + "class": "kpa.autoscaling.knative.dev",
        prefix + "metric": "concurrency",
        prefix + "min-scale": "0",
        prefix + "target-utilization-percentage": "70",
        prefix + "scale-to-zero-pod-retention-period": "0s",
    }
    assert autoscaling_annotations(
        Scaling(min_scale=2, max_scale=7, target_concurrency=30, metric="rps")
    ) == {
        prefix + "class": "kpa.autoscaling.knative.dev",
        prefix + "metric": "rps",
        prefix + "min-scale": "2",
        prefix + "max-scale": "7",
        prefix + "target": "30",
        prefix + "target-utilization-percentage": "70",
    }
    # Steady load: the HPA on CPU, which never scales to zero and knows no utilisation knob.
    assert autoscaling_annotations(
        Scaling(autoscaler="hpa", min_scale=1, max_scale=4, target_concurrency=75)
    ) == {
        prefix + "class": "hpa.autoscaling.knative.dev",
        prefix + "metric": "cpu",
        prefix + "min-scale": "1",
        prefix + "max-scale": "4",
        prefix + "target": "75",
    }


@pytest.mark.parametrize(
    ("hints", "error"),
    [
        ({"autoscaler": "hpa"}, "never scales to zero"),
        ({"autoscaler": "hpa", "min_scale": 1, "metric": "rps"}, "scales on cpu, not on rps"),
        ({"metric": "cpu"}, 'needs autoscaler="hpa"'),
        ({"autoscaler": "hpa", "min_scale": 1, "target_concurrency": 150}, "CPU percentage"),
    ],
)
def test_scaling_refuses_what_knative_cannot_do(hints: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Scaling(**hints)


def test_an_hpa_agent_needs_a_cpu_request() -> None:
    hpa = Scaling(autoscaler="hpa", min_scale=1)
    with pytest.raises(ValueError, match="needs a cpu request"):
        agent_service(_agent(scaling=hpa), RenderOptions())
    service = agent_service(_agent(scaling=hpa, resources=Resources(cpu="1")), RenderOptions())
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"


def test_the_reference_agents_services_carry_their_scaling(
    reference: list[DiscoveredAgent],
) -> None:
    documents = render(reference, RenderOptions())["agents.yaml"]
    worker = _one(documents, "Service", "worker")["spec"]["template"]
    assert worker["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "20"
    assert worker["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "20"
    assert worker["spec"]["containerConcurrency"] == 0
    flaky = _one(documents, "Service", "flaky")["spec"]["template"]["metadata"]["annotations"]
    assert "autoscaling.knative.dev/max-scale" not in flaky  # unbounded: none written


@pytest.mark.parametrize(
    ("timeout", "seconds", "iso"),
    [
        (timedelta(seconds=30), 35, "PT30S"),
        (timedelta(seconds=12.5), 18, "PT12.5S"),  # rounded up, then the margin
        (None, 65, "PT60S"),  # the rendered default attempt timeout
    ],
)
def test_timeout_seconds_outlasts_the_triggers_attempt_timeout(
    timeout: timedelta | None, seconds: int, iso: str
) -> None:
    found = _agent(delivery=Delivery(timeout=timeout))
    rendered = render([found], RenderOptions())
    service = rendered["agents.yaml"][0]
    assert service["spec"]["template"]["spec"]["timeoutSeconds"] == seconds
    (trigger,) = rendered["triggers.yaml"]
    assert trigger["spec"]["delivery"]["timeout"] == iso


def test_resources_are_requests_and_limits_with_the_gpu_as_a_limit() -> None:
    declared = Resources(cpu="250m", memory="512Mi", cpu_limit="2", memory_limit="1Gi", gpu=1)
    (container,) = _containers(agent_service(_agent(resources=declared), RenderOptions()))
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": 1},
    }


def test_the_container_env_port_and_probes() -> None:
    (container,) = _containers(agent_service(_agent(), RenderOptions(image="reg.example/a:1")))
    assert container["image"] == "reg.example/a:1"
    assert container["env"] == [
        {"name": "AGENTFN_AGENT", "value": "tests.deploy.probe:agent"},
        {
            "name": "AGENTFN_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "agentfn-redis", "key": "url"}},
        },
        {
            "name": "OTEL_EXPORTER_OTLP_ENDPOINT",
            "value": "http://otel-collector.agentfn.svc.cluster.local:4318",
        },
        {"name": "OTEL_SERVICE_NAME", "value": "probe"},
    ]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    # No port: Knative points the probes at the one container port.
    assert container["readinessProbe"] == {"httpGet": {"path": "/readyz"}}
    assert container["livenessProbe"] == {"httpGet": {"path": "/healthz"}}


def test_a_grpc_agent_gets_an_h2c_service_from_the_same_image() -> None:
    found = _agent(grpc=True, scaling=Scaling(max_scale=4, target_concurrency=7))
    options = RenderOptions(image="reg.example/a:1")
    http, rpc = agent_service(found, options), rpc_service(found, options)
    assert rpc["metadata"]["name"] == "probe-rpc"
    assert rpc["metadata"]["labels"] == {
        **http["metadata"]["labels"],
        "agentfn.dev/protocol": "h2c",
    }
    # The same scaling and size: only the protocol, the probes and the bound differ.
    assert (
        rpc["spec"]["template"]["metadata"]["annotations"]
        == (http["spec"]["template"]["metadata"]["annotations"])
    )
    assert rpc["spec"]["template"]["spec"]["timeoutSeconds"] == RPC_TIMEOUT_S == 600
    assert rpc["spec"]["template"]["spec"]["containerConcurrency"] == 0
    (container,) = _containers(rpc)
    (served,) = _containers(http)
    assert container["image"] == served["image"] == "reg.example/a:1"
    assert container["resources"] == served["resources"]
    assert container["env"] == [*served["env"], {"name": "AGENTFN_PROTOCOL", "value": "h2c"}]
    assert container["ports"] == [{"name": "h2c", "containerPort": 8080}]
    # gRPC health checks: the container answers nothing but HTTP/2 gRPC on its one port.
    check = {"port": 8080, "service": ""}
    assert container["readinessProbe"] == {"grpc": check}
    assert container["livenessProbe"] == {"grpc": check}


def test_only_grpc_agents_get_an_rpc_service_and_every_agent_their_addresses() -> None:
    agents = [_agent("caller"), _agent("answerer", grpc=True), _agent("also", grpc=True)]
    documents = services_documents(agents, RenderOptions(namespace="team"))
    names = [d["metadata"]["name"] for d in documents if d["kind"] == "Service"]
    assert names == ["also", "also-rpc", "answerer", "answerer-rpc", "caller"]
    targets = (
        "also=also-rpc.team.svc.cluster.local:80,answerer=answerer-rpc.team.svc.cluster.local:80"
    )
    for document in documents[:-1]:
        env = {e["name"]: e.get("value") for e in _containers(document)[0]["env"]}
        assert env["AGENTFN_RPC_TARGETS"] == targets, document["metadata"]["name"]
    # What the reference agents read it with, and a target the gRPC client accepts.
    assert Settings(rpc_targets=targets).rpc_peers == {
        "also": "also-rpc.team.svc.cluster.local:80",
        "answerer": "answerer-rpc.team.svc.cluster.local:80",
    }
    AgentClient(Settings(rpc_targets=targets).rpc_peers["answerer"])
    # No gRPC agent: no variable.
    (alone,) = _containers(services_documents([_agent()], RenderOptions())[0])
    assert "AGENTFN_RPC_TARGETS" not in {e["name"] for e in alone["env"]}


def test_an_rpc_service_name_must_stay_a_dns_label() -> None:
    with pytest.raises(ValueError, match=r"gRPC Service 'a{60}-rpc' is longer than 63"):
        rpc_service(_agent("a" * 60, grpc=True), RenderOptions())
    assert rpc_service(_agent("a" * 59, grpc=True), RenderOptions())["metadata"]["name"] == (
        "a" * 59 + "-rpc"
    )


def test_a_sidecar_collector_joins_each_agent_without_a_port() -> None:
    service = agent_service(_agent(), RenderOptions(otel="sidecar"))
    agent, collector = _containers(service)
    assert agent["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert "ports" not in collector
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
    mounted = {m["name"] for m in collector["volumeMounts"]}
    assert mounted <= {v["name"] for v in service["spec"]["template"]["spec"]["volumes"]}


def test_the_sink_binding_selects_the_agents_and_points_at_the_broker(
    reference: list[DiscoveredAgent],
) -> None:
    rendered = render(reference, RenderOptions(broker="events"))
    documents = _all(rendered)
    (binding,) = [d for d in documents if d["kind"] == "SinkBinding"]
    subject = binding["spec"]["subject"]
    assert (subject["apiVersion"], subject["kind"]) == ("serving.knative.dev/v1", "Service")
    wanted = subject["selector"]["matchLabels"].items()
    selected = {
        d["metadata"]["name"]
        for d in documents
        if d["kind"] == "Service"
        and d["apiVersion"] == "serving.knative.dev/v1"
        and wanted <= d["metadata"]["labels"].items()
    }
    # Not the dead-letters sink; the planner's gRPC Service too (a call's handler may publish).
    assert selected == {"planner", "planner-rpc", "worker", "aggregator", "flaky"}
    assert binding["spec"]["sink"] == {
        "ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "events"}
    }


# -- K_SINK and AGENTFN_AGENT, read by the runtime ------------------------------------------


def test_settings_read_k_sink_where_agentfn_broker_url_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTFN_BROKER_URL", raising=False)
    monkeypatch.setenv("K_SINK", "http://broker-ingress/ns/b")
    monkeypatch.setenv("BROKER_URL", "http://not-ours")  # no bare name is read
    assert Settings().broker_url == "http://broker-ingress/ns/b"
    monkeypatch.setenv("AGENTFN_BROKER_URL", "http://chosen/ns/b")
    assert Settings().broker_url == "http://chosen/ns/b"
    assert Settings(broker_url="http://given").broker_url == "http://given"


def test_serve_without_a_target_or_agentfn_agent_fails() -> None:
    result = _cli("serve", env={"AGENTFN_AGENT": ""})
    assert result.returncode == 2
    assert "AGENTFN_AGENT" in result.stderr


@contextlib.contextmanager
def _process(args: Sequence[str], env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTFN_", "OTEL_", "K_"))}
    process = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=15)
        assert b"Traceback" not in errors, errors.decode()


def _env_of(container: dict[str, Any], redis: RedisServer) -> dict[str, str]:
    """The container's environment as the cluster gives it: the Secret's key is Redis's URL."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"] == {"secretKeyRef": {"name": "agentfn-redis", "key": "url"}}
            env[item["name"]] = redis.url
        elif not item["name"].startswith("OTEL_EXPORTER"):  # no collector runs here
            env[item["name"]] = item["value"]
    return env


async def _ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=2) as client:

        async def answers() -> bool:
            assert process.poll() is None, "the process exited"
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get(url)).status_code == 200
            return False

        await async_wait_until(answers, timeout=60, message=url)


@contextlib.asynccontextmanager
async def _sink() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    async with serving(sink) as url:
        yield sink, url


@pytest.mark.slow
@pytest.mark.redis
async def test_the_rendered_agent_container_serves_its_agent_and_publishes_to_k_sink(
    reference: list[DiscoveredAgent], redis_session: RedisServer
) -> None:
    # `agentfn serve` with no TARGET and the planner Service's env: AGENTFN_AGENT picks the
    # agent, the Secret's Redis answers /readyz, and the fan-out goes to K_SINK (the Broker's
    # address the SinkBinding sets) since AGENTFN_BROKER_URL is unset.
    service = _one(render(reference, RenderOptions())["agents.yaml"], "Service", "planner")
    (container,) = _containers(service)
    port = free_port()
    async with _sink() as (broker, broker_url):
        env = {**_env_of(container, redis_session), "K_SINK": broker_url, "PORT": str(port)}
        assert "AGENTFN_BROKER_URL" not in env
        with _process([sys.executable, "-m", "agentfn.functions.cli", "serve"], env) as process:
            base = f"http://127.0.0.1:{port}"
            await _ready(f"{base}/readyz", process)
            task = CloudEvent.new(
                "agentfn.task.submitted",
                "/tests",
                {"title": "t", "text": TEN_WORDS, "max_words_per_chunk": 5},
            )
            headers, body = binary(task)
            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(f"{base}/")).json()["name"] == "planner"
                answer = await client.post(base, headers=headers, content=body)
            assert answer.status_code < 300, answer.text
            await async_wait_until(lambda: len(broker.events) == 2, message="the fan-out")
    assert {e.type for e in broker.events} == {"agentfn.work.requested"}


@pytest.mark.slow
@pytest.mark.redis
async def test_the_rendered_rpc_container_answers_grpc_from_what_the_http_one_recorded(
    reference: list[DiscoveredAgent], redis_session: RedisServer
) -> None:
    # The planner's two Services as two processes with their rendered env, sharing only the
    # Secret's Redis (as two Knative Services' pods do): the http1 one plans a task, the h2c
    # one passes its gRPC health probe and answers over gRPC how many chunks it planned.
    documents = render(reference, RenderOptions())["agents.yaml"]
    (http,) = _containers(_one(documents, "Service", "planner"))
    (rpc,) = _containers(_one(documents, "Service", "planner-rpc"))
    http_port, rpc_port = free_port(), free_port()
    probe = rpc["readinessProbe"]["grpc"]
    async with _sink() as (broker, broker_url):
        serve = [sys.executable, "-m", "agentfn.functions.cli", "serve"]
        http_env = {**_env_of(http, redis_session), "K_SINK": broker_url, "PORT": str(http_port)}
        rpc_env = {**_env_of(rpc, redis_session), "K_SINK": broker_url, "PORT": str(rpc_port)}
        assert rpc_env["AGENTFN_PROTOCOL"] == "h2c"
        with _process(serve, http_env) as planner, _process(serve, rpc_env) as answerer:
            base = f"http://127.0.0.1:{http_port}"
            await _ready(f"{base}/readyz", planner)
            task = CloudEvent.new(
                "agentfn.task.submitted",
                "/tests",
                {"title": "t", "text": TEN_WORDS, "max_words_per_chunk": 5},
            )
            headers, body = binary(task)
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(base, headers=headers, content=body)
            assert answer.status_code < 300, answer.text
            await async_wait_until(lambda: len(broker.events) == 2, message="the fan-out")
            (chain,) = {e.attributes["agentfnchainid"] for e in broker.events}
            # Knative points the probe at the container port: here, the PORT it was given.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)

                async def serving() -> bool:
                    assert answerer.poll() is None, "the gRPC process exited"
                    request = health_pb2.HealthCheckRequest(service=probe["service"])
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        reply = await health.Check(request, timeout=2)
                        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
                    return False

                await async_wait_until(serving, timeout=60, message="the gRPC health probe")
                asked = CloudEvent.new("agentfn.plan.requested", "/tests", {"chain_id": str(chain)})
                reply = await agent_pb2_grpc.AgentStub(channel).Call(to_protobuf(asked), timeout=10)
    described = from_protobuf(reply.event)
    assert described.type == "agentfn.plan.described"
    assert described.data == {"chain_id": chain, "chunks": 2, "title": "t"}


# -- the Broker and the Triggers --------------------------------------------------------------


def test_the_delivery_defaults_are_the_embedded_brokers_and_knatives(shared_spec: Path) -> None:
    assert BROKER_DELIVERY.retry == KNATIVE_DEFAULT_DELIVERY.retry
    assert BROKER_DELIVERY.backoff_policy == KNATIVE_DEFAULT_DELIVERY.backoff_policy.value
    assert BROKER_DELIVERY.backoff_delay.total_seconds() == KNATIVE_DEFAULT_DELIVERY.backoff_delay
    assert BROKER_DELIVERY.timeout.total_seconds() == DEFAULT_ATTEMPT_TIMEOUT
    config = yaml.safe_load(
        (shared_spec / "knative-eventing" / "configmaps" / "default-broker.yaml").read_text()
    )
    delivery = yaml.safe_load(config["data"]["default-br-config"])["clusterDefault"]["delivery"]
    assert delivery == {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}


def test_the_kafka_broker_and_its_config(reference: list[DiscoveredAgent]) -> None:
    cases: tuple[tuple[Profile, str], ...] = (("local", "1"), ("prod", "3"))
    for profile, replication in cases:
        options = RenderOptions(
            profile=profile, namespace="ns", broker="b", kafka_bootstrap="k:9092"
        )
        config, broker = render(reference, options)["kafka-broker.yaml"]
        assert config["kind"] == "ConfigMap"
        assert config["data"] == {
            "bootstrap.servers": "k:9092",
            "default.topic.partitions": "10",
            "default.topic.replication.factor": replication,
        }
        assert broker["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "Kafka"}
        assert broker["spec"]["config"] == {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": config["metadata"]["name"],
            "namespace": "ns",
        }
        assert broker["spec"]["delivery"] == {
            "retry": 10,
            "backoffPolicy": "exponential",
            "backoffDelay": "PT0.2S",
            "timeout": "PT60S",
            "deadLetterSink": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": "dead-letters",
                },
                "uri": "/ns/b",
            },
        }


def test_each_trigger_has_a_complete_delivery_and_names_itself_to_the_sink(
    reference: list[DiscoveredAgent],
) -> None:
    triggers = render(reference, RenderOptions(namespace="ns", broker="b"))["triggers.yaml"]
    planner = _one(triggers, "Trigger", "planner-agentfn-task-submitted")
    assert planner["spec"] == {
        "broker": "b",
        "filters": [{"exact": {"type": "agentfn.task.submitted"}}],
        "subscriber": {
            "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "planner"}
        },
        "delivery": {
            "retry": 5,
            "backoffPolicy": "exponential",
            "backoffDelay": "PT0.2S",
            "timeout": "PT30S",
            "deadLetterSink": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": "dead-letters",
                },
                "uri": "/ns/b/planner-agentfn-task-submitted",
            },
        },
    }
    # The flaky agent declares its policy; what it leaves unset comes from the defaults.
    flaky = _one(triggers, "Trigger", "flaky-agentfn-flaky-requested")["spec"]["delivery"]
    assert (flaky["retry"], flaky["backoffPolicy"], flaky["backoffDelay"], flaky["timeout"]) == (
        5,
        "linear",
        "PT0.1S",
        "PT60S",
    )
    for trigger in triggers:
        sink = trigger["spec"]["delivery"]["deadLetterSink"]
        assert sink["uri"] == f"/ns/b/{trigger['metadata']['name']}"


def test_trigger_filters_ordering_and_an_agents_own_sink() -> None:
    agent = Agent(
        "orders",
        delivery=Delivery(ordering="ordered", dead_letter_sink="http://sink.example/x"),
    )

    class Order(BaseModel):
        sku: str

    @agent.on("shop.order", filters={"urgent": "true", "region": "eu"})
    async def urgent(order: Order) -> None:
        return None

    @agent.on("shop.order", filters={"urgent": "false"})
    async def later(order: Order) -> None:
        return None

    first, second = trigger_documents(agent.spec, defaults=BROKER_DELIVERY)
    # One attribute per `exact` (Knative's rule), ANDed; the type first, the rest sorted.
    assert first["spec"]["filters"] == [
        {"exact": {"type": "shop.order"}},
        {"exact": {"region": "eu"}},
        {"exact": {"urgent": "true"}},
    ]
    assert first["metadata"]["annotations"] == {
        "kafka.eventing.knative.dev/delivery.order": "ordered"
    }
    assert first["spec"]["delivery"]["deadLetterSink"] == {"uri": "http://sink.example/x"}
    # Two handlers of one type: the second Trigger's name says which handler it feeds.
    assert [first["metadata"]["name"], second["metadata"]["name"]] == [
        "orders-shop-order",
        "orders-shop-order-later",
    ]
    topology = parse_documents([first, second])  # the embedded broker reads them alike
    urgent_filter, later_filter = (t.filter for t in topology.triggers)
    eu_urgent = {"type": "shop.order", "urgent": "true", "region": "eu"}
    assert urgent_filter(eu_urgent)
    assert not urgent_filter({**eu_urgent, "region": "us"})
    assert later_filter({"type": "shop.order", "urgent": "false"})


def test_agentfn_dev_builds_the_triggers_that_render_writes(
    reference: list[DiscoveredAgent],
) -> None:
    # What dev does without --triggers (its dead-letter sink is the `dead-letters` Service),
    # against the committed file: the same documents, the namespace aside (dev's Triggers are
    # in `default`, the render's in `agentfn`, which the dead-letter paths name too).
    committed = list(yaml.safe_load_all((KNATIVE / "triggers.yaml").read_text()))
    # The model server's Trigger is the same implementation's, to its InferenceService.
    models = [d for d in committed if d["spec"]["subscriber"]["ref"]["kind"] == "InferenceService"]
    assert models == model_triggers(model_servers(), RenderOptions())
    committed = [d for d in committed if d not in models]
    generated = [
        document
        for found in sorted(reference, key=lambda f: f.agent.spec.name)
        for document in trigger_documents(
            found.agent.spec, dead_letter_sink="dead-letters", defaults=BROKER_DELIVERY
        )
    ]
    for document, namespace in [(d, "agentfn") for d in committed] + [
        (d, "default") for d in generated
    ]:
        assert document["metadata"].pop("namespace", "default") == namespace
        sink = document["spec"]["delivery"]["deadLetterSink"]
        assert sink.pop("uri") == f"/{namespace}/default/{document['metadata']['name']}"
    assert generated == committed


def test_the_embedded_broker_loads_knative_as_a_folder() -> None:
    topology = load_topology([KNATIVE])
    # The embedded broker always serves default/default; knative/'s Broker is beside it.
    assert list(topology.brokers) == [("agentfn", "default"), ("default", "default")]
    broker = topology.brokers[("agentfn", "default")]
    assert broker.path == "/agentfn/default"  # the render's own namespace, not `default`
    assert broker.delivery.dead_letter_sink is not None
    assert broker.delivery.dead_letter_sink.ref_name == "dead-letters"
    assert {t.subscriber.ref_name for t in topology.triggers} == {
        "planner",
        "worker",
        "aggregator",
        "flaky",
        "embedder",
    }


async def _counter(client: httpx.AsyncClient, url: str, trigger: str) -> float:
    text = (await client.get(url)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("broker_filter_event_count_total{") and (
            f'trigger_name="{trigger}"' in line and 'response_code_class="2xx"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_agentfn_dev_publishes_to_the_one_broker_the_triggers_use() -> None:
    # knative/'s Triggers all use its Broker: agents (and the sink's replays) publish there.
    (broker,) = _brokers_in_use(load_topology([KNATIVE]))
    assert _ingress_broker([broker]).path == "/agentfn/default"
    # Triggers on two Brokers: the agents get the default Broker, each path is printed.
    two = parse_documents(
        [
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": kind,
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": spec,
            }
            for kind, name, spec in [
                ("Broker", "a", {}),
                ("Broker", "b", {}),
                ("Trigger", "to-a", {"broker": "a", "subscriber": {"uri": "http://x/"}}),
                ("Trigger", "to-b", {"broker": "b", "subscriber": {"uri": "http://x/"}}),
            ]
        ]
    )
    assert [b.path for b in _brokers_in_use(two)] == ["/team-a/a", "/team-a/b"]
    assert _ingress_broker(_brokers_in_use(two)).path == "/default/default"


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():  # drained to the end: the agents log through it
        lines.append(line.decode(errors="replace"))


@pytest.mark.slow
async def test_agentfn_dev_routes_a_task_through_the_chain_by_knative(tmp_path: Path) -> None:
    port, dlq_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentfn.functions.cli", "dev", REFERENCE,
        "--triggers", str(KNATIVE), "--port", str(port), "--dlq-port", str(dlq_port),
        "--data-dir", str(tmp_path / "dev"), "--no-model",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    collecting = asyncio.create_task(_collect(process.stdout, lines))
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            def printed_ingress() -> str | None:
                assert process.returncode is None, "agentfn dev exited:\n" + "".join(lines)
                found = [line.split()[2] for line in lines if line.startswith("broker ingress ")]
                return found[0] if found else None

            ingress = await async_wait_until(printed_ingress, timeout=60, message="the ingress")
            # knative/'s Broker, in the render's namespace: the agents publish their fan-out
            # there, so the aggregator's Trigger (below) fires only if they do.
            (broker,) = [
                d for d in yaml.safe_load_all((KNATIVE / "kafka-broker.yaml").read_text())
                if d["kind"] == "Broker"
            ]  # fmt: skip
            path = f"/{broker['metadata']['namespace']}/{broker['metadata']['name']}"
            assert (
                ingress
                == f"http://127.0.0.1:{port}{path}"
                == f"http://127.0.0.1:{port}/agentfn/default"
            )
            task = CloudEvent.new(
                "agentfn.task.submitted",
                "/tests",
                {"title": "t", "text": TEN_WORDS, "max_words_per_chunk": 5},
            )
            headers, body = binary(task)
            assert (await client.post(ingress, headers=headers, content=body)).status_code == 202
            metrics = f"http://127.0.0.1:{port}/metrics"

            async def aggregated() -> bool:
                return await _counter(client, metrics, "aggregator-agentfn-work-completed") >= 2

            await async_wait_until(aggregated, timeout=60, message="the aggregator's Trigger")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(collecting, 30)


# -- the dead-letter sink ---------------------------------------------------------------------


def test_the_dead_letters_service(reference: list[DiscoveredAgent]) -> None:
    options = RenderOptions(namespace="ns", broker="b", alert_depth=3, image="reg/x:1")
    service = _one(render(reference, options)["dead-letters.yaml"], "Service", "dead-letters")
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"  # never a cold start
    (container,) = _containers(service)
    assert container["image"] == "reg/x:1"
    assert container["command"] == ["agentfn", "dlq", "serve"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "AGENTFN_DLQ_STORE": "redis",
        "AGENTFN_REDIS_URL": {"secretKeyRef": {"name": "agentfn-redis", "key": "url"}},
        "AGENTFN_DLQ_ALERT_DEPTH": "3",
        "AGENTFN_BROKER_URL": "http://kafka-broker-ingress.knative-eventing.svc.cluster.local/ns/b",
    }
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert (
        container["readinessProbe"]
        == container["livenessProbe"]
        == {"httpGet": {"path": "/healthz"}}
    )


def test_the_prometheus_rule_fires_per_trigger_over_the_depth(
    reference: list[DiscoveredAgent],
) -> None:
    options = RenderOptions(namespace="ns", broker="b", alert_depth=3)
    documents = render(reference, options)["dead-letters.yaml"]
    rule = _one(documents, "PrometheusRule", "dead-letters")
    ((group,),) = [rule["spec"]["groups"]]
    (alert,) = group["rules"]
    assert (
        alert["expr"]
        == alert_expression(options)
        == (
            "max by (namespace_name, broker_name, trigger_name) "
            '(agentfn_deadletters_depth{namespace_name="ns", broker_name="b"}) > 3'
        )
    )
    assert alert["for"] == "5m"
    assert alert["labels"] == {"severity": "warning"}
    assert {"summary", "description"} <= alert["annotations"].keys()
    monitor = _one(documents, "PodMonitor", "dead-letters")
    service = _one(documents, "Service", "dead-letters")
    pod_labels = service["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"] == [{"portNumber": 8080, "path": "/metrics"}]


@pytest.mark.slow
@pytest.mark.redis
async def test_the_rendered_sink_container_keeps_a_letter_by_its_triggers_path(
    reference: list[DiscoveredAgent], redis_session: RedisServer
) -> None:
    # The rendered command and env, run for real: the Redis store from the Secret, a letter
    # posted to a rendered Trigger's deadLetterSink path, named by that Trigger in the API
    # and in the series the PrometheusRule reads.
    rendered = render(reference, RenderOptions())
    (container,) = _containers(_one(rendered["dead-letters.yaml"], "Service", "dead-letters"))
    trigger = _one(rendered["triggers.yaml"], "Trigger", "worker-agentfn-work-requested")
    path = trigger["spec"]["delivery"]["deadLetterSink"]["uri"]
    port = free_port()
    command = [sys.executable, "-m", "agentfn.functions.cli", *container["command"][1:]]
    command += ["--port", str(port), "--host", "127.0.0.1"]
    with _process(command, _env_of(container, redis_session)) as process:
        base = f"http://127.0.0.1:{port}"
        await _ready(f"{base}/healthz", process)
        letter = CloudEvent.new("agentfn.work.requested", "/tests", {"index": 0}).with_attributes(
            knativeerrorcode="500", knativeerrordest="http://worker.default.svc.cluster.local"
        )
        headers, body = binary(letter)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (
                await client.post(base + path, headers=headers, content=body)
            ).status_code == 202
            (kept,) = (await client.get(f"{base}/v1/letters")).json()["letters"]
            metrics = (await client.get(f"{base}/metrics")).text
    assert (kept["namespace"], kept["broker"], kept["trigger"]) == (
        "agentfn",
        "default",
        "worker-agentfn-work-requested",
    )
    assert (
        'agentfn_deadletters_depth{broker_name="default",namespace_name="agentfn",'
        'trigger_name="worker-agentfn-work-requested"} 1.0'
    ) in metrics


# -- the options reach every place ------------------------------------------------------------


def test_namespace_broker_and_image_change_every_place(
    reference: list[DiscoveredAgent],
) -> None:
    options = RenderOptions(namespace="team-a", broker="events", image="reg.example/agentfn:7")
    rendered = render(reference, options)
    documents = _all(rendered)
    for document in documents:
        meta = document["metadata"]
        if document["kind"] == "Namespace":
            assert meta["name"] == "team-a"
        else:
            assert meta["namespace"] == "team-a", f"{document['kind']}/{meta['name']}"
    ours = [
        container
        for d in documents
        if d["kind"] == "Service" and d["apiVersion"] == "serving.knative.dev/v1"
        for container in _containers(d)
    ]
    assert len(ours) == 6  # four agents, the planner's gRPC Service and the sink
    assert {c["image"] for c in ours} == {"reg.example/agentfn:7"}
    for trigger in rendered["triggers.yaml"]:
        assert trigger["spec"]["broker"] == "events"
        uri = trigger["spec"]["delivery"]["deadLetterSink"]["uri"]
        assert uri.startswith("/team-a/events/")
    _, broker = rendered["kafka-broker.yaml"]
    assert broker["metadata"]["name"] == "events"
    assert broker["spec"]["delivery"]["deadLetterSink"]["uri"] == "/team-a/events"
    text = dump(documents)
    assert "/default/default" not in text
    assert "namespace: default" not in text
    assert 'namespace_name="team-a", broker_name="events"' in text
    assert "localhost:5001/agentfn" not in text
