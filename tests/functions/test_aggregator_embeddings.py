"""The pipeline's use of embeddings: the report names the document's most representative sentence.

The aggregator embeds every sentence of the document with the real model server
(tests/_model_server.py, one per session) through ``ctx.infer`` and picks the sentence nearest
the centroid. The document below has an obvious centre: one sentence about cats *and* dogs
among sentences about one or the other, and a control without the model's address.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from agentfn.events import CloudEvent
from agentfn.functions import AgentApp, InferenceClient, Settings
from agentfn.functions.agents import _text, aggregator, planner, worker
from agentfn.functions.agents.models import (
    REPORT_READY,
    TASK_SUBMITTED,
    WORK_COMPLETED,
    WorkRequested,
)

from tests._model_server import MODEL, ModelServer
from tests._servers import RedisServer, free_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, asgi_client, binary, event, post, reply_of, serving
from tests.functions.test_e2e_broker import broker, publish

ROOT = Path(__file__).resolve().parents[2]
CENTRAL = "Cats and dogs are the most popular pets in many homes."
SENTENCES = (
    "The cat slept on the warm windowsill.",
    "Dogs love to chase balls in the park.",
    CENTRAL,
    "My dog barks at the mailman every morning.",
    "A kitten purrs when it is happy.",
    "Puppies need a lot of training and patience.",
)
DOCUMENT = " ".join(SENTENCES)
WORDS_PER_CHUNK = 12


def results(chain: str, text: str = DOCUMENT) -> list[CloudEvent]:
    """The workers' results for ``text`` chunked as the planner does, in chain ``chain``."""
    chunks = _text.chunk(text, WORDS_PER_CHUNK)
    return [
        event(
            WORK_COMPLETED,
            worker.analyze(WorkRequested(index=i, total=len(chunks), text=c)).model_dump(),
            agentfnchainid=chain,
        )
        for i, c in enumerate(chunks)
    ]


async def deliver(app: AgentApp, events: Sequence[CloudEvent]) -> list[httpx.Response]:
    async with asgi_client(app) as client:
        return [await post(client, e) for e in events]


