"""Inference: the model server (``agentfn model serve``) and loading its heavy dependencies.

The server runs a sentence-embedding model (:data:`MODELS`; all-MiniLM-L6-v2, shipped inside
a PyPI package, nothing fetched at run time) on ``kserve.ModelServer``, which serves the Open
Inference Protocol v2 over REST and gRPC and kserve's v1 API. Its tensor contract: input
``text`` (``BYTES``, shape ``[N]``), output ``embedding`` (``FP32``, ``[N, 384]``, L2-normalised).
Requests arriving together share model calls (:class:`MicroBatcher`); the device is chosen by
:func:`choose_device` (CUDA when one is visible, honouring ``CUDA_VISIBLE_DEVICES``); the
settings are :class:`ModelSettings` (``AGENTFN_MODEL_*``).

KServe, PyTorch and sentence-transformers are optional extras (``agentfn[inference]``, or
``agentfn[inference-client]`` for kserve alone); :func:`import_optional` loads them with an error
naming the extra. Importing this package imports none of them: :class:`EmbeddingModel` and
:func:`serve` load kserve when first looked up, torch and the model when the model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentfn.inference._batching import (
    BatchDecision,
    BatcherMetrics,
    BatchReason,
    MicroBatcher,
    QueueFullError,
)
from agentfn.inference._device import DeviceChoice, DeviceUnavailableError, choose_device
from agentfn.inference._models import MODELS, ModelSpec, UnknownModelError, model_spec
from agentfn.inference._optional import EXTRAS, MissingExtraError, import_optional
from agentfn.inference.settings import ModelSettings

if TYPE_CHECKING:
    from agentfn.inference._model import EmbeddingModel, ModelOverloadedError
    from agentfn.inference._server import serve

__all__ = [
    "EXTRAS",
    "MODELS",
    "BatchDecision",
    "BatchReason",
    "BatcherMetrics",
    "DeviceChoice",
    "DeviceUnavailableError",
    "EmbeddingModel",
    "MicroBatcher",
    "MissingExtraError",
    "ModelOverloadedError",
    "ModelSettings",
    "ModelSpec",
    "QueueFullError",
    "UnknownModelError",
    "choose_device",
    "import_optional",
    "model_spec",
    "serve",
]

#: Names whose modules import kserve: loaded on first lookup, not with this package.
_LAZY = {
    "EmbeddingModel": "agentfn.inference._model",
    "ModelOverloadedError": "agentfn.inference._model",
    "serve": "agentfn.inference._server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - only a lazy lookup needs it

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
