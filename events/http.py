"""The CloudEvents HTTP protocol binding (1.0.2) as pure functions over plain data.

No HTTP client or server is imported: callers hand in the request's headers and body and get
events back, or hand in events and get headers and a body to send. Header values are ``str`` as
servers decode them (ISO-8859-1, byte for byte) or raw ``bytes``; either way the binding undoes
the percent-encoding of section 3.1.3.2 and requires UTF-8 underneath. Reading is lenient: a
``%`` that starts no escape (``100% done``) stays as it is.

Writing picks the content mode with :func:`to_http`. Section 3.1.3.2 requires a binary-mode
header value to percent-encode space, ``"``, ``%`` and everything outside printable ASCII, and
the JavaScript, Go and Java SDKs do not decode it: their users would read ``orders/42%20shipped``.
So an event with such a string goes in structured mode, whose JSON carries any string exactly,
and every other event in binary mode; a Knative ``delivery.format`` (:class:`DeliveryFormat`)
forces one mode.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, TypeAlias
from urllib.parse import unquote_to_bytes

from agentfn.events._errors import InvalidEventError
from agentfn.events._event import CloudEvent, is_json_media_type, is_text_media_type
from agentfn.events._validation import AttributeValue, attribute_text, validate_attributes

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "ContentMode",
    "DeliveryFormat",
    "UnsupportedContentModeError",
    "binary_headers",
    "content_mode",
    "decode_data",
    "encode_data",
    "event_from_json",
    "event_to_json",
    "from_http",
    "header_safe",
    "needs_structured",
    "to_batch",
    "to_binary",
    "to_http",
    "to_structured",
]

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json; charset=utf-8"

Headers: TypeAlias = Mapping[str, str | bytes] | Iterable[tuple[str | bytes, str | bytes]]


class ContentMode(StrEnum):
    BINARY = "binary"
    STRUCTURED = "structured"
    BATCH = "batch"


class DeliveryFormat(StrEnum):
    """Knative's ``delivery.format``: the content mode a sender must use when it is set."""

    JSON = "json"  # structured mode, JSON event format
    BINARY = "binary"


class UnsupportedContentModeError(InvalidEventError):
    """The message is no CloudEvent in any mode this binding reads.

    Still a 400: Knative's data plane answers 400 to any request it cannot parse as an event.
    """


# Characters the binding sends as they are: printable ASCII less space, '"' and '%'.
_SAFE_HEADER_VALUE = re.compile(r"[\x21\x23\x24\x26-\x7e]*")


def header_safe(text: str) -> bool:
    """Whether ``text`` goes in a binary-mode header as it is, without percent-encoding."""
    return _SAFE_HEADER_VALUE.fullmatch(text) is not None


def _percent_encode(value: str) -> str:
    if _SAFE_HEADER_VALUE.fullmatch(value):
        return value
    out: list[str] = []
    for char in value:
        if _SAFE_HEADER_VALUE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _header_text(name: str, value: str | bytes, *, percent_decode: bool = True) -> str:
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    if percent_decode and b"%" in raw:
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError(name, "utf-8", "header value is not valid UTF-8") from None


def _normalise(headers: Headers) -> dict[str, str | bytes]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str | bytes] = {}
    for name, value in items:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        out[key.lower()] = value
    return out


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def content_mode(headers: Headers) -> ContentMode | None:
    """Which content mode the request is in, or ``None`` if it carries no CloudEvent."""
    return _mode(_normalise(headers))


def _mode(normal: dict[str, str | bytes]) -> ContentMode | None:
    media = _text(normal.get("content-type")).split(";", 1)[0].strip().lower()
    if media.startswith("application/cloudevents-batch"):
        return ContentMode.BATCH
    if media.startswith("application/cloudevents"):
        return ContentMode.STRUCTURED
    if any(name.startswith("ce-") for name in normal):
        return ContentMode.BINARY
    return None


def decode_data(body: bytes, content_type: str | None) -> Any:
    """The data value of a binary-mode body, canonical for its media type (see CloudEvent)."""
    if not body:
        return None
    if is_json_media_type(content_type):
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return body  # opaque bytes: the broker must not judge the payload
    if is_text_media_type(content_type):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    return body


