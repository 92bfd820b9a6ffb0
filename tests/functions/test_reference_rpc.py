"""The reference agents' gRPC use: the aggregator asks the planner how many chunks a chain has.

The planner is served by the real gRPC server on loopback (and, at the end, by ``agentfn dev``
as processes); the aggregator calls it through ``ctx.rpc`` with the address
``AGENTFN_RPC_TARGETS`` gives it. The work results here say ``total: 1`` while the planner
planned more: a report after the first result would mean the planner was not asked.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from agentfn.events import CloudEvent, extensions
from agentfn.functions import AgentApp, Settings
from agentfn.functions._grpc import GrpcServer
from agentfn.functions._rpc import AgentClient
from agentfn.functions.agents import _text, aggregator, planner, worker
from agentfn.functions.agents.models import (
    PLAN_DESCRIBED,
    PLAN_REQUESTED,
    REPORT_READY,
    TASK_SUBMITTED,
    WORK_COMPLETED,
    WorkRequested,
)

from tests._servers import RedisServer, free_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, asgi_client, binary, event, post, reply_of, serving

ROOT = Path(__file__).resolve().parents[2]
TEXT = (
    "Agents coordinate through events. Some questions cannot wait for the broker. "
    "The aggregator asks the planner directly. The planner remembers every plan it made."
)


@pytest.fixture
async def broker() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    async with serving(sink) as url:
        yield sink, f"{url}/default/default"


@pytest.fixture
async def planner_rpc(broker: tuple[Sink, str]) -> AsyncIterator[tuple[AgentApp, GrpcServer]]:
    """The planner served over gRPC on loopback (its fan-out to the sink)."""
    app = planner.agent.app(settings=Settings(broker_url=broker[1]))
    server = GrpcServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield app, server
    finally:
        await server.aclose()
        await app.aclose()


async def plan_a_task(app: AgentApp, sink: Sink, words: int = 8) -> tuple[str, list[CloudEvent]]:
    """Deliver a task to the planner over HTTP: its chain id and the work it fanned out."""
    async with asgi_client(app) as client:
        task = event(TASK_SUBMITTED, {"title": "rpc", "text": TEXT, "max_words_per_chunk": words})
        assert (await post(client, task)).status_code == 202
    work = list(sink.events)
    (chain,) = {str(w.attributes[extensions.CHAIN_ID]) for w in work}
    return chain, work


def results_claiming_one(work: list[CloudEvent]) -> list[CloudEvent]:
    """The workers' results of ``work``, each claiming its chain has a single chunk."""
    results = []
    for item in work:
        done = worker.analyze(WorkRequested.model_validate(item.data)).model_copy(
            update={"total": 1}
        )
        chain = item.attributes[extensions.CHAIN_ID]
        results.append(event(WORK_COMPLETED, done.model_dump(), agentfnchainid=chain))
    return results


async def deliver(app: AgentApp, events: list[CloudEvent]) -> list[httpx.Response]:
    async with asgi_client(app) as client:
        return [await post(client, e) for e in events]


async def test_the_planner_answers_a_plan_request_over_grpc_from_its_record(
    broker: tuple[Sink, str], planner_rpc: tuple[AgentApp, GrpcServer]
) -> None:
    app, server = planner_rpc
    chain, work = await plan_a_task(app, broker[0])
    chunks = len(_text.chunk(TEXT, 8))
    assert len(work) == chunks > 1
    async with AgentClient(server.address) as client:
        reply = await client.call(planner.PlanRequested(chain_id=chain), type=PLAN_REQUESTED)
        unknown = await client.call(planner.PlanRequested(chain_id="never"), type=PLAN_REQUESTED)
    assert reply is not None
    assert reply.type == PLAN_DESCRIBED
    assert reply.data == {"chain_id": chain, "chunks": chunks, "title": "rpc"}
    assert unknown is not None
    assert unknown.data == {"chain_id": "never", "chunks": None, "title": ""}


