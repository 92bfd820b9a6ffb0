"""The reference agents doing real work: planner fans out, worker analyses, aggregator joins."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from agentfn.events import CloudEvent, extensions
from agentfn.functions import AgentApp, Settings
from agentfn.functions.agents import _text, aggregator, flaky, planner, worker
from agentfn.functions.agents.models import (
    FLAKY_REQUESTED,
    REPORT_READY,
    TASK_SUBMITTED,
    WORK_COMPLETED,
    WORK_REQUESTED,
)

from tests._servers import RedisServer
from tests.functions._support import Sink, asgi_client, event, post, reply_of, serving

DOCUMENT = """Knative Eventing delivers CloudEvents from brokers to subscribers. A trigger selects
events by their attributes. Each subscriber is a scale-to-zero service.

Agents are small services. An agent consumes events, does its work, and replies with new
events. Replies go back to the broker, which routes them to the next agents.

Retries happen when a subscriber fails. Idempotency makes retries safe: a duplicate event gets
the stored reply. Circuit breakers stop agents from hammering a failing service!

Tracing ties the chain together. One trace covers every agent that handled the events of one
request, from the planner through the workers to the aggregator."""


def test_chunks_keep_sentences_whole_and_every_word() -> None:
    chunks = _text.chunk(DOCUMENT, 25)
    assert all(len(c.split()) <= 25 for c in chunks)
    assert " ".join(chunks).split() == DOCUMENT.split()
    assert all(c.rstrip()[-1] in ".!" for c in chunks)  # no sentence cut in two here
    long_sentence = " ".join(f"w{i}" for i in range(23)) + "."
    assert [len(c.split()) for c in _text.chunk(long_sentence, 10)] == [10, 10, 3]


def test_terms_leave_stopwords_out_and_the_key_sentence_is_the_densest() -> None:
    counts = _text.term_counts("The agent and the agent's broker: agent, broker, retries.")
    assert counts == Counter({"agent": 2, "broker": 2, "agent's": 1, "retries": 1})
    text = "Brokers route events. Events reach agents through brokers and events. Cats sleep."
    assert _text.key_sentence(text) == "Events reach agents through brokers and events."


def document_words() -> list[str]:
    """DOCUMENT's words by the rule the agents document: letter and digit runs, lower-cased.

    Written out here rather than taken from ``_text``, so a change to the agents' tokenising
    shows up as a different report. (DOCUMENT has no apostrophes, which the rule keeps inside
    a word.)
    """
    return re.findall(r"[a-z0-9]+", DOCUMENT.lower())


def expected_top_terms(n: int) -> list[dict[str, Any]]:
    """The ``n`` most frequent content words, ties by term, as the aggregator documents.

    Content words: not one letter long and not in the agents' stopword list (their data).
    """
    counts = Counter(w for w in document_words() if w not in _text.STOPWORDS and len(w) > 1)
    ranked = sorted(counts.items(), key=lambda term_count: (-term_count[1], term_count[0]))
    return [{"term": term, "count": count} for term, count in ranked[:n]]


@pytest.fixture
async def broker() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    async with serving(sink) as url:
        yield sink, f"{url}/default/default"


async def deliver(app: AgentApp, events: list[CloudEvent]) -> list[httpx.Response]:
    async with asgi_client(app) as client:
        return [await post(client, e) for e in events]


async def test_the_chain_turns_a_document_into_a_report(broker: tuple[Sink, str]) -> None:
    sink, broker_url = broker
    settings = Settings(broker_url=broker_url)
    task = event(
        TASK_SUBMITTED,
        {"text": DOCUMENT, "title": "eventing", "max_words_per_chunk": 30, "top_terms": 3},
    )

    planned = await deliver(planner.agent.app(settings=settings), [task])
    assert planned[0].status_code == 202  # fan-out: published, no reply
    work = list(sink.events)
    expected_chunks = _text.chunk(DOCUMENT, 30)
    assert [w.type for w in work] == [WORK_REQUESTED] * len(expected_chunks)
    assert [w.data["text"] for w in work] == expected_chunks
    chain = {w.attributes[extensions.CHAIN_ID] for w in work}
    assert len(chain) == 1
    assert len({w.id for w in work}) == len(work)

    answers = await deliver(worker.agent.app(settings=settings), work)
    results = [reply_of(a) for a in answers]
    assert all(
        r.type == WORK_COMPLETED and r.attributes[extensions.CHAIN_ID] in chain for r in results
    )
    assert sum(r.data["words"] for r in results) == len(document_words())

    # Results arrive out of order, one of them twice (a lost ack).
    random.Random(7).shuffle(results)
    deliveries = [*results, results[0]]
    joined = await deliver(aggregator.agent.app(settings=settings), deliveries)
    # Only the last new part completes the join; the repeat is answered from its record.
    assert [a.status_code for a in joined] == [202] * (len(results) - 1) + [200, 202]
    report = reply_of(joined[-2])
    assert report.type == REPORT_READY
    assert report.attributes[extensions.CHAIN_ID] in chain
    assert report.data["words"] == len(document_words())
    assert report.data["chunks"] == len(expected_chunks)
    assert report.data["title"] == "eventing"
    assert report.data["top_terms"] == expected_top_terms(3)
    assert len(report.data["summary"]) == len(expected_chunks)


async def test_a_retried_planner_publishes_the_same_event_ids(broker: tuple[Sink, str]) -> None:
    sink, broker_url = broker
    sink.statuses = [202, 503]  # the second publish fails once: the planner answers 503
    app = planner.agent.app(settings=Settings(broker_url=broker_url))
    task = event(TASK_SUBMITTED, {"text": DOCUMENT, "max_words_per_chunk": 40})
    first, retried = await deliver(app, [task, task])
    assert first.status_code == 503
    assert first.json()["exception"] == "UnavailableError"
    assert retried.status_code == 202
    chunks = len(_text.chunk(DOCUMENT, 40))
    first_ids = [e.id for e in sink.events[: chunks - 1]]  # all but the refused one arrived
    retry_ids = [e.id for e in sink.events[chunks - 1 :]]
    # The retry sent every event again, under the ids of the first attempt, so the worker's
    # idempotency drops the repeats.
    assert len(retry_ids) == len(set(retry_ids)) == chunks
    assert set(first_ids) < set(retry_ids)


async def test_a_planner_without_a_broker_fails_loudly() -> None:
    (answer,) = await deliver(
        planner.agent.app(settings=Settings()), [event(TASK_SUBMITTED, {"text": "A b."})]
    )
    assert answer.status_code == 500
    assert "AGENTFN_BROKER_URL" in answer.json()["message"]


def results_for(text: str, chain: str) -> list[CloudEvent]:
    chunks = _text.chunk(text, 20)
    return [
        event(
            WORK_COMPLETED,
            worker.analyze(planner.WorkRequested(index=i, total=len(chunks), text=c)).model_dump(),
            agentfnchainid=chain,
        )
        for i, c in enumerate(chunks)
    ]


async def test_the_aggregator_joins_per_chain_and_only_the_completing_event_reports() -> None:
    one, two = results_for(DOCUMENT, "chain-1"), results_for(DOCUMENT[:300], "chain-2")
    app = aggregator.agent.app(settings=Settings(idempotency="off"))
    answers = await deliver(app, [*one[:-1], *two, one[-1], one[0], one[-1]])
    codes = [a.status_code for a in answers]
    # chain-2 completes with its last part; chain-1 with its own; a repeated early part adds
    # nothing; a redelivery of the completing part (no dedupe here) reports again.
    assert codes == [202] * (len(one) - 1) + [202] * (len(two) - 1) + [200, 200, 202, 200]
    reports = [reply_of(a) for a in answers if a.status_code == 200]
    assert [r.attributes[extensions.CHAIN_ID] for r in reports] == ["chain-2", "chain-1", "chain-1"]
    assert reports[1].data == reports[2].data


@pytest.mark.redis
async def test_aggregator_replicas_share_the_join_through_redis(redis_session: RedisServer) -> None:
    from agentfn.functions._idempotency import new_token

    chain = f"chain-{new_token()}"
    parts = results_for(DOCUMENT, chain)
    settings = Settings(redis_url=redis_session.url)
    replicas = [aggregator.agent.app(settings=settings) for _ in range(2)]
    answers = []
    for i, part in enumerate([*parts, parts[1]]):
        answers += await deliver(replicas[i % 2], [part])
    reports = [reply_of(a) for a in answers if a.status_code == 200]
    assert len(reports) == 1
    assert reports[0].data["words"] == len(_text.words(DOCUMENT))


@pytest.mark.parametrize(("failure", "status"), [("retryable", 503), ("crash", 500)])
async def test_flaky_fails_its_first_attempts_then_does_the_work(failure: str, status: int) -> None:
    app = flaky.agent.app(settings=Settings())
    request = event(
        FLAKY_REQUESTED, {"text": "Hello, flaky   world!", "fail_attempts": 2, "failure": failure}
    )
    answers = await deliver(app, [request] * 4)
    assert [a.status_code for a in answers] == [status, status, 200, 200]
    if failure == "retryable":
        assert answers[0].headers["retry-after"] == "1"
    done = reply_of(answers[2])
    assert done.data["attempts"] == 3
    assert done.data["words"] == 3
    assert answers[3].content == answers[2].content  # the duplicate is answered from the record
    import hashlib

    assert done.data["sha256"] == hashlib.sha256(b"hello flaky world").hexdigest()
