"""CloudEvent contracts: the validated event type, its HTTP, Kafka and Protobuf bindings, typed
payloads.

This package imports nothing else of agentfn; every other package builds on it.
"""

from typing import TYPE_CHECKING, Any

from agentfn.events import extensions
from agentfn.events._catalog import EventCatalog, UnknownEventTypeError
from agentfn.events._errors import InvalidEventError
from agentfn.events._event import CloudEvent, is_json_media_type, is_text_media_type
from agentfn.events._ids import new_event_id
from agentfn.events._knative import (
    DELIVERY_ORDER_ANNOTATION,
    is_retryable_status,
    parse_retry_after,
)
from agentfn.events._validation import (
    SPEC_VERSION,
    AttributeValue,
    attribute_text,
    validate_attributes,
)
from agentfn.events.http import (
    ContentMode,
    DeliveryFormat,
    UnsupportedContentModeError,
    content_mode,
    from_http,
    needs_structured,
    to_batch,
    to_binary,
    to_http,
    to_structured,
)
from agentfn.events.kafka import KafkaRecord, from_kafka, to_kafka, to_kafka_structured

if TYPE_CHECKING:
    from agentfn.events.protobuf import from_protobuf, to_protobuf

__all__ = [
    "DELIVERY_ORDER_ANNOTATION",
    "SPEC_VERSION",
    "AttributeValue",
    "CloudEvent",
    "ContentMode",
    "DeliveryFormat",
    "EventCatalog",
    "InvalidEventError",
    "KafkaRecord",
    "UnknownEventTypeError",
    "UnsupportedContentModeError",
    "attribute_text",
    "content_mode",
    "extensions",
    "from_http",
    "from_kafka",
    "from_protobuf",
    "is_json_media_type",
    "is_retryable_status",
    "is_text_media_type",
    "needs_structured",
    "new_event_id",
    "parse_retry_after",
    "to_batch",
    "to_binary",
    "to_http",
    "to_kafka",
    "to_kafka_structured",
    "to_protobuf",
    "to_structured",
    "validate_attributes",
]


def __getattr__(name: str) -> Any:
    # The Protobuf binding loads protobuf (~40 ms): only code that speaks gRPC pays for it,
    # not every agent's cold start (an agent served over HTTP never names it).
    if name in ("from_protobuf", "to_protobuf"):
        from agentfn.events import protobuf  # noqa: PLC0415

        value = getattr(protobuf, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
