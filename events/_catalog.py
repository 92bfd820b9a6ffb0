"""Typed payloads: which pydantic model the ``data`` of each event ``type`` must satisfy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from agentfn.events._event import JSON_CONTENT_TYPE, CloudEvent
from pydantic import BaseModel

__all__ = ["EventCatalog", "UnknownEventTypeError"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class UnknownEventTypeError(KeyError):
    """No model is registered for an event type."""


class EventCatalog:
    """A registry of event types and their payload models, owned by whoever needs one.

    There is no module-level catalog: an agent, a test or a schema export builds its own, so
    two agents in one process never see each other's types.
    """

    def __init__(self) -> None:
        self._models: dict[str, type[BaseModel]] = {}

    def register(self, event_type: str, model: type[BaseModel]) -> None:
        """Bind ``event_type`` to ``model``; rebinding a type to another model is an error."""
        known = self._models.get(event_type)
        if known is not None and known is not model:
            raise ValueError(f"{event_type!r} is already bound to {known.__qualname__}")
        self._models[event_type] = model

    def event(self, event_type: str) -> Callable[[type[ModelT]], type[ModelT]]:
        """Class decorator form of :meth:`register`."""

        def bind(model: type[ModelT]) -> type[ModelT]:
            self.register(event_type, model)
            return model

        return bind

    def model_for(self, event_type: str) -> type[BaseModel]:
        try:
            return self._models[event_type]
        except KeyError:
            raise UnknownEventTypeError(event_type) from None

    def type_of(self, model: type[BaseModel]) -> str:
        """The event type a model is registered under."""
        for event_type, known in self._models.items():
            if known is model:
                return event_type
        raise UnknownEventTypeError(model.__qualname__)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def parse(self, event: CloudEvent) -> BaseModel:
        """The event's data as its type's model; raises pydantic's ``ValidationError``."""
        model = self.model_for(event.type)
        data = event.data
        if isinstance(data, bytes | str):
            return model.model_validate_json(data)
        return model.model_validate(data)

    def to_event(self, payload: BaseModel, *, source: str, **attributes: object) -> CloudEvent:
        """A new event of the payload's registered type carrying it as JSON data."""
        event_type = self.type_of(type(payload))
        attributes.setdefault("datacontenttype", JSON_CONTENT_TYPE)
        return CloudEvent.new(event_type, source, payload.model_dump(mode="json"), **attributes)

    def json_schema(self) -> dict[str, Any]:
        """One JSON Schema document: a ``$defs`` entry per model, keyed by event type."""
        definitions: dict[str, Any] = {}
        for event_type, model in self._models.items():
            schema = model.model_json_schema(ref_template="#/$defs/{model}")
            nested = schema.pop("$defs", {})
            for name, definition in nested.items():
                if definitions.get(name, definition) != definition:
                    raise ValueError(
                        f"two different models are both named {name!r}; rename one to export"
                    )
                definitions[name] = definition
            schema["x-cloudevents-type"] = event_type
            definitions[event_type] = schema
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": definitions,
        }
