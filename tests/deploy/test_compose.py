"""The Compose document (``agentfn render --compose``) against the Compose Specification.

No container engine runs where this project is built, so ``docker compose config`` and ``up``
are out of reach. What is checked instead: the document against the Compose Specification's
JSON Schema (``../shared/spec/compose-spec``, draft-07), the semantics the schema leaves open
(sidecars in their agent's network namespace, ``depends_on`` that can be satisfied, the
broker's Service map, Kafka in KRaft mode, the mounted Triggers), each check shown to catch a
broken copy; the commands each service runs, parsed by the real ``agentfn`` CLI; and the
agents' healthcheck, run as written against a real ``agentfn serve`` in a network namespace of
its own (where 127.0.0.1:8080 is the agent's, as in its container).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agentfn.brokers.config import load_topology
from agentfn.brokers.server import resolve_destination
from agentfn.functions import Agent, Delivery, Resources
from agentfn.functions._cli.broker import parse_services
from agentfn.functions._cli.render import DEFAULT_TARGETS, model_servers
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.compose import (
    BROKER,
    COLLECTOR_IMAGE,
    DEAD_LETTERS,
    KAFKA,
    REDIS,
    collector_name,
    compose_document,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.redis import REDIS_IMAGE
from agentfn.functions._manifests.render import header, render_compose, write
from agentfn.functions.cli import app
from pydantic import BaseModel
from typer.testing import CliRunner

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT / "compose.yaml"
REFERENCE = "agentfn.functions.agents"


def reference_agents() -> list[DiscoveredAgent]:
    agents, errors = discover_agents(REFERENCE)
    assert not errors
    return agents


def names_of(agents: list[DiscoveredAgent]) -> list[str]:
    return sorted(item.agent.spec.name for item in agents)


@pytest.fixture(scope="module")
def compose_schema(shared_spec: Path) -> jsonschema.Draft7Validator:
    schema = json.loads((shared_spec / "compose-spec" / "compose-spec.json").read_text())
    # The schema's $schema is an https URL jsonschema does not recognise: name draft-07 here.
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def document() -> dict[str, Any]:
    return compose_document(reference_agents(), RenderOptions(), model_servers())


def schema_errors(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# --- the semantic checks: each returns what is wrong, so a broken copy names its fault -----


def sidecar_problems(document: dict[str, Any], agents: list[str]) -> list[str]:
    """Each agent has a collector in its network namespace, sized as a lightweight sidecar."""
    services = document["services"]
    problems = []
    for agent in agents:
        sidecar = services.get(collector_name(agent))
        if sidecar is None:
            problems.append(f"{agent}: no collector sidecar")
            continue
        if sidecar.get("network_mode") != f"service:{agent}":
            problems.append(f"{agent}: sidecar network_mode is {sidecar.get('network_mode')!r}")
        if agent not in sidecar.get("depends_on", {}):
            problems.append(f"{agent}: sidecar does not depend on its agent")
        limits = sidecar.get("deploy", {}).get("resources", {}).get("limits", {})
        if float(limits.get("cpus", "inf")) > 0.1 or limits.get("memory") != "128m":
            problems.append(f"{agent}: sidecar limits {limits}")
        endpoint = services[agent]["environment"].get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint != "http://localhost:4318":
            problems.append(f"{agent}: exports to {endpoint!r}, not its sidecar")
        problems.extend(
            f"{agent}: sidecar config {mount['source']!r} is not defined"
            for mount in sidecar.get("configs", [])
            if mount["source"] not in document.get("configs", {})
        )
        if sidecar.get("read_only") and sidecar.get("configs"):
            # Compose copies inline configs in, which a read-only root refuses.
            problems.append(f"{agent}: sidecar is read_only with a config to copy in")
    return problems


def dependency_problems(document: dict[str, Any]) -> list[str]:
    """Every ``depends_on`` names a service, and ``service_healthy`` one with a healthcheck."""
    services = document["services"]
    problems = []
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            if target not in services:
                problems.append(f"{name} depends on {target!r}, which is no service")
                continue
            check = services[target].get("healthcheck")
            if rule["condition"] == "service_healthy" and (not check or check.get("disable")):
                problems.append(f"{name} waits for {target} healthy; {target} has no healthcheck")

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            problems.append(f"dependency cycle {' -> '.join((*path, name))}")
            return
        for target in services.get(name, {}).get("depends_on", {}):
            visit(target, (*path, name))

    for name in services:
        visit(name, ())
    return problems


def broker_command(document: dict[str, Any]) -> list[str]:
    command: list[str] = document["services"][BROKER]["command"]
    return command


def option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == option]


def broker_service_problems(document: dict[str, Any], agents: list[str]) -> list[str]:
    """The broker maps every agent and the sink to the Compose service of that name."""
    services = parse_services(option_values(broker_command(document), "--service"))
    problems = []
    for name in [*agents, DEAD_LETTERS]:
        if services.get(name) != f"http://{name}:8080":
            problems.append(f"--service {name}: {services.get(name)!r}")
        if name not in document["services"]:
            problems.append(f"{name} is mapped but no service")
    return problems


def kafka_problems(document: dict[str, Any]) -> list[str]:
    """One Kafka node in KRaft mode (broker and controller), no ZooKeeper anywhere."""
    services = document["services"]
    environment = services[KAFKA]["environment"]
    problems = []
    roles = set(environment.get("KAFKA_PROCESS_ROLES", "").split(","))
    if roles != {"broker", "controller"}:
        problems.append(f"process roles {sorted(roles)}")
    if (
        environment.get("KAFKA_CONTROLLER_QUORUM_VOTERS")
        != f"{environment.get('KAFKA_NODE_ID')}@kafka:9093"
    ):
        problems.append("the quorum is not this one node")
    if not environment.get("CLUSTER_ID"):
        problems.append("no CLUSTER_ID (the apache/kafka image refuses KRaft without one)")
    if environment.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") != "1":
        problems.append("offsets topic replicated beyond the one node")
    for name, service in services.items():
        text = json.dumps(service).lower()
        if "zookeeper" in text:
            problems.append(f"{name} mentions ZooKeeper")
    advertised = environment.get("KAFKA_ADVERTISED_LISTENERS", "")
    if option_values(broker_command(document), "--kafka") != [advertised.partition("://")[2]]:
        problems.append("the broker does not bootstrap from the advertised listener")
    return problems


def mount_problems(document: dict[str, Any], root: Path) -> list[str]:
    """The broker's ``--triggers`` is a read-only bind of a folder of Triggers in ``root``."""
    (triggers,) = option_values(broker_command(document), "--triggers")
    mounts = [
        mount
        for mount in document["services"][BROKER].get("volumes", [])
        if isinstance(mount, dict) and mount.get("target") == triggers
    ]
    if len(mounts) != 1:
        return [f"--triggers {triggers} is not a mount target"]
    (mount,) = mounts
    problems = []
    if mount["type"] != "bind" or not mount.get("read_only"):
        problems.append(f"{triggers}: not a read-only bind")
    source = root / mount["source"]
    kinds = [
        item.get("kind")
        for path in sorted(source.glob("*.yaml"))
        for item in yaml.safe_load_all(path.read_text())
        if isinstance(item, dict)
    ]
    if "Trigger" not in kinds:
        problems.append(f"{mount['source']}: no Trigger in the repository there")
    return problems


