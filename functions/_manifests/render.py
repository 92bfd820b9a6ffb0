"""The whole render: which part goes to which file, and how the files are written.

:func:`render` is pure (agents, options and the model servers in, file name -> documents out,
in :data:`FILES` order); :func:`render_kserve` is the same for ``kserve/`` (the model servers'
InferenceServices, their GPU quota, the optional Kueue set); :func:`write` turns either into
YAML byte for byte the same on every run: agents sorted by name, keys in the order the parts
build them, labels and annotations sorted, no anchors, no timestamps, a header naming the
command and what it rendered (and, for some files, a note on how to apply them).
``agentfn render`` and the drift tests that keep ``knative/`` and ``kserve/`` in step both go
through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from agentfn.functions._manifests.compose import compose_document
from agentfn.functions._manifests.deadletters import deadletters_documents
from agentfn.functions._manifests.eventing import broker_documents, triggers_documents
from agentfn.functions._manifests.inference import (
    ModelServer,
    inference_targets,
    kserve_documents,
    model_triggers,
)
from agentfn.functions._manifests.namespace import namespace_documents
from agentfn.functions._manifests.observability import observability_documents
from agentfn.functions._manifests.options import RenderOptions
from agentfn.functions._manifests.redis import redis_documents
from agentfn.functions._manifests.services import services_documents

if TYPE_CHECKING:
    from agentfn.functions._loader import DiscoveredAgent

__all__ = [
    "COMPOSE_FILE",
    "FILES",
    "Rendered",
    "command_line",
    "dump",
    "header",
    "render",
    "render_compose",
    "render_kserve",
    "write",
]

Documents = list[dict[str, Any]]
Rendered = dict[str, Documents]
_Servers = Sequence[ModelServer]
_Part = Callable[[Sequence["DiscoveredAgent"], RenderOptions, _Servers], Documents]

COMPOSE_FILE: Final = "compose.yaml"


def _namespace(
    agents: Sequence[DiscoveredAgent], options: RenderOptions, servers: _Servers
) -> Documents:
    return namespace_documents(agents, options, servers)


def _agents(
    agents: Sequence[DiscoveredAgent], options: RenderOptions, servers: _Servers
) -> Documents:
    return services_documents(agents, options, inference=inference_targets(servers, options))


def _triggers(
    agents: Sequence[DiscoveredAgent], options: RenderOptions, servers: _Servers
) -> Documents:
    return [*triggers_documents(agents, options), *model_triggers(servers, options)]


def _agents_only(
    part: Callable[[Sequence[DiscoveredAgent], RenderOptions], Documents],
) -> _Part:
    def of(
        agents: Sequence[DiscoveredAgent], options: RenderOptions, servers: _Servers
    ) -> Documents:
        del servers  # the part is the same with or without model servers
        return part(agents, options)

    return of


#: File name -> the part that fills it, in the order a reader (and ``kubectl``) meets them.
FILES: Final[Mapping[str, _Part]] = {
    "namespace.yaml": _namespace,
    "redis.yaml": _agents_only(redis_documents),
    "observability.yaml": _agents_only(observability_documents),
    "kafka-broker.yaml": _agents_only(broker_documents),
    "dead-letters.yaml": _agents_only(deadletters_documents),
    "agents.yaml": _agents,
    "triggers.yaml": _triggers,
}


def _checked(agents: Iterable[DiscoveredAgent]) -> list[DiscoveredAgent]:
    ordered = sorted(agents, key=lambda found: found.agent.spec.name)
    names = [found.agent.spec.name for found in ordered]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"agent names must be unique (each names a Service): {repeated}")
    if not ordered:
        raise ValueError("no agents to render")
    return ordered


def render(
    agents: Iterable[DiscoveredAgent],
    options: RenderOptions,
    servers: Iterable[ModelServer] = (),
) -> Rendered:
    """Every file's documents; a part with nothing to say (``--otel off``) has no file.

    ``servers`` are the model servers whose InferenceServices :func:`render_kserve` writes:
    here they add their Triggers, the agents' ``AGENTFN_INFERENCE_TARGETS`` and their pods'
    share of the namespace's quota.
    """
    ordered = _checked(agents)
    models = list(servers)
    rendered: Rendered = {}
    for name, documents_of in FILES.items():
        documents = documents_of(ordered, options, models)
        if documents:
            rendered[name] = documents
    return rendered


def render_kserve(
    agents: Iterable[DiscoveredAgent], options: RenderOptions, servers: Iterable[ModelServer]
) -> Rendered:
    """``kserve/``: the model servers' InferenceServices (GPU and CPU), quota and Kueue set."""
    return kserve_documents(list(servers), _checked(agents), options)


def render_compose(
    agents: Iterable[DiscoveredAgent],
    options: RenderOptions,
    servers: Iterable[ModelServer] = (),
) -> Rendered:
    """``compose.yaml``: the same agents (and model servers) for Docker without Kubernetes."""
    return {COMPOSE_FILE: [compose_document(_checked(agents), options, servers)]}


def command_line(
    targets: Sequence[str],
    options: RenderOptions,
    *,
    compose: bool = False,
    model_servers: bool = True,
) -> str:
    """The ``agentfn render`` invocation that reproduces a render (defaults left out)."""
    words = ["agentfn", "render", *targets]
    defaults = RenderOptions()
    flags = {
        "namespace": "--namespace",
        "image": "--image",
        "broker": "--broker",
        "kafka_bootstrap": "--kafka-bootstrap",
        "profile": "--profile",
        "otel": "--otel",
        "alert_depth": "--alert-depth",
        "mig_profile": "--mig-profile",
        "model_max_replicas": "--model-max-replicas",
        "model_image": "--model-image",
        "kueue": "--kueue",
    }
    for field, flag in flags.items():
        value = getattr(options, field)
        if value == getattr(defaults, field):
            continue
        words += [flag] if isinstance(value, bool) else [flag, str(value)]
    if not model_servers:
        words.append("--no-model-servers")
    if compose:
        words.append("--compose")
    return " ".join(words)


def header(
    targets: Sequence[str],
    options: RenderOptions,
    *,
    compose: bool = False,
    model_servers: bool = True,
) -> str:
    """The comment every written file starts with: how it was made, and not to edit it."""
    command = command_line(targets, options, compose=compose, model_servers=model_servers)
    return f"# Generated by `{command}` from {', '.join(targets)}; do not edit by hand.\n"


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors: a dict two documents share is written out in each."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(documents: Iterable[Mapping[str, Any]]) -> str:
    """Documents as YAML, ``---`` between them, keys in the order they were built."""
    return "---\n".join(
        yaml.dump(
            dict(document),
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=4096,  # long values on one line: a folded scalar reads worse
        )
        for document in documents
    )


def write(
    rendered: Mapping[str, Iterable[Mapping[str, Any]]],
    out_dir: Path,
    head: str,
    notes: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write each file under ``out_dir`` (folders made if missing), ``head`` first, then the
    file's note (comment lines) if ``notes`` has one; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, documents in rendered.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + (notes or {}).get(name, "") + dump(documents), encoding="utf-8")
        written.append(path)
    return written
