"""The embedder: the model server's event path, an agent answering embedding requests.

``agentfn model serve`` builds it around its model (:func:`build`) and routes the CloudEvent
requests it receives (on ``/`` and ``/v1/models/<name>:predict``) to this agent's app, so a
Trigger can deliver ``agentfn.embedding.requested`` to an InferenceService and get
``agentfn.embedding.completed`` back as the reply, which the broker publishes. kserve alone
would answer such a request with an ``io.kserve.inference.response`` of a fresh id and none of
the request's chain or trace; through this agent the reply carries our runtime's semantics: 400
naming the attribute for a bad event, 422 for a bad payload, the same reply to a duplicate (same
``source`` and ``id``) without a second model call, the chain id and trace context of the
request, metrics on ``/metrics``.

The model is reached through ``embed`` only (the server's micro-batcher), so this module imports
nothing heavy: a broker or a plain agent can load it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Annotated

from agentfn.functions import Agent, Delivery, Resources, Scaling
from agentfn.functions.agents.models import (
    EMBEDDING_COMPLETED,
    EMBEDDING_REQUESTED,
    MAX_EMBEDDING_TEXTS,
    EmbeddingCompleted,
    EmbeddingRequested,
)
from pydantic import Field, create_model

__all__ = ["NAME", "Embed", "build"]

#: The agent's name (its Knative resources, its metrics' ``agent`` label).
NAME = "embedder"

#: What the agent calls to embed texts: one vector per text, in order.
Embed = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


def _request_model(max_texts: int, max_text_chars: int | None) -> type[EmbeddingRequested]:
    """:class:`EmbeddingRequested` with the server's own limits, so breaking one answers 422."""
    if max_texts == MAX_EMBEDDING_TEXTS and max_text_chars is None:
        return EmbeddingRequested
    text = Annotated[str, Field(min_length=1, max_length=max_text_chars)]
    return create_model(
        "EmbeddingRequested",
        __base__=EmbeddingRequested,
        __doc__=EmbeddingRequested.__doc__,
        texts=(list[text], Field(min_length=1, max_length=max_texts)),
    )


def build(
    embed: Embed,
    *,
    model_name: str,
    max_texts: int = MAX_EMBEDDING_TEXTS,
    max_text_chars: int | None = None,
) -> Agent:
    """An agent answering ``agentfn.embedding.requested`` with ``embed``'s vectors.

    ``model_name`` is what the reply's ``model`` says; ``max_texts`` and ``max_text_chars`` are
    the server's request limits (a request over them answers 422 naming the field, and never
    reaches the model). ``embed`` raising a :class:`~agentfn.functions.RetryableError` (the
    server's queue is full) answers 503 with ``Retry-After``: the broker brings the event back
    later. Its source is ``/agentfn/models/<model_name>``.
    """
    if max_texts < 1:
        raise ValueError(f"max_texts must be at least 1, got {max_texts}")
    if max_text_chars is not None and max_text_chars < 1:
        raise ValueError(f"max_text_chars must be at least 1, got {max_text_chars}")
    agent = Agent(
        NAME,
        description=f"Embeds texts with {model_name} (the model server's event path).",
        source=f"/agentfn/models/{model_name}",
        scaling=Scaling(min_scale=0, max_scale=4, target_concurrency=32),
        resources=Resources(cpu="1", memory="2Gi"),
        delivery=Delivery(retry=5, backoff_policy="exponential", timeout=timedelta(seconds=30)),
    )
    request_model = _request_model(max_texts, max_text_chars)

    @agent.on(
        EMBEDDING_REQUESTED,
        emits={EMBEDDING_COMPLETED: EmbeddingCompleted},
        input=request_model,
    )
    async def embed_texts(request: EmbeddingRequested) -> EmbeddingCompleted:
        vectors = await embed(request.texts)
        if len(vectors) != len(request.texts):
            # A model answering for the wrong texts must not be replied (and stored) as theirs.
            raise RuntimeError(
                f"{model_name} returned {len(vectors)} embeddings for {len(request.texts)} texts"
            )
        return EmbeddingCompleted(model=model_name, dimensions=len(vectors[0]), embeddings=vectors)

    return agent
