"""The event type: the cloudevents SDK's abstract CloudEvent, without its silent defaults.

``cloudevents.http.CloudEvent`` invents an ``id`` and a ``time`` for whatever lacks them, which is
right for a producer and wrong for a broker: a missing ``id`` must be a 400, and an event must
cross every hop unchanged. This class keeps the SDK's contract (so ``cloudevents.conversion``
and user code that expects an SDK event keep working) and validates instead of defaulting.

Data model. ``data`` is ``None`` (no data), ``bytes`` (opaque binary) or a JSON value (``dict``,
``list``, ``str``, ``int``, ``float``, ``bool``). The bindings keep it canonical for the
``datacontenttype``: a JSON media type decodes to the JSON value, a text type to ``str``, any
other type (or none, in binary mode) stays ``bytes``. An empty body is "no data".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from agentfn.events._ids import new_event_id
from agentfn.events._validation import (
    SPEC_VERSION,
    AttributeValue,
    check_attributes,
    format_timestamp,
    require_attributes,
    validate_attributes,
)
from cloudevents import abstract

__all__ = ["JSON_CONTENT_TYPE", "CloudEvent", "is_json_media_type", "is_text_media_type"]

JSON_CONTENT_TYPE: Final = "application/json"


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json``, ``text/json`` or any ``+json`` structured-syntax suffix."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def is_text_media_type(content_type: str | None) -> bool:
    """A media type whose body is text: ``text/*`` or an XML type."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media.endswith(("/xml", "+xml"))


class CloudEvent(abstract.CloudEvent):
    """A validated CloudEvents 1.0 event.

    Construct with attributes and data; every rule is checked and :class:`InvalidEventError`
    names the offending attribute. Use :meth:`new` to mint an event with a fresh id and time.
    """

    __slots__ = ("_attributes", "data")

    def __init__(self, attributes: Mapping[str, object], data: Any = None) -> None:
        self._attributes: dict[str, AttributeValue] = validate_attributes(attributes)
        self.data: Any = data

    @classmethod
    def create(cls, attributes: Mapping[str, Any], data: Any | None) -> CloudEvent:
        """The SDK's factory (used by ``cloudevents.conversion``)."""
        return cls(attributes, data)

    @classmethod
    def _trusted(cls, attributes: dict[str, AttributeValue], data: Any) -> CloudEvent:
        """An event from attributes already validated (a store read, a copy): no second check."""
        event = cls.__new__(cls)
        event._attributes = attributes
        event.data = data
        return event

    @classmethod
    def new(
        cls,
        type: str,
        source: str,
        data: Any = None,
        **attributes: object,
    ) -> CloudEvent:
        """A new event with a time-ordered ``id`` and the current ``time``.

        A JSON value as ``data`` gets ``datacontenttype: application/json`` unless one is given.
        """
        attrs: dict[str, object] = {
            "specversion": SPEC_VERSION,
            "id": new_event_id(),
            "source": source,
            "type": type,
            "time": format_timestamp(datetime.now(UTC)),
        }
        if data is not None and not isinstance(data, bytes):
            attrs["datacontenttype"] = JSON_CONTENT_TYPE
        attrs.update(attributes)
        return cls(attrs, data)

    def _get_attributes(self) -> dict[str, Any]:
        return self._attributes

    def get_data(self) -> Any:
        return self.data

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        """The context attributes and extensions (read-only view)."""
        return self.get_attributes()

    @property
    def id(self) -> str:
        return str(self._attributes["id"])

    @property
    def source(self) -> str:
        return str(self._attributes["source"])

    @property
    def type(self) -> str:
        return str(self._attributes["type"])

    @property
    def datacontenttype(self) -> str | None:
        value = self._attributes.get("datacontenttype")
        return None if value is None else str(value)

    def with_attributes(self, **changes: object) -> CloudEvent:
        """A copy with attributes set (validated) or removed (``None``); data is shared.

        Only the changed attributes are checked: the others were checked when this event was.
        """
        merged = dict(self._attributes)
        for name, value in check_attributes(changes).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        require_attributes(merged)
        return CloudEvent._trusted(merged, self.data)

    def __repr__(self) -> str:
        return f"CloudEvent(attributes={self._attributes!r}, data={self.data!r})"
