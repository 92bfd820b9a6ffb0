"""``kserve/``: the model servers as KServe InferenceServices, their GPU quota, the Kueue set.

The schemas (InferenceService, ClusterQueue, LocalQueue, ResourceFlavor against their CRDs in
``../shared/spec``; the quota with kubernetes-validate; the predictor as a PodSpec) are checked
with every other rendered object in ``test_manifest_validation.py``. Here: that the committed
folder is what ``agentfn render`` writes; the checks the schemas leave open, each a function
returning its problems and each shown to catch a broken copy (MIG resource names in NVIDIA's
form, the Knative deployment mode, scale to zero, the readiness path naming the model served,
the CPU variant free of GPUs, the quota and the ClusterQueue covering the requests at max
scale); that the options reach every place and bad values are refused naming the option; the
Trigger to the InferenceService and the agents' address of the model; and, against the real
``agentfn model serve``, that the rendered command is one the CLI takes, the rendered env one
the server's settings read, and the probe paths and the Trigger's path ones it answers.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from agentfn.functions._cli.render import model_servers
from agentfn.functions._loader import DiscoveredAgent, discover_agents
from agentfn.functions._manifests.inference import (
    KUEUE_QUEUE_LABEL,
    kserve_documents,
    predictor_url,
)
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.render import render, render_kserve
from agentfn.functions._manifests.sizing import ROLLOUT_SURGE, parse_quantity
from agentfn.functions.settings import Settings
from agentfn.inference.settings import ModelSettings
from pydantic import ValidationError

from tests._model_server import ModelServer
from tests.deploy.test_manifest_validation import crd_schema, validate_schema

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "kserve"
Document = dict[str, Any]
#: NVIDIA's name of a MIG slice as its device plugin advertises it (mixed strategy).
MIG_NAME = re.compile(r"^nvidia\.com/mig-\d+g\.\d+gb$")
ISVC = ("serving.kserve.io/v1beta1", "InferenceService")


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentfn.functions.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@functools.cache
def _agents() -> tuple[DiscoveredAgent, ...]:
    agents, errors = discover_agents("agentfn.functions.agents")
    assert errors == []
    return tuple(agents)


def kserve_of(options: RenderOptions) -> dict[str, list[Document]]:
    """A fresh ``kserve/`` render of the reference agents' model servers."""
    return copy.deepcopy(render_kserve(_agents(), options, model_servers()))


def flat(files: dict[str, list[Document]]) -> list[Document]:
    return [document for documents in files.values() for document in documents]


def isvcs(documents: list[Document]) -> list[Document]:
    return [d for d in documents if (d["apiVersion"], d["kind"]) == ISVC]


def predictor(isvc: Document) -> dict[str, Any]:
    found: dict[str, Any] = isvc["spec"]["predictor"]
    return found


def serving(isvc: Document) -> dict[str, Any]:
    container: dict[str, Any] = predictor(isvc)["containers"][0]
    return container


def one(documents: list[Document], kind: str) -> Document:
    (found,) = [d for d in documents if d["kind"] == kind]
    return found


# --- the committed folder ------------------------------------------------------------------


def test_committed_kserve_is_what_agentfn_render_writes(tmp_path: Path) -> None:
    result = _cli("render", "--out", str(tmp_path / "knative"))
    assert result.returncode == 0, result.stderr
    written = tmp_path / "kserve"
    names = sorted(p.relative_to(written).as_posix() for p in written.rglob("*.yaml"))
    committed = sorted(p.relative_to(KSERVE).as_posix() for p in KSERVE.rglob("*.yaml"))
    assert names == committed, "kserve/ is out of date: run `agentfn render`"
    assert names == ["embedder-cpu.yaml", "embedder.yaml", "kueue/queues.yaml", "quota.yaml"]
    for name in names:
        assert (written / name).read_bytes() == (KSERVE / name).read_bytes(), (
            f"kserve/{name} differs from what `agentfn render` writes: run `agentfn render`"
        )
    assert f"wrote {written / 'kueue' / 'queues.yaml'} (ResourceFlavor, ClusterQueue, " in (
        result.stdout
    )


