"""Deliveries as Knative makes them: an event out in its content mode, the answer read by
Knative's rules; the bytes travel over a :class:`agentfn.brokers._transport.Transport` chosen
once per destination, with keep-alive connections shared by every Trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agentfn.brokers._http1 import DEFAULT_MAX_ANSWER_BYTES, Http1Pool, Http1Transport
from agentfn.brokers._transport import (
    AiohttpTransport,
    Answer,
    LocalTransport,
    Transport,
    Url,
)
from agentfn.brokers.inprocess import LocalSubscriber, origin_of
from agentfn.events import (
    CloudEvent,
    DeliveryFormat,
    InvalidEventError,
    from_http,
    parse_retry_after,
    to_http,
)

from agentfn._lifecycle import Started

__all__ = ["Attempt", "Route", "Sender", "interpret", "wait_or_stop"]

#: Knative answers 502 for a subscriber reply that is not a CloudEvent; so do we.
BAD_GATEWAY: Final = 502


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: bytes = b""
    reply: CloudEvent | None = None
    retry_after: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender(Started):
    """The transports every delivery of a broker shares, and each destination's :class:`Route`.

    ``local`` maps URL origins (see :func:`agentfn.brokers.inprocess.origin_of`) to in-process
    subscribers; ``transport`` replaces the wire (tests: a
    :class:`agentfn.brokers._transport.MockTransport`). Otherwise ``http://`` URLs go through
    the lean HTTP/1.1 client, every other one through aiohttp.
    """

    def __init__(
        self,
        *,
        connections: int = 512,
        local: Mapping[str, LocalSubscriber] | None = None,
        transport: Transport | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._pool = Http1Pool(max_answer_bytes=max_answer_bytes)
        self._lean = Http1Transport(self._pool)
        self._aiohttp = AiohttpTransport(connections=connections)
        self._transport = transport
        self._local = {
            origin_of(key): LocalTransport(subscriber) for key, subscriber in (local or {}).items()
        }

    async def start(self) -> None:
        await self._aiohttp.start()

    async def aclose(self) -> None:
        self._pool.close()
        await self._aiohttp.aclose()

    def route(self, url: str) -> Route:
        """Deliveries to ``url``, their transport chosen here, once (a Trigger's set-up)."""
        target = Url.parse(url)
        local = self._local.get(origin_of(url))
        if local is not None:
            return Route(target, local, local)
        if self._transport is not None:
            return Route(target, self._transport)
        return Route(target, self._lean if target.plain_http else self._aiohttp)

    async def send(
        self,
        url: str,
        event: CloudEvent,
        *,
        timeout: float,
        expect_reply: bool = True,
        format: DeliveryFormat | None = None,
    ) -> Attempt:
        """One delivery to ``url`` (a route made for it alone; dispatchers keep theirs)."""
        return await self.route(url).send(
            event, timeout=timeout, expect_reply=expect_reply, format=format
        )


class Route:
    """Deliveries to one destination over the transport chosen for it."""

    __slots__ = ("_local", "_transport", "target", "url")

    def __init__(
        self, target: Url, transport: Transport, local: LocalTransport | None = None
    ) -> None:
        self.target = target
        self.url = target.text
        self._transport = transport
        self._local = local

    async def send(
        self,
        event: CloudEvent,
        *,
        timeout: float,
        expect_reply: bool = True,
        format: DeliveryFormat | None = None,
    ) -> Attempt:
        """Deliver ``event``: a call to an in-process subscriber, else a POST in the content mode
        ``format`` (the Trigger's ``delivery.format``) sets or :func:`agentfn.events.to_http`
        picks; read the answer, and a reply event if there is one."""
        if self._local is not None:
            # The event itself, not its bytes: no encoding and no second parse in process.
            return interpret(await self._local.call(self.target, event, timeout))
        headers, body = to_http(event, format)
        if expect_reply:
            headers["prefer"] = "reply"
        return interpret(await self._transport.post(self.target, headers, body, timeout))


def interpret(answer: Answer) -> Attempt:
    """Knative's reading of an answer: retried or not, ``Retry-After``, the reply event."""
    status = answer.status
    if status is None:
        return Attempt(status=None, error=answer.error)
    body = answer.body
    retry_after = None
    if status in (429, 503):
        for name, value in answer.headers:
            if name == b"retry-after":
                retry_after = parse_retry_after(value.decode("latin-1"))
    if not 200 <= status < 300 or not body:
        return Attempt(status=status, body=body, retry_after=retry_after)
    try:
        replies = from_http(answer.headers, body)
    except InvalidEventError as error:
        # A non-empty 2xx body must be a CloudEvent (Knative's filter answers 502 otherwise).
        return Attempt(status=BAD_GATEWAY, body=body, error=f"invalid reply: {error}")
    if len(replies) != 1:
        return Attempt(status=BAD_GATEWAY, body=body, error="a reply carries one event")
    return Attempt(status=status, body=body, reply=replies[0])


async def wait_or_stop(delay: float, stopping: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds unless ``stopping`` is set first; True when it was set."""
    if delay <= 0:
        return stopping.is_set()
    try:
        await asyncio.wait_for(stopping.wait(), delay)
    except TimeoutError:
        return False
    return True
