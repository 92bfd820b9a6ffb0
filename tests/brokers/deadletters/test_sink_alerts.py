"""The depth alarm of a real sink: one transition each way, one threshold event at a real sink.

Absence is proven with a marker: the alerts are posted in transition order by one task, so
once a later Trigger's alert has arrived, every alert before it has been posted.

The alarm follows the depth in the background (a 202 never waits for it); the client here
brings it up to date after each change (``sink.settled()``, what a scrape does), so the
transitions are those of the depth after each change, one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from agentfn.brokers.deadletters import DeadLetterSettings, DeadLetterSink, SqliteLetterStore
from agentfn.events import CloudEvent, to_binary

from tests._servers import free_port
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Subscriber

T0 = 1_700_000_000.0
PLANNER = ("default", "default", "planner")
MARKER = ("default", "default", "marker")


def letter(n: int) -> CloudEvent:
    return CloudEvent.new(
        "order.placed", "/shop", {"n": n}, id=f"order-{n}", knativeerrorcode="500"
    )


class Sink:
    def __init__(self, sink: DeadLetterSink, url: str, session: aiohttp.ClientSession) -> None:
        self.sink = sink
        self.url = url
        self.session = session

    async def send(self, event: CloudEvent, labels: tuple[str, str, str] = PLANNER) -> None:
        headers, body = to_binary(event)
        path = "/" + "/".join(labels)
        async with self.session.post(self.url + path, headers=headers, data=body) as response:
            assert response.status == 202
        await self.sink.settled()

    async def delete(self, event: CloudEvent) -> None:
        async with self.session.get(
            self.url + "/v1/letters", params={"event_id": event.id}
        ) as response:
            (found,) = (await response.json())["letters"]
        async with self.session.delete(self.url + f"/v1/letters/{found['key']}") as response:
            assert response.status == 200
        await self.sink.settled()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Subscriber]:
    sub = await Subscriber().start()
    yield sub
    await sub.stop()


async def start(
    path: Path, session: aiohttp.ClientSession, **settings: object
) -> tuple[DeadLetterSink, Sink]:
    sink = DeadLetterSink(
        SqliteLetterStore(path / "letters.sqlite3"),
        settings=DeadLetterSettings(**settings),
        clock=lambda: T0,
    )
    await sink.start()
    port = await sink.listen("127.0.0.1", 0)
    return sink, Sink(sink, f"http://127.0.0.1:{port}", session)


async def test_crossing_up_and_down_is_one_transition_each_and_one_event(
    tmp_path: Path, session: aiohttp.ClientSession, receiver: Subscriber
) -> None:
    sink, client = await start(tmp_path, session, alert_depth=2, alert_sink=receiver.url)
    try:
        letters = [letter(n) for n in range(5)]
        for event in letters[:2]:
            await client.send(event)
        assert sink.alarms == [], "2 waiting is not over a threshold of 2"
        for event in letters[2:]:  # 3, 4, 5 waiting: one crossing
            await client.send(event)
        await client.send(letters[0])  # a duplicate: the depth does not move
        for event in letters[:3]:  # 4, 3, 2: back at the threshold
            await client.delete(event)
        assert sink.alarms == [
            (PLANNER, "exceeded", 3),
            (PLANNER, "recovered", 2),
        ]
        labels = dict(zip(("namespace_name", "broker_name", "trigger_name"), PLANNER, strict=True))
        assert sink.metrics.registry.get_sample_value("agentfn_deadletters_depth", labels) == 2

        for n in range(100, 103):  # the marker: another Trigger crossing after
            await client.send(letter(n), MARKER)
        await async_wait_until(lambda: len(receiver.arrivals) >= 2, message="the marker alert")
        first, marker = receiver.events()
        assert len(receiver.arrivals) == 2, "one event for the planner's crossing"
        assert (first.type, first.source) == (
            "dev.agentfn.deadletters.threshold",
            "/agentfn/deadletters",
        )
        assert first.attributes["subject"] == "default/default/planner"
        assert first.data == {
            "namespace": "default",
            "broker": "default",
            "trigger": "planner",
            "depth": 3,
            "threshold": 2,
            "state": "exceeded",
        }
        assert marker.attributes["subject"] == "default/default/marker"
        assert sink.alarms[2:] == [(MARKER, "exceeded", 3)]
    finally:
        await sink.aclose()


async def test_a_depth_over_the_threshold_at_start_up_is_a_crossing(
    tmp_path: Path, session: aiohttp.ClientSession, receiver: Subscriber
) -> None:
    sink, client = await start(tmp_path, session)
    try:
        for n in range(3):
            await client.send(letter(n))
        assert sink.alarms == [], "no alert logic without alert_depth"
    finally:
        await sink.aclose()
    sink, _ = await start(tmp_path, session, alert_depth=1, alert_sink=receiver.url)
    try:
        assert sink.alarms == [(PLANNER, "exceeded", 3)]
        await async_wait_until(lambda: receiver.arrivals, message="the start-up alert")
        assert receiver.events()[0].data["depth"] == 3
    finally:
        await sink.aclose()


async def test_an_alert_sink_that_is_down_is_logged_once_per_alert(
    tmp_path: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    sink, client = await start(tmp_path, session, alert_depth=0, alert_sink=down)
    with caplog.at_level(logging.WARNING, logger="agentfn.brokers.deadletters._alerts"):
        await client.send(letter(1))
        assert sink.alarms
        await sink.aclose()  # posts what is queued first
    failures = [r for r in caplog.records if "did not take the threshold event" in r.message]
    crossings = [r for r in caplog.records if "over the threshold" in r.message]
    assert (len(crossings), len(failures)) == (1, 1)
    assert sink.alarms == [(PLANNER, "exceeded", 1)]


async def test_the_alarm_follows_changes_without_a_scrape(
    tmp_path: Path, session: aiohttp.ClientSession, receiver: Subscriber
) -> None:
    """No scrape and no ``settled()``: the sink's own follower reads the depth after changes."""
    sink, client = await start(tmp_path, session, alert_depth=1, alert_sink=receiver.url)
    try:
        for n in (1, 2):
            headers, body = to_binary(letter(n))
            url = client.url + "/default/default/planner"
            async with session.post(url, headers=headers, data=body) as response:
                assert response.status == 202
        await async_wait_until(lambda: bool(sink.alarms), message="the alarm to follow")
        await async_wait_until(lambda: len(receiver.arrivals) == 1, message="the alert")
        depth = receiver.events()[0].data["depth"]
        assert sink.alarms == [(PLANNER, "exceeded", depth)]
        assert depth == 2, "the read after the second letter, or one read after both"
    finally:
        await sink.aclose()