def all_problems(document: dict[str, Any], agents: list[str]) -> list[str]:
    return [
        *sidecar_problems(document, agents),
        *dependency_problems(document),
        *broker_service_problems(document, agents),
        *kafka_problems(document),
        *mount_problems(document, PROJECT),
    ]


# --- an agent with every hint Compose maps ------------------------------------------------


class Ping(BaseModel):
    text: str


def heavy_agent(name: str = "heavy", **hints: Any) -> DiscoveredAgent:
    agent = Agent(
        name,
        resources=Resources(cpu="250m", memory="500M", cpu_limit="1.5", memory_limit="1Gi", gpu=1),
        **hints,
    )

    @agent.on("test.ping")
    async def ping(payload: Ping) -> None:
        return None

    return DiscoveredAgent("tests.deploy.test_compose", name, agent)


# --- the schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("otel", ["shared", "sidecar", "off"])
def test_rendered_document_is_valid_compose(
    compose_schema: jsonschema.Draft7Validator, otel: str
) -> None:
    document = compose_document([*reference_agents(), heavy_agent()], RenderOptions(otel=otel))  # type: ignore[arg-type]
    assert schema_errors(compose_schema, document) == []


def test_schema_check_catches_a_broken_document(
    compose_schema: jsonschema.Draft7Validator, document: dict[str, Any]
) -> None:
    broken = copy.deepcopy(document)
    broken["services"]["planner"]["depends_on"]["broker"]["condition"] = "service_ready"
    broken["services"]["redis"]["healthcheck"]["test"] = {"cmd": "redis-cli ping"}
    errors = schema_errors(compose_schema, broken)
    assert any(error.startswith("services/planner/depends_on") for error in errors), errors
    assert any(error.startswith("services/redis/healthcheck/test") for error in errors), errors


