"""A full queue answers 503 over REST and UNAVAILABLE over gRPC, and the server recovers.

A server of its own (``--max-batch-size 1``, a queue of one request's worth of texts), so a
request of 32 texts keeps it busy for 32 model calls: while the server's own
``agentfn_model_pending_texts`` says those texts are pending, the next request must be refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests._model_server import DIMENSIONS, MODEL, ModelServer, start_model_server
from tests._waiting import async_wait_until

pytestmark = pytest.mark.slow

LIMIT = 32
# About 60 tokens: 32 of them, one per model call, keep the server busy for a second or so.
TEXT = "The quick brown fox jumps over the lazy dog near the riverbank. " * 5


def v2_body(texts: list[str]) -> dict[str, object]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


@pytest.fixture(scope="module")
def busy_server() -> Iterator[ModelServer]:
    with start_model_server(
        ["--max-batch-size", "1", "--max-batch-wait-ms", "0", "--no-events"],
        env={
            "AGENTFN_MODEL_MAX_QUEUED_ITEMS": str(LIMIT),
            "AGENTFN_MODEL_MAX_REQUEST_ITEMS": str(LIMIT),
        },
    ) as server:
        yield server


async def test_a_full_queue_is_503_and_unavailable_then_the_server_recovers(
    busy_server: ModelServer,
) -> None:
    infer = f"/v2/models/{MODEL}/infer"
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [LIMIT], "data": [TEXT] * LIMIT}]
    }
    calls = busy_server.metric("agentfn_model_batch_texts_count")
    async with httpx.AsyncClient(base_url=busy_server.http_url, timeout=120) as http:
        filling = asyncio.ensure_future(http.post(infer, json=v2_body([TEXT] * LIMIT)))
        await async_wait_until(
            lambda: busy_server.metric("agentfn_model_pending_texts") == LIMIT,
            timeout=60,
            message="the first request's texts pending",
        )
        refused = await http.post(
            infer,
            json={**body, "inputs": [{**body["inputs"][0], "shape": [1], "data": ["one more"]}]},
        )
        with grpc.insecure_channel(busy_server.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[
                    {
                        "name": "text",
                        "datatype": "BYTES",
                        "shape": [1],
                        "contents": {"bytes_contents": [b"one more"]},
                    }
                ],
            )
            with pytest.raises(grpc.RpcError) as unavailable:
                stub.ModelInfer(request, timeout=30)
            filled = await filling
            assert filled.status_code == 200, filled.text
            assert filled.json()["outputs"][0]["shape"] == [LIMIT, DIMENSIONS]
            recovered = stub.ModelInfer(request, timeout=30)
    assert refused.status_code == 503, refused.text
    assert "AGENTFN_MODEL_MAX_QUEUED_ITEMS=32" in refused.json()["error"]
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the model's queue is full" in unavailable.value.details()
    assert list(recovered.outputs[0].shape) == [1, DIMENSIONS]
    # --max-batch-size 1: one model call per text.
    assert busy_server.metric("agentfn_model_batch_texts_count") == calls + LIMIT + 1
    assert busy_server.metric("agentfn_model_rejected_requests_total") == 2