def test_each_file_says_how_it_was_made_and_the_kueue_set_that_it_is_optional() -> None:
    for path in KSERVE.rglob("*.yaml"):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0] == (
            "# Generated by `agentfn render agentfn.functions.agents` from "
            "agentfn.functions.agents; do not edit by hand."
        )
        assert lines[1].startswith("# "), f"{path.name}: no note on what it is"
    kueue = (KSERVE / "kueue" / "queues.yaml").read_text().splitlines()
    assert kueue[1].startswith("# OPTIONAL: Kueue")
    gpu = (KSERVE / "embedder.yaml").read_text()
    assert "apply this or embedder-cpu.yaml, not both" in gpu.lower()
    assert "h2c" in gpu  # where in-cluster gRPC would go


def test_another_kserve_folder_and_none_without_model_servers(tmp_path: Path) -> None:
    result = _cli("render", "--out", str(tmp_path / "k"), "--kserve-out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "embedder.yaml").is_file()
    bare = _cli("render", "--out", str(tmp_path / "bare" / "knative"), "--no-model-servers")
    assert bare.returncode == 0, bare.stderr
    assert not (tmp_path / "bare" / "kserve").exists()
    knative = tmp_path / "bare" / "knative"
    assert "InferenceService" not in (knative / "triggers.yaml").read_text()
    assert "AGENTFN_INFERENCE_TARGETS" not in (knative / "agents.yaml").read_text()
    assert "--no-model-servers" in (knative / "agents.yaml").read_text().splitlines()[0]


# --- the checks the schemas leave open ------------------------------------------------------


def mig_problems(documents: list[Document]) -> list[str]:
    """Every MIG resource named as NVIDIA does, asked as request and equal limit, one slice."""
    problems: list[str] = []
    for isvc in isvcs(documents):
        what = f"InferenceService/{isvc['metadata']['name']}"
        resources = serving(isvc)["resources"]
        names = {n for part in resources.values() for n in part if n.startswith("nvidia.com/")}
        for name in sorted(names):
            if name.startswith("nvidia.com/mig") and not MIG_NAME.fullmatch(name):
                problems.append(f"{what}: {name} is not nvidia.com/mig-<g>g.<memory>gb")
            request = resources.get("requests", {}).get(name)
            limit = resources.get("limits", {}).get(name)
            if request is None or request != limit:
                problems.append(f"{what}: {name} request {request!r} is not its limit {limit!r}")
    for quota in (d for d in documents if d["kind"] == "ResourceQuota"):
        problems += [
            f"ResourceQuota: {key} is not requests.nvidia.com/mig-<g>g.<memory>gb"
            for key in quota["spec"]["hard"]
            if "nvidia.com/mig" in key
            and not (key.startswith("requests.") and MIG_NAME.fullmatch(key[len("requests.") :]))
        ]
    return problems


def _model_of(container: dict[str, Any]) -> str | None:
    args = container.get("args", [])
    return args[args.index("--model") + 1] if "--model" in args else None


def serving_problems(documents: list[Document]) -> list[str]:
    """Knative mode, scale to zero, one http1 port, readiness on the served model's path."""
    problems: list[str] = []
    for isvc in isvcs(documents):
        what = f"InferenceService/{isvc['metadata']['name']}"
        mode = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        if mode != "Knative":
            problems.append(f"{what}: deploymentMode {mode!r}, not Knative")
        spec = predictor(isvc)
        if spec.get("minReplicas") != 0:
            problems.append(f"{what}: minReplicas {spec.get('minReplicas')!r}, not 0")
        if not spec.get("maxReplicas", 0) >= 1:
            problems.append(f"{what}: maxReplicas {spec.get('maxReplicas')!r}")
        if spec.get("scaleMetric") not in {"concurrency", "rps"}:
            problems.append(f"{what}: scaleMetric {spec.get('scaleMetric')!r}")
        container = serving(isvc)
        ports = [port for c in spec["containers"] for port in c.get("ports", [])]
        if [(p.get("name"), p.get("containerPort")) for p in ports] != [("http1", 8080)]:
            problems.append(f"{what}: ports {ports} (Knative routes one, http1 8080 here)")
        model = _model_of(container)
        ready = f"/v2/models/{model}/ready"
        if (container.get("readinessProbe") or {}).get("httpGet", {}).get("path") != ready:
            problems.append(f"{what}: readiness is not {ready}, the model it serves")
        startup = container.get("startupProbe") or {}
        window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if startup.get("httpGet", {}).get("path") != ready or window < 120:
            problems.append(f"{what}: startup probe gives the model load {window} s on {startup}")
    return problems


def cpu_variant_problems(files: dict[str, list[Document]]) -> list[str]:
    """The ``-cpu`` file: no GPU resource, selector or toleration, and the cpu device."""
    problems: list[str] = []
    for name, documents in files.items():
        if not name.endswith("-cpu.yaml"):
            continue
        for isvc in isvcs(documents):
            what = f"{name}: InferenceService/{isvc['metadata']['name']}"
            spec = predictor(isvc)
            resources = serving(isvc)["resources"]
            problems += [
                f"{what}: asks for {resource}"
                for part in resources.values()
                for resource in part
                if resource.startswith("nvidia.com/")
            ]
            problems += [
                f"{what}: has {field}"
                for field in ("nodeSelector", "tolerations", "affinity")
                if field in spec
            ]
            env = {e["name"]: e.get("value") for e in serving(isvc)["env"]}
            if env.get("AGENTFN_MODEL_DEVICE") != "cpu":
                problems.append(f"{what}: AGENTFN_MODEL_DEVICE {env.get('AGENTFN_MODEL_DEVICE')!r}")
    return problems


def _needs_at_max_scale(documents: list[Document]) -> dict[str, Fraction]:
    """What the InferenceServices ask for at maxReplicas (variants of one name: the larger)."""
    largest: dict[tuple[str, str], Fraction] = {}
    for isvc in isvcs(documents):
        spec = predictor(isvc)
        for resource, amount in serving(isvc)["resources"].get("requests", {}).items():
            if resource.startswith("nvidia.com/"):
                key = (isvc["metadata"]["name"], f"requests.{resource}")
                largest[key] = max(
                    largest.get(key, Fraction(0)), parse_quantity(amount) * spec["maxReplicas"]
                )
    needs: dict[str, Fraction] = {}
    for (_, key), amount in largest.items():
        needs[key] = needs.get(key, Fraction(0)) + amount
    return needs


def gpu_quota_problems(documents: list[Document]) -> list[str]:
    """The quota and the ClusterQueue cover the GPU requests at max scale (maxReplicas x
    per-replica; they hold one rollout pod more, which this does not demand)."""
    problems: list[str] = []
    needs = _needs_at_max_scale(documents)
    if not needs:
        return ["no InferenceService asks for a GPU resource"]
    quotas = [d for d in documents if d["kind"] == "ResourceQuota"]
    hard = {k: parse_quantity(v) for q in quotas for k, v in q["spec"]["hard"].items()}
    for key, need in needs.items():
        if key not in hard:
            problems.append(f"ResourceQuota: {key} unbounded")
        elif hard[key] < need:
            problems.append(f"ResourceQuota: {key} is {hard[key]}, below {need} at max scale")
    for queue in (d for d in documents if d["kind"] == "ClusterQueue"):
        nominal = {
            resource["name"]: parse_quantity(resource["nominalQuota"])
            for group in queue["spec"]["resourceGroups"]
            for flavor in group["flavors"]
            for resource in flavor["resources"]
        }
        for key, need in needs.items():
            resource = key.removeprefix("requests.")
            if nominal.get(resource, Fraction(0)) < need:
                problems.append(f"ClusterQueue: {resource} {nominal.get(resource)} below {need}")
    return problems


Check = Callable[[dict[str, list[Document]]], list[str]]


def _on_documents(check: Callable[[list[Document]], list[str]]) -> Check:
    return lambda files: check(flat(files))


CHECKS: dict[str, Check] = {
    "mig": _on_documents(mig_problems),
    "serving": _on_documents(serving_problems),
    "cpu": cpu_variant_problems,
    "quota": _on_documents(gpu_quota_problems),
}
OPTIONS = [
    RenderOptions(),
    RenderOptions(mig_profile="3g.40gb", model_max_replicas=7, kueue=True, otel="sidecar"),
    RenderOptions(namespace="team-a", mig_profile="1g.18gb", model_max_replicas=1),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{o.mig_profile}-{o.namespace}")
@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_render_passes_every_check(options: RenderOptions, check: str) -> None:
    assert CHECKS[check](kserve_of(options)) == []


def _gpu(files: dict[str, list[Document]]) -> Document:
    return files["embedder.yaml"][0]


def _cpu(files: dict[str, list[Document]]) -> Document:
    return files["embedder-cpu.yaml"][0]


def _rename_mig(files: dict[str, list[Document]], name: str) -> None:
    resources = serving(_gpu(files))["resources"]
    for part in resources.values():
        part[name] = part.pop("nvidia.com/mig-1g.10gb")


BREAKS: dict[str, tuple[str, Callable[[dict[str, list[Document]]], Any], str]] = {
    "mig-name": ("mig", lambda f: _rename_mig(f, "nvidia.com/mig-1g-10gb"), "is not nvidia.com"),
    "mig-name-case": ("mig", lambda f: _rename_mig(f, "nvidia.com/mig-1g.10GB"), "is not"),
    "mig-limit-only": (
        "mig",
        lambda f: serving(_gpu(f))["resources"]["requests"].pop("nvidia.com/mig-1g.10gb"),
        "request None is not its limit '1'",
    ),
    "mig-quota-key": (
        "mig",
        lambda f: f["quota.yaml"][0]["spec"]["hard"].update({"limits.nvidia.com/mig-1g.10gb": "5"}),
        "limits.nvidia.com/mig-1g.10gb is not requests.",
    ),
    "serverless-mode": (
        "serving",
        lambda f: _gpu(f)["metadata"]["annotations"].update(
            {"serving.kserve.io/deploymentMode": "Serverless"}
        ),
        "deploymentMode 'Serverless', not Knative",
    ),
    "min-replicas": ("serving", lambda f: predictor(_gpu(f)).update(minReplicas=1), "not 0"),
    "two-ports": (
        "serving",
        lambda f: serving(_gpu(f))["ports"].append({"name": "h2c", "containerPort": 8081}),
        "Knative routes one",
    ),
    "readiness-path": (
        "serving",
        lambda f: serving(_cpu(f))["readinessProbe"]["httpGet"].update(path="/v2/health/ready"),
        "readiness is not /v2/models/all-minilm-l6-v2/ready",
    ),
    "other-model": (
        "serving",
        lambda f: serving(_gpu(f))["args"].__setitem__(3, "bge-small"),
        "readiness is not /v2/models/bge-small/ready",
    ),
    "short-startup": (
        "serving",
        lambda f: serving(_gpu(f))["startupProbe"].update(failureThreshold=3),
        "startup probe gives the model load 15 s",
    ),
    "cpu-gets-a-gpu": (
        "cpu",
        lambda f: serving(_cpu(f))["resources"]["limits"].update({"nvidia.com/gpu": "1"}),
        "asks for nvidia.com/gpu",
    ),
    "cpu-selector": (
        "cpu",
        lambda f: predictor(_cpu(f)).update(nodeSelector={"nvidia.com/mig.strategy": "mixed"}),
        "has nodeSelector",
    ),
    "cpu-device": (
        "cpu",
        lambda f: serving(_cpu(f))["env"][1].update(value="cuda"),
        "AGENTFN_MODEL_DEVICE 'cuda'",
    ),
    "max-replicas-raised": (
        "quota",
        lambda f: predictor(_gpu(f)).update(maxReplicas=9),
        "requests.nvidia.com/mig-1g.10gb is 5, below 9 at max scale",
    ),
    "two-slices-each": (
        "quota",
        lambda f: [
            part.update({"nvidia.com/mig-1g.10gb": "2"})
            for part in serving(_gpu(f))["resources"].values()
        ],
        "below 8 at max scale",
    ),
    "quota-dropped": (
        "quota",
        lambda f: f["quota.yaml"][0]["spec"]["hard"].pop("requests.nvidia.com/mig-1g.10gb"),
        "unbounded",
    ),
    "cluster-queue-short": (
        "quota",
        lambda f: f["kueue/queues.yaml"][1]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][
            2
        ].update(nominalQuota="2"),
        "ClusterQueue: nvidia.com/mig-1g.10gb 2 below 4",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_check_catches_a_broken_copy(case: str) -> None:
    check, breakage, expected = BREAKS[case]
    files = kserve_of(RenderOptions())
    assert CHECKS[check](files) == [], "the unbroken render must pass first"
    breakage(files)
    problems = CHECKS[check](files)
    assert any(expected in problem for problem in problems), problems


def test_the_crd_check_catches_a_wrong_type(shared_spec: Path) -> None:
    isvc = _gpu(kserve_of(RenderOptions()))
    validate_schema(shared_spec, isvc)
    predictor(isvc)["minReplicas"] = "zero"
    with pytest.raises(jsonschema.ValidationError, match="zero"):
        validate_schema(shared_spec, isvc)
    queue = kserve_of(RenderOptions())["kueue/queues.yaml"][1]
    queue["spec"]["resourceGroups"][0]["coveredResources"] = "cpu"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(
            crd_schema(shared_spec, queue["apiVersion"], queue["kind"])
        ).validate(queue)


# --- what the InferenceService says --------------------------------------------------------


def test_the_gpu_variant_asks_for_one_mig_slice_on_a_mixed_strategy_gpu_node() -> None:
    isvc = _gpu(kserve_of(RenderOptions()))
    spec = predictor(isvc)
    assert serving(isvc)["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/mig-1g.10gb": "1"},
        "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/mig-1g.10gb": "1"},
    }
    assert spec["nodeSelector"] == {"nvidia.com/mig.strategy": "mixed"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    env = {e["name"]: e.get("value") for e in serving(isvc)["env"]}
    assert env["AGENTFN_MODEL_DEVICE"] == "cuda"


def test_scaling_and_timeouts_come_from_the_embedder_agent() -> None:
    (server,) = model_servers()
    declared = server.found.agent.spec
    spec = predictor(_gpu(kserve_of(RenderOptions())))
    assert (spec["minReplicas"], spec["maxReplicas"]) == (
        declared.scaling.min_scale,
        declared.scaling.max_scale,
    )
    assert spec["scaleMetric"] == declared.scaling.metric == "concurrency"
    assert spec["scaleTarget"] == declared.scaling.target_concurrency
    assert spec["containerConcurrency"] == declared.scaling.container_concurrency
    assert declared.delivery.timeout is not None
    assert spec["timeout"] == declared.delivery.timeout.total_seconds() + 5


def test_options_reach_every_place() -> None:
    options = RenderOptions(
        mig_profile="2g.20gb", model_max_replicas=6, model_image="registry.example/model:1"
    )
    files = kserve_of(options)
    resource = "nvidia.com/mig-2g.20gb"
    gpu = _gpu(files)
    assert predictor(gpu)["maxReplicas"] == predictor(_cpu(files))["maxReplicas"] == 6
    assert serving(gpu)["resources"]["requests"][resource] == "1"
    assert serving(gpu)["image"] == serving(_cpu(files))["image"] == "registry.example/model:1"
    hard = files["quota.yaml"][0]["spec"]["hard"]
    assert hard[f"requests.{resource}"] == str(6 + ROLLOUT_SURGE)
    flavor, queue, local = files["kueue/queues.yaml"]
    assert flavor["metadata"]["name"] == "mig-2g.20gb"
    (group,) = queue["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", resource]
    quotas = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    # 7 pods (6 and a rollout's) of the server's 1 CPU / 2Gi and queue-proxy's 25m / 50Mi.
    assert quotas == {"cpu": "7175m", "memory": "14686Mi", resource: "7"}
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]
    # The default: the agents' image, its tag marked for the inference build.
    assert serving(_gpu(kserve_of(RenderOptions(image="r.example/agentfn:v3"))))["image"] == (
        "r.example/agentfn:v3-inference"
    )


def test_the_kueue_label_only_with_the_option() -> None:
    for options, queued in [(RenderOptions(), False), (RenderOptions(kueue=True), True)]:
        files = kserve_of(options)
        for isvc in isvcs(flat(files)):
            labels = predictor(isvc)["labels"]
            assert (labels.get(KUEUE_QUEUE_LABEL) == "model-servers") is queued
            assert "agentfn.dev/role" in labels  # not the agents' role: no SinkBinding on it
            assert labels["agentfn.dev/role"] != "agent"
        flavor, queue, local = files["kueue/queues.yaml"]
        # The flavor places admitted pods where the GPU variant's selector does.
        assert flavor["spec"]["nodeLabels"] == predictor(_gpu(files))["nodeSelector"]
        assert flavor["spec"]["tolerations"] == predictor(_gpu(files))["tolerations"]
        assert queue["spec"]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": options.namespace}
        }
        assert local["metadata"]["namespace"] == options.namespace


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--mig-profile", "1g.10GB", "no MIG profile"),
        ("--mig-profile", "nvidia.com/mig-1g.10gb", "no MIG profile"),
        ("--mig-profile", "1g10gb", "e.g. 1g.10gb"),
        ("--model-max-replicas", "0", "greater than or equal to 1"),
    ],
)
def test_bad_values_are_refused_naming_the_option(
    tmp_path: Path, flag: str, value: str, words: str
) -> None:
    result = _cli("render", "--out", str(tmp_path / "knative"), flag, value)
    assert result.returncode == 2
    assert f"error: {flag}: " in result.stderr
    assert words in result.stderr
    assert not tmp_path.exists() or not list(tmp_path.rglob("*.yaml"))
    with pytest.raises(ValidationError, match="mig_profile"):
        RenderOptions(mig_profile="1g.10GB")