def test_committed_compose_yaml_is_what_agentfn_render_compose_writes(
    compose_schema: jsonschema.Draft7Validator, tmp_path: Path
) -> None:
    assert COMPOSE_FILE.is_file(), "compose.yaml is missing: run agentfn render --compose"
    options = RenderOptions()
    written = write(
        render_compose(reference_agents(), options, model_servers()),
        tmp_path,
        header(list(DEFAULT_TARGETS), options, compose=True),
    )
    assert [path.name for path in written] == ["compose.yaml"]
    assert COMPOSE_FILE.read_bytes() == written[0].read_bytes(), (
        "compose.yaml differs from the render: run agentfn render --compose"
    )
    committed = yaml.safe_load(COMPOSE_FILE.read_text())
    assert schema_errors(compose_schema, committed) == []
    assert all_problems(committed, names_of(reference_agents())) == []


# --- the semantics, each check against a broken copy -------------------------------------


def test_the_rendered_document_passes_every_check(document: dict[str, Any]) -> None:
    assert all_problems(document, names_of(reference_agents())) == []


def test_every_agent_has_a_sidecar_in_its_network_namespace(document: dict[str, Any]) -> None:
    agents = names_of(reference_agents())
    assert agents == ["aggregator", "flaky", "planner", "worker"]
    for agent in agents:
        sidecar = document["services"][collector_name(agent)]
        assert sidecar["image"] == COLLECTOR_IMAGE
        assert "ports" not in sidecar  # a service: network namespace publishes nothing itself

    elsewhere = copy.deepcopy(document)
    elsewhere["services"]["worker-collector"]["network_mode"] = "bridge"
    assert sidecar_problems(elsewhere, agents) == ["worker: sidecar network_mode is 'bridge'"]
    missing = copy.deepcopy(document)
    del missing["services"]["planner-collector"]
    assert sidecar_problems(missing, agents) == ["planner: no collector sidecar"]
    unsized = copy.deepcopy(document)
    unsized["services"]["flaky-collector"]["deploy"]["resources"]["limits"]["cpus"] = "1"
    assert sidecar_problems(unsized, agents) == [
        "flaky: sidecar limits {'cpus': '1', 'memory': '128m'}"
    ]


