"""The CloudEvents Protobuf format (1.0) as pure functions over ``io.cloudevents.v1.CloudEvent``.

The message every gRPC call here carries (``events/proto/cloudevents.proto``). No gRPC is
imported: callers hand in a message (or its serialized bytes) and get an event, or hand in an
event and get a message. Reading checks every rule the HTTP and Kafka bindings check (through
:func:`~agentfn.events.validate_attributes`) and raises :class:`InvalidEventError` naming the
attribute or field.

Attributes. ``id``, ``source``, ``spec_version`` and ``type`` are the message's own fields (an
empty string is an absent attribute, as proto3 cannot tell them apart); every other attribute is
in the ``attributes`` map, and a required one found there is refused rather than guessed
between. Values are written by their CloudEvents type:

============================  =====================================================
event attribute               ``CloudEventAttributeValue``
============================  =====================================================
Boolean (``bool``)            ``ce_boolean``
Integer (``int``)             ``ce_integer``
``time`` (Timestamp)          ``ce_timestamp`` (``ce_string`` when a Timestamp cannot
                              hold it: a leap second, year 0000, more than nanoseconds)
``dataschema`` (URI)          ``ce_uri``
any other string              ``ce_string``
============================  =====================================================

Read, ``ce_bytes`` becomes its base64 text (the Binary type's canonical string, which is how an
event holds Binary), ``ce_uri`` / ``ce_uri_ref`` must be an absolute URI / a URI-reference, and
``ce_timestamp`` becomes RFC 3339 in UTC: no fraction, six digits when it is whole microseconds
(as :meth:`CloudEvent.new` writes ``time``), else nine. So ``time`` keeps its instant exactly but
not its spelling: ``...T02:00:00+02:00`` comes back as ``...T00:00:00Z``.

Data. ``bytes`` goes in ``binary_data``; a ``str`` under a non-JSON media type in ``text_data``;
a JSON value (or a ``str`` under a JSON media type) as JSON text in ``text_data``, with
``datacontenttype: application/json`` added when the event has none (as the HTTP binding sends
``Content-Type``). Read back, the data is canonical for its ``datacontenttype`` as in every
binding: JSON text decodes to the same Python value (text that is no JSON stays opaque bytes),
``binary_data`` decodes like an HTTP body, and an empty payload is no data.

``proto_data`` (a packed ``google.protobuf.Any``) is refused with a 400-class error: an event's
data is bytes or a JSON value, so the message could only be kept as bytes with its type URL
somewhere no handler looks, and every handler here reads JSON or bytes. A sender with a protobuf
payload puts the serialized message in ``binary_data`` with ``datacontenttype:
application/protobuf``; this binding never writes ``proto_data``.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agentfn.events._errors import InvalidEventError
from agentfn.events._event import JSON_CONTENT_TYPE, CloudEvent, is_json_media_type
from agentfn.events._validation import (
    _RFC3339,
    AttributeValue,
    attribute_text,
    is_uri,
    is_uri_reference,
    validate_attributes,
)
from agentfn.events.http import decode_data, encode_data
from agentfn.events.proto import cloudevents_pb2
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["from_protobuf", "to_protobuf"]

Message = cloudevents_pb2.CloudEvent
AttributeMessage = cloudevents_pb2.CloudEvent.CloudEventAttributeValue

#: The required attributes and the message fields that carry them.
_REQUIRED_FIELDS: Final = (
    ("id", "id"),
    ("source", "source"),
    ("specversion", "spec_version"),
    ("type", "type"),
)
_REQUIRED_NAMES: Final = dict(_REQUIRED_FIELDS)

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS: Final = -62_135_596_800
_MAX_SECONDS: Final = 253_402_300_799
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------ timestamps


def _timestamp(text: str) -> Timestamp | None:
    """The Timestamp of a valid RFC 3339 ``text``, or ``None`` when it cannot hold it exactly."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    if second == 60 or year == 0:  # Timestamps have no leap seconds and start at year 1
        return None
    digits = (match.group(7) or ".")[1:]
    if digits[9:].strip("0"):
        return None  # finer than a nanosecond
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match.group(8) is not None:
        offset = int(match.group(9)) * 3600 + int(match.group(10)) * 60
        seconds -= offset if match.group(8) == "+" else -offset
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        return None
    return Timestamp(seconds=seconds, nanos=int(digits[:9].ljust(9, "0")))


def _timestamp_text(name: str, stamp: Timestamp) -> str:
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        raise InvalidEventError(
            name, "timestamp", f"seconds={stamp.seconds} nanos={stamp.nanos} is out of range"
        )
    moment = _EPOCH + timedelta(seconds=stamp.seconds)
    whole = moment.isoformat(timespec="seconds").removesuffix("+00:00")
    nanos = stamp.nanos
    if nanos == 0:
        return whole + "Z"
    if nanos % 1000 == 0:
        return f"{whole}.{nanos // 1000:06d}Z"
    return f"{whole}.{nanos:09d}Z"


