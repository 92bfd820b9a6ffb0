"""``agentfn deploy``, run as a user runs it (a subprocess), without a cluster.

No cluster runs here and kubectl is absent from the PATH these tests give the command, so the
missing-kubectl error is tested as a user meets it. To see what deploy runs, a small executable
``kubectl`` stand-in is put first on PATH: a test double of an external binary, which records
its argv and answers ``config current-context`` (or fails it, for the no-context error), and
exits as told for ``apply``. Where a real kubectl is installed, the no-context error is also
shown against it, with an empty kubeconfig.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from agentfn.functions._cli.render import DEFAULT_TARGETS, find_agents, model_servers
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.render import header, render, write

ROOT = Path(__file__).resolve().parents[2]
NOT_FOUND = (
    "kubectl not found: install it or use --out DIR and apply by hand, see README "
    "(Deploy to Knative)"
)


def agentfn(
    *args: str, path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": str(path), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agentfn.functions.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def empty_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    return folder


def fake_kubectl(
    folder: Path, log: Path, *, context: str | None, fail_on: str = "", secret: bool = False
) -> Path:
    """A ``kubectl`` that appends its argv to ``log`` and copies each file it applies into
    ``<log>.seen/``; ``context`` None: no current context; ``apply`` of ``fail_on`` exits 3;
    ``get secret`` prints the Secret's name when ``secret`` (it exists), else nothing."""
    script = folder / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(args) + '\\n')\n"
        "if args == ['config', 'current-context']:\n"
        f"    context = {context!r}\n"
        "    if context is None:\n"
        "        print('error: current-context is not set', file=sys.stderr)\n"
        "        sys.exit(1)\n"
        "    print(context)\n"
        "    sys.exit(0)\n"
        "if args[:2] == ['get', 'secret']:\n"
        f"    print('secret/agentfn-redis' if {secret!r} else '')\n"
        "    sys.exit(0)\n"
        "if args[:1] == ['apply']:\n"
        "    import pathlib, shutil\n"
        f"    seen = pathlib.Path({str(log)!r} + '.seen')\n"
        "    seen.mkdir(exist_ok=True)\n"
        "    shutil.copy(args[-1], seen)\n"
        f"    if {fail_on!r} and args[-1].endswith('/' + {fail_on!r}):\n"
        "        print('error: the server says no', file=sys.stderr)\n"
        "        sys.exit(3)\n"
        "    print('applied ' + args[-1])\n"
        "    sys.exit(0)\n"
        "sys.exit(64)\n"
    )
    script.chmod(0o755)
    return script


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def expected_files(tmp_path: Path, options: RenderOptions) -> list[Path]:
    names = list(DEFAULT_TARGETS)
    rendered = render(find_agents(names), options, model_servers())
    return write(rendered, tmp_path / "expected", header(names, options))


#: What deploy applies of kserve/ (beside the knative folder) by default: the GPU quota, then
#: the MIG InferenceService (tests/deploy/test_kserve.py: the other choices).
MODEL_FILES = ["quota.yaml", "embedder.yaml"]


def test_without_kubectl_it_exits_2_after_writing_the_files(
    empty_bin: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = agentfn("deploy", "--out", str(out), path=empty_bin)
    assert done.returncode == 2, done.stderr
    assert NOT_FOUND in done.stderr
    # What --out promises: the files are there to apply by hand.
    expected = expected_files(tmp_path, RenderOptions())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)
    for path in expected:
        assert (out / path.name).read_text() == path.read_text()


