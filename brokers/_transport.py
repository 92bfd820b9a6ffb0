"""How a delivery reaches its subscriber: one method, ``post(url, headers, body, timeout)``.

The sender turns an event into a request and an answer into an outcome (Knative's rules); a
:class:`Transport` only carries the bytes, as httpx's ``AsyncBaseTransport`` does. Each Trigger's
destinations get their transport once, when the dispatcher is built (see ``_sender.Route``):

* :class:`agentfn.brokers._http1.Http1Transport`: the lean HTTP/1.1 client, for ``http://``;
* :class:`AiohttpTransport`: everything else (``https://``, userinfo in the URL);
* :class:`LocalTransport`: a subscriber hosted in the broker's process;
* :class:`MockTransport`: a callable answering in memory, for tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from agentfn.brokers.inprocess import LocalSubscriber
from agentfn.events import CloudEvent, InvalidEventError, from_http

__all__ = [
    "AiohttpTransport",
    "Answer",
    "LocalTransport",
    "MockTransport",
    "Transport",
    "Url",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """A subscriber's answer; ``status`` None: none came (refused, reset, timed out, too big)."""

    status: int | None
    headers: Sequence[tuple[bytes, bytes]] = ()  # names lower-case
    body: bytes = b""
    error: str | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Url:
    """A destination URL, split once when its Trigger is set up, never per delivery."""

    text: str
    scheme: str
    host: str
    port: int
    target: str  # the request-target: path and query
    plain_http: bool  # the lean client serves it: ``http://``, a host, no userinfo

    @classmethod
    def parse(cls, text: str) -> Url:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        default_port = 443 if scheme == "https" else 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        plain = scheme == "http" and bool(parts.hostname) and not parts.username
        return cls(text, scheme, parts.hostname or "", parts.port or default_port, target, plain)


class Transport(Protocol):
    """Carries one request to ``url`` and brings back its :class:`Answer`, never raising for
    a failure of the exchange (that is an answer with status None)."""

    def post(
        self, url: Url, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Awaitable[Answer]: ...


class AiohttpTransport:
    """aiohttp's client: TLS, proxies and the rest of HTTP the lean client leaves out."""

    __slots__ = ("_connections", "_session")

    def __init__(self, *, connections: int = 512) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: Url, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        assert self._session is not None, "start() the transport first"
        try:
            async with self._session.post(
                url.text, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as reply:
                answer = await reply.read()
                return Answer(reply.status, [(k.lower(), v) for k, v in reply.raw_headers], answer)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return Answer(None, error=f"{type(error).__name__}: {error}")


class LocalTransport:
    """A subscriber in the broker's process, answering as if over HTTP.

    The sender hands it the event itself (:meth:`call`): the in-process mode exists to skip the
    encoding and the second parse. :meth:`post` is the same delivery from a request's bytes.
    """

    __slots__ = ("_subscriber",)

    def __init__(self, subscriber: LocalSubscriber) -> None:
        self._subscriber = subscriber

    async def call(self, url: Url, event: CloudEvent, timeout: float) -> Answer:
        try:
            async with asyncio.timeout(timeout):
                status, headers, body = await self._subscriber(event)
        except TimeoutError:
            # As over HTTP: no answer in time. The handler is cancelled rather than left
            # running beside the retry (a server would keep it; here nobody could stop it).
            return Answer(None, error=f"{url.text}: no answer within {timeout:g}s")
        except Exception as error:
            # A crash of the subscriber, not an answer: what a reset connection is over HTTP.
            log.exception("in-process subscriber %s failed", url.text)
            return Answer(None, error=f"{type(error).__name__}: {error}")
        return Answer(status, headers, body)

    async def post(
        self, url: Url, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        try:
            events = from_http(headers, body)
        except InvalidEventError as error:
            return Answer(400, body=str(error).encode())  # what the runtime's front door says
        if len(events) != 1:
            return Answer(400, body=b"one event per delivery")
        return await self.call(url, events[0], timeout)


#: What a :class:`MockTransport` calls: the request in, the answer out.
Handler = Callable[[Url, Mapping[str, str], bytes], Answer | Awaitable[Answer]]


class MockTransport:
    """Answers every request with ``handler(url, headers, body)`` in memory (as httpx's
    ``MockTransport``); a handler that raises is a subscriber that never answered."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def post(
        self, url: Url, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        try:
            answer = self._handler(url, headers, body)
            if not isinstance(answer, Answer):
                answer = await asyncio.wait_for(answer, timeout)
        except Exception as error:
            return Answer(None, error=f"{type(error).__name__}: {error}")
        return answer