# ------------------------------------------------------------------------------ writing


def _attribute_value(name: str, value: AttributeValue) -> AttributeMessage:
    # bool first: it is a subclass of int but a distinct CloudEvents type.
    if isinstance(value, bool):
        return AttributeMessage(ce_boolean=value)
    if isinstance(value, int):
        return AttributeMessage(ce_integer=value)
    if name == "time":
        stamp = _timestamp(value)
        if stamp is not None:
            return AttributeMessage(ce_timestamp=stamp)
    elif name == "dataschema":
        return AttributeMessage(ce_uri=value)
    return AttributeMessage(ce_string=value)


def to_protobuf(event: CloudEvent) -> cloudevents_pb2.CloudEvent:
    """``event`` as an ``io.cloudevents.v1.CloudEvent`` message (see the module docstring)."""
    attributes = event.attributes
    content_type = event.datacontenttype
    data = event.data
    extra: dict[str, AttributeMessage] = {}
    for name, value in attributes.items():
        if name not in _REQUIRED_NAMES:
            extra[name] = _attribute_value(name, value)
    message = Message(
        id=event.id,
        source=event.source,
        spec_version=str(attributes["specversion"]),
        type=event.type,
        attributes=extra,
    )
    if data is None:
        return message
    if isinstance(data, bytes):
        message.binary_data = data
    elif isinstance(data, str) and not is_json_media_type(content_type):
        message.text_data = data
    else:
        if content_type is None:
            content_type = JSON_CONTENT_TYPE
            message.attributes["datacontenttype"].ce_string = content_type
        message.text_data = encode_data(data, content_type).decode("utf-8")
    return message


# ------------------------------------------------------------------------------ reading


def _attribute(name: str, value: AttributeMessage) -> AttributeValue:
    kind = value.WhichOneof("attr")
    if kind == "ce_boolean":
        return value.ce_boolean
    if kind == "ce_integer":
        return value.ce_integer
    if kind == "ce_string":
        return value.ce_string
    if kind == "ce_bytes":
        return attribute_text(value.ce_bytes)
    if kind == "ce_uri":
        if not is_uri(value.ce_uri):
            raise InvalidEventError(name, "uri", f"{value.ce_uri!r} is not an absolute URI")
        return value.ce_uri
    if kind == "ce_uri_ref":
        if not is_uri_reference(value.ce_uri_ref):
            raise InvalidEventError(
                name, "uri-reference", f"{value.ce_uri_ref!r} is not a URI-reference"
            )
        return value.ce_uri_ref
    if kind == "ce_timestamp":
        return _timestamp_text(name, value.ce_timestamp)
    raise InvalidEventError(name, "attribute-value", "has no value: no ce_* field is set")


def _parse(raw: bytes) -> cloudevents_pb2.CloudEvent:
    message = Message()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        raise InvalidEventError(
            "body", "protobuf", "is not a serialized io.cloudevents.v1.CloudEvent"
        ) from None
    return message


def _data(message: cloudevents_pb2.CloudEvent, content_type: str | None) -> Any:
    kind = message.WhichOneof("data")
    if kind is None:
        return None
    if kind == "binary_data":
        return decode_data(message.binary_data, content_type)
    if kind == "text_data":
        text = message.text_data
        if is_json_media_type(content_type):
            # Text that is no JSON stays opaque bytes, as an HTTP body would: not judged.
            return decode_data(text.encode("utf-8"), content_type)
        return text or None
    raise InvalidEventError(
        "proto_data",
        "unsupported-data",
        "a packed google.protobuf.Any is not read here; send the serialized message in "
        "binary_data with datacontenttype application/protobuf",
    )


def from_protobuf(message: cloudevents_pb2.CloudEvent | bytes) -> CloudEvent:
    """The event in ``message`` (a message or its serialized bytes).

    Raises :class:`InvalidEventError` naming the offending attribute (``body`` for bytes that
    are no message, ``proto_data`` for a packed ``Any``).
    """
    if isinstance(message, bytes | bytearray | memoryview):
        message = _parse(bytes(message))
    attributes: dict[str, object] = {}
    for name, field in _REQUIRED_FIELDS:
        value = getattr(message, field)
        if value:  # proto3: the empty string is the unset field
            attributes[name] = value
    for name, value in message.attributes.items():
        if name in _REQUIRED_NAMES:
            raise InvalidEventError(
                name,
                "protobuf-field",
                f"is a required attribute, carried in the {_REQUIRED_NAMES[name]} field, "
                "not in attributes",
            )
        attributes[name] = _attribute(name, value)
    checked = validate_attributes(attributes)
    content_type = checked.get("datacontenttype")
    data = _data(message, None if content_type is None else str(content_type))
    return CloudEvent._trusted(checked, data)
