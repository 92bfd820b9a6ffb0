"""Sending CloudEvents over HTTP from synchronous code (the CLI, scripts, tests)."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field

from agentfn.events import CloudEvent, DeliveryFormat, InvalidEventError, from_http, to_http

__all__ = ["SendResult", "send_event"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the receiver answered: status, headers, body, and the reply event if it sent one."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reply: CloudEvent | None = None
    reply_error: str | None = None


def send_event(
    url: str, event: CloudEvent, *, format: DeliveryFormat | None = None, timeout: float = 10.0
) -> SendResult:
    """POST ``event`` to ``url`` and read the answer.

    ``format`` forces structured (``json``) or binary mode; unset, :func:`agentfn.events.to_http`
    picks: binary, or structured where a string would need percent-encoding in a header.
    A 2xx answer that carries a CloudEvent is parsed into ``reply``; one that carries something
    else sets ``reply_error``. Connection failures raise ``OSError`` (``URLError``).
    """
    headers, body = to_http(event, format)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, answer_headers, answer = (
                response.status,
                dict(response.headers),
                response.read(),
            )
    except urllib.error.HTTPError as error:
        status, answer_headers, answer = error.code, dict(error.headers), error.read()
    reply: CloudEvent | None = None
    reply_error: str | None = None
    if 200 <= status < 300 and answer:
        try:
            events = from_http(answer_headers, answer)
        except InvalidEventError as invalid:
            reply_error = str(invalid)
        else:
            reply = events[0] if events else None
    return SendResult(status, answer_headers, answer, reply, reply_error)