def test_collector_config_receives_on_the_agents_loopback(document: dict[str, Any]) -> None:
    config = yaml.safe_load(document["configs"]["otel-collector"]["content"])
    # Only the agent whose network namespace it shares can reach it.
    for protocol in config["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("localhost:")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "localhost:4318"
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["processors"][0] == "memory_limiter"  # first, so it can refuse data
    sidecar = document["services"]["planner-collector"]
    assert sidecar["command"] == ["--config=/conf/config.yaml"]
    assert sidecar["configs"] == [{"source": "otel-collector", "target": "/conf/config.yaml"}]
    assert sidecar["environment"] == {"GOMEMLIMIT": "102MiB"}  # 80% of its 128Mi
    # Compose interpolates $ in inline content: the config must hold none.
    assert "$" not in document["configs"]["otel-collector"]["content"]


def test_every_dependency_can_be_satisfied(document: dict[str, Any]) -> None:
    services = document["services"]
    assert services["planner"]["depends_on"] == {
        "broker": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "embedder": {"condition": "service_healthy"},  # the model server, its model loaded
    }
    assert services[BROKER]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "dead-letters": {"condition": "service_healthy"},
    }
    assert services[DEAD_LETTERS]["depends_on"] == {"redis": {"condition": "service_healthy"}}

    unhealthy = copy.deepcopy(document)
    del unhealthy["services"][REDIS]["healthcheck"]
    assert dependency_problems(unhealthy) == [
        "dead-letters waits for redis healthy; redis has no healthcheck",
        "embedder waits for redis healthy; redis has no healthcheck",
        "aggregator waits for redis healthy; redis has no healthcheck",
        "flaky waits for redis healthy; redis has no healthcheck",
        "planner waits for redis healthy; redis has no healthcheck",
        "worker waits for redis healthy; redis has no healthcheck",
    ]
    dangling = copy.deepcopy(document)
    dangling["services"][BROKER]["depends_on"]["zookeeper"] = {"condition": "service_started"}
    assert dependency_problems(dangling) == ["broker depends on 'zookeeper', which is no service"]
    cycle = copy.deepcopy(document)
    cycle["services"][REDIS]["depends_on"] = {"planner": {"condition": "service_started"}}
    assert any(problem.startswith("dependency cycle") for problem in dependency_problems(cycle))


def test_the_broker_maps_every_agent_and_the_sink(document: dict[str, Any]) -> None:
    agents = names_of(reference_agents())
    command = broker_command(document)
    assert command[:3] == ["broker", "--kafka", "kafka:9092"]
    broken = copy.deepcopy(document)
    words = broken["services"][BROKER]["command"]
    at = words.index("worker=http://worker:8080")
    del words[at - 1 : at + 1]
    assert broker_service_problems(broken, agents) == ["--service worker: None"]


def test_every_ref_in_the_rendered_triggers_resolves_through_the_broker_map(
    document: dict[str, Any],
) -> None:
    """As the broker resolves them when it starts (an unknown ref stops it with an error)."""
    services = parse_services(option_values(broker_command(document), "--service"))
    topology = load_topology(sorted((PROJECT / "knative").glob("*.yaml")))
    destinations = [trigger.subscriber for trigger in topology.triggers] + [
        sink
        for trigger in topology.triggers
        if (sink := topology.delivery_for(trigger).dead_letter_sink) is not None
    ]
    assert destinations
    urls = {resolve_destination(destination, services) for destination in destinations}
    for url in urls:
        host = url.split("://", 1)[1].split(":", 1)[0]
        assert host in document["services"], url


def test_kafka_runs_one_kraft_node(document: dict[str, Any]) -> None:
    assert document["services"][KAFKA]["image"].startswith("apache/kafka:")
    assert document["services"][KAFKA]["volumes"] == ["kafka-data:/var/lib/kafka/data"]
    assert "kafka-data" in document["volumes"]
    assert kafka_problems(document) == []
    zookeeper = copy.deepcopy(document)
    zookeeper["services"][KAFKA]["environment"]["KAFKA_ZOOKEEPER_CONNECT"] = "zk:2181"
    del zookeeper["services"][KAFKA]["environment"]["KAFKA_PROCESS_ROLES"]
    assert kafka_problems(zookeeper) == [
        "process roles ['']",
        "kafka mentions ZooKeeper",
    ]