async def test_the_aggregator_completes_a_chain_by_the_planners_count(
    broker: tuple[Sink, str],
    planner_rpc: tuple[AgentApp, GrpcServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, server = planner_rpc
    chain, work = await plan_a_task(app, broker[0])
    results = results_claiming_one(work)
    monkeypatch.setenv("AGENTFN_RPC_TARGETS", f"planner={server.address}")
    joined = await deliver(aggregator.agent.app(settings=Settings(idempotency="off")), results)
    # The planner said len(work): every result but the last one waits for the rest.
    assert [a.status_code for a in joined] == [202] * (len(work) - 1) + [200]
    report = reply_of(joined[-1])
    assert report.type == REPORT_READY
    assert report.attributes[extensions.CHAIN_ID] == chain
    assert report.data["chunks"] == len(work)
    assert report.data["words"] == len(_text.words(TEXT))


async def test_without_the_planners_address_the_results_total_decides(
    broker: tuple[Sink, str],
    planner_rpc: tuple[AgentApp, GrpcServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The control of the test above: the same results, nobody asked, the first one completes.
    _, work = await plan_a_task(planner_rpc[0], broker[0])
    monkeypatch.delenv("AGENTFN_RPC_TARGETS", raising=False)
    joined = await deliver(
        aggregator.agent.app(settings=Settings(idempotency="off")), results_claiming_one(work)
    )
    assert joined[0].status_code == 200
    assert reply_of(joined[0]).data["chunks"] == 1


async def test_a_chain_the_planner_never_planned_falls_back_to_the_results_total(
    planner_rpc: tuple[AgentApp, GrpcServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFN_RPC_TARGETS", f"planner={planner_rpc[1].address}")
    parts = _text.chunk(TEXT, 8)
    results = [
        event(
            WORK_COMPLETED,
            worker.analyze(WorkRequested(index=i, total=len(parts), text=text)).model_dump(),
            agentfnchainid="unplanned",
        )
        for i, text in enumerate(parts)
    ]
    joined = await deliver(aggregator.agent.app(settings=Settings(idempotency="off")), results)
    assert [a.status_code for a in joined] == [202] * (len(parts) - 1) + [200]
    assert reply_of(joined[-1]).data["chunks"] == len(parts)


async def test_an_unreachable_planner_makes_the_result_retryable_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("AGENTFN_RPC_TARGETS", f"planner={nowhere}")
    settings = Settings(idempotency="off", rpc_timeout_s=2.0, rpc_max_attempts=2)
    (result,) = results_claiming_one(
        [
            event(
                "agentfn.work.requested",
                {"index": 0, "total": 1, "text": "A b c."},
                agentfnchainid="c",
            )
        ]
    )
    (answer,) = await deliver(aggregator.agent.app(settings=settings), [result])
    # 503: the broker brings the result back later, when the planner may be up.
    assert answer.status_code == 503
    assert nowhere in answer.text


@pytest.mark.redis
async def test_a_planner_replica_answers_from_the_plan_another_recorded_in_redis(
    broker: tuple[Sink, str], redis_session: RedisServer
) -> None:
    # Knative's two Services of the planner share nothing but Redis.
    settings = Settings(broker_url=broker[1], redis_url=redis_session.url)
    http_app, rpc_app = planner.agent.app(settings=settings), planner.agent.app(settings=settings)
    chain, work = await plan_a_task(http_app, broker[0])
    server = GrpcServer(rpc_app, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with AgentClient(server.address) as client:
            reply = await client.call(planner.PlanRequested(chain_id=chain), type=PLAN_REQUESTED)
    finally:
        await server.aclose()
        await rpc_app.aclose()
        await http_app.aclose()
    assert reply is not None
    assert reply.data["chunks"] == len(work)


def test_peers_parse_and_a_malformed_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(rpc_targets="").rpc_peers == {}
    assert Settings(rpc_targets=" a=h:1 , b=http://b-rpc.ns.svc.cluster.local ,").rpc_peers == {
        "a": "h:1",
        "b": "http://b-rpc.ns.svc.cluster.local",
    }
    with pytest.raises(ValueError, match="'b' is not NAME=TARGET"):
        Settings(rpc_targets="a=h:1,b")
    monkeypatch.setenv("AGENTFN_RPC_TARGETS", "a=h:1")
    assert Settings().rpc_peers == {"a": "h:1"}


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


@pytest.mark.slow
async def test_agentfn_dev_serves_the_planners_grpc_and_the_aggregator_asks_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentfn.functions.cli", "dev", "agentfn.functions.agents",
        "--port", str(port), "--no-dlq", "--no-model", "--data-dir", str(tmp_path / "dev"),
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    collecting = asyncio.create_task(_collect(process.stdout, lines))
    try:

        def printed(pattern: str) -> re.Match[str] | None:
            assert process.returncode is None, "agentfn dev exited:\n" + "".join(lines)
            return next(filter(None, (re.search(pattern, line) for line in lines)), None)

        ingress = await async_wait_until(
            lambda: printed(r"^broker ingress (http\S+)"), timeout=60, message="the ingress"
        )
        grpc_at = printed(r"grpc://(127\.0\.0\.1:\d+)")
        assert grpc_at is not None, "".join(lines)
        task = CloudEvent.new(
            TASK_SUBMITTED, "/tests", {"title": "t", "text": TEXT, "max_words_per_chunk": 8}
        )
        async with httpx.AsyncClient(timeout=5) as client:
            headers, body = binary(task)
            response = await client.post(ingress[1], headers=headers, content=body)
            assert response.status_code == 202, (ingress[1], "".join(lines))
        chunks = len(_text.chunk(TEXT, 8))
        asked = await async_wait_until(
            lambda: printed(
                rf"asked the planner over gRPC \({re.escape(grpc_at[1])}\): chain (\S+) has "
                rf"{chunks} chunks"
            ),
            timeout=60,
            message="the aggregator's call",
        )
        await async_wait_until(
            lambda: printed(rf"chain {re.escape(asked[1])} complete: {chunks} chunks"),
            timeout=60,
            message="the report",
        )
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(collecting, 30)
