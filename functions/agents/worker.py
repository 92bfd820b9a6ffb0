"""The worker: analyses one chunk (counts, term frequencies, its key sentence, its sentences)."""

from __future__ import annotations

from datetime import timedelta

from agentfn.functions import Agent, Delivery, Resources, Scaling
from agentfn.functions.agents import _text
from agentfn.functions.agents.models import (
    WORK_COMPLETED,
    WORK_REQUESTED,
    TermCount,
    WorkCompleted,
    WorkRequested,
)

__all__ = ["agent", "analyze", "function"]

agent = Agent(
    "worker",
    description="Analyses one chunk: words, sentences, term frequencies, key sentence.",
    scaling=Scaling(min_scale=0, max_scale=20, target_concurrency=20),
    resources=Resources(cpu="250m", memory="256Mi"),
    delivery=Delivery(retry=5, backoff_policy="exponential", timeout=timedelta(seconds=30)),
)


@agent.on(WORK_REQUESTED, emits={WORK_COMPLETED: WorkCompleted})
def analyze(work: WorkRequested) -> WorkCompleted:
    # CPU-bound and synchronous: the runtime runs it in a worker thread.
    # Every term of the chunk, not just its top few: a term modest in each chunk can still top
    # the document, and the aggregator can only rank exactly what it is sent.
    top = _text.term_counts(work.text).most_common()
    sentences = _text.sentences(work.text)
    return WorkCompleted(
        title=work.title,
        index=work.index,
        total=work.total,
        words=len(_text.words(work.text)),
        sentences=len(sentences),
        terms=[TermCount(term=t, count=c) for t, c in top],
        key_sentence=_text.key_sentence(work.text),
        top_terms=work.top_terms,
        sentence_texts=sentences,
    )


function = agent.http_function()
