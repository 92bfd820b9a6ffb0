"""``agentfn model``: the model server (``serve``) and the models it can serve (``list``).

``agentfn model serve`` is the InferenceService container's command: the model on
``kserve.ModelServer`` (OIP v2 over REST on ``--http-port`` and gRPC on ``--grpc-port``, kserve's
v1 API, ``/metrics``), and, unless ``--no-events``, the embedder agent
(:mod:`agentfn.functions.agents.embedder`) answering the CloudEvents a Trigger delivers to it,
with our runtime's semantics (idempotency, chain id, trace context) rather than kserve's.
Flags override the ``AGENTFN_MODEL_*`` variables (:class:`agentfn.inference.ModelSettings`).

This module imports neither kserve nor torch: ``serve`` loads them when it runs (with the
``inference`` extra), and ``list`` never does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from agentfn.inference import MODELS, MissingExtraError, ModelSettings
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

__all__ = ["model"]

console = Console(highlight=False)

model = typer.Typer(
    name="model",
    help="The model server: serve a model over OIP v2 (REST, gRPC) and CloudEvents; list models.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings(overrides: dict[str, Any]) -> ModelSettings:
    try:
        given = {name: value for name, value in overrides.items() if value is not None}
        settings = ModelSettings(**given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise typer.BadParameter(problems) from None
    if settings.name not in MODELS:
        raise typer.BadParameter(
            f"unknown model {settings.name!r}; the models are: {', '.join(sorted(MODELS))}",
            param_hint="--model",
        )
    return settings


@model.command("serve")
def serve(
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The model to serve (default: $AGENTFN_MODEL_NAME, else all-minilm-l6-v2)",
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="OIP REST, v1 and CloudEvents (default: $AGENTFN_MODEL_HTTP_PORT, else 8080)"
        ),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="OIP gRPC (default: $AGENTFN_MODEL_GRPC_PORT, else 8081)"),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto (CUDA when a GPU is visible), cpu, cuda or cuda:N "
            "(default: $AGENTFN_MODEL_DEVICE, else auto)"
        ),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Texts per model call at most (default: $AGENTFN_MODEL_MAX_BATCH_SIZE, else 32)"
        ),
    ] = None,
    max_batch_wait_ms: Annotated[
        float | None,
        typer.Option(
            help="How long a batch may wait, once the model is free, for as many requests "
            "as the last call held (default: $AGENTFN_MODEL_MAX_BATCH_WAIT_MS, else 5)"
        ),
    ] = None,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events",
            help="Answer CloudEvents (on / and v1 predict) with the embedder agent",
        ),
    ] = True,
) -> None:
    """Serve a model over OIP v2 REST and gRPC, kserve's v1 API and CloudEvents (blocks)."""
    settings = _settings(
        {
            "name": model_name,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "device": device,
            "max_batch_size": max_batch_size,
            "max_batch_wait_ms": max_batch_wait_ms,
        }
    )
    try:
        from agentfn.inference import EmbeddingModel
        from agentfn.inference import serve as serve_model

        embedding = EmbeddingModel(settings)
    except MissingExtraError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    events_app = _events_app(embedding, settings) if events else None
    serve_model(settings, events_app=events_app, model=embedding)


def _events_app(embedding: Any, settings: ModelSettings) -> Any:
    """The embedder agent's app around the model's batcher: the server's event path."""
    from agentfn.functions import RetryableError
    from agentfn.functions.agents.embedder import build
    from agentfn.inference import QueueFullError
    from prometheus_client import REGISTRY

    async def embed(texts: Sequence[str]) -> list[list[float]]:
        try:
            vectors: list[list[float]] = await embedding.embed(texts)
        except QueueFullError as error:
            # A full queue passes: the broker retries the event later (503, Retry-After).
            raise RetryableError(str(error), retry_after=1.0) from error
        return vectors

    agent = build(
        embed,
        model_name=embedding.name,
        max_texts=settings.max_request_items,
        max_text_chars=settings.max_text_chars,
    )
    app = agent.app(configure_tracing=True)
    # kserve serves prometheus_client's default registry on /metrics; the agent's runtime keeps
    # a registry of its own (handled, duplicates, failures by kind), shown there beside it.
    REGISTRY.register(app.metrics.registry)
    return app


@model.command("list")
def list_models() -> None:
    """The models this installation can serve, and whether their package is installed."""
    table = Table("name", "dimensions", "max tokens", "package", "installed")
    for spec in MODELS.values():
        installed = importlib.util.find_spec(spec.package) is not None
        table.add_row(
            spec.name,
            str(spec.dimensions),
            str(spec.max_seq_length),
            spec.package,
            "yes" if installed else "no (pip install 'agentfn[inference]')",
        )
    console.print(table)
