"""Outbound HTTP of an agent: publishing events to the broker ingress, and ``ctx.http``.

One pooled keep-alive aiohttp session per agent app, created on first use (inside the running
loop) and closed at shutdown. Every call goes through the destination's circuit breaker and
carries the handling span's trace context.

aiohttp (and yarl, multidict) are imported on first use, not with this module: an agent that
neither publishes nor calls out never loads them, and ``agentfn serve`` starts that much sooner.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from agentfn.events import CloudEvent, is_retryable_status, parse_retry_after, to_http
from agentfn.functions._breaker import CircuitBreakers
from agentfn.functions._errors import PublishError, UnavailableError

from agentfn._lifecycle import Closing

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "HTTPClient",
    "HTTPResponse",
    "HttpPublisher",
    "NoPublisher",
    "Publisher",
    "SessionPool",
    "destination_of",
    "is_connection_error",
]


def destination_of(url: str) -> str:
    """The breaker key of a URL: its origin (scheme, host and port)."""
    from yarl import URL  # noqa: PLC0415 - see the module docstring

    return str(URL(url).origin())


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` is a failure to connect: ``ConnectionError`` or aiohttp's kind.

    Does not import aiohttp: an aiohttp error can only exist once something imported it.
    """
    if isinstance(error, ConnectionError):
        return True
    aiohttp_ = sys.modules.get("aiohttp")
    return aiohttp_ is not None and isinstance(error, aiohttp_.ClientConnectionError)


class SessionPool(Closing):
    """The agent's one aiohttp session, made when first needed."""

    def __init__(self, *, timeout_s: float, limit: int = 100) -> None:
        self._timeout_s = timeout_s
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            import aiohttp  # noqa: PLC0415 - see the module docstring

            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._session = session
        return session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Publisher(Protocol):
    """Where emitted events go when they are not the reply."""

    async def publish(self, event: CloudEvent) -> None: ...


class NoPublisher:
    """The publisher of an agent configured with no broker: publishing is a clear error (a 500
    naming the setting), never a silent drop."""

    def __init__(self, agent: str) -> None:
        self._agent = agent

    async def publish(self, event: CloudEvent) -> None:
        raise RuntimeError(
            f"agent {self._agent!r} publishes events but has no broker: "
            "set AGENTFN_BROKER_URL (agentfn serve --broker URL)"
        )


class HttpPublisher:
    """POSTs events to a broker ingress (``http://host/<ns>/<broker>``).

    Binary mode, or structured where a string would need percent-encoding in a header
    (:func:`agentfn.events.to_http`): Knative's own ingress does not decode it, and would store the
    ``%20`` for every consumer to read.

    The broker answering 2xx means it holds the event. 404/408/409/429, 5xx and unreachable
    raise :class:`UnavailableError` (the handler answers 503 and is retried); another 4xx
    raises :class:`PublishError` (a bug: 500).
    """

    def __init__(
        self,
        url: str,
        sessions: SessionPool,
        breakers: CircuitBreakers,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = url
        self._sessions = sessions
        self._breakers = breakers
        self._destination = destination_of(url)
        # What an HTTP-date Retry-After is measured from.
        self._clock = clock

    async def publish(self, event: CloudEvent) -> None:
        import aiohttp  # noqa: PLC0415 - see the module docstring

        headers, body = to_http(event)
        async with self._breakers.guard(self._destination):
            try:
                async with self._sessions.get().post(self.url, data=body, headers=headers) as reply:
                    status = reply.status
                    answer = await reply.read()
                    asked = reply.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as error:
                raise UnavailableError(self.url, f"not reachable: {error!r}") from error
            if 200 <= status < 300:
                return
            # The answers the broker (and Knative) retry: worth another try later.
            if is_retryable_status(status):
                raise UnavailableError(
                    self.url,
                    f"answered {status}",
                    status=status,
                    retry_after=parse_retry_after(asked, now=self._clock()),
                )
        # Outside the guard: a refusal of this event says nothing about the broker's health.
        raise PublishError(self.url, status, answer)


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A downstream's answer, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HTTPClient:
    """``ctx.http``: HTTP calls through the destination's breaker, carrying the trace.

    A 5xx or 429 answer, a timeout or an unreachable host counts against the breaker and
    raises :class:`UnavailableError` (so an uncaught one answers 503); other answers are
    returned whatever their status.
    """

    __slots__ = ("_breakers", "_sessions", "_trace_headers")

    def __init__(
        self, sessions: SessionPool, breakers: CircuitBreakers, trace_headers: Mapping[str, str]
    ) -> None:
        self._sessions = sessions
        self._breakers = breakers
        self._trace_headers = trace_headers

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        destination: str | None = None,
    ) -> HTTPResponse:
        """Send one request; ``destination`` names the breaker (default: the URL's origin)."""
        import aiohttp  # noqa: PLC0415 - see the module docstring
        from multidict import CIMultiDict, CIMultiDictProxy  # noqa: PLC0415

        sent = dict(self._trace_headers)
        if headers:
            sent.update(headers)
        key = destination or destination_of(url)
        options: dict[str, Any] = {"headers": sent}
        if json is not None:
            options["json"] = json
        if data is not None:
            options["data"] = data
        if params is not None:
            options["params"] = params
        if timeout_s is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        async with self._breakers.guard(key):
            try:
                async with self._sessions.get().request(method, url, **options) as reply:
                    headers_ = CIMultiDictProxy(CIMultiDict(reply.headers))
                    response = HTTPResponse(reply.status, headers_, await reply.read())
            except (aiohttp.ClientError, TimeoutError) as error:
                raise UnavailableError(key, f"not reachable: {error!r}") from error
            if response.status >= 500 or response.status == 429:
                raise UnavailableError(
                    key,
                    f"answered {response.status}",
                    status=response.status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
        return response

    async def get(self, url: str, **options: Any) -> HTTPResponse:
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Any) -> HTTPResponse:
        return await self.request("POST", url, **options)
