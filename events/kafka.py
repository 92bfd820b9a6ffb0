"""The CloudEvents Kafka protocol binding (1.0) as pure functions over plain data.

Binary content mode is what Knative's Kafka Broker writes: attributes as ``ce_<name>`` headers
(UTF-8, no percent-encoding), ``datacontenttype`` as the ``content-type`` header, the data as
the record value, and the ``partitionkey`` extension as the record key. Structured mode (a
``content-type: application/cloudevents+json`` header and a JSON-format value) is read too.
No Kafka client is imported; :class:`KafkaRecord` holds what any client produces or consumes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from agentfn.events._errors import InvalidEventError
from agentfn.events._event import CloudEvent
from agentfn.events._validation import attribute_text, validate_attributes
from agentfn.events.extensions import PARTITION_KEY
from agentfn.events.http import (
    STRUCTURED_CONTENT_TYPE,
    UnsupportedContentModeError,
    decode_data,
    encode_data,
    event_from_json,
    event_to_json,
)

__all__ = ["KafkaRecord", "from_kafka", "to_kafka", "to_kafka_structured"]

_CE_PREFIX: Final = "ce_"
_CONTENT_TYPE: Final = "content-type"


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A Kafka record as clients see it: key, value and headers (name, bytes) in order."""

    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    key: bytes | None = None

    @classmethod
    def of(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]] | None,
        key: bytes | None = None,
    ) -> KafkaRecord:
        """Build from a client's record fields (kafka-python gives headers as a list of pairs)."""
        pairs = tuple((name, b"" if raw is None else raw) for name, raw in headers or ())
        return cls(value=value, headers=pairs, key=key)


def _utf8(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError(name, "utf-8", "header value is not valid UTF-8") from None


def to_kafka(event: CloudEvent) -> KafkaRecord:
    """``event`` in binary content mode, keyed by its ``partitionkey`` when it has one."""
    headers: list[tuple[str, bytes]] = []
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            continue
        # Kafka headers are bytes: UTF-8 of the canonical string, no percent-encoding (3.2.3).
        headers.append((_CE_PREFIX + name, attribute_text(value).encode("utf-8")))
    content_type = event.datacontenttype
    if content_type is None and event.data is not None and not isinstance(event.data, bytes | str):
        content_type = "application/json"
    if content_type is not None:
        headers.append((_CONTENT_TYPE, content_type.encode("utf-8")))
    key = event.attributes.get(PARTITION_KEY)
    payload = None if event.data is None else encode_data(event.data, content_type)
    return KafkaRecord(
        value=payload,
        headers=tuple(headers),
        key=None if key is None else attribute_text(key).encode("utf-8"),
    )


def to_kafka_structured(event: CloudEvent) -> KafkaRecord:
    """``event`` in structured content mode (JSON format), keyed like :func:`to_kafka`."""
    body = json.dumps(event_to_json(event), separators=(",", ":"), ensure_ascii=False)
    key = event.attributes.get(PARTITION_KEY)
    return KafkaRecord(
        value=body.encode("utf-8"),
        headers=((_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE.encode("ascii")),),
        key=None if key is None else attribute_text(key).encode("utf-8"),
    )


def from_kafka(record: KafkaRecord) -> CloudEvent:
    """The event in ``record``, binary or structured mode; :class:`InvalidEventError` if none."""
    content_type: str | None = None
    attributes: dict[str, object] = {}
    for name, raw in record.headers:
        lower = name.lower()
        if lower == _CONTENT_TYPE:
            content_type = _utf8("datacontenttype", raw)
        elif lower.startswith(_CE_PREFIX):
            attributes[lower[len(_CE_PREFIX) :]] = _utf8(lower[len(_CE_PREFIX) :], raw)
    if content_type is not None and content_type.lower().startswith("application/cloudevents"):
        if not content_type.split(";", 1)[0].strip().lower().endswith("+json"):
            raise UnsupportedContentModeError("content-type", "event-format", content_type)
        try:
            document = json.loads(record.value or b"")
        except (ValueError, RecursionError):
            raise InvalidEventError("value", "json", "is not valid UTF-8 JSON") from None
        return event_from_json(document)
    if "specversion" not in attributes:
        raise UnsupportedContentModeError(
            "specversion", "content-mode", "record has neither ce_specversion nor a CE content-type"
        )
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    checked = validate_attributes(attributes)
    data = decode_data(record.value or b"", content_type)
    return CloudEvent._trusted(checked, data)
