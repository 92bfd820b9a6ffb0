"""Event types and payload models of the reference agents."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, Field

__all__ = [
    "EMBEDDING_COMPLETED",
    "EMBEDDING_REQUESTED",
    "FLAKY_COMPLETED",
    "FLAKY_REQUESTED",
    "MAX_EMBEDDING_TEXTS",
    "PLAN_DESCRIBED",
    "PLAN_REQUESTED",
    "REPORT_READY",
    "TASK_SUBMITTED",
    "WORK_COMPLETED",
    "WORK_REQUESTED",
    "EmbeddingCompleted",
    "EmbeddingRequested",
    "FlakyCompleted",
    "FlakyRequested",
    "PlanDescribed",
    "PlanRequested",
    "ReportReady",
    "Representative",
    "TaskSubmitted",
    "TermCount",
    "WorkCompleted",
    "WorkRequested",
]

TASK_SUBMITTED: Final = "agentfn.task.submitted"
WORK_REQUESTED: Final = "agentfn.work.requested"
WORK_COMPLETED: Final = "agentfn.work.completed"
REPORT_READY: Final = "agentfn.report.ready"
FLAKY_REQUESTED: Final = "agentfn.flaky.requested"
FLAKY_COMPLETED: Final = "agentfn.flaky.completed"
#: Asked of the planner over a unary gRPC call, never through the broker.
PLAN_REQUESTED: Final = "agentfn.plan.requested"
PLAN_DESCRIBED: Final = "agentfn.plan.described"
#: Answered by the model server's event path (``agentfn model serve``).
EMBEDDING_REQUESTED: Final = "agentfn.embedding.requested"
EMBEDDING_COMPLETED: Final = "agentfn.embedding.completed"
#: Texts one embedding request may carry: the model server's default request limit.
MAX_EMBEDDING_TEXTS: Final = 256


class TaskSubmitted(BaseModel):
    """A document to analyse."""

    text: str = Field(min_length=1)
    title: str = ""
    max_words_per_chunk: int = Field(default=120, ge=5, le=10_000)
    top_terms: int = Field(default=5, ge=1, le=50)


class WorkRequested(BaseModel):
    """One chunk of a document, ``index`` of ``total``."""

    title: str = ""
    index: int = Field(ge=0)
    total: int = Field(ge=1)
    text: str = Field(min_length=1)
    top_terms: int = Field(default=5, ge=1, le=50)


class PlanRequested(BaseModel):
    """What the planner planned for the chain ``chain_id``."""

    chain_id: str = Field(min_length=1)


class PlanDescribed(BaseModel):
    """The planner's record of a chain: ``chunks`` work items (``None``: no plan recorded)."""

    chain_id: str
    chunks: int | None = Field(default=None, ge=1)
    title: str = ""


class TermCount(BaseModel):
    term: str
    count: int = Field(ge=1)


class WorkCompleted(BaseModel):
    """The analysis of one chunk; ``terms`` holds every content word's count, most common first."""

    title: str = ""
    index: int = Field(ge=0)
    total: int = Field(ge=1)
    words: int = Field(ge=0)
    sentences: int = Field(ge=0)
    terms: list[TermCount]
    key_sentence: str
    top_terms: int = Field(default=5, ge=1, le=50)
    #: The chunk's sentences, in order: the aggregator embeds the document's to find its
    #: most representative one.
    sentence_texts: list[str] = Field(default_factory=list)


class Representative(BaseModel):
    """The document's sentence nearest the centroid of all its sentences' embeddings."""

    sentence: str
    #: Cosine similarity of its embedding to the centroid (1.0: the centroid itself).
    similarity: float = Field(ge=-1.0, le=1.0)
    #: The embedding model that judged it.
    model: str
    #: How many sentences it was chosen from.
    candidates: int = Field(ge=1)


class ReportReady(BaseModel):
    """The joined analysis of a whole document.

    ``representative`` is set where the aggregator is given an embedding model
    (``AGENTFN_INFERENCE_TARGETS``); without one it is ``None``.
    """

    title: str = ""
    chunks: int = Field(ge=1)
    words: int = Field(ge=0)
    sentences: int = Field(ge=0)
    top_terms: list[TermCount]
    summary: list[str]
    representative: Representative | None = None


class FlakyRequested(BaseModel):
    """Text to fingerprint, by an agent that fails the first ``fail_attempts`` deliveries."""

    text: str = Field(min_length=1)
    fail_attempts: int = Field(default=2, ge=0, le=20)
    failure: Literal["retryable", "crash"] = "retryable"


class FlakyCompleted(BaseModel):
    words: int = Field(ge=0)
    sha256: str
    attempts: int = Field(ge=1)


class EmbeddingRequested(BaseModel):
    """Texts to embed, in order; none may be empty (an empty text has no meaning to embed)."""

    texts: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=MAX_EMBEDDING_TEXTS
    )


class EmbeddingCompleted(BaseModel):
    """One embedding per requested text, in the request's order (L2-normalised: cosine = dot)."""

    model: str
    dimensions: int = Field(ge=1)
    embeddings: list[list[float]]
