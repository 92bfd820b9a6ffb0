"""One pooled HTTP client for every delivery: keep-alive connections, no client per event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from agentfn.brokers._http1 import Http1Pool, RequestFailedError
from agentfn.brokers.delivery import parse_retry_after
from agentfn.brokers.inprocess import LocalSubscriber, origin_of
from agentfn.events import CloudEvent, DeliveryFormat, InvalidEventError, from_http, to_http

__all__ = ["Attempt", "Sender"]

log = logging.getLogger(__name__)

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


class Sender:
    """Delivers over HTTP, or by a call to a subscriber hosted in this process.

    ``local`` maps URL origins (see :func:`agentfn.brokers.inprocess.origin_of`) to in-process
    subscribers; every other URL is POSTed to.
    """

    def __init__(
        self, *, connections: int = 512, local: Mapping[str, LocalSubscriber] | None = None
    ) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._pool = Http1Pool()
        self._targets: dict[str, tuple[str, int, str] | None] = {}
        self._local = {origin_of(key): subscriber for key, subscriber in (local or {}).items()}
        self._local_by_url: dict[str, LocalSubscriber | None] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        self._pool.close()
        if self._session is not None:
            await self._session.close()

    def _plain_http(self, url: str) -> tuple[str, int, str] | None:
        """(host, port, target) for an ``http://`` URL the lean client serves, else None."""
        if url not in self._targets:
            parts = urlsplit(url)
            if parts.scheme == "http" and parts.hostname and not parts.username:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                self._targets[url] = (parts.hostname, parts.port or 80, target)
            else:
                self._targets[url] = None
        return self._targets[url]

    async def send(
        self,
        url: str,
        event: CloudEvent,
        *,
        timeout: float,
        expect_reply: bool = True,
        format: DeliveryFormat | None = None,
    ) -> Attempt:
        """Deliver ``event``: a call to an in-process subscriber, else a POST in the content mode
        ``format`` (the Trigger's ``delivery.format``) sets or :func:`agentfn.events.to_http` picks;
        read the answer, and a reply event if there is one."""
        assert self._session is not None, "start() the sender first"
        if self._local:
            if url not in self._local_by_url:
                self._local_by_url[url] = self._local.get(origin_of(url))
            local = self._local_by_url[url]
            if local is not None:
                return await self._call(local, url, event, timeout)
        headers, body = to_http(event, format)
        if expect_reply:
            headers["prefer"] = "reply"
        plain = self._plain_http(url)
        if plain is not None:
            try:
                response = await self._pool.post(*plain, headers, body, timeout=timeout)
            except RequestFailedError as error:
                return Attempt(status=None, error=str(error))
            return self._interpret(response.status, response.headers, response.body)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as reply:
                answer = await reply.read()
                status = reply.status
                answer_headers = [(k.lower(), v) for k, v in reply.raw_headers]
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return Attempt(status=None, error=f"{type(error).__name__}: {error}")
        return self._interpret(status, answer_headers, answer)

    async def _call(
        self, subscriber: LocalSubscriber, url: str, event: CloudEvent, timeout: float
    ) -> Attempt:
        """One delivery to an in-process subscriber, answered as if over HTTP."""
        try:
            async with asyncio.timeout(timeout):
                status, headers, body = await subscriber(event)
        except TimeoutError:
            # As over HTTP: no answer in time. The handler is cancelled rather than left
            # running beside the retry (a server would keep it; here nobody could stop it).
            return Attempt(status=None, error=f"{url}: no answer within {timeout:g}s")
        except Exception as error:
            # A crash of the subscriber, not an answer: what a reset connection is over HTTP.
            log.exception("in-process subscriber %s failed", url)
            return Attempt(status=None, error=f"{type(error).__name__}: {error}")
        return self._interpret(status, headers, body)

    @staticmethod
    def _interpret(status: int, headers: Sequence[tuple[bytes, bytes]], answer: bytes) -> Attempt:
        retry_after = None
        if status in (429, 503):
            for name, value in headers:
                if name == b"retry-after":
                    retry_after = parse_retry_after(value.decode("latin-1"))
        if not 200 <= status < 300 or not answer:
            return Attempt(status=status, body=answer, retry_after=retry_after)
        try:
            replies = from_http(headers, answer)
        except InvalidEventError as error:
            # A non-empty 2xx body must be a CloudEvent (Knative's filter answers 502 otherwise).
            return Attempt(status=BAD_GATEWAY, body=answer, error=f"invalid reply: {error}")
        if len(replies) != 1:
            return Attempt(status=BAD_GATEWAY, body=answer, error="a reply carries one event")
        return Attempt(status=status, body=answer, reply=replies[0])


async def wait_or_stop(delay: float, stopping: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds unless ``stopping`` is set first; True when it was set."""
    if delay <= 0:
        return stopping.is_set()
    try:
        await asyncio.wait_for(stopping.wait(), delay)
    except TimeoutError:
        return False
    return True
