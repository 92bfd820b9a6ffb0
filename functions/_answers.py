"""The answer to one delivery, whatever carried it: status, header pairs, body.

HTTP writes it as it is; the broker's in-process call reads it as the HTTP answer it stands
for (:data:`agentfn.brokers.inprocess.LocalAnswer`); the idempotency store keeps a reply's
answer as bytes, so a duplicate is answered byte for byte without parsing an event.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, TypeAlias

from agentfn.events import CloudEvent, from_http, to_batch, to_http

__all__ = [
    "NO_CONTENT",
    "NO_REPLY",
    "Answer",
    "decode_outcome",
    "encode_outcome",
    "event_answer",
    "json_answer",
    "retry_after_header",
    "stream_answer",
    "streamed_events",
]

#: (status, headers with lower-case names, body).
Answer: TypeAlias = tuple[int, list[tuple[bytes, bytes]], bytes]

_JSON: Final = (b"content-type", b"application/json")
#: Handled, no reply.
NO_CONTENT: Final[Answer] = (202, [], b"")
#: The outcome stored for :data:`NO_CONTENT`; a reply is stored as the answer itself.
NO_REPLY: Final = b""


def json_answer(status: int, body: dict[str, Any], *extra: tuple[bytes, bytes]) -> Answer:
    return status, [_JSON, *extra], json.dumps(body, separators=(",", ":")).encode()


def retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    # delay-seconds is a whole number; round up so the retry never comes early.
    return b"retry-after", str(max(1, math.ceil(seconds))).encode()


def event_answer(event: CloudEvent) -> Answer:
    """The 200 answer carrying ``event`` in the content mode every writer here picks."""
    headers, body = to_http(event)
    return 200, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], body


def stream_answer(events: list[CloudEvent]) -> Answer:
    """What a streamed run (a gRPC session's async-generator handler) is stored as: a batch.

    No other answer is a 200 batch, so :func:`streamed_events` tells it apart when a duplicate
    reads it back.
    """
    headers, body = to_batch(events)
    return 200, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], body


def streamed_events(answer: Answer) -> list[CloudEvent] | None:
    """The events of a :func:`stream_answer` (``None`` for any other answer)."""
    status, headers, body = answer
    if status != 200:
        return None
    for name, value in headers:
        if name == b"content-type":
            if value.startswith(b"application/cloudevents-batch"):
                return from_http(headers, body)
            return None
    return None


def encode_outcome(answer: Answer) -> bytes:
    """An answer as stored bytes: ``name: value`` lines, a blank line, the body."""
    if answer is NO_CONTENT:
        return NO_REPLY
    _, headers, body = answer
    return b"\n".join([name + b": " + value for name, value in headers]) + b"\n\n" + body


def decode_outcome(outcome: bytes) -> Answer:
    if outcome == NO_REPLY:
        return NO_CONTENT
    head, _, body = outcome.partition(b"\n\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\n")]
    return 200, headers, body  # type: ignore[return-value]
