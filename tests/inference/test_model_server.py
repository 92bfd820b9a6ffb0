"""The real ``agentfn model serve`` over sockets: OIP v2 REST and gRPC, v1, errors, events.

One server for the session (the ``model_server`` fixture). Assertions are on the model's real
output: similar sentences are closer than unrelated ones, and both protocols give the same
vectors.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests._model_server import DIMENSIONS, MODEL, ModelServer

pytestmark = pytest.mark.slow

CAT, KITTEN, STOCKS = (
    "A cat sits on the mat",
    "A kitten rests on a rug",
    "Stock markets fell sharply",
)
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def http(model_server: ModelServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=model_server.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def stub(model_server: ModelServer) -> Iterator[Any]:
    with grpc.insecure_channel(model_server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def rows(flat: list[float], count: int) -> list[list[float]]:
    assert len(flat) == count * DIMENSIONS
    return [flat[i * DIMENSIONS : (i + 1) * DIMENSIONS] for i in range(count)]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def assert_meaningful(vectors: list[list[float]]) -> None:
    """Unit vectors, and the cat is nearer the kitten than the stock market."""
    for vector in vectors:
        assert math.isclose(math.sqrt(dot(vector, vector)), 1.0, abs_tol=1e-4)
    cat, kitten, stocks = vectors
    assert dot(cat, kitten) > dot(cat, stocks) + 0.3
    assert dot(cat, kitten) > dot(kitten, stocks) + 0.3


def v2_body(texts: Any, *, name: str = "text", datatype: str = "BYTES", shape: Any = None) -> Any:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatype,
                "shape": shape if shape is not None else [len(texts)],
                "data": texts,
            }
        ]
    }


def rest_infer(http: httpx.Client, body: Any) -> httpx.Response:
    return http.post(INFER, json=body)


def rest_embed(http: httpx.Client, texts: list[str]) -> list[list[float]]:
    response = rest_infer(http, v2_body(texts))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"]) == ("embedding", "FP32")
    assert output["shape"] == [len(texts), DIMENSIONS]
    return rows(output["data"], len(texts))


def grpc_request(texts: list[str], **overrides: Any) -> Any:
    tensor = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [len(texts)],
        "contents": {"bytes_contents": [text.encode() for text in texts]},
        **overrides,
    }
    return pb.ModelInferRequest(model_name=MODEL, inputs=[tensor])


def grpc_vectors(response: Any, count: int) -> list[list[float]]:
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == (
        "embedding",
        "FP32",
        [count, DIMENSIONS],
    )
    if response.raw_output_contents:
        raw = response.raw_output_contents[0]
        flat = list(struct.unpack(f"<{count * DIMENSIONS}f", raw))
    else:
        flat = list(output.contents.fp32_contents)
    return rows(flat, count)


def assert_still_serving(http: httpx.Client, stub: Any, server: ModelServer) -> None:
    assert server.process.poll() is None, server.log()
    assert len(rest_embed(http, ["still here"])) == 1
    assert len(grpc_vectors(stub.ModelInfer(grpc_request(["still here"]), timeout=30), 1)) == 1


# -- health, metadata, listing ------------------------------------------------------------------


def test_health_and_readiness(http: httpx.Client, stub: Any) -> None:
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready


def test_metadata_describes_the_tensors(http: httpx.Client, stub: Any) -> None:
    metadata = http.get(f"/v2/models/{MODEL}").json()
    assert metadata["name"] == MODEL
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    over_grpc = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in over_grpc.inputs] == [
        ("text", "BYTES", [-1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in over_grpc.outputs] == [
        ("embedding", "FP32", [-1, 384])
    ]


def test_v1_lists_the_model(http: httpx.Client) -> None:
    assert http.get("/v1/models").json() == {"models": [MODEL]}


def test_the_device_choice_is_logged(model_server: ModelServer) -> None:
    assert f"model {MODEL} on " in model_server.log()


# -- inference ----------------------------------------------------------------------------------


def test_rest_infer_gives_meaningful_embeddings(http: httpx.Client) -> None:
    assert_meaningful(rest_embed(http, [CAT, KITTEN, STOCKS]))


def test_rest_infer_takes_shape_n_by_1(http: httpx.Client) -> None:
    texts = [CAT, KITTEN, STOCKS]
    response = rest_infer(http, v2_body([[text] for text in texts], shape=[3, 1]))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [3, DIMENSIONS]
    flat = rows(output["data"], 3)
    for got, want in zip(flat, rest_embed(http, texts), strict=True):
        assert max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-5


def test_rest_binary_tensor_data_carries_the_same_float32_values(http: httpx.Client) -> None:
    """OIP's binary extension: raw little-endian float32 after the JSON part, not JSON numbers."""
    texts = [CAT, KITTEN, STOCKS]
    body = {**v2_body(texts), "parameters": {"binary_data_output": True}}
    response = rest_infer(http, body)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    (output,) = json.loads(response.content[:length])["outputs"]
    assert "data" not in output
    raw = response.content[length:]
    assert output["parameters"]["binary_data_size"] == len(raw) == 3 * DIMENSIONS * 4
    vectors = rows(list(struct.unpack(f"<{3 * DIMENSIONS}f", raw)), 3)
    # The JSON answer's numbers are these float32 values, exactly.
    assert vectors == rest_embed(http, texts)


