"""Model server settings, read once from the environment (``AGENTFN_MODEL_*``) or given by flags.

``agentfn model serve`` reads them once (its flags override them) and passes them down; no
other module of :mod:`agentfn.inference` reads these variables.

=====================================  ==========================================  ================
variable                               meaning                                     default
=====================================  ==========================================  ================
``AGENTFN_MODEL_NAME``                 the model served (a name of ``MODELS``)     all-minilm-l6-v2
``AGENTFN_MODEL_DEVICE``               ``auto`` (CUDA when visible), ``cpu``,      auto
                                       ``cuda`` or ``cuda:<index>``
``AGENTFN_MODEL_MAX_BATCH_SIZE``       texts per model call at most                32
``AGENTFN_MODEL_MAX_BATCH_WAIT_MS``    how long a batch may wait, once the model   5
                                       is free, for as many requests as the last
                                       call held (a lone request never waits)
``AGENTFN_MODEL_MAX_REQUEST_ITEMS``    texts per request at most (400 above)       256
``AGENTFN_MODEL_MAX_TEXT_CHARS``       characters per text at most (400 above)     20000
``AGENTFN_MODEL_MAX_QUEUED_ITEMS``     texts accepted and not yet answered at      4096
                                       most (503 / UNAVAILABLE above)
``AGENTFN_MODEL_HTTP_PORT``            OIP REST, v1 and CloudEvents                8080
``AGENTFN_MODEL_GRPC_PORT``            OIP gRPC                                    8081
=====================================  ==========================================  ================

The device is chosen by :func:`agentfn.inference.choose_device`, which also reads
``CUDA_VISIBLE_DEVICES`` (as torch does; it is the container runtime's, not ours).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ModelSettings"]


class ModelSettings(BaseSettings):
    """What the model server serves, on which device, and the limits of its batcher."""

    model_config = SettingsConfigDict(env_prefix="AGENTFN_MODEL_", frozen=True)

    name: str = "all-minilm-l6-v2"
    device: str = "auto"
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_batch_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    max_request_items: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    max_queued_items: int = Field(default=4096, ge=1)
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=8081, ge=0, le=65535)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"auto", "cpu", "cuda"}:
            return value
        if value.startswith("cuda:") and value[5:].isdigit():
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {value!r}")

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> Self:
        # A request the queue could never hold would be refused as "full" forever.
        if self.max_queued_items < self.max_request_items:
            raise ValueError(
                f"max_queued_items ({self.max_queued_items}) must be at least "
                f"max_request_items ({self.max_request_items})"
            )
        if self.http_port == self.grpc_port and self.http_port != 0:
            raise ValueError(f"http_port and grpc_port are both {self.http_port}")
        return self

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0
