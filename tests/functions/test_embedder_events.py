"""The model server's event path: ``agentfn model serve`` answering CloudEvents as an agent.

One real model server for the session (tests/_model_server.py); the embedded broker delivers to
it by the Trigger ``agentfn dev`` makes (the one ``agentfn render`` writes: the InferenceService
by ref, the v1 predict path), and its reply goes back through the broker to a second Trigger.
The model's work is checked on real output (similar sentences closer than unrelated ones), and
"no second model call" on the server's own batcher record (``/metrics``): the texts it embedded.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.server import BrokerServer
from agentfn.events import CloudEvent, extensions, from_http
from agentfn.functions._cli.dev import model_trigger_documents
from agentfn.functions.agents import embedder
from agentfn.functions.agents.models import EMBEDDING_COMPLETED, EMBEDDING_REQUESTED
from prometheus_client.parser import text_string_to_metric_families

from tests._model_server import DIMENSIONS, MODEL, ModelServer
from tests._servers import free_port
from tests._waiting import async_wait_until
from tests.functions._support import Sink, binary, serving, structured

pytestmark = pytest.mark.slow

SIMILAR = ("A cat is sleeping on the sofa.", "The kitten naps on the couch.")
UNRELATED = "Interest rates rose sharply in the third quarter."
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PREDICT = f"/v1/models/{MODEL}:predict"


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def request(texts: Sequence[str], **attributes: Any) -> CloudEvent:
    return CloudEvent.new(
        EMBEDDING_REQUESTED, "/tests/embedding", {"texts": list(texts)}, **attributes
    )


def texts_embedded(server: ModelServer) -> float:
    """Texts the server's batcher has sent to the model so far (its histogram's sum)."""
    return server.metric("agentfn_model_batch_texts_sum")


def duplicates(server: ModelServer) -> float:
    """Deliveries the embedder answered from its idempotency record (its runtime's counter)."""
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agentfn_events_duplicate_total"
        and sample.labels == {"agent": embedder.NAME, "type": EMBEDDING_REQUESTED}
    )


def reply(response: httpx.Response) -> CloudEvent:
    assert response.status_code == 200, (response.status_code, response.text)
    (event,) = from_http(list(response.headers.items()), response.content)
    return event


@pytest.fixture
async def client(model_server: ModelServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=model_server.http_url, timeout=30) as http:
        yield http


def assert_real_embeddings(event: CloudEvent, count: int) -> list[list[float]]:
    assert event.type == EMBEDDING_COMPLETED
    assert event.source == f"/agentfn/models/{MODEL}"
    data = event.data
    assert isinstance(data, dict)
    assert data["model"] == MODEL
    assert data["dimensions"] == DIMENSIONS
    embeddings: list[list[float]] = data["embeddings"]
    assert [len(e) for e in embeddings] == [DIMENSIONS] * count
    return embeddings


async def test_a_trigger_delivers_a_request_and_the_reply_reaches_the_next_trigger(
    model_server: ModelServer, tmp_path: Path
) -> None:
    completed = Sink()
    port = free_port()
    async with serving(completed) as sink_url:
        documents = [
            *model_trigger_documents(MODEL),
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Trigger",
                "metadata": {"name": "completed"},
                "spec": {
                    "broker": "default",
                    "filter": {"attributes": {"type": EMBEDDING_COMPLETED}},
                    "subscriber": {"uri": sink_url},
                },
            },
        ]
        (model_trigger,) = [d for d in documents if d["metadata"]["name"] != "completed"]
        # The subscriber is the InferenceService by ref, at kserve's v1 predict path.
        assert model_trigger["spec"]["subscriber"]["uri"] == PREDICT
        server = BrokerServer(
            parse_documents(documents),
            SqliteEventLog(tmp_path, fsync=False),
            services={embedder.NAME: model_server.http_url},
        )
        await server.start()
        await server.listen("127.0.0.1", port)
        try:
            sent = request(
                [*SIMILAR, UNRELATED], agentfnchainid="chain-e2e", traceparent=TRACEPARENT
            )
            headers, body = binary(sent)
            async with httpx.AsyncClient(timeout=10) as http:
                ingress = f"http://127.0.0.1:{port}/default/default"
                answer = await http.post(ingress, headers=headers, content=body)
                assert answer.status_code == 202
            await async_wait_until(lambda: completed.events, timeout=30, message="the reply")
        finally:
            await server.stop()

    (event,) = completed.events
    a, b, c = assert_real_embeddings(event, 3)
    assert cosine(a, b) > cosine(a, c) + 0.3
    assert cosine(a, b) > cosine(b, c) + 0.3
    # The reply continues the request's chain and trace (kserve alone drops both).
    assert event.attributes[extensions.CHAIN_ID] == "chain-e2e"
    assert str(event.attributes[extensions.TRACEPARENT]).split("-")[1] == TRACEPARENT.split("-")[1]
    assert completed.paths == ["/"]


