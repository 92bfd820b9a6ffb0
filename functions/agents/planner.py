"""The planner: splits a document into chunks and fans one work item per chunk out.

It also answers, over a unary gRPC call, how many chunks it planned for a chain
(``agentfn.plan.requested`` -> ``agentfn.plan.described``): the aggregator asks it to know
when a chain is complete. Each plan is recorded before its work items leave, in Redis when one
is configured (the planner's HTTP and gRPC Services are separate pods on Knative, and only
Redis is shared between them), else in this process (``agentfn dev`` serves both protocols
from one process).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Final, Protocol

from agentfn.functions import Agent, Context, Delivery, Scaling
from agentfn.functions.agents import _text
from agentfn.functions.agents.models import (
    PLAN_DESCRIBED,
    PLAN_REQUESTED,
    TASK_SUBMITTED,
    WORK_REQUESTED,
    PlanDescribed,
    PlanRequested,
    TaskSubmitted,
    WorkRequested,
)
from redis.asyncio import Redis

__all__ = ["InMemoryPlans", "Plans", "RedisPlans", "agent", "describe", "function", "plan"]

#: How long a plan is remembered: as long as the aggregator waits for a chain's parts.
PLAN_TTL_S: Final = 3600
#: Plans kept by one process, oldest dropped first.
_REMEMBERED: Final = 10_000


class Plans(Protocol):
    async def record(self, plan: PlanDescribed) -> None: ...

    async def find(self, chain_id: str) -> PlanDescribed | None: ...


class InMemoryPlans:
    """Plans of this process (a single replica serving HTTP and gRPC, local runs)."""

    def __init__(self, limit: int = _REMEMBERED) -> None:
        self._plans: OrderedDict[str, PlanDescribed] = OrderedDict()
        self._limit = limit

    async def record(self, plan: PlanDescribed) -> None:
        self._plans.pop(plan.chain_id, None)
        self._plans[plan.chain_id] = plan
        while len(self._plans) > self._limit:
            self._plans.popitem(last=False)

    async def find(self, chain_id: str) -> PlanDescribed | None:
        return self._plans.get(chain_id)


class RedisPlans:
    """Plans in Redis, read by whichever replica (or Service) answers the call."""

    def __init__(self, client: Redis, ttl_s: int = PLAN_TTL_S) -> None:
        self._client = client
        self._ttl_s = ttl_s

    async def record(self, plan: PlanDescribed) -> None:
        await self._client.set(_key(plan.chain_id), plan.model_dump_json(), ex=self._ttl_s)

    async def find(self, chain_id: str) -> PlanDescribed | None:
        found = await self._client.get(_key(chain_id))
        return None if found is None else PlanDescribed.model_validate_json(found)


def _key(chain_id: str) -> str:
    return f"agentfn:plan:{chain_id}"


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
    grpc=True,
)


def _plans(ctx: Context) -> Plans:
    plans = ctx.state.get("plans")
    if plans is None:
        plans = RedisPlans(ctx.redis) if ctx.redis is not None else InMemoryPlans()
        ctx.state["plans"] = plans
    return plans


@agent.on(TASK_SUBMITTED, emits={WORK_REQUESTED: WorkRequested})
async def plan(task: TaskSubmitted, ctx: Context) -> list[WorkRequested]:
    # A list is published to the broker (one event per chunk), each carrying the chain id
    # the aggregator joins on. The plan is recorded first: once a work item exists, the
    # planner can say how many there are.
    chunks = _text.chunk(task.text, task.max_words_per_chunk)
    await _plans(ctx).record(
        PlanDescribed(chain_id=ctx.chain_id, chunks=len(chunks), title=task.title)
    )
    ctx.logger.info("planned %d chunks for %r", len(chunks), task.title or ctx.event.id)
    return [
        WorkRequested(
            title=task.title, index=i, total=len(chunks), text=text, top_terms=task.top_terms
        )
        for i, text in enumerate(chunks)
    ]


@agent.on(PLAN_REQUESTED, emits={PLAN_DESCRIBED: PlanDescribed})
async def describe(request: PlanRequested, ctx: Context) -> PlanDescribed:
    """The recorded plan of a chain (a reply: asked over gRPC, answered in the call)."""
    found = await _plans(ctx).find(request.chain_id)
    return found if found is not None else PlanDescribed(chain_id=request.chain_id)


function = agent.http_function()
