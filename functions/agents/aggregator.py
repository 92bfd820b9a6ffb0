"""The aggregator: joins the chunk results of one chain into a report (fan-in).

How many results make a chain complete is the planner's to say: where the planner's gRPC
address is configured (``AGENTFN_RPC_TARGETS``: Knative, Compose, ``agentfn dev``) the
aggregator asks it over a unary call (``agentfn.plan.requested`` -> ``agentfn.plan.described``),
and its count wins over the ``total`` each result carries. A process remembers the answer per
chain (a plan never changes), so only the results that arrive before it is known ask. Without that
address, or when the planner has no record of the chain, the result's ``total`` is used.

Where an embedding model is configured (``all-minilm-l6-v2`` in ``AGENTFN_INFERENCE_TARGETS``:
``agentfn dev``, Compose, the render), the report also names its most representative sentence:
the one whose embedding is nearest (cosine) the centroid of all the document's sentences'
embeddings, asked of the model server with ``ctx.infer(...).embed(...)``. A configured model that
cannot be reached lets its retryable error through (503): the broker brings the completing result
back later, rather than the report silently going without. Without that address the report's
``representative`` is ``None``.

Results are keyed by the chain id and their index. Adding a result twice changes nothing, and
only the delivery that completed the set emits the report (a redelivery of that same event
emits it again, so a crash between join and reply does not lose the report). With Redis
configured the join lives there and every replica sees it; otherwise it is per process.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Protocol

from agentfn.functions import Agent, Context, Delivery, Scaling
from agentfn.functions.agents.models import (
    MAX_EMBEDDING_TEXTS,
    PLAN_REQUESTED,
    REPORT_READY,
    WORK_COMPLETED,
    PlanDescribed,
    PlanRequested,
    ReportReady,
    Representative,
    TermCount,
    WorkCompleted,
)
from redis.asyncio import Redis

__all__ = [
    "EMBEDDING_MODEL",
    "PLANNER",
    "InMemoryJoins",
    "Joins",
    "RedisJoins",
    "agent",
    "build_report",
    "function",
    "join",
    "most_representative",
    "planned_chunks",
    "representative_of",
]

#: How long a partial join waits for its missing parts.
JOIN_TTL_S: Final = 3600.0
#: The peer asked how many chunks a chain has (its name in ``AGENTFN_RPC_TARGETS``).
PLANNER: Final = "planner"
#: Chains whose planned count this process remembers (a plan never changes), oldest dropped.
_PLANS_REMEMBERED: Final = 10_000
#: The model that judges a report's most representative sentence (its name in
#: ``AGENTFN_INFERENCE_TARGETS``).
EMBEDDING_MODEL: Final = "all-minilm-l6-v2"
#: Sentences embedded per report at most; a longer document is sampled evenly across its length.
_MAX_CANDIDATES: Final = 2048
#: Characters of a sentence sent to the model: it reads only its first 256 tokens anyway, and the
#: server refuses a text over its own limit (20 000 by default) for good.
_MAX_SENTENCE_CHARS: Final = 2000


class Joins(Protocol):
    async def add(
        self, chain_id: str, index: int, total: int, part: str, claimant: str
    ) -> list[str] | None:
        """Record part ``index`` of ``total``; all parts in order if ``claimant`` completes."""
        ...


@dataclass
class _Join:
    parts: dict[int, str] = field(default_factory=dict)
    completer: str | None = None
    touched: float = 0.0


class InMemoryJoins:
    """Joins of this process (a single replica, local runs)."""

    def __init__(self, ttl_s: float = JOIN_TTL_S) -> None:
        self._joins: dict[str, _Join] = {}
        self._ttl_s = ttl_s

    async def add(
        self, chain_id: str, index: int, total: int, part: str, claimant: str
    ) -> list[str] | None:
        now = time.monotonic()
        if len(self._joins) > 1024:
            stale = [k for k, j in self._joins.items() if now - j.touched > self._ttl_s]
            for key in stale:
                del self._joins[key]
        join = self._joins.setdefault(chain_id, _Join())
        join.touched = now
        join.parts.setdefault(index, part)
        if len(join.parts) < total:
            return None
        if join.completer is None:
            join.completer = claimant
        if join.completer != claimant:
            return None
        return [join.parts[i] for i in range(total)]


_ADD: Final = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then return false end
redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5])
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return false end
return redis.call('HGETALL', KEYS[1])
"""


class RedisJoins:
    """Joins in Redis: one script call per result, shared by every replica."""

    def __init__(self, client: Redis, ttl_s: float = JOIN_TTL_S) -> None:
        self._add = client.register_script(_ADD)
        self._ttl_ms = int(ttl_s * 1000)

    async def add(
        self, chain_id: str, index: int, total: int, part: str, claimant: str
    ) -> list[str] | None:
        key = f"agentfn:join:{chain_id}"
        found = await self._add(
            keys=[key, key + ":completer"], args=[index, part, total, claimant, self._ttl_ms]
        )
        if not found:
            return None
        parts = {int(found[i]): found[i + 1].decode() for i in range(0, len(found), 2)}
        return [parts[i] for i in range(total)]


agent = Agent(
    "aggregator",
    description="Joins the chunk analyses of one chain (keyed by chain id) into a report.",
    scaling=Scaling(min_scale=0, max_scale=3, target_concurrency=100),
    delivery=Delivery(retry=5, backoff_policy="exponential", timeout=timedelta(seconds=10)),
)