@pytest.mark.parametrize("path", ["/", PREDICT])
async def test_binary_and_structured_mode_get_the_same_embeddings(
    client: httpx.AsyncClient, path: str
) -> None:
    # Structured without ``time`` (optional in the spec): kserve alone hands that envelope to
    # the model as its input.
    as_binary = request(SIMILAR)
    headers, body = structured(request(SIMILAR))
    envelope = json.loads(body)
    del envelope["time"]
    from_structured = reply(await client.post(path, headers=headers, content=json.dumps(envelope)))
    headers, body = binary(as_binary)
    from_binary = reply(await client.post(path, headers=headers, content=body))
    first = assert_real_embeddings(from_structured, 2)
    second = assert_real_embeddings(from_binary, 2)
    for x, y in zip(first, second, strict=True):
        assert cosine(x, y) > 0.9999
    assert from_structured.id != from_binary.id  # two events, two replies


async def test_a_duplicate_gets_the_same_reply_without_a_second_model_call(
    client: httpx.AsyncClient, model_server: ModelServer
) -> None:
    sent = request([*SIMILAR, UNRELATED])
    headers, body = binary(sent)
    before, answered_before = texts_embedded(model_server), duplicates(model_server)
    first = await client.post(PREDICT, headers=headers, content=body)
    after_first = texts_embedded(model_server)
    # The same id and source again, as a broker redelivers after a lost answer.
    again = await client.post(PREDICT, headers=headers, content=body)
    after_again = texts_embedded(model_server)

    assert after_first - before == 3
    assert after_again == after_first  # answered from the idempotency record
    assert duplicates(model_server) == answered_before + 1
    assert reply(again).id == reply(first).id
    assert again.content == first.content
    # A new id is a new event: the model runs for it.
    headers, body = binary(request([*SIMILAR, UNRELATED]))
    assert (await client.post(PREDICT, headers=headers, content=body)).status_code == 200
    assert texts_embedded(model_server) == after_again + 3


@pytest.mark.parametrize(
    ("change", "attribute"),
    [
        ({"ce-id": None}, "id"),
        ({"ce-source": None}, "source"),
        ({"ce-specversion": "2.0"}, "specversion"),
        ({"ce-type": ""}, "type"),
    ],
)
async def test_a_bad_event_answers_400_naming_the_attribute(
    client: httpx.AsyncClient,
    model_server: ModelServer,
    change: dict[str, str | None],
    attribute: str,
) -> None:
    headers, body = binary(request(SIMILAR))
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    before = texts_embedded(model_server)
    answer = await client.post(PREDICT, headers=headers, content=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["attribute"] == attribute
    assert texts_embedded(model_server) == before


async def test_a_structured_event_without_source_answers_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    headers, body = structured(request(SIMILAR))
    envelope = json.loads(body)
    del envelope["source"]
    answer = await client.post("/", headers=headers, content=json.dumps(envelope))
    assert answer.status_code == 400, answer.text
    assert answer.json()["attribute"] == "source"


@pytest.mark.parametrize(
    ("texts", "rule"),
    [([], "too_short"), ([""], "string_too_short"), (["x"] * 257, "too_long")],
)
async def test_a_bad_payload_answers_422_and_never_reaches_the_model(
    client: httpx.AsyncClient, model_server: ModelServer, texts: list[str], rule: str
) -> None:
    headers, body = binary(request(texts))
    before = texts_embedded(model_server)
    answer = await client.post(PREDICT, headers=headers, content=body)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert errors[0]["type"] == rule
    assert errors[0]["loc"][0] == "texts"
    assert texts_embedded(model_server) == before


async def test_plain_v1_predict_is_still_kserve_s(client: httpx.AsyncClient) -> None:
    # Not a CloudEvent: the same path answers kserve's v1 protocol, not the agent.
    answer = await client.post(PREDICT, json={"instances": list(SIMILAR)})
    assert answer.status_code == 200, answer.text
    assert "ce-id" not in answer.headers
    (a, b) = answer.json()["predictions"]
    assert cosine(a, b) > 0.5