def test_redis_is_append_only_and_checked(document: dict[str, Any]) -> None:
    redis = document["services"][REDIS]
    assert redis["image"].startswith("redis:7.")
    assert redis["command"] == ["redis-server", "--appendonly", "yes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["volumes"] == ["redis-data:/data"]


def test_the_mounted_triggers_are_in_the_repository(document: dict[str, Any]) -> None:
    assert mount_problems(document, PROJECT) == []
    elsewhere = copy.deepcopy(document)
    words = elsewhere["services"][BROKER]["command"]
    words[words.index("--triggers") + 1] = "/app/other"
    assert mount_problems(elsewhere, PROJECT) == ["--triggers /app/other is not a mount target"]
    nowhere = copy.deepcopy(document)
    nowhere["services"][BROKER]["volumes"][0]["source"] = "./no-such-folder"
    assert mount_problems(nowhere, PROJECT) == [
        "./no-such-folder: no Trigger in the repository there"
    ]


# --- options, hints, determinism ---------------------------------------------------------


def test_options_reach_every_service() -> None:
    options = RenderOptions(
        namespace="shop", broker="orders", image="registry.test/a:1", alert_depth=3
    )
    document = compose_document(reference_agents(), options)
    services = document["services"]
    ingress = "http://broker:8080/shop/orders"
    for name in ["aggregator", "flaky", "planner", "worker", DEAD_LETTERS, BROKER]:
        assert services[name]["image"] == "registry.test/a:1"
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    for name in ["aggregator", "flaky", "planner", "worker"]:
        # The planner declares gRPC: it serves it beside HTTP, and every agent knows where.
        assert services[name]["command"] == (
            ["serve", "--grpc-port", "8081"] if name == "planner" else ["serve"]
        )
        assert services[name]["environment"] == {
            "AGENTFN_AGENT": f"agentfn.functions.agents.{name}:agent",
            "AGENTFN_BROKER_URL": ingress,
            "AGENTFN_REDIS_URL": "redis://redis:6379/0",
            "AGENTFN_RPC_TARGETS": "planner=planner:8081",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
            "OTEL_SERVICE_NAME": name,
        }
    assert services[DEAD_LETTERS]["environment"]["AGENTFN_BROKER_URL"] == ingress
    assert services[DEAD_LETTERS]["environment"]["AGENTFN_DLQ_ALERT_DEPTH"] == "3"
    assert services[BROKER]["ports"] == ["127.0.0.1:8080:8080"]
    assert services[DEAD_LETTERS]["ports"] == ["127.0.0.1:8081:8080"]


def test_otel_off_drops_the_collectors() -> None:
    document = compose_document(reference_agents(), RenderOptions(otel="off"))
    assert "configs" not in document
    assert not [name for name in document["services"] if name.endswith("-collector")]
    for name in names_of(reference_agents()):
        assert not [
            key for key in document["services"][name]["environment"] if key.startswith("OTEL_")
        ]


def test_declared_resources_become_compose_limits_and_reservations() -> None:
    document = compose_document([heavy_agent()], RenderOptions())
    assert document["services"]["heavy"]["deploy"] == {
        "resources": {
            "limits": {"cpus": "1.5", "memory": "1g"},
            # 500M is 10^6 bytes each in Kubernetes; Compose's m would be 2^20.
            "reservations": {
                "cpus": "0.25",
                "memory": "500000000",
                "devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}],
            },
        }
    }
    services = compose_document(reference_agents(), RenderOptions())["services"]
    # What the namespace's LimitRange gives the cluster's containers for what they leave out.
    assert services["worker"]["deploy"]["resources"] == {
        "limits": {"cpus": "0.5", "memory": "256m"},
        "reservations": {"cpus": "0.25", "memory": "256m"},
    }
    assert services["planner"]["deploy"]["resources"] == {
        "limits": {"cpus": "0.5", "memory": "256m"},
        "reservations": {"cpus": "0.1", "memory": "128m"},
    }
    assert services["worker-collector"]["deploy"]["resources"] == {
        "limits": {"cpus": "0.1", "memory": "128m"},
        "reservations": {"cpus": "0.05", "memory": "64m"},
    }


def test_images_are_pinned_as_the_cluster_pins_them(document: dict[str, Any]) -> None:
    versions = dict(
        line.split("=", 1)
        for line in (PROJECT / "scripts" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    services = document["services"]
    assert services[KAFKA]["image"] == f"apache/kafka:{versions['KAFKA_VERSION']}"
    assert services[REDIS]["image"] == REDIS_IMAGE
    assert services["planner-collector"]["image"] == COLLECTOR_IMAGE
    for name, service in services.items():
        tag = service["image"].rpartition(":")[2]
        assert (tag and tag != "latest") or service["image"] == RenderOptions().image, name


def test_the_render_is_deterministic() -> None:
    forward = compose_document(reference_agents(), RenderOptions())
    backward = compose_document(list(reversed(reference_agents())), RenderOptions())
    assert yaml.safe_dump(forward, sort_keys=False) == yaml.safe_dump(backward, sort_keys=False)
    assert list(forward["services"]) == [
        "kafka",
        "redis",
        "dead-letters",
        "broker",
        "aggregator",
        "aggregator-collector",
        "flaky",
        "flaky-collector",
        "planner",
        "planner-collector",
        "worker",
        "worker-collector",
    ]


@pytest.mark.parametrize("name", ["kafka", "broker", "dead-letters", "planner-collector"])
def test_an_agent_named_like_another_service_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"agent '{name}'.*clashes"):
        compose_document([*reference_agents(), heavy_agent(name)], RenderOptions())


def test_a_dead_letter_service_compose_does_not_run_is_refused() -> None:
    agent = heavy_agent(delivery=Delivery(dead_letter_sink="elsewhere"))
    with pytest.raises(ValueError, match="'elsewhere'"):
        compose_document([agent], RenderOptions())
    url = heavy_agent(delivery=Delivery(dead_letter_sink="http://sink.test/"))
    assert "heavy" in compose_document([url], RenderOptions())["services"]


# --- the commands, as the real CLI parses them ------------------------------------------


def options_accepted(command: list[str]) -> tuple[int, str]:
    """``agentfn COMMAND --help``: click reads every option before it answers --help, so an
    option the command lacks is a usage error (2) and nothing else runs."""
    result = CliRunner().invoke(app, [*command, "--help"])
    return result.exit_code, result.output


def test_every_service_command_is_accepted_by_the_real_cli(document: dict[str, Any]) -> None:
    commands = {
        name: service["command"]
        for name, service in document["services"].items()
        if service.get("image") == RenderOptions().image
    }
    assert sorted(commands) == sorted([BROKER, DEAD_LETTERS, *names_of(reference_agents())])
    for name, command in commands.items():
        code, output = options_accepted(command)
        assert code == 0, (name, output)
        assert (
            f"agentfn {' '.join(word for word in command[:2] if not word.startswith('-'))}"
            in output
        )
    code, output = options_accepted(["broker", "--kafka-bootstrap", "kafka:9092"])
    assert code == 2
    assert "No such option" in output


# --- the agents' healthcheck, run as written ---------------------------------------------

_DRIVER = """
import json, os, subprocess, sys, time
from tests._waiting import wait_until

spec = json.loads(sys.argv[1])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

def probe():
    return subprocess.run(spec["probe"], capture_output=True, timeout=10).returncode

before = probe()
agent = subprocess.Popen(spec["serve"], env=spec["env"])
try:
    wait_until(lambda: agent.poll() is not None or probe() == 0, timeout=60)
    result = {"before": before, "after": probe(), "exited": agent.poll()}
finally:
    agent.terminate()
    agent.wait(timeout=10)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def private_network() -> list[str]:
    """``unshare -rn``: a network namespace of this test's own, 127.0.0.1:8080 free in it."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip not installed: cannot give the agent a network namespace")
    trial = subprocess.run(
        [unshare, "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    if trial.returncode != 0:
        pytest.skip(f"user network namespaces unavailable here: {trial.stderr.decode().strip()}")
    return [unshare, "-rn"]


def test_the_agent_healthcheck_passes_against_the_agent_as_compose_starts_it(
    document: dict[str, Any], private_network: list[str]
) -> None:
    executable = Path(sys.executable).with_name("agentfn")
    assert executable.is_file(), executable
    service = document["services"]["worker"]
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    # The image's python is its interpreter: here, the one running these tests.
    probe = [sys.executable, *test[2:]]
    environment = dict(service["environment"])
    # Redis and the collector are other containers, absent here; liveness needs neither.
    del environment["AGENTFN_REDIS_URL"], environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
    spec = {
        "probe": probe,
        "serve": [str(executable), *service["command"]],
        "env": {**os.environ, **environment},
    }
    run = subprocess.run(
        [*private_network, sys.executable, "-c", _DRIVER, json.dumps(spec)],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"before": 1, "after": 0, "exited": None}, run.stderr