def test_two_model_servers_of_one_name_are_refused() -> None:
    (server,) = model_servers()
    with pytest.raises(ValueError, match="unique"):
        kserve_documents([server, server], list(_agents()), RenderOptions())


# --- the Trigger and the agents' address ---------------------------------------------------


def test_a_trigger_delivers_embedding_requests_to_the_inference_service(shared_spec: Path) -> None:
    servers = model_servers()
    triggers = render(_agents(), RenderOptions(), servers)["triggers.yaml"]
    (trigger,) = [t for t in triggers if t["spec"]["subscriber"]["ref"]["kind"] != "Service"]
    validate_schema(shared_spec, trigger)
    assert trigger["spec"]["filters"] == [{"exact": {"type": "agentfn.embedding.requested"}}]
    assert trigger["spec"]["subscriber"] == {
        "ref": {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "name": "embedder",
        },
        "uri": "/v1/models/all-minilm-l6-v2:predict",
    }
    # The embedder's own delivery, completed as every Trigger's, dead letters to the sink.
    delivery = trigger["spec"]["delivery"]
    assert (delivery["retry"], delivery["timeout"]) == (5, "PT30S")
    assert delivery["deadLetterSink"]["uri"] == f"/agentfn/default/{trigger['metadata']['name']}"
    # The InferenceService it names is the one kserve/ renders (either variant).
    assert {d["metadata"]["name"] for d in isvcs(flat(kserve_of(RenderOptions())))} == {"embedder"}