def test_without_kubectl_and_without_out_nothing_is_left(empty_bin: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = agentfn("deploy", path=empty_bin, env={"TMPDIR": str(scratch)})
    assert done.returncode == 2
    assert NOT_FOUND in done.stderr
    assert list(scratch.iterdir()) == []


def test_dry_run_applies_each_rendered_file_in_render_order(
    empty_bin: Path, tmp_path: Path
) -> None:
    log = tmp_path / "kubectl.jsonl"
    kubectl = fake_kubectl(empty_bin, log, context="kind-agentfn")
    out = tmp_path / "out"
    image = "localhost:5001/agentfn:t-1"
    done = agentfn(
        "deploy", "--dry-run", "client", "--out", str(out), "--image", image, path=empty_bin
    )
    assert done.returncode == 0, done.stderr
    options = RenderOptions(image=image)
    order = list(render(find_agents(list(DEFAULT_TARGETS)), options, model_servers()))
    assert order[0] == "namespace.yaml"
    paths = [out / name for name in order] + [tmp_path / "kserve" / name for name in MODEL_FILES]
    applies = [["apply", "--dry-run=client", "-f", str(path)] for path in paths]
    assert calls(log) == [["config", "current-context"], *applies]
    # Each command is printed before it runs, with the kubectl it found on PATH.
    printed = [line[2:] for line in done.stderr.splitlines() if line.startswith("$ ")]
    assert printed == [
        f"{kubectl} config current-context",
        *(f"{kubectl} apply --dry-run=client -f {path}" for path in paths),
    ]
    assert "kind-agentfn" in done.stderr
    # kubectl's own output comes through.
    assert done.stdout.splitlines() == [f"applied {path}" for path in paths]
    # What was applied is the render with these options.
    for path in expected_files(tmp_path, options):
        assert (out / path.name).read_text() == path.read_text()
    services = [d for d in yaml.safe_load_all((out / "agents.yaml").read_text()) if d]
    assert {
        s["spec"]["template"]["spec"]["containers"][0]["image"]
        for s in services
        if s["kind"] == "Service"
    } == {image}


def test_server_dry_run_and_a_kubectl_by_path(empty_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    elsewhere = tmp_path / "tools"
    elsewhere.mkdir()
    kubectl = fake_kubectl(elsewhere, log, context="prod")
    done = agentfn("deploy", "--dry-run", "server", "--kubectl", str(kubectl), path=empty_bin)
    assert done.returncode == 0, done.stderr
    applied = calls(log)[1:]
    assert applied
    assert all(call[:2] == ["apply", "--dry-run=server"] for call in applied)


def test_without_dry_run_it_applies(empty_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    fake_kubectl(empty_bin, log, context="kind-agentfn")
    done = agentfn("deploy", "--namespace", "agents", path=empty_bin)
    assert done.returncode == 0, done.stderr
    applied = calls(log)[1:]
    assert [call[:2] for call in applied] == [["apply", "-f"]] * len(applied)
    assert Path(applied[0][-1]).name == "namespace.yaml"
    # The temporary files existed while kubectl read them, rendered for --namespace agents.
    seen = Path(f"{log}.seen")
    [namespace, *_] = yaml.safe_load_all((seen / "namespace.yaml").read_text())
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == "agents"
    assert not Path(applied[0][-1]).exists()


def test_no_current_context_exits_2_before_applying(empty_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    fake_kubectl(empty_bin, log, context=None)
    done = agentfn("deploy", "--dry-run", "client", path=empty_bin)
    assert done.returncode == 2
    assert "kubectl has no current context (error: current-context is not set)" in done.stderr
    assert calls(log) == [["config", "current-context"]]


def test_a_failed_apply_stops_there_with_its_status(empty_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    fake_kubectl(empty_bin, log, context="kind-agentfn", fail_on="kafka-broker.yaml")
    done = agentfn("deploy", path=empty_bin)
    assert done.returncode == 3
    assert "kubectl apply failed on kafka-broker.yaml (exit 3)" in done.stderr
    applied = [Path(call[-1]).name for call in calls(log)[1:]]
    order = list(render(find_agents(list(DEFAULT_TARGETS)), RenderOptions()))
    assert applied == order[: order.index("kafka-broker.yaml") + 1]


def test_no_context_with_the_real_kubectl(tmp_path: Path) -> None:
    real = shutil.which("kubectl")
    if real is None:
        pytest.skip("kubectl is not installed here (the stand-in tests cover the same path)")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(real)
    done = agentfn("deploy", path=bin_dir, env={"KUBECONFIG": str(kubeconfig)})
    assert done.returncode == 2
    assert "kubectl has no current context" in done.stderr


@pytest.mark.parametrize("exists", [True, False])
def test_prod_keeps_an_existing_redis_secret(empty_bin: Path, tmp_path: Path, exists: bool) -> None:
    """The prod Secret is a template (redis://CHANGE-ME): applied over a Secret a user filled
    in, it would cut the agents off from Redis; it is applied only where none exists yet."""
    log = tmp_path / "kubectl.jsonl"
    fake_kubectl(empty_bin, log, context="prod", secret=exists)
    done = agentfn("deploy", "--profile", "prod", path=empty_bin)
    assert done.returncode == 0, done.stderr
    lookup = ["get", "secret", "agentfn-redis", "-n", "agentfn", "--ignore-not-found", "-o", "name"]
    assert lookup in calls(log)
    applied = [Path(call[-1]).name for call in calls(log) if call[:1] == ["apply"]]
    order = list(render(find_agents(list(DEFAULT_TARGETS)), RenderOptions(profile="prod")))
    kept = [name for name in order if not (exists and name == "redis.yaml")]
    assert applied == [*kept, *MODEL_FILES]
    assert ("kept the existing Secret agentfn-redis" in done.stderr) is exists


def test_local_applies_its_redis_without_looking(empty_bin: Path, tmp_path: Path) -> None:
    log = tmp_path / "kubectl.jsonl"
    fake_kubectl(empty_bin, log, context="kind-agentfn", secret=True)
    done = agentfn("deploy", path=empty_bin)
    assert done.returncode == 0, done.stderr
    assert not [call for call in calls(log) if call[:1] == ["get"]]
    assert "redis.yaml" in [Path(call[-1]).name for call in calls(log) if call[:1] == ["apply"]]
