"""The embedding model as a ``kserve.Model``: the Open Inference Protocol's tensor contract.

kserve serves the protocol (REST, gRPC, v1, metadata, health, error bodies); this class holds
what is the model's own: which tensors it takes and gives, the checks that refuse anything
else with a message naming the tensor and the rule (``kserve.errors.InvalidInput``, which kserve
answers 400 ``{"error": ...}`` over REST and ``INVALID_ARGUMENT`` over gRPC), and the batcher
every request goes through.

Input ``text``: ``BYTES``, shape ``[N]`` or ``[N, 1]``, ``1 <= N <= max_request_items``, each
text UTF-8 of at most ``max_text_chars`` characters. Output ``embedding``: ``FP32``, shape
``[N, dimensions]``, L2-normalised rows (cosine similarity is their dot product).

Importing this module imports kserve (and numpy); torch and the model load in :meth:`load`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from agentfn.inference._batching import BatcherMetrics, MicroBatcher, QueueFullError
from agentfn.inference._device import DeviceChoice, choose_device
from agentfn.inference._embedding import SentenceEncoder, load_torch
from agentfn.inference._models import ModelSpec, model_spec
from agentfn.inference._optional import import_optional
from agentfn.inference.settings import ModelSettings
from prometheus_client import REGISTRY, CollectorRegistry

if TYPE_CHECKING:
    import numpy.typing as npt
    from kserve.errors import ServerNotReady as _ServerNotReady
    from kserve.model import Model as _KServeModel
    from kserve.protocol.infer_type import InferOutput as _KServeInferOutput

__all__ = ["INPUT", "OUTPUT", "EmbeddingModel", "ModelOverloadedError"]

kserve = import_optional("kserve")
_errors = import_optional("kserve.errors")
np = import_optional("numpy")
InvalidInput = _errors.InvalidInput
if not TYPE_CHECKING:  # the base classes, imported through import_optional (clean sys.argv)
    _KServeModel = kserve.Model
    _KServeInferOutput = kserve.InferOutput
    _ServerNotReady = _errors.ServerNotReady

log = logging.getLogger(__name__)

#: The names of the one input and the one output tensor.
INPUT: Final = "text"
OUTPUT: Final = "embedding"


class ModelOverloadedError(_ServerNotReady):  # type: ignore[misc]  # kserve is untyped
    """The batcher's queue is full: kserve answers 503 over REST, ``UNAVAILABLE`` over gRPC."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        # kserve's REST handler answers str(error); its gRPC interceptor reads `.reason`, which
        # ServerNotReady itself lacks (the abort would fail with AttributeError: status UNKNOWN).
        self.error_msg = detail
        self.reason = detail


class _NumericOutput(_KServeInferOutput):  # type: ignore[misc]  # kserve is untyped
    """An ``InferOutput`` whose JSON/``contents`` data is made by ``ndarray.tolist()``.

    kserve turns a numeric tensor into that list one ``.item()`` per value, in Python, and does
    it again in ``to_rest``: for 32 embeddings (12,288 floats) 20 ms over REST and 11 ms over
    gRPC on two cores, as long as the model call for short texts. ``tolist()`` makes the same
    Python floats in C. kserve checks the datatype and shape; the raw bytes are kept only when
    the caller asked for binary data.
    """

    def set_data_from_numpy(self, output_tensor: Any, binary_data: bool = True) -> None:
        if binary_data or self.datatype == "BYTES":
            super().set_data_from_numpy(output_tensor, binary_data=binary_data)
            return
        parameters = self.parameters  # type: ignore[has-type]  # kserve is untyped
        super().set_data_from_numpy(output_tensor, binary_data=True)  # its checks, no loop
        self._raw_data = None
        self.parameters = parameters
        if parameters:
            parameters.pop("binary_data_size", None)
        self.data = output_tensor.reshape(-1).tolist()


def _shape_error(shape: object) -> Exception:
    return InvalidInput(  # type: ignore[no-any-return]
        f"input '{INPUT}' must have shape [N] or [N, 1] (N texts), got {shape}"
    )


