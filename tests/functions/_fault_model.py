"""A kserve model server whose model fails on demand: the inference client's fault tests.

Run as ``python -m tests.functions._fault_model HTTP_PORT GRPC_PORT LOG``; serves the model
``faulty`` over OIP REST and gRPC with kserve's own ModelServer (its handlers map the errors:
ServerNotReady is 503 / UNAVAILABLE, InvalidInput 400 / INVALID_ARGUMENT).

The first text of the ``text`` input says what to do; every call appends one JSON line to
LOG (that text and the traceparent it came with) before acting, so a test counts the calls
the server saw:

- ``ok ...``: answers ``embedding`` FP32 ``[N, 3]``, row i ``[len(text_i), i, 1]``.
- ``down:K:KEY``: the first K calls with this text are not ready (503 / UNAVAILABLE), then
  ``ok``.
- ``busy:S:K:KEY``: the first K answer 503 with ``Retry-After: S`` (gRPC: UNAVAILABLE).
- ``gateway:K:KEY``: the first K answer 502 (gRPC: UNAVAILABLE).
- ``broken``: 500 (gRPC: INTERNAL).
- ``bad``: InvalidInput with a message naming the tensor.
- ``slow``: never answers.
- ``wrong-name`` / ``wrong-type`` / ``wrong-shape``: an answer outside the contract.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from agentfn.inference import import_optional

kserve = import_optional("kserve")
errors = import_optional("kserve.errors")
np = import_optional("numpy")

NAME = "faulty"


class NotReady(errors.ServerNotReady):  # type: ignore[misc]
    """ServerNotReady as kserve's gRPC interceptor can map it: in kserve 0.21 it reads
    ``reason``, which ServerNotReady lacks (the call would end UNKNOWN, not UNAVAILABLE)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.reason = self.error_msg


class Busy(NotReady):
    """Not ready, asking for a delay: 503 with Retry-After over REST."""

    def __init__(self, seconds: str) -> None:
        super().__init__(f"busy, retry in {seconds}s")
        self.seconds = seconds


class Gateway(NotReady):
    """What a proxy answers for a server it could not reach: 502 over REST."""


class FaultyModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, log: Path) -> None:
        super().__init__(NAME)
        self.log = log
        self.seen: Counter[str] = Counter()
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        texts = [
            t.decode() if isinstance(t, bytes) else str(t)
            for t in payload.inputs[0].as_numpy().ravel().tolist()
        ]
        first = texts[0]
        with self.log.open("a") as out:
            trace = (headers or {}).get("traceparent")
            out.write(json.dumps({"text": first, "traceparent": trace}) + "\n")
        self.seen[first] += 1
        kind, *rest = first.split(":")
        if kind == "down" and self.seen[first] <= int(rest[0]):
            raise NotReady("warming up")
        if kind == "busy" and self.seen[first] <= int(rest[1]):
            raise Busy(rest[0])
        if kind == "gateway" and self.seen[first] <= int(rest[0]):
            raise Gateway("upstream unreachable")
        if kind == "broken":
            raise RuntimeError("the model fell over")
        if kind == "bad":
            raise errors.InvalidInput("input 'text': 'bad' is refused by this model")
        if kind == "slow":
            await asyncio.Event().wait()
        rows = np.array([[len(t), i, 1] for i, t in enumerate(texts)], dtype=np.float32)
        name, datatype = "embedding", "FP32"
        if kind == "wrong-name":
            name = "vectors"
        if kind == "wrong-type":
            rows, datatype = rows.astype(np.float64), "FP64"
        if kind == "wrong-shape":
            rows = rows.reshape(-1)
        output = kserve.InferOutput(name=name, shape=list(rows.shape), datatype=datatype)
        output.set_data_from_numpy(rows, binary_data=False)
        return kserve.InferResponse(
            response_id=payload.id or "", model_name=NAME, infer_outputs=[output]
        )


def main() -> None:
    http_port, grpc_port, log = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    fastapi = import_optional("kserve.model_server")
    responses = sys.modules["fastapi.responses"]

    async def busy(_: Any, error: Busy) -> Any:
        return responses.JSONResponse(
            status_code=503, content={"error": str(error)}, headers={"Retry-After": error.seconds}
        )

    async def gateway(_: Any, error: Gateway) -> Any:
        return responses.JSONResponse(status_code=502, content={"error": str(error)})

    fastapi.app.add_exception_handler(Busy, busy)
    fastapi.app.add_exception_handler(Gateway, gateway)
    server = kserve.ModelServer(
        http_port=http_port, grpc_port=grpc_port, enable_grpc=True, workers=1, grace_period=1
    )
    server.start([FaultyModel(log)])


if __name__ == "__main__":
    main()
