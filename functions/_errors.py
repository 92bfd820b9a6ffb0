"""The exceptions a handler raises (or lets through) to choose how the broker retries."""

from __future__ import annotations

__all__ = [
    "AgentDefinitionError",
    "CircuitOpenError",
    "PublishError",
    "RetryableError",
    "StoreUnavailableError",
    "UnavailableError",
]


class AgentDefinitionError(TypeError):
    """An agent or handler declaration that cannot work (caught at import, not per event)."""


class RetryableError(Exception):
    """A failure worth retrying later: the runtime answers 503 with ``Retry-After``.

    ``retry_after`` is in seconds; ``None`` uses ``AGENTFN_RETRY_AFTER_S``. Knative retries a
    503 with the Trigger's backoff (and honours ``Retry-After`` where that feature is on), so
    a transient outage does not burn attempts into the dead-letter sink.
    """

    def __init__(self, message: str = "retry later", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(RetryableError):
    """A downstream answered 5xx or 429, or could not be reached."""

    def __init__(
        self,
        destination: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{destination}: {message}", retry_after=retry_after)
        self.destination = destination
        self.status = status


class CircuitOpenError(RetryableError):
    """The breaker of ``destination`` is open: the call was not made."""

    def __init__(self, destination: str, retry_after: float) -> None:
        super().__init__(
            f"circuit to {destination} is open for {retry_after:.1f}s more",
            retry_after=retry_after,
        )
        self.destination = destination


class StoreUnavailableError(RetryableError):
    """The idempotency store cannot be reached: the event is refused, never run unrecorded.

    The agent's only store. The broker's event log has an error of its own,
    :class:`agentfn.brokers.LogUnavailableError`: neither package imports the other.
    """


class PublishError(Exception):
    """The broker refused a published event for good (a 4xx other than 404/408/409/429)."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{url} answered {status}: {body[:200]!r}")
        self.url = url
        self.status = status
