"""Helpers shared by the events tests: a valid attribute set, request builders, an encoder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentfn.events import CloudEvent, KafkaRecord

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def attrs(**overrides: object) -> dict[str, object]:
    """A valid minimal attribute set with ``overrides`` applied (``...`` removes a key)."""
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/sensors/1",
        "type": "com.example.reading",
    }
    for name, value in overrides.items():
        if value is ...:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def event(data: Any = None, **overrides: object) -> CloudEvent:
    return CloudEvent(attrs(**overrides), data)


def structured_body(document: object) -> bytes:
    return json.dumps(document).encode("utf-8")


def binary_headers(**overrides: object) -> dict[str, str]:
    """``ce-`` headers of :func:`attrs` (values as given, not percent-encoded)."""
    return {f"ce-{name}": str(value) for name, value in attrs(**overrides).items()}


def percent_encode(value: str) -> str:
    """The HTTP binding's encoding (3.1.3.2), written independently of agentfn.events.http."""
    out: list[str] = []
    for char in value:
        if 0x21 <= ord(char) <= 0x7E and char not in '"%':
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def kafka_record(
    value: bytes | None, headers: Mapping[str, str | bytes], key: bytes | None = None
) -> KafkaRecord:
    pairs = tuple(
        (name, raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        for name, raw in headers.items()
    )
    return KafkaRecord(value=value, headers=pairs, key=key)


def kafka_binary_headers(**overrides: object) -> dict[str, str | bytes]:
    return {f"ce_{name}": str(value) for name, value in attrs(**overrides).items()}
