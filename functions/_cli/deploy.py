"""``agentfn deploy``: render the agents' manifests, then ``kubectl apply`` them.

kubectl does the applying (no Kubernetes client library here): it already knows the user's
kubeconfig, contexts, credential plugins and server-side dry runs. The files are applied one
``kubectl apply -f FILE`` at a time in the order the render lists them (the Namespace, then the
Secrets and ConfigMaps, then what refers to them), where ``kubectl apply -f DIR`` would go
alphabetically: the agents before their namespace. Then ``kserve/``: the GPU quota, with
``--kueue`` the Kueue queues, and the one InferenceService variant ``--model-server`` names
(``gpu``, the MIG one; ``cpu``; ``off`` renders no model server at all).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from agentfn.functions._cli.render import (
    DEFAULT_TARGETS,
    AlertDepth,
    BrokerName,
    Image,
    KafkaBootstrap,
    MigProfile,
    ModelImage,
    ModelMaxReplicas,
    Namespace,
    OtelOption,
    ProfileOption,
    Targets,
    find_agents,
    kserve_folder,
    model_servers,
    options_or_exit,
)
from agentfn.functions._manifests._meta import REDIS_SECRET
from agentfn.functions._manifests.inference import (
    KUEUE_FILE,
    QUOTA_FILE,
    Variant,
    file_notes,
    server_file,
)
from agentfn.functions._manifests.options import DEFAULT_IMAGE, RenderOptions
from agentfn.functions._manifests.render import header, render, render_kserve, write

__all__ = ["DryRun", "ModelServerChoice", "deploy"]

_DEFAULTS = RenderOptions()

#: The file of the Redis Secret (and, profile local, the Redis it points at).
REDIS_FILE = "redis.yaml"

#: Where the error for a missing kubectl sends the reader.
_BY_HAND = "install it or use --out DIR and apply by hand, see README (Deploy to Knative)"


class DryRun(StrEnum):
    """``kubectl apply --dry-run``: ``client`` checks locally, ``server`` asks the API server."""

    client = "client"
    server = "server"


class ModelServerChoice(StrEnum):
    """Which InferenceService of ``kserve/`` is applied: on a MIG slice, on CPUs, or none."""

    gpu = "gpu"
    cpu = "cpu"
    off = "off"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _show(argv: Sequence[str]) -> None:
    typer.echo(f"$ {shlex.join(argv)}", err=True)


def _kubectl(kubectl: str) -> str:
    """The kubectl to run, as a path; exit 2 when there is none."""
    found = shutil.which(kubectl)
    if found is None:
        raise _fail(f"{kubectl} not found: {_BY_HAND}")
    return found


def _current_context(kubectl: str) -> str:
    """kubectl's current context; exit 2 when it has none (nothing to apply to)."""
    argv = [kubectl, "config", "current-context"]
    _show(argv)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    context = done.stdout.strip()
    if done.returncode != 0 or not context:
        reason = done.stderr.strip() or "it printed none"
        raise _fail(
            f"kubectl has no current context ({reason}): choose one with "
            "`kubectl config use-context NAME` (scripts/kind-up.sh makes kind-agentfn)"
        )
    return context


def _secret_exists(kubectl: str, namespace: str) -> bool:
    """Whether the namespace already holds the Redis Secret (a real URL someone filled in)."""
    argv = [
        kubectl,
        "get",
        "secret",
        REDIS_SECRET,
        "-n",
        namespace,
        "--ignore-not-found",
        "-o",
        "name",
    ]
    _show(argv)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


def _apply(
    kubectl: str, files: Sequence[Path], dry_run: DryRun | None, options: RenderOptions
) -> None:
    for file in files:
        # The prod profile's redis.yaml is only the Secret, a template (redis://CHANGE-ME):
        # applied over the Secret a user filled in, it would cut every agent off from Redis.
        template = file.name == REDIS_FILE and options.profile == "prod"
        if template and _secret_exists(kubectl, options.namespace):
            typer.echo(
                f"kept the existing Secret {REDIS_SECRET}: {file.name} is only its template",
                err=True,
            )
            continue
        argv = [kubectl, "apply"]
        if dry_run is not None:
            argv.append(f"--dry-run={dry_run.value}")
        argv += ["-f", str(file)]
        _show(argv)
        code = subprocess.run(argv, check=False).returncode
        if code != 0:
            typer.echo(f"error: kubectl apply failed on {file.name} (exit {code})", err=True)
            raise typer.Exit(code)


