"""What an agent declares, as plain frozen data: read by the runtime, the CLI and manifests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agentfn.events import attribute_text
from agentfn.functions._hints import Delivery, Resources, Scaling
from pydantic import BaseModel

__all__ = ["AgentSpec", "HandlerSpec"]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler: the event types (and exact-match attribute filters) it consumes.

    ``input_model`` is ``None`` when the handler takes the raw :class:`agentfn.events.CloudEvent`.
    ``emits`` maps each event type it may emit to the payload model of that type.
    ``is_generator``: an async generator, whose yielded events stream out over a gRPC session
    and are published to the broker on every other path.
    """

    name: str
    function: Callable[..., Any]
    event_types: tuple[str, ...]
    input_model: type[BaseModel] | None
    emits: Mapping[str, type[BaseModel]]
    filters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    takes_context: bool = True
    is_async: bool = True
    is_generator: bool = False
    retry_on: tuple[type[BaseException], ...] = ()

    def matches(self, attributes: Mapping[str, object]) -> bool:
        """Whether an event with ``attributes`` passes this handler's attribute filters.

        Values compare in their canonical text, as the Trigger's filter compares them: an
        in-process Boolean extension is ``"true"``, never Python's ``"True"``.
        """
        for name, expected in self.filters.items():
            value = attributes.get(name)
            if value is None or attribute_text(value) != expected:
                return False
        return True

    def type_of(self, model: type[BaseModel]) -> str | None:
        """The declared event type a returned model is emitted as."""
        for event_type, declared in self.emits.items():
            if declared is model:
                return event_type
        for event_type, declared in self.emits.items():
            if issubclass(model, declared):
                return event_type
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (``agentfn agents --json``, manifests)."""
        return {
            "handler": self.name,
            "consumes": list(self.event_types),
            "filters": dict(self.filters),
            "input": None if self.input_model is None else self.input_model.__name__,
            "emits": {t: m.__name__ for t, m in self.emits.items()},
        }


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """Everything an agent declares.

    ``grpc``: peers call it synchronously over gRPC too (deployed as a second, h2c Service).
    """

    name: str
    source: str
    description: str
    handlers: tuple[HandlerSpec, ...]
    scaling: Scaling
    resources: Resources
    delivery: Delivery
    grpc: bool = False

    @property
    def consumes(self) -> tuple[str, ...]:
        """Every event type some handler consumes, in declaration order."""
        seen: dict[str, None] = {}
        for handler in self.handlers:
            seen.update(dict.fromkeys(handler.event_types))
        return tuple(seen)

    @property
    def emits(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for handler in self.handlers:
            seen.update(dict.fromkeys(handler.emits))
        return tuple(seen)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "handlers": [handler.describe() for handler in self.handlers],
            "consumes": list(self.consumes),
            "emits": list(self.emits),
            "scaling": self.scaling.model_dump(mode="json"),
            "resources": self.resources.model_dump(mode="json"),
            "delivery": self.delivery.model_dump(mode="json"),
            "grpc": self.grpc,
        }
