"""Publishing to a broker ingress over HTTP (a recording receiver stands in for the broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from agentfn.functions import (
    BreakerPolicy,
    CircuitBreakers,
    CircuitOpenError,
    HttpPublisher,
    PublishError,
    UnavailableError,
)
from agentfn.functions._publisher import SessionPool, destination_of

from tests._servers import free_port
from tests.functions._support import Sink, event, serving


@pytest.fixture
async def sessions() -> AsyncIterator[SessionPool]:
    pool = SessionPool(timeout_s=5)
    yield pool
    await pool.aclose()


async def test_events_go_out_in_binary_mode(sessions: SessionPool) -> None:
    broker = Sink()
    async with serving(broker) as url:
        publisher = HttpPublisher(f"{url}/default/default", sessions, CircuitBreakers())
        sent = event("t", {"a": 1}, agentfnchainid="c")
        await publisher.publish(sent)
        await publisher.publish(event("t", b"\x00raw"))
    assert broker.paths == ["/default/default", "/default/default"]
    assert broker.headers[0]["ce-id"] == sent.id
    assert broker.events[0].attributes == sent.attributes
    assert broker.events[1].data == b"\x00raw"


@pytest.mark.parametrize("status", [404, 409, 429, 500, 503])
async def test_answers_the_broker_retries_are_unavailable(
    sessions: SessionPool, status: int
) -> None:
    broker = Sink(default_status=status, answer_headers=[(b"retry-after", b"4")])
    async with serving(broker) as url:
        publisher = HttpPublisher(url, sessions, CircuitBreakers())
        with pytest.raises(UnavailableError) as error:
            await publisher.publish(event("t", {}))
    assert (error.value.status, error.value.retry_after) == (status, 4.0)


async def test_an_http_date_retry_after_is_honoured(sessions: SessionPool) -> None:
    # RFC 9110 allows an HTTP date as well as seconds; the broker reads both, so must the agent.
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    ahead = format_datetime(now + timedelta(hours=2), usegmt=True)
    past = format_datetime(datetime(2015, 10, 21, 7, 28, tzinfo=UTC), usegmt=True)
    waits: list[float | None] = []
    for header in (ahead, past):
        broker = Sink(default_status=503, answer_headers=[(b"retry-after", header.encode())])
        async with serving(broker) as url:
            publisher = HttpPublisher(url, sessions, CircuitBreakers(), clock=lambda: now)
            with pytest.raises(UnavailableError) as error:
                await publisher.publish(event("t", {}))
        waits.append(error.value.retry_after)
    assert waits[0] == 7200.0
    assert waits[1] == 0.0  # a date already past: no wait, not "unreadable"


async def test_a_refused_event_is_a_publish_error_and_not_a_breaker_failure(
    sessions: SessionPool,
) -> None:
    broker = Sink(default_status=400)
    breakers = CircuitBreakers(BreakerPolicy(failures=1))
    async with serving(broker) as url:
        publisher = HttpPublisher(url, sessions, breakers)
        for _ in range(2):
            with pytest.raises(PublishError, match="400"):
                await publisher.publish(event("t", {}))


async def test_an_unreachable_broker_opens_its_breaker(sessions: SessionPool) -> None:
    url = f"http://127.0.0.1:{free_port()}/ns/b"
    publisher = HttpPublisher(url, sessions, CircuitBreakers(BreakerPolicy(failures=2)))
    for _ in range(2):
        with pytest.raises(UnavailableError, match="not reachable"):
            await publisher.publish(event("t", {}))
    with pytest.raises(CircuitOpenError) as refused:
        await publisher.publish(event("t", {}))
    assert refused.value.destination == destination_of(url) == url.rsplit("/ns", 1)[0]
