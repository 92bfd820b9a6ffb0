"""The planner: splits a document into chunks and fans one work item per chunk out."""

from __future__ import annotations

from datetime import timedelta

from agentfn.functions import Agent, Context, Delivery, Scaling
from agentfn.functions.agents import _text
from agentfn.functions.agents.models import (
    TASK_SUBMITTED,
    WORK_REQUESTED,
    TaskSubmitted,
    WorkRequested,
)

__all__ = ["agent", "function", "plan"]

agent = Agent(
    "planner",
    description="Splits a document into sentence-aligned chunks; one work item per chunk.",
    scaling=Scaling(min_scale=0, max_scale=5, target_concurrency=50),
    delivery=Delivery(
        retry=5,
        backoff_policy="exponential",
        backoff_delay=timedelta(milliseconds=200),
        timeout=timedelta(seconds=30),
    ),
)


@agent.on(TASK_SUBMITTED, emits={WORK_REQUESTED: WorkRequested})
async def plan(task: TaskSubmitted, ctx: Context) -> list[WorkRequested]:
    # A list is published to the broker (one event per chunk), each carrying the chain id
    # the aggregator joins on.
    chunks = _text.chunk(task.text, task.max_words_per_chunk)
    ctx.logger.info("planned %d chunks for %r", len(chunks), task.title or ctx.event.id)
    return [
        WorkRequested(
            title=task.title, index=i, total=len(chunks), text=text, top_terms=task.top_terms
        )
        for i, text in enumerate(chunks)
    ]


function = agent.http_function()