def test_the_agents_reach_the_model_at_the_predictors_cluster_address() -> None:
    options = RenderOptions(namespace="team-a")
    (server,) = model_servers()
    services = render(_agents(), options, [server])["agents.yaml"]
    values = {
        env["value"]
        for service in services
        if service["kind"] == "Service"
        for env in service["spec"]["template"]["spec"]["containers"][0]["env"]
        if env["name"] == "AGENTFN_INFERENCE_TARGETS"
    }
    assert values == {"all-minilm-l6-v2=http://embedder-predictor.team-a.svc.cluster.local"}
    assert predictor_url(server, options) == "http://embedder-predictor.team-a.svc.cluster.local"
    # The runtime's setting reads it as a REST target of that model.
    (value,) = values
    assert Settings(inference_targets=value).inference_models == {
        "all-minilm-l6-v2": "http://embedder-predictor.team-a.svc.cluster.local"
    }


# --- against the real model server ----------------------------------------------------------


def test_the_rendered_command_and_env_are_what_the_server_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentfn.functions.cli import app
    from typer.testing import CliRunner

    for isvc in isvcs(flat(kserve_of(RenderOptions()))):
        container = serving(isvc)
        result = CliRunner().invoke(app, [*container["args"], "--help"])
        assert result.exit_code == 0, result.output
        assert "agentfn model serve" in result.output
        for env in container["env"]:
            if env["name"].startswith("AGENTFN_MODEL_"):
                monkeypatch.setenv(env["name"], env["value"])
        settings = ModelSettings()
        args = container["args"]
        assert settings.name == args[args.index("--model") + 1] == "all-minilm-l6-v2"
        assert settings.http_port == int(args[args.index("--http-port") + 1])
        assert settings.device in {"cuda", "cpu"}


