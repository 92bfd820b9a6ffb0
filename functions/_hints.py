"""Deployment hints an agent declares: read by the manifest generator and the local runner.

They are validated when the agent is declared, so a bad bound fails at import, not at deploy.
Names follow Knative: ``min_scale``/``max_scale`` are ``autoscaling.knative.dev/min-scale`` and
``max-scale``, ``target_concurrency`` is ``autoscaling.knative.dev/target``,
``container_concurrency`` is the revision's hard limit, and :class:`Delivery` is a Trigger's
``spec.delivery`` (plus the Kafka broker's delivery-order annotation).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Delivery", "Resources", "Scaling"]

# Kubernetes resource quantity: a decimal number with an optional SI or binary suffix.
_QUANTITY: Final = re.compile(r"(?:\d+(?:\.\d+)?|\.\d+)(?:m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


class _Hint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Scaling(_Hint):
    """Autoscaling bounds. ``max_scale=0`` means unbounded; ``min_scale=0`` scales to zero.

    ``autoscaler`` is Knative's autoscaler class: ``kpa`` (the default) scales on requests in
    flight (``metric="concurrency"``) or per second (``"rps"``) and can scale to zero; ``hpa``
    is for steady load, scaling on CPU (``metric`` defaults to, and must be, ``"cpu"``) with
    Kubernetes' HorizontalPodAutoscaler, which never scales to zero (so ``min_scale >= 1``),
    and reads ``target_concurrency`` as the CPU utilisation to hold, in percent of the request.
    """

    min_scale: int = Field(default=0, ge=0)
    max_scale: int = Field(default=0, ge=0)
    target_concurrency: int | None = Field(default=None, gt=0)
    container_concurrency: int = Field(default=0, ge=0)
    metric: Literal["concurrency", "rps", "cpu"] = "concurrency"
    autoscaler: Literal["kpa", "hpa"] = "kpa"

    @model_validator(mode="before")
    @classmethod
    def _cpu_for_hpa(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("autoscaler") == "hpa" and "metric" not in data:
            return {**data, "metric": "cpu"}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.max_scale and self.max_scale < self.min_scale:
            raise ValueError(f"max_scale {self.max_scale} is below min_scale {self.min_scale}")
        if self.autoscaler == "hpa":
            if self.metric != "cpu":
                raise ValueError("the hpa autoscaler scales on cpu, not on " + self.metric)
            if self.min_scale < 1:
                raise ValueError("the hpa autoscaler never scales to zero: give min_scale >= 1")
            if self.target_concurrency is not None and self.target_concurrency > 100:
                raise ValueError("with hpa, target_concurrency is a CPU percentage (1-100)")
            return self
        if self.metric == "cpu":
            raise ValueError('metric "cpu" needs autoscaler="hpa" (kpa scales on requests)')
        if (
            self.container_concurrency
            and self.target_concurrency
            and self.target_concurrency > self.container_concurrency
        ):
            raise ValueError("target_concurrency exceeds the container_concurrency hard limit")
        return self


class Resources(_Hint):
    """Container requests and limits as Kubernetes quantities (``"250m"``, ``"512Mi"``)."""

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = Field(default=0, ge=0)

    @field_validator("cpu", "memory", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes resource quantity")
        return value


class Delivery(_Hint):
    """Delivery overrides of the agent's Triggers; ``None`` keeps the broker's default.

    ``timeout`` is also the handler's deadline here: the runtime answers 503 a little before
    the broker would give up waiting, so the attempt is retried rather than lost in flight.
    """

    retry: int | None = Field(default=None, ge=0)
    backoff_policy: Literal["exponential", "linear"] | None = None
    backoff_delay: timedelta | None = None
    timeout: timedelta | None = None
    ordering: Literal["unordered", "ordered"] | None = None
    dead_letter_sink: str | None = None

    @field_validator("backoff_delay", "timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    def handler_deadline(self) -> float | None:
        """Seconds the handler may run: the timeout less a margin for the answer to travel."""
        if self.timeout is None:
            return None
        seconds = self.timeout.total_seconds()
        return max(seconds - min(1.0, seconds * 0.1), seconds * 0.5)