def build_report(results: list[WorkCompleted]) -> ReportReady:
    terms: Counter[str] = Counter()
    for result in results:
        terms.update({t.term: t.count for t in result.terms})
    wanted = results[0].top_terms
    return ReportReady(
        title=results[0].title,
        chunks=len(results),
        words=sum(r.words for r in results),
        sentences=sum(r.sentences for r in results),
        # Ties broken by term so every replica builds the same report.
        top_terms=[
            TermCount(term=t, count=c)
            for t, c in sorted(terms.items(), key=lambda tc: (-tc[1], tc[0]))[:wanted]
        ],
        summary=[r.key_sentence for r in results if r.key_sentence],
    )


def most_representative(embeddings: Sequence[Sequence[float]]) -> tuple[int, float]:
    """The index of the vector nearest (cosine) the centroid of ``embeddings``, and its cosine.

    Ties go to the first. Zero vectors (and a zero centroid) count as similarity 0.
    """
    if not embeddings:
        raise ValueError("no embeddings to choose from")
    dimensions = len(embeddings[0])
    centroid = [0.0] * dimensions
    for vector in embeddings:
        if len(vector) != dimensions:
            raise ValueError(f"embeddings of {dimensions} and {len(vector)} dimensions")
        for i, value in enumerate(vector):
            centroid[i] += value
    centroid_norm = math.sqrt(sum(v * v for v in centroid))
    best, best_similarity = 0, -2.0
    for index, vector in enumerate(embeddings):
        norm = math.sqrt(sum(v * v for v in vector))
        dot = sum(a * b for a, b in zip(vector, centroid, strict=True))
        similarity = dot / (norm * centroid_norm) if norm and centroid_norm else 0.0
        if similarity > best_similarity:
            best, best_similarity = index, similarity
    # Rounding can carry a cosine a hair past 1.
    return best, max(-1.0, min(1.0, best_similarity))


def _candidates(sentences: list[str]) -> list[str]:
    if len(sentences) <= _MAX_CANDIDATES:
        return sentences
    step = len(sentences) / _MAX_CANDIDATES
    return [sentences[int(i * step)] for i in range(_MAX_CANDIDATES)]


async def representative_of(results: list[WorkCompleted], ctx: Context) -> Representative | None:
    """The document's most representative sentence, by the configured embedding model.

    ``None`` without the model's address or without sentences. The model's errors go through:
    unavailable (a :class:`RetryableError`) answers 503 and the broker retries.
    """
    if EMBEDDING_MODEL not in ctx.settings.inference_models:
        return None
    sentences = _candidates([s for r in results for s in r.sentence_texts if s.strip()])
    if not sentences:
        return None
    model = ctx.infer(EMBEDDING_MODEL)
    texts = [s[:_MAX_SENTENCE_CHARS] for s in sentences]
    embeddings: list[list[float]] = []
    for start in range(0, len(texts), MAX_EMBEDDING_TEXTS):
        embeddings.extend(await model.embed(texts[start : start + MAX_EMBEDDING_TEXTS]))
    index, similarity = most_representative(embeddings)
    ctx.logger.info(
        "chain %s: the most representative of %d sentences (%s, cosine %.3f to the centroid): %s",
        ctx.chain_id,
        len(sentences),
        EMBEDDING_MODEL,
        similarity,
        sentences[index],
    )
    return Representative(
        sentence=sentences[index],
        similarity=similarity,
        model=EMBEDDING_MODEL,
        candidates=len(sentences),
    )


def _joins(ctx: Context) -> Joins:
    joins = ctx.state.get("joins")
    if joins is None:
        joins = RedisJoins(ctx.redis) if ctx.redis is not None else InMemoryJoins()
        ctx.state["joins"] = joins
    return joins


async def planned_chunks(result: WorkCompleted, ctx: Context) -> int:
    """How many results complete this chain: the planner's answer, else ``result.total``."""
    target = ctx.settings.rpc_peers.get(PLANNER)
    if target is None:
        return result.total
    known: OrderedDict[str, int] = ctx.state.setdefault("planned", OrderedDict())
    chunks = known.get(ctx.chain_id)
    if chunks is not None:
        return chunks
    # An RpcUnavailableError (planner unreachable, or cold and past the deadline) is
    # retryable: this delivery answers 503 and the broker brings the result back later.
    reply = await ctx.rpc(PLANNER).call(PlanRequested(chain_id=ctx.chain_id), type=PLAN_REQUESTED)
    described = None if reply is None else PlanDescribed.model_validate(reply.data)
    if described is None or described.chunks is None:
        ctx.logger.warning(
            "the planner has no plan of chain %s; using the result's total %d",
            ctx.chain_id,
            result.total,
        )
        return result.total
    ctx.logger.info(
        "asked the planner over gRPC (%s): chain %s has %d chunks",
        target,
        ctx.chain_id,
        described.chunks,
    )
    known[ctx.chain_id] = described.chunks
    while len(known) > _PLANS_REMEMBERED:
        known.popitem(last=False)
    return described.chunks


@agent.on(WORK_COMPLETED, emits={REPORT_READY: ReportReady})
async def join(result: WorkCompleted, ctx: Context) -> ReportReady | None:
    total = await planned_chunks(result, ctx)
    if result.index >= total:
        # Not part of the plan: counting it could complete the chain without a planned part.
        ctx.logger.warning(
            "chain %s: result %d is beyond its %d chunks", ctx.chain_id, result.index, total
        )
        return None
    claimant = f"{ctx.event.source}\n{ctx.event.id}"
    parts = await _joins(ctx).add(
        ctx.chain_id, result.index, total, result.model_dump_json(), claimant
    )
    if parts is None:
        return None
    ctx.logger.info("chain %s complete: %d chunks", ctx.chain_id, total)
    results = [WorkCompleted.model_validate_json(p) for p in parts]
    report = build_report(results)
    report.representative = await representative_of(results, ctx)
    return report


function = agent.http_function()