def test_the_probe_paths_and_the_trigger_path_are_what_the_server_answers(
    model_server: ModelServer,
) -> None:
    files = kserve_of(RenderOptions())
    container = serving(_cpu(files))
    (trigger,) = model_triggers_of(RenderOptions())
    with httpx.Client(base_url=model_server.http_url, timeout=60) as client:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container[probe]["httpGet"]["path"]
            assert client.get(path).status_code == 200, (probe, path)
        # What the broker posts for this Trigger: a binary CloudEvent on the rendered path.
        reply = client.post(
            trigger["spec"]["subscriber"]["uri"],
            headers={
                "ce-specversion": "1.0",
                "ce-id": "render-check-1",
                "ce-source": "/tests/deploy",
                "ce-type": "agentfn.embedding.requested",
                "content-type": "application/json",
                "prefer": "reply",
            },
            content=json.dumps({"texts": ["a cat sat on the mat"]}),
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["ce-type"] == "agentfn.embedding.completed"
    assert len(reply.json()["embeddings"][0]) == 384


def model_triggers_of(options: RenderOptions) -> list[Document]:
    triggers = render(_agents(), options, model_servers())["triggers.yaml"]
    return [t for t in triggers if t["spec"]["subscriber"]["ref"]["kind"] == "InferenceService"]


# --- agentfn deploy ------------------------------------------------------------------------


def _fake_kubectl(folder: Path, log: Path) -> None:
    script = folder / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:] == ['config', 'current-context']:\n"
        "    print('gpu-cluster')\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("args", "applied"),
    [
        ([], ["quota.yaml", "embedder.yaml"]),
        (
            ["--model-server", "cpu", "--kueue"],
            ["quota.yaml", "kueue/queues.yaml", "embedder-cpu.yaml"],
        ),
        (["--model-server", "off"], []),
    ],
)
def test_deploy_applies_the_chosen_variant_after_the_agents(
    tmp_path: Path, args: list[str], applied: list[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.jsonl"
    _fake_kubectl(bin_dir, log)
    out = tmp_path / "knative"
    done = subprocess.run(
        [sys.executable, "-m", "agentfn.functions.cli", "deploy", "--out", str(out), *args],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    files = [json.loads(line)[-1] for line in log.read_text().splitlines()][1:]
    knative = [Path(f).name for f in files if Path(f).parent == out]
    assert knative[0] == "namespace.yaml"
    assert knative[-1] == "triggers.yaml"
    models = [Path(f).relative_to(tmp_path / "kserve").as_posix() for f in files[len(knative) :]]
    assert models == applied
    triggers = (out / "triggers.yaml").read_text()
    assert ("kind: InferenceService" in triggers) is bool(applied)
    if "--kueue" in args:
        cpu = yaml.safe_load((tmp_path / "kserve" / "embedder-cpu.yaml").read_text())
        assert predictor(cpu)["labels"][KUEUE_QUEUE_LABEL] == "model-servers"
