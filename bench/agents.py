"""The agent our side of the peer benchmarks serves: ``agentfn serve bench/agents.py:agent``.

One agent, one typed handler per hop of a chain (``bench.a`` -> ``bench.b`` -> ``bench.c``); each
does the shared handler work of :mod:`bench._harness.work` (dedupe check + counter in Redis,
through the agent's own Redis client ``ctx.redis``) and replies with the next hop's event while
the payload asks for more hops. A planned failure raises, which the runtime answers 500 and the
broker retries under the Trigger's delivery policy.
"""

from __future__ import annotations

from typing import Any

from agentfn.functions import Agent, Context
from pydantic import BaseModel
from redis.asyncio import BlockingConnectionPool, Redis

from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, run_async

#: Event type of each hop (1-based), as the Triggers filter them.
HOP_TYPES = ("bench.a", "bench.b", "bench.c")


class Work(BaseModel):
    run: str
    i: int
    hop: int = 1
    hops: int = 1
    fail: int = 0
    sent: int = 0


#: The agent's name: its Knative Service, and ``inprocess://bench-agent`` when hosted in-process.
AGENT_NAME = "bench-agent"

agent = Agent(AGENT_NAME, description="The peer benchmarks' handler: dedupe + count in Redis.")


#: Connections of the handler's own Redis pool: at least the broker's deliveries in flight
#: per subscriber (128), so no handler waits on or fails for a connection.
POOL_SIZE = 256


def _scripts(ctx: Context) -> tuple[Any, Any]:
    scripts = ctx.state.get("scripts")
    if scripts is None:
        url = ctx.settings.redis_url
        if url is None:
            raise RuntimeError("the bench agent needs --redis (its handler work is in Redis)")
        # Its own pool rather than ctx.redis: that client's pool is redis-py's default (100
        # connections, and the 101st concurrent call fails at once with "Too many
        # connections"), which the broker's 128 deliveries in flight per subscriber overrun.
        client = Redis(
            connection_pool=BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE)
        )
        scripts = ctx.state["scripts"] = (
            client.register_script(RECORD_LUA),
            client.register_script(ATTEMPT_LUA),
        )
    return scripts


async def _step(work: Work, ctx: Context) -> Work | None:
    record, attempt = _scripts(ctx)
    following = await run_async(record, attempt, work.model_dump())
    return None if following is None else Work.model_validate(following)


@agent.on(HOP_TYPES[0], emits={HOP_TYPES[1]: Work})
async def hop_a(work: Work, ctx: Context) -> Work | None:
    return await _step(work, ctx)


@agent.on(HOP_TYPES[1], emits={HOP_TYPES[2]: Work})
async def hop_b(work: Work, ctx: Context) -> Work | None:
    return await _step(work, ctx)


@agent.on(HOP_TYPES[2])
async def hop_c(work: Work, ctx: Context) -> None:
    await _step(work, ctx)