class EmbeddingModel(_KServeModel):  # type: ignore[misc]  # kserve is untyped
    """Sentence embeddings over OIP v2 (REST and gRPC) and v1, and :meth:`embed` in-process."""

    def __init__(
        self,
        settings: ModelSettings,
        *,
        environ: Mapping[str, str] | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.spec: ModelSpec = model_spec(settings.name)
        super().__init__(self.spec.name)
        self.settings = settings
        self._environ = environ if environ is not None else os.environ
        self.device: DeviceChoice | None = None
        self._encoder: SentenceEncoder | None = None
        self.batcher: MicroBatcher[npt.NDArray[Any]] = MicroBatcher(
            self._encode,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_s,
            max_queued_items=settings.max_queued_items,
            metrics=BatcherMetrics(self.spec.name, registry),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> bool:
        """Choose the device (logged with its reason), load the model there, and warm it up."""
        torch = load_torch()
        self.device = choose_device(
            self.settings.device,
            environ=self._environ,
            cuda_available=torch.cuda.is_available,
            device_name=torch.cuda.get_device_name,
        )
        log.info(
            "model %s on %s (%s): %s",
            self.name,
            self.device.device,
            self.device.name,
            self.device.reason,
        )
        self._encoder = SentenceEncoder(self.spec, self.device.device)
        # The first call initialises kernels and allocators; a ready server answers at speed.
        # It runs on the batcher's thread, where every later call runs: a call on this thread
        # would leave torch a second OpenMP pool competing with the first.
        encoder = self._encoder
        self.batcher.run_on_worker(lambda: encoder.encode(["warm up"]))
        self.ready = True
        return True

    def _encode(self, texts: list[str]) -> list[npt.NDArray[Any]]:
        if self._encoder is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._encoder.encode(texts)

    # -- the tensor contract -----------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.spec.dimensions]}]

    def _check_count(self, count: int, what: str) -> None:
        if count < 1:
            raise InvalidInput(f"{what} holds no text; send 1 to {self.settings.max_request_items}")
        if count > self.settings.max_request_items:
            raise InvalidInput(
                f"{what} holds {count} texts; at most {self.settings.max_request_items} per "
                "request (AGENTFN_MODEL_MAX_REQUEST_ITEMS): split the batch"
            )

    def _check_texts(self, texts: Sequence[str], what: str) -> None:
        limit = self.settings.max_text_chars
        for index, text in enumerate(texts):
            if len(text) > limit:
                raise InvalidInput(
                    f"text {index} of {what} has {len(text)} characters; at most {limit} "
                    "(AGENTFN_MODEL_MAX_TEXT_CHARS)"
                )

    def texts_of(self, request: Any) -> list[str]:
        """The texts of a v2 ``InferRequest``, or ``InvalidInput`` naming what is wrong."""
        names = [tensor.name for tensor in request.inputs]
        if names != [INPUT]:
            raise InvalidInput(
                f"expected one input tensor named '{INPUT}' (BYTES, shape [N]), got {names}"
            )
        for output in request.request_outputs or ():
            if output.name != OUTPUT:
                raise InvalidInput(
                    f"unknown output '{output.name}' requested; the one output is '{OUTPUT}'"
                )
        tensor = request.inputs[0]
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"input '{INPUT}' must have datatype BYTES (UTF-8 texts), got {tensor.datatype}"
            )
        shape = list(tensor.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise _shape_error(shape)
        if not all(isinstance(size, int) and size >= 0 for size in shape):
            raise _shape_error(shape)
        self._check_count(shape[0], f"input '{INPUT}'")
        values = self._values(tensor)
        if len(values) != shape[0]:
            raise InvalidInput(
                f"input '{INPUT}' has shape {shape} but {len(values)} elements of data"
            )
        texts = [self._text(value, index) for index, value in enumerate(values)]
        self._check_texts(texts, f"input '{INPUT}'")
        return texts

    @staticmethod
    def _values(tensor: Any) -> list[Any]:
        if tensor._raw_data is not None:  # gRPC raw_input_contents
            try:
                return list(tensor.as_numpy().reshape(-1).tolist())
            except Exception as error:
                raise InvalidInput(
                    f"input '{INPUT}': raw contents are not a BYTES tensor of its shape: {error}"
                ) from error
        data = tensor.data
        if data is None:
            raise InvalidInput(f"input '{INPUT}' has no data")
        flat: list[Any] = []
        for item in data:
            if isinstance(item, list):  # shape [N, 1] sent nested
                flat.extend(item)
            else:
                flat.append(item)
        return flat

    @staticmethod
    def _text(value: Any, index: int) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidInput(f"text {index} of input '{INPUT}' is not UTF-8") from error
        raise InvalidInput(
            f"element {index} of input '{INPUT}' is {type(value).__name__}, not a string"
        )

    def instances_of(self, body: Any) -> list[str]:
        """The texts of a v1 body ``{"instances": [text, ...]}``."""
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput('expected a JSON object {"instances": [text, ...]}')
        self._check_count(len(instances), "'instances'")
        for index, text in enumerate(instances):
            if not isinstance(text, str):
                raise InvalidInput(f"instance {index} is {type(text).__name__}, not a string")
        self._check_texts(instances, "'instances'")
        return instances

    # -- serving -----------------------------------------------------------------------------

    async def _rows(self, texts: Sequence[str]) -> list[npt.NDArray[Any]]:
        try:
            return await self.batcher.submit(texts)
        except QueueFullError as error:
            raise ModelOverloadedError(str(error)) from error

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """v2 (an ``InferRequest``, REST or gRPC) or v1 (a dict of ``instances``)."""
        if isinstance(payload, kserve.InferRequest):
            texts = self.texts_of(payload)
            rows = await self._rows(texts)
            output = _NumericOutput(
                name=OUTPUT, shape=[len(rows), self.spec.dimensions], datatype="FP32"
            )
            output.set_data_from_numpy(np.stack(rows), binary_data=payload.use_binary_outputs)
            return kserve.InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=[output],
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )
        texts = self.instances_of(payload)
        rows = await self._rows(texts)
        return {"predictions": [row.tolist() for row in rows]}

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The embeddings of ``texts`` through the server's batcher (the event path's way in).

        Raises ``InvalidInput`` over the request limits and
        :class:`~agentfn.inference.QueueFullError` when the queue is full (retry later).
        """
        self._check_count(len(texts), "the request")
        self._check_texts(texts, "the request")
        return [row.tolist() for row in await self.batcher.submit(texts)]