def encode_data(data: Any, content_type: str | None) -> bytes:
    """The binary-mode body for ``data``."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and not is_json_media_type(content_type):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _from_binary(headers: dict[str, str | bytes], body: bytes) -> CloudEvent:
    attributes: dict[str, object] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            attribute = name[3:]
            attributes[attribute] = _header_text(attribute, value)
    content_type = headers.get("content-type")
    if content_type is not None:
        # Content-Type is an ordinary HTTP header: only ce- values are percent-encoded (3.1.3.2).
        attributes["datacontenttype"] = _header_text(
            "datacontenttype", content_type, percent_decode=False
        )
    checked = validate_attributes(attributes)
    data = decode_data(body, _opt_str(checked.get("datacontenttype")))
    return CloudEvent._trusted(checked, data)


def _opt_str(value: AttributeValue | None) -> str | None:
    return None if value is None else str(value)


def event_from_json(member: object) -> CloudEvent:
    """An event from a decoded JSON-format object (structured mode, a batch member)."""
    if not isinstance(member, dict):
        raise InvalidEventError("body", "json-object", "a structured event is a JSON object")
    attributes = dict(member)
    data = attributes.pop("data", None)
    has_data = data is not None  # JSON null is absent, for data as for attributes
    encoded = attributes.pop("data_base64", None)
    if has_data and encoded is not None:
        raise InvalidEventError("data", "data-exclusive", "data and data_base64 are both set")
    checked = validate_attributes(attributes)
    if encoded is not None:
        if not isinstance(encoded, str):
            raise InvalidEventError("data_base64", "type", "must be a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEventError("data_base64", "base64", "is not valid base64") from None
    return CloudEvent._trusted(checked, data)


def event_to_json(event: CloudEvent) -> dict[str, Any]:
    """The JSON-format object of ``event`` (bytes data goes to ``data_base64``)."""
    member: dict[str, Any] = dict(event.attributes)
    if isinstance(event.data, bytes):
        member["data_base64"] = base64.b64encode(event.data).decode("ascii")
    elif event.data is not None:
        member["data"] = event.data
    return member


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidEventError("body", "json", "is not valid UTF-8 JSON") from None


def from_http(headers: Headers, body: bytes) -> list[CloudEvent]:
    """Every event in an HTTP message: one for binary and structured mode, any for a batch.

    A batch is all or nothing: the first invalid member fails it, located by ``index``.
    Raises :class:`UnsupportedContentModeError` when the message is no CloudEvent at all.
    """
    normal = _normalise(headers)
    mode = _mode(normal)
    if mode is ContentMode.BINARY:
        return [_from_binary(normal, body)]
    if mode is None:
        raise UnsupportedContentModeError(
            "content-type",
            "content-mode",
            "neither binary (ce-* headers) nor structured/batched CloudEvents JSON",
        )
    media = _text(normal.get("content-type")).split(";", 1)[0].strip().lower()
    if not media.endswith("+json"):
        raise UnsupportedContentModeError(
            "content-type", "event-format", f"{media} is not an event format read here (JSON)"
        )
    document = _load_json(body)
    if mode is ContentMode.STRUCTURED:
        return [event_from_json(document)]
    if not isinstance(document, list):
        raise InvalidEventError("body", "json-array", "a batch is a JSON array of events")
    events: list[CloudEvent] = []
    for index, member in enumerate(document):
        try:
            events.append(event_from_json(member))
        except InvalidEventError as error:
            raise error.in_batch(index) from None
    return events


def needs_structured(event: CloudEvent) -> bool:
    """Whether a binary-mode header of ``event`` would need percent-encoding (section 3.1.3.2).

    ``datacontenttype`` is not looked at: it travels as ``Content-Type``, never encoded, and a
    valid media type is printable ASCII.
    """
    for name, value in event.attributes.items():
        if isinstance(value, str) and name != "datacontenttype" and not header_safe(value):
            return True
    return False


def to_http(
    event: CloudEvent, format: DeliveryFormat | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``event`` in the content mode every sender here uses.

    ``format`` is Knative's ``delivery.format``: ``json`` always structured, ``binary`` always
    binary (percent-encoded as the binding requires). Unset, an event whose strings would need
    percent-encoding goes structured, so receivers that never decode read them intact, and
    any other event goes binary.
    """
    if format is DeliveryFormat.JSON:
        return to_structured(event)
    # One pass decides and encodes: every delivery comes through here.
    headers, encoded = _ce_headers(event)
    if encoded and format is None:
        return to_structured(event)
    return _with_data(event, headers)


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``event`` in binary content mode (values percent-encoded, 3.1.3.2)."""
    return _with_data(event, _ce_headers(event)[0])


def _ce_headers(event: CloudEvent) -> tuple[dict[str, str], bool]:
    """The ``ce-`` headers of ``event``, and whether any value had to be percent-encoded."""
    headers: dict[str, str] = {}
    encoded = False
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            continue  # it travels as Content-Type, never encoded
        text = attribute_text(value)
        if not _SAFE_HEADER_VALUE.fullmatch(text):
            encoded = True
            text = _percent_encode(text)
        headers["ce-" + name] = text
    return headers, encoded


def _with_data(event: CloudEvent, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    content_type = event.datacontenttype
    data = event.data
    if content_type is not None:
        headers["content-type"] = content_type
    elif data is not None and not isinstance(data, bytes | str):
        headers["content-type"] = "application/json"
    return headers, encode_data(data, content_type or headers.get("content-type"))


def binary_headers(attributes: Mapping[str, AttributeValue]) -> list[tuple[bytes, bytes]] | None:
    """``attributes`` as binary-mode header pairs (``datacontenttype`` as ``content-type``),
    as an ASGI server sends them; ``None`` when a value would need percent-encoding, where
    :func:`to_http` sends the event structured instead.

    For writers that build an event's headers in parts (the shared ones once, the per-event
    ones each time) without building the event: no validation, the caller's values are valid.
    """
    headers: list[tuple[bytes, bytes]] = []
    content_type: bytes | None = None
    for name, value in attributes.items():
        text = attribute_text(value)
        if name == "datacontenttype":
            content_type = text.encode("latin-1")
        elif header_safe(text):
            headers.append((b"ce-" + name.encode("ascii"), text.encode("ascii")))
        else:
            return None
    if content_type is not None:
        headers.append((b"content-type", content_type))
    return headers


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``event`` in structured content mode (JSON format)."""
    body = json.dumps(event_to_json(event), separators=(",", ":"), ensure_ascii=False)
    return {"content-type": STRUCTURED_CONTENT_TYPE}, body.encode("utf-8")


def to_batch(events: Sequence[CloudEvent]) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``events`` in batched content mode (JSON batch format)."""
    body = json.dumps([event_to_json(e) for e in events], separators=(",", ":"), ensure_ascii=False)
    return {"content-type": BATCH_CONTENT_TYPE}, body.encode("utf-8")