def test_grpc_model_infer_gives_the_same_embeddings(http: httpx.Client, stub: Any) -> None:
    texts = [CAT, KITTEN, STOCKS]
    request = grpc_request(texts)
    request.id = "grpc-1"
    response = stub.ModelInfer(request, timeout=30)
    assert (response.model_name, response.id) == (MODEL, "grpc-1")
    vectors = grpc_vectors(response, 3)
    assert_meaningful(vectors)
    for got, want in zip(vectors, rest_embed(http, texts), strict=True):
        assert max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-5


def test_grpc_raw_input_contents(stub: Any) -> None:
    """What tritonclient sends: BYTES as 4-byte little-endian lengths and the UTF-8 bytes."""
    texts = [CAT, KITTEN, STOCKS]
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[{"name": "text", "datatype": "BYTES", "shape": [3]}],
        raw_input_contents=[raw],
    )
    assert_meaningful(grpc_vectors(stub.ModelInfer(request, timeout=30), 3))


def test_v1_predict(http: httpx.Client) -> None:
    response = http.post(f"/v1/models/{MODEL}:predict", json={"instances": [CAT, KITTEN, STOCKS]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [len(p) for p in predictions] == [DIMENSIONS] * 3
    assert_meaningful(predictions)


def test_requests_go_through_the_batcher(http: httpx.Client, model_server: ModelServer) -> None:
    calls = model_server.metric("agentfn_model_batch_texts_count")
    texts = model_server.metric("agentfn_model_batch_texts_sum")
    rest_embed(http, ["one", "two", "three"])
    assert model_server.metric("agentfn_model_batch_texts_count") == calls + 1
    assert model_server.metric("agentfn_model_batch_texts_sum") == texts + 3


# -- bad input ----------------------------------------------------------------------------------

TOO_MANY = ["x"] * 257

BAD_REST = {
    "wrong name": (v2_body(["a"], name="input"), "expected one input tensor named 'text'"),
    "two inputs": (
        {"inputs": [v2_body(["a"])["inputs"][0], v2_body(["b"], name="more")["inputs"][0]]},
        "got ['text', 'more']",
    ),
    "wrong datatype": (
        v2_body([1.0], datatype="FP32"),
        "input 'text' must have datatype BYTES (UTF-8 texts), got FP32",
    ),
    "wrong shape": (v2_body(["a", "b"], shape=[1, 2]), "must have shape [N] or [N, 1]"),
    "shape and data disagree": (v2_body(["a", "b"], shape=[3]), "has shape [3] but 2 elements"),
    "no text": (v2_body([], shape=[0]), "input 'text' holds no text"),
    "too many texts": (
        v2_body(TOO_MANY),
        "input 'text' holds 257 texts; at most 256 per request (AGENTFN_MODEL_MAX_REQUEST_ITEMS)",
    ),
    "text too long": (
        v2_body(["ok", "y" * 20_001]),
        "text 1 of input 'text' has 20001 characters; at most 20000 (AGENTFN_MODEL_MAX_TEXT_CHARS)",
    ),
    "unknown output": (
        {**v2_body(["a"]), "outputs": [{"name": "logits"}]},
        "unknown output 'logits' requested",
    ),
}


@pytest.mark.parametrize(("body", "message"), BAD_REST.values(), ids=BAD_REST.keys())
def test_bad_rest_input_is_400_with_the_oip_error_body(
    http: httpx.Client, stub: Any, model_server: ModelServer, body: Any, message: str
) -> None:
    response = rest_infer(http, body)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]
    assert_still_serving(http, stub, model_server)


BAD_V1 = {
    "not instances": ({"inputs": ["a"]}, 'expected a JSON object {"instances": [text, ...]}'),
    "not a string": ({"instances": ["a", 3]}, "instance 1 is int, not a string"),
    "too many": ({"instances": TOO_MANY}, "'instances' holds 257 texts; at most 256"),
}


@pytest.mark.parametrize(("body", "message"), BAD_V1.values(), ids=BAD_V1.keys())
def test_bad_v1_input_is_400(http: httpx.Client, body: Any, message: str) -> None:
    response = http.post(f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


BAD_GRPC = {
    "wrong name": (grpc_request(["a"], name="input"), "expected one input tensor named 'text'"),
    "wrong datatype": (
        grpc_request(["a"], datatype="FP32", contents={"fp32_contents": [1.0]}),
        "must have datatype BYTES",
    ),
    "wrong shape": (grpc_request(["a", "b"], shape=[2, 2]), "must have shape [N] or [N, 1]"),
    "too many texts": (
        grpc_request(TOO_MANY),
        "holds 257 texts; at most 256 per request (AGENTFN_MODEL_MAX_REQUEST_ITEMS)",
    ),
    "not utf-8": (
        grpc_request(["a"], contents={"bytes_contents": [b"\xff\xfe"]}),
        "text 0 of input 'text' is not UTF-8",
    ),
}


@pytest.mark.parametrize(("request_", "message"), BAD_GRPC.values(), ids=BAD_GRPC.keys())
def test_bad_grpc_input_is_invalid_argument(
    http: httpx.Client, stub: Any, model_server: ModelServer, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request_, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()
    assert_still_serving(http, stub, model_server)


# -- the event path -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", f"/v1/models/{MODEL}:predict"])
def test_a_cloudevent_is_answered_by_the_embedder_not_kserve(
    http: httpx.Client, model_server: ModelServer, path: str
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-source": "/tests/model-server",
        "ce-type": "agentfn.embedding.requested",
        "content-type": "application/json",
    }
    body = json.dumps({"texts": [CAT, KITTEN, STOCKS]})
    calls = model_server.metric("agentfn_model_batch_texts_count")
    reply = http.post(path, content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["ce-type"] == "agentfn.embedding.completed"  # kserve's would be
    data = reply.json()  # io.kserve.inference.response
    assert (data["model"], data["dimensions"]) == (MODEL, DIMENSIONS)
    assert_meaningful(data["embeddings"])
    # A redelivery (same source and id) gets the same reply and costs no model call.
    again = http.post(path, content=body, headers=headers)
    assert (again.status_code, again.json()) == (200, data)
    assert model_server.metric("agentfn_model_batch_texts_count") == calls + 1
