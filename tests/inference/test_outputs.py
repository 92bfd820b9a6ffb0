"""The embedding output's fast JSON conversion encodes exactly what kserve's own would.

``_NumericOutput`` replaces kserve's per-value ``.item()`` loop with ``ndarray.tolist()``; any
difference in what a client receives (values, parameters, raw bytes) fails here, for REST
(JSON and binary) and gRPC (``contents`` and raw), against kserve's ``InferOutput`` itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from agentfn.inference._model import OUTPUT, _NumericOutput
from kserve.errors import InferenceError
from kserve.protocol.infer_type import InferOutput, InferResponse, RequestedOutput

DIMENSIONS = 384


def embeddings(count: int) -> Any:
    values = np.random.default_rng(count).standard_normal((count, DIMENSIONS)).astype("float32")
    # Values JSON and float32 make tricky: the extremes, a subnormal, a negative zero.
    flat = values.reshape(-1)
    flat[:5] = [np.finfo("float32").max, np.finfo("float32").tiny, 1e-45, -0.0, 1 / 3]
    return values


def encoded(
    output_type: type[Any],
    values: Any,
    *,
    protocol: str,
    binary: bool,
    parameters: dict[str, Any] | None = None,
    requested: bool = False,
) -> Any:
    output = output_type(
        name=OUTPUT, shape=list(values.shape), datatype="FP32", parameters=parameters
    )
    output.set_data_from_numpy(values, binary_data=binary)
    response = InferResponse(
        response_id="r-1",
        model_name="all-minilm-l6-v2",
        infer_outputs=[output],
        from_grpc=protocol == "grpc",
        use_binary_outputs=binary,
        requested_outputs=(
            [RequestedOutput(name=OUTPUT, parameters={"binary_data": binary})]
            if requested
            else None
        ),
    )
    if protocol == "grpc":
        return response.to_grpc().SerializeToString(deterministic=True)
    return response.to_rest()


@pytest.mark.parametrize("count", [1, 32])
@pytest.mark.parametrize(
    ("protocol", "binary", "parameters", "requested"),
    [
        ("rest", False, None, False),
        ("rest", False, {"content_type": "embedding"}, False),
        ("rest", True, None, False),
        ("rest", False, None, True),
        ("rest", True, None, True),
        ("grpc", False, None, False),
        ("grpc", True, None, False),
    ],
)
def test_the_answer_is_the_one_kserve_would_encode(
    count: int,
    protocol: str,
    binary: bool,
    parameters: dict[str, Any] | None,
    requested: bool,
) -> None:
    values = embeddings(count)
    # Each side its own copy of the parameters: set_data_from_numpy changes them in place.
    ours, theirs = (
        encoded(
            output_type,
            values,
            protocol=protocol,
            binary=binary,
            parameters=None if parameters is None else dict(parameters),
            requested=requested,
        )
        for output_type in (_NumericOutput, InferOutput)
    )
    assert ours == theirs


def test_json_data_is_the_float32_values_as_python_floats() -> None:
    values = embeddings(2)
    output = _NumericOutput(name=OUTPUT, shape=[2, DIMENSIONS], datatype="FP32")
    output.set_data_from_numpy(values, binary_data=False)
    assert output.data == [float(value) for value in values.reshape(-1)]
    assert output._raw_data is None
    assert not output.parameters  # no binary_data_size left behind


def test_kserves_checks_still_refuse_a_wrong_array() -> None:
    output = _NumericOutput(name=OUTPUT, shape=[2, DIMENSIONS], datatype="FP32")
    with pytest.raises(InferenceError, match="datatype"):
        output.set_data_from_numpy(np.zeros((2, DIMENSIONS), "float64"), binary_data=False)
    with pytest.raises(InferenceError, match="shape"):
        output.set_data_from_numpy(np.zeros((3, DIMENSIONS), "float32"), binary_data=False)