def test_the_representative_is_the_vector_nearest_the_centroid() -> None:
    # The centroid of these is (2, 2, 0): the diagonal is on it, each axis 45 degrees off.
    index, similarity = aggregator.most_representative([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    assert index == 2
    assert similarity == pytest.approx(1.0)
    # Scale does not matter (cosine), ties go to the first, a zero vector counts as 0.
    index, similarity = aggregator.most_representative([[0, 0], [3, 0], [0, 3]])
    assert index == 1
    assert similarity == pytest.approx(2**-0.5)
    with pytest.raises(ValueError, match="dimensions"):
        aggregator.most_representative([[1.0, 0.0], [1.0]])
    with pytest.raises(ValueError, match="no embeddings"):
        aggregator.most_representative([])


def test_the_worker_sends_the_sentences_the_aggregator_chooses_from() -> None:
    sent = [s for r in results("c") for s in r.data["sentence_texts"]]  # type: ignore[index]
    assert sent == list(SENTENCES)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_the_report_names_the_central_sentence(
    model_server: ModelServer, protocol: str
) -> None:
    target = f"grpc://{model_server.grpc_target}" if protocol == "grpc" else model_server.http_url
    settings = Settings(idempotency="off", inference_targets=f"{MODEL}={target}")
    parts = results(f"chain-{protocol}")
    assert len(parts) > 1  # the sentences come from several chunks
    answers = await deliver(aggregator.agent.app(settings=settings), parts)
    assert [a.status_code for a in answers] == [202] * (len(parts) - 1) + [200]
    report = reply_of(answers[-1])
    assert report.type == REPORT_READY
    representative = report.data["representative"]  # type: ignore[index]
    assert representative["sentence"] == CENTRAL
    assert representative["model"] == MODEL
    assert representative["candidates"] == len(SENTENCES)
    # Exactly the centroid rule over the model's own embeddings of the same sentences.
    async with InferenceClient(MODEL, model_server.http_url) as model:
        index, similarity = aggregator.most_representative(await model.embed(list(SENTENCES)))
    assert SENTENCES[index] == CENTRAL
    assert representative["similarity"] == pytest.approx(similarity, rel=1e-6)


async def test_without_the_models_address_the_report_has_no_representative() -> None:
    # The control: the same results, no AGENTFN_INFERENCE_TARGETS.
    parts = results("chain-none")
    answers = await deliver(aggregator.agent.app(settings=Settings(idempotency="off")), parts)
    report = reply_of(answers[-1])
    assert report.data["representative"] is None  # type: ignore[index]
    assert report.data["summary"]  # type: ignore[index]


@pytest.mark.redis
async def test_an_unreachable_model_answers_503_and_the_retry_completes_the_report(
    model_server: ModelServer, redis_session: RedisServer
) -> None:
    from agentfn.functions._idempotency import new_token

    # Two replicas sharing the join (Redis): the first cannot reach the model, the broker's
    # retry of the completing result lands on the second, which can.
    nowhere = f"grpc://127.0.0.1:{free_port()}"
    down = Settings(
        redis_url=redis_session.url,
        inference_targets=f"{MODEL}={nowhere}",
        inference_timeout_s=2.0,
        inference_max_attempts=2,
    )
    up = Settings(
        redis_url=redis_session.url, inference_targets=f"{MODEL}=grpc://{model_server.grpc_target}"
    )
    parts = results(f"chain-{new_token()}")
    failed = await deliver(aggregator.agent.app(settings=down), parts)
    # Not a report without its representative: 503, the broker brings the result back later.
    assert [a.status_code for a in failed] == [202] * (len(parts) - 1) + [503]
    assert nowhere.removeprefix("grpc://") in failed[-1].text
    (retried,) = await deliver(aggregator.agent.app(settings=up), parts[-1:])
    report = reply_of(retried)
    assert report.data["representative"]["sentence"] == CENTRAL  # type: ignore[index]


@pytest.mark.slow
async def test_planner_workers_aggregator_through_the_broker_with_the_model(
    model_server: ModelServer, tmp_path: Path
) -> None:
    port = free_port()
    settings = Settings(
        broker_url=f"http://127.0.0.1:{port}/default/default",
        inference_targets=f"{MODEL}=grpc://{model_server.grpc_target}",
    )
    agents = {a: a.app(settings=settings) for a in (planner.agent, worker.agent, aggregator.agent)}
    reports = Sink()
    task = {"title": "pets", "text": DOCUMENT, "max_words_per_chunk": WORDS_PER_CHUNK}
    async with (
        serving(reports) as sink_url,
        broker(agents, {REPORT_READY: sink_url}, tmp_path, port) as ingress,
    ):
        await publish(ingress, event(TASK_SUBMITTED, task))
        await async_wait_until(lambda: reports.events, timeout=30, message="the report")
    for app in agents.values():
        await app.aclose()
    (report,) = reports.events
    assert report.data["chunks"] == len(_text.chunk(DOCUMENT, WORDS_PER_CHUNK))  # type: ignore[index]
    assert report.data["representative"]["sentence"] == CENTRAL  # type: ignore[index]


@pytest.mark.slow
async def test_agentfn_dev_starts_the_model_server_and_the_aggregator_uses_it(
    tmp_path: Path,
) -> None:
    port, model_port, model_grpc_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentfn.functions.cli", "dev", "agentfn.functions.agents",
        "--port", str(port), "--no-dlq", "--data-dir", str(tmp_path / "dev"),
        "--model-port", str(model_port), "--model-grpc-port", str(model_grpc_port),
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []

    async def collect(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            lines.append(line.decode(errors="replace"))

    collecting = asyncio.create_task(collect(process.stdout))
    try:

        def printed(pattern: str) -> re.Match[str] | None:
            """The first match in what dev printed (a long line wraps at a space: rejoined)."""
            assert process.returncode is None, "agentfn dev exited:\n" + "".join(lines)
            return re.search(pattern, " ".join(line.strip() for line in lines), re.MULTILINE)

        ingress = await async_wait_until(
            lambda: printed(r"broker ingress (http\S+)"), timeout=120, message="the ingress"
        )
        # Every agent was told where the model is; its Trigger goes to the event path.
        told = printed(r"AGENTFN_INFERENCE_TARGETS=(\S+)")
        assert told is not None, "".join(lines)
        assert told[1] == f"{MODEL}=grpc://127.0.0.1:{model_grpc_port}"
        assert printed(r"trigger embedder-\S+ -> InferenceService/embedder") is not None
        task = CloudEvent.new(
            TASK_SUBMITTED,
            "/tests",
            {"title": "pets", "text": DOCUMENT, "max_words_per_chunk": WORDS_PER_CHUNK},
        )
        async with httpx.AsyncClient(timeout=10) as client:
            headers, body = binary(task)
            response = await client.post(ingress[1], headers=headers, content=body)
            assert response.status_code == 202, (ingress[1], "".join(lines))
            ready = await client.get(f"http://127.0.0.1:{model_port}/v2/health/ready")
            assert ready.json() == {"ready": True}
        chosen = rf"the most representative of (\d+) sentences \({MODEL}, cosine [0-9.]+ to"
        found = await async_wait_until(
            lambda: printed(rf"{chosen} the centroid\): (.{{{len(CENTRAL)}}})"),
            timeout=60,
            message="the aggregator's choice",
        )
        assert int(found[1]) == len(SENTENCES)
        assert found[2] == CENTRAL
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(collecting, 30)
