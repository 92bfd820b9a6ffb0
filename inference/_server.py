"""``serve``: the model on ``kserve.ModelServer``, with the CloudEvent requests routed aside.

kserve serves everything of the protocol: OIP v2 REST (``/v2/models/<name>/infer``, metadata,
``/v2/health/ready``), OIP v2 gRPC (``inference.GRPCInferenceService``), v1 (``/v1/models``,
``:predict``) and ``/metrics`` (prometheus_client's default registry, where the batcher's
metrics are). One worker process: the model and its batcher live in this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentfn.inference._optional import import_optional
from agentfn.inference._routing import CloudEventRouter
from agentfn.inference.settings import ModelSettings

from agentfn._asgi import ASGIApp

if TYPE_CHECKING:
    from agentfn.inference._model import EmbeddingModel

__all__ = ["serve"]


def serve(
    settings: ModelSettings,
    *,
    events_app: ASGIApp | None = None,
    model: EmbeddingModel | None = None,
) -> None:
    """Load the model and serve it until SIGTERM or SIGINT (blocks).

    ``events_app`` (an ASGI app, the embedder agent's) receives the CloudEvent requests
    (:class:`~agentfn.inference._routing.CloudEventRouter`); without it kserve's own CloudEvent
    handling answers them. ``model`` is an :class:`~agentfn.inference.EmbeddingModel` made
    beforehand (the CLI makes it first, to hand its ``embed`` to the events app); loaded here
    when it is not yet.
    """
    kserve = import_optional("kserve")
    from agentfn.inference import _model  # noqa: PLC0415 - imports kserve

    embedding = model if model is not None else _model.EmbeddingModel(settings)
    if not embedding.ready:
        embedding.load()
    if events_app is not None:
        # kserve's app is module-level and not started yet: middleware may still be added.
        kserve.model_server.app.add_middleware(
            CloudEventRouter, events_app=events_app, model_name=embedding.name
        )
    server = kserve.ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        enable_grpc=True,
        workers=1,
        # A log line per request costs more than an embedding of a short text.
        enable_latency_logging=False,
    )
    server.start([embedding])