def deploy(
    targets: Targets = None,
    namespace: Namespace = _DEFAULTS.namespace,
    image: Image = DEFAULT_IMAGE,
    broker: BrokerName = _DEFAULTS.broker,
    kafka_bootstrap: KafkaBootstrap = _DEFAULTS.kafka_bootstrap,
    profile: ProfileOption = _DEFAULTS.profile,
    otel: OtelOption = _DEFAULTS.otel,
    alert_depth: AlertDepth = _DEFAULTS.alert_depth,
    mig_profile: MigProfile = _DEFAULTS.mig_profile,
    model_max_replicas: ModelMaxReplicas = None,
    model_image: ModelImage = None,
    model_server: Annotated[
        ModelServerChoice,
        typer.Option(
            help="The InferenceService applied: gpu (a MIG slice), cpu, or off (none, and no "
            "model Trigger or AGENTFN_INFERENCE_TARGETS)"
        ),
    ] = ModelServerChoice.gpu,
    kueue: Annotated[
        bool,
        typer.Option(
            "--kueue", help="Apply kserve/kueue/ and queue the model servers' pods through it"
        ),
    ] = False,
    dry_run: Annotated[
        DryRun | None,
        typer.Option("--dry-run", help="kubectl apply --dry-run=client|server: change nothing"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Keep the rendered files here [default: a temporary dir]"),
    ] = None,
    kubectl: Annotated[str, typer.Option(help="The kubectl to run: a name on PATH or a path")] = (
        "kubectl"
    ),
) -> None:
    """Render the agents' manifests (as `agentfn render` does) and kubectl apply them.

    The files are applied in the render's order, namespace first, to kubectl's current
    context, then the model server's (kserve/ beside DIR); every command is printed before it
    runs. With --out DIR the files stay there (written before kubectl is looked for), for
    review or to apply by hand.
    """
    names = list(targets or DEFAULT_TARGETS)
    options = options_or_exit(
        namespace=namespace,
        image=image,
        broker=broker,
        kafka_bootstrap=kafka_bootstrap,
        profile=profile,
        otel=otel,
        alert_depth=alert_depth,
        mig_profile=mig_profile,
        model_max_replicas=model_max_replicas,
        model_image=model_image,
        kueue=kueue,
    )
    agents = find_agents(names)
    servers = [] if model_server is ModelServerChoice.off else model_servers()
    try:
        rendered = render(agents, options, servers)
        kserve = render_kserve(agents, options, servers)
    except ValueError as error:
        raise _fail(str(error)) from None
    head = header(names, options, model_servers=bool(servers))
    with tempfile.TemporaryDirectory(prefix="agentfn-deploy-") as scratch:
        folder = out if out is not None else Path(scratch) / "knative"
        files = write(rendered, folder, head)
        typer.echo(f"rendered {', '.join(path.name for path in files)} into {folder}", err=True)
        if kserve:
            models = kserve_folder(folder, None)
            written = write(kserve, models, head, file_notes(servers, options))
            typer.echo(f"rendered {len(written)} files into {models}", err=True)
            # The quota before the pods it bounds; the queues before the pods that join them.
            chosen = [QUOTA_FILE, *([KUEUE_FILE] if kueue else [])]
            variant: Variant = "gpu" if model_server is ModelServerChoice.gpu else "cpu"
            chosen += [server_file(server, variant) for server in servers]
            files += [models / name for name in chosen]
        program = _kubectl(kubectl)
        context = _current_context(program)
        verb = f"dry run ({dry_run.value}) against" if dry_run is not None else "applying to"
        typer.echo(f"{verb} context {context}", err=True)
        _apply(program, files, dry_run, options)
