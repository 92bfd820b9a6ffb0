"""The dead-letter sink over real HTTP: what the broker posts is kept whole, the API serves it.

Every sink here runs on a loopback port over a real SQLite store, with a clock the test sets:
arrival and replay times are asserted exactly. Replays go to real receivers: a recording
HTTP server (to see exactly what the sink sent) or a real broker with a Trigger.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from agentfn.brokers.config import parse_documents
from agentfn.brokers.deadletters import (
    REPLAY_OF,
    DeadLetter,
    DeadLetterSettings,
    DeadLetterSink,
    DeadLetterStore,
    SqliteLetterStore,
)
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.server import BrokerServer
from agentfn.events import (
    CloudEvent,
    InvalidEventError,
    from_http,
    to_batch,
    to_binary,
    to_structured,
)
from agentfn.events.extensions import (
    KNATIVE_BROKER_TTL,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DEST,
)
from prometheus_client.parser import text_string_to_metric_families

from tests._servers import free_port, wait_for_port
from tests._waiting import async_wait_until
from tests.brokers._subscribers import Answer, Subscriber
from tests.brokers.contract import PROJECT, RunningBroker, agentfn_command, settled, trigger

T0 = 1_700_000_000.25
DEST = "http://planner.default.svc.cluster.local/"
PLANNER = "/default/default/planner"
PLANNER_LABELS = {"namespace_name": "default", "broker_name": "default", "trigger_name": "planner"}
ERROR_BODY = b'{"error": "order 42 has no lines"}'
BROKER_ATTRIBUTES = (KNATIVE_ERROR_DEST, KNATIVE_ERROR_CODE, KNATIVE_ERROR_DATA, KNATIVE_BROKER_TTL)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dead_event(n: int = 1, *, type_: str = "order.placed", **ext: object) -> CloudEvent:
    """An event as the broker posts it to a deadLetterSink."""
    return CloudEvent.new(
        type_,
        "/shop",
        {"order": n, "note": "caf\u00e9"},
        id=f"order-{n}",
        subject=f"orders/{n}",
        **{
            KNATIVE_ERROR_DEST: DEST,
            KNATIVE_ERROR_CODE: "422",
            KNATIVE_ERROR_DATA: base64.b64encode(ERROR_BODY).decode(),
            KNATIVE_BROKER_TTL: "3",  # binary mode carries every extension as a string
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            **ext,
        },
    )


@dataclass
class Running:
    sink: DeadLetterSink
    url: str
    session: aiohttp.ClientSession
    clock: Clock

    async def post(
        self, path: str, headers: Mapping[str, str], body: bytes | Any
    ) -> tuple[int, dict[str, str], bytes]:
        async with self.session.post(self.url + path, headers=dict(headers), data=body) as r:
            return r.status, dict(r.headers), await r.read()

    async def send(self, event: CloudEvent, path: str = PLANNER, mode: str = "binary") -> int:
        write = {"binary": to_binary, "structured": to_structured}[mode]
        status, _, _ = await self.post(path, *write(event))
        return status

    async def api(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.url + path, params=params, json=body
        ) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, await response.json()

    async def letter(self, key: str) -> dict[str, Any]:
        status, body = await self.api("GET", f"/v1/letters/{key}")
        assert status == 200, body
        return body

    async def letters(self, **params: str) -> list[dict[str, Any]]:
        status, body = await self.api("GET", "/v1/letters", params=params)
        assert status == 200, body
        return body["letters"]

    async def metric(self, name: str, **labels: str) -> float:
        async with self.session.get(self.url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


MakeSink = Callable[..., Awaitable[Running]]


@pytest.fixture
async def make_sink(tmp_path: Path) -> AsyncIterator[MakeSink]:
    stack = AsyncExitStack()
    session = aiohttp.ClientSession()

    async def make(
        store: DeadLetterStore | None = None, clock: Clock | None = None, **settings: Any
    ) -> Running:
        clock = clock or Clock()
        sink = DeadLetterSink(
            store or SqliteLetterStore(tmp_path / "letters.sqlite3"),
            settings=DeadLetterSettings(**settings),
            clock=clock,
            replay_timeout=5.0,
        )
        await stack.enter_async_context(sink)
        port = await sink.listen("127.0.0.1", 0)
        return Running(sink, f"http://127.0.0.1:{port}", session, clock)

    yield make
    await stack.aclose()
    await session.close()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Subscriber]]]:
    """Recording HTTP servers: what a replay sent, exactly as it arrived."""
    started: list[Subscriber] = []

    async def make(behaviour: Any = None) -> Subscriber:
        sub = Subscriber(behaviour) if behaviour is not None else Subscriber()
        started.append(await sub.start())
        return sub

    yield make
    for sub in started:
        await sub.stop()


# -- the sink endpoint -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured", "batch"])
async def test_each_content_mode_stores_the_letter_whole(make_sink: MakeSink, mode: str) -> None:
    sink = await make_sink()
    events = [dead_event(1), dead_event(2, type_="order.cancelled")]
    if mode == "batch":
        headers, body = to_batch(events)
    else:
        events = events[:1]
        headers, body = (to_binary if mode == "binary" else to_structured)(events[0])
    assert (await sink.post(PLANNER, headers, body))[0] == 202

    sink.clock.now = T0 + 90
    listed = await sink.letters()
    assert [letter["id"] for letter in listed] == [event.id for event in events]
    for sent, raw in zip(events, listed, strict=True):
        letter = DeadLetter.from_json(raw)
        assert dict(letter.event.attributes) == dict(sent.attributes)  # the extensions too
        assert letter.event.data == sent.data
        assert (letter.origin.namespace, letter.origin.broker, letter.origin.trigger) == (
            "default",
            "default",
            "planner",
        )
        assert letter.error_dest == DEST
        assert letter.error_code == "422"
        assert letter.error_data is not None
        assert letter.error_data.body == ERROR_BODY
        assert raw["error"]["data"]["text"] == ERROR_BODY.decode()
        assert raw["error"]["data"]["raw"] == base64.b64encode(ERROR_BODY).decode()
        assert (letter.first_arrived_at, letter.arrived_at, letter.arrivals) == (T0, T0, 1)
        assert raw["age"] == 90
        assert letter.waiting
        assert await sink.letter(letter.key) == raw


@pytest.mark.parametrize(
    ("path", "origin"),
    [
        ("/", (None, None, None)),
        ("/team", ("team", None, None)),
        ("/team/orders/", ("team", "orders", None)),
        ("/team/orders/billing", ("team", "orders", "billing")),
    ],
)
async def test_the_trigger_comes_from_the_path(
    make_sink: MakeSink, path: str, origin: tuple[str | None, ...]
) -> None:
    sink = await make_sink()
    assert await sink.send(dead_event(), path) == 202
    (letter,) = await sink.letters()
    assert (letter["namespace"], letter["broker"], letter["trigger"]) == origin


async def test_a_letter_posted_twice_is_one_record_and_202_both_times(
    make_sink: MakeSink,
) -> None:
    sink = await make_sink()
    event = dead_event()
    assert await sink.send(event) == 202
    sink.clock.now = T0 + 5  # the broker's retry of the sink, later
    assert await sink.send(event, mode="structured") == 202
    (letter,) = await sink.letters()
    assert (letter["arrivals"], letter["arrived_at"]) == (1, T0)
    assert await sink.metric("agentfn_deadletters_stored_total", **PLANNER_LABELS) == 1
    assert await sink.metric("agentfn_deadletters_duplicates_total", **PLANNER_LABELS) == 1
    assert await sink.metric("agentfn_deadletters_depth", **PLANNER_LABELS) == 1


async def test_what_is_no_cloudevent_is_400_with_the_ingress_body(make_sink: MakeSink) -> None:
    sink = await make_sink()
    cases: list[tuple[dict[str, str], bytes]] = [
        ({"content-type": "application/json"}, b'{"order": 1}'),
        ({"content-type": "application/cloudevents+json"}, b"{not json"),
        (
            {"content-type": "application/cloudevents-batch+json"},
            json.dumps([json.loads(to_structured(dead_event())[1]), {"id": "x"}]).encode(),
        ),
    ]
    for headers, body in cases:
        with pytest.raises(InvalidEventError) as raised:
            from_http(headers, body)
        status, answer_headers, answer = await sink.post(PLANNER, headers, body)
        assert status == 400
        assert answer_headers["Content-Type"] == "application/json"
        assert json.loads(answer) == raised.value.as_dict()
    assert await sink.letters() == [], "a batch is all or nothing"


async def test_other_methods_are_405_with_allow(make_sink: MakeSink) -> None:
    sink = await make_sink()
    for method, path, allow in [
        ("GET", PLANNER, "POST, OPTIONS"),
        ("PUT", "/", "POST, OPTIONS"),
        ("DELETE", "/default", "POST, OPTIONS"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("PUT", "/v1/letters", "GET, DELETE"),
        ("POST", "/v1/letters/abc", "GET, DELETE"),
        ("GET", "/v1/letters/abc/replay", "POST"),
        ("POST", "/v1/depth", "GET"),
    ]:
        async with sink.session.request(method, sink.url + path) as response:
            assert response.status == 405, (method, path)
            assert response.headers["Allow"] == allow
            assert "error" in await response.json()
    async with sink.session.options(sink.url + PLANNER) as response:
        assert response.status == 200
        assert response.headers["Allow"] == "POST, OPTIONS"


async def test_a_body_over_the_limit_is_413(make_sink: MakeSink) -> None:
    limit = 64 * 1024
    sink = await make_sink(max_body_bytes=limit)
    big = CloudEvent.new("order.placed", "/shop", b"x" * (limit + 1), id="big")
    headers, body = to_binary(big)
    status, _, answer = await sink.post(PLANNER, headers, body)
    assert status == 413
    assert json.loads(answer) == {"error": f"body over {limit} bytes"}

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while read
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    async with sink.session.post(sink.url + PLANNER, headers=headers, data=chunks()) as response:
        assert response.status == 413
    fits = CloudEvent.new("order.placed", "/shop", b"x" * (limit - 1024), id="fits")
    assert await sink.send(fits) == 202
    assert [letter["id"] for letter in await sink.letters()] == ["fits"]


async def test_unknown_paths_are_404(make_sink: MakeSink) -> None:
    sink = await make_sink()
    status, _, answer = await sink.post("/a/b/c/d", *to_binary(dead_event()))
    assert status == 404
    assert "error" in json.loads(answer)
    for path in ("/v1", "/v1/letters/abc/replay/now", "/v1/nothing", "/v1/depth/x"):
        status, body = await sink.api("GET", path)
        assert status == 404, path
        assert "error" in body
    status, body = await sink.api("GET", "/v1/letters/0123456789abcdef")
    assert (status, body) == (404, {"error": "no letter 0123456789abcdef"})
    assert await sink.letters() == []


async def test_a_store_that_cannot_write_answers_503_and_the_retry_is_stored(
    make_sink: MakeSink, tmp_path: Path
) -> None:
    path = tmp_path / "locked.sqlite3"
    sink = await make_sink(SqliteLetterStore(path, busy_timeout=0.05))
    # Another process holding the file's write lock: every write of the sink times out.
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        status, headers, body = await sink.post(PLANNER, *to_binary(dead_event()))
        assert status == 503
        assert headers["Content-Type"] == "application/json"
        assert "error" in json.loads(body)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await sink.send(dead_event()) == 202  # the broker's retry
    assert [letter["id"] for letter in await sink.letters()] == ["order-1"]
    assert await sink.metric("agentfn_deadletters_stored_total") == 1


async def test_healthz_is_503_until_the_store_is_open(tmp_path: Path) -> None:
    sink = DeadLetterSink(SqliteLetterStore(tmp_path / "letters.sqlite3"), clock=Clock())
    port = await sink.listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as response:
                assert (response.status, await response.text()) == (503, "starting")
            headers, body = to_binary(dead_event())
            async with session.post(url + PLANNER, headers=headers, data=body) as response:
                assert response.status == 503, "nothing is acknowledged before the store opens"
            await sink.start()
            async with session.get(url + "/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok")
            async with session.post(url + PLANNER, headers=headers, data=body) as response:
                assert response.status == 202
    finally:
        await sink.aclose()


async def test_redaction_keeps_only_length_and_hash(make_sink: MakeSink) -> None:
    sink = await make_sink(redact_data=True)
    assert await sink.send(dead_event()) == 202
    (raw,) = await sink.letters()
    assert raw["error"]["data"] == {
        "raw": None,
        "text": None,
        "length": len(ERROR_BODY),
        "sha256": hashlib.sha256(ERROR_BODY).hexdigest(),
        "redacted": True,
    }
    assert KNATIVE_ERROR_DATA not in raw["event"]
    assert raw["event"][KNATIVE_ERROR_CODE] == "422"
    assert base64.b64encode(ERROR_BODY).decode() not in json.dumps(raw)


# -- the API: list, paging, filters, purge ---------------------------------------------


async def test_paging_through_the_letters(make_sink: MakeSink) -> None:
    sink = await make_sink()
    for n in range(5):
        sink.clock.now = T0 + n
        assert await sink.send(dead_event(n)) == 202
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        status, body = await sink.api("GET", "/v1/letters", params=params)
        assert status == 200
        pages += 1
        assert len(body["letters"]) == (2 if body["next"] else 1)
        seen += [letter["id"] for letter in body["letters"]]
        after = body["next"]
        if after is None:
            break
    assert (pages, seen) == (3, [f"order-{n}" for n in range(5)])


async def test_filters_read_times_by_the_sinks_clock(make_sink: MakeSink) -> None:
    sink = await make_sink()
    for offset, n, path in [
        (0, 1, PLANNER),
        (3600, 2, "/default/default/billing"),
        (7140, 3, PLANNER),
    ]:
        sink.clock.now = T0 + offset
        assert await sink.send(dead_event(n, type_=f"type.{n}"), path) == 202
    sink.clock.now = T0 + 7200

    async def ids(**params: str) -> list[str]:
        return [letter["id"] for letter in await sink.letters(**params)]

    assert await ids(since="90s") == ["order-3"]
    assert await ids(since="1h") == ["order-2", "order-3"]  # arrived_at >= now - 3600
    assert await ids(since="PT1H") == ["order-2", "order-3"]
    assert await ids(since="1h59m") == ["order-2", "order-3"]
    assert await ids(since="2h") == ["order-1", "order-2", "order-3"]
    assert await ids(before="59m") == ["order-1", "order-2"]  # arrived_at < now - 3540
    assert await ids(before="1h") == ["order-1"]
    moment = datetime.fromtimestamp(T0 + 3600, UTC).isoformat().replace("+00:00", "Z")
    assert await ids(since=moment) == ["order-2", "order-3"]
    assert await ids(before=moment) == ["order-1"]
    assert await ids(trigger="planner") == ["order-1", "order-3"]
    assert await ids(type="type.2") == ["order-2"]
    assert await ids(event_id="order-3", namespace="default", broker="default") == ["order-3"]
    assert await ids(replayed="true") == []
    assert [letter["age"] for letter in await sink.letters()] == [7200, 3600, 60]

    for params, named in [
        ({"since": "soon"}, "since"),
        ({"before": "2024-01-01T00:00:00"}, "before"),  # no offset
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"replayed": "yes"}, "replayed"),
        ({"after": "not-a-cursor"}, "after"),
        ({"trigger": "a", "triger": "b"}, "triger"),
    ]:
        status, body = await sink.api("GET", "/v1/letters", params=params)
        assert status == 400, params
        assert body["error"].startswith(f"{named}:"), body


async def test_purge_by_filters_needs_a_filter_or_all(make_sink: MakeSink) -> None:
    sink = await make_sink()
    for offset, n, path in [(0, 1, PLANNER), (10, 2, "/default/default/billing"), (20, 3, PLANNER)]:
        sink.clock.now = T0 + offset
        assert await sink.send(dead_event(n), path) == 202
    sink.clock.now = T0 + 30

    status, body = await sink.api("DELETE", "/v1/letters")
    assert status == 400
    assert body["error"].startswith("all:")
    assert len(await sink.letters()) == 3

    assert await sink.api("DELETE", "/v1/letters", params={"before": "15s"}) == (
        200,
        {"purged": 2},
    )
    assert [x["id"] for x in await sink.letters()] == ["order-3"]
    assert await sink.metric("agentfn_deadletters_purged_total", **PLANNER_LABELS) == 1
    assert await sink.metric("agentfn_deadletters_purged_total", trigger_name="billing") == 1
    assert await sink.metric("agentfn_deadletters_depth", trigger_name="billing") == 0

    key = (await sink.letters())[0]["key"]
    assert await sink.api("DELETE", f"/v1/letters/{key}") == (200, {"purged": 1})
    assert await sink.api("DELETE", f"/v1/letters/{key}") == (404, {"error": f"no letter {key}"})

    assert await sink.send(dead_event(4)) == 202
    assert await sink.api("DELETE", "/v1/letters", params={"all": "true"}) == (200, {"purged": 1})
    assert await sink.letters() == []
    assert await sink.metric("agentfn_deadletters_purged_total") == 4
    assert await sink.metric("agentfn_deadletters_depth") == 0


# -- replay ----------------------------------------------------------------------------


async def test_replay_sends_the_original_without_what_the_broker_added(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]]
) -> None:
    ingress = await receivers()
    sink = await make_sink(broker_url=ingress.url)
    original = dead_event()
    assert await sink.send(original) == 202
    (letter,) = await sink.letters()

    sink.clock.now = T0 + 600
    status, body = await sink.api("POST", f"/v1/letters/{letter['key']}/replay", body={})
    assert status == 200, body
    assert body["dry_run"] is False
    assert body["replay"] == {
        "at": T0 + 600,
        "to": ingress.url,
        "event_id": original.id,
        "new_id": False,
        "status": 202,
        "error": None,
        "ok": True,
    }
    assert body["letter"]["replayed_at"] == T0 + 600
    assert body["letter"]["replays"] == [body["replay"]]

    (arrival,) = ingress.arrivals
    expected = {k: v for k, v in original.attributes.items() if k not in BROKER_ATTRIBUTES}
    assert dict(arrival.event.attributes) == expected
    assert arrival.event.data == original.data
    assert not any(name.startswith("ce-knative") for name in arrival.headers)
    assert body["event"] == json.loads(to_structured(arrival.event)[1])

    assert (await sink.letter(letter["key"]))["replayed_at"] == T0 + 600
    assert [x["id"] for x in await sink.letters(replayed="true")] == [original.id]
    assert await sink.letters(replayed="false") == []
    status, depth = await sink.api("GET", "/v1/depth")
    assert (status, depth) == (200, {"depth": [], "alert_depth": None})
    outcome = PLANNER_LABELS | {"outcome": "accepted"}
    assert await sink.metric("agentfn_deadletters_replayed_total", **outcome) == 1
    assert await sink.metric("agentfn_deadletters_depth", **PLANNER_LABELS) == 0


async def test_replay_with_a_new_id_names_the_original(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]]
) -> None:
    ingress = await receivers()
    sink = await make_sink()
    original = dead_event()
    assert await sink.send(original) == 202
    (letter,) = await sink.letters()
    status, body = await sink.api(
        "POST", f"/v1/letters/{letter['key']}/replay", body={"to": ingress.url, "new_id": True}
    )
    assert status == 200, body
    (arrival,) = ingress.arrivals
    assert arrival.event.id != original.id
    assert arrival.event.attributes[REPLAY_OF] == original.id
    assert arrival.event.source == original.source
    assert body["replay"]["event_id"] == arrival.event.id
    assert body["replay"]["new_id"] is True


async def test_a_second_replay_needs_force_and_dry_run_sends_nothing(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]]
) -> None:
    ingress = await receivers()
    sink = await make_sink(broker_url=ingress.url)
    assert await sink.send(dead_event()) == 202
    (letter,) = await sink.letters()
    replay = f"/v1/letters/{letter['key']}/replay"

    status, body = await sink.api("POST", replay, body={"dry_run": True})
    assert status == 200
    assert (body["dry_run"], body["replay"], body["letter"]["replays"]) == (True, None, [])
    assert body["event"]["id"] == "order-1"
    assert KNATIVE_ERROR_CODE not in body["event"]
    assert (await sink.letter(letter["key"]))["replays"] == [], "a dry run records nothing"

    sink.clock.now = T0 + 10
    assert (await sink.api("POST", replay, body={}))[0] == 200
    assert len(ingress.arrivals) == 1, "the dry run sent nothing: only the replay arrived"

    status, body = await sink.api("POST", replay, body={})
    assert status == 409
    assert "use force" in body["error"]
    assert body["letter"]["replayed_at"] == T0 + 10
    status, body = await sink.api("POST", replay, body={"dry_run": True})
    assert status == 409, "a dry run predicts the conflict"
    assert len(ingress.arrivals) == 1

    sink.clock.now = T0 + 20
    status, body = await sink.api("POST", replay, body={"force": True})
    assert status == 200
    assert len(ingress.arrivals) == 2
    assert [r["at"] for r in body["letter"]["replays"]] == [T0 + 10, T0 + 20]
    assert body["letter"]["replayed_at"] == T0 + 20


async def test_a_refused_or_unanswered_replay_is_recorded_and_the_letter_waits(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]]
) -> None:
    ingress = await receivers(lambda _e, _n: Answer(400, b'{"error": "no broker here"}'))
    sink = await make_sink()
    assert await sink.send(dead_event()) == 202
    (letter,) = await sink.letters()
    replay = f"/v1/letters/{letter['key']}/replay"

    status, body = await sink.api("POST", replay, body={"to": ingress.url})
    assert status == 200
    assert (body["replay"]["status"], body["replay"]["ok"]) == (400, False)
    assert body["replay"]["error"] == '{"error": "no broker here"}'
    assert body["letter"]["replayed_at"] is None

    closed = f"http://127.0.0.1:{free_port()}/default/default"
    status, body = await sink.api("POST", replay, body={"to": closed})
    assert status == 200, "no 409: the letter is still waiting"
    assert (body["replay"]["status"], body["replay"]["ok"]) == (None, False)
    assert body["replay"]["error"]
    assert [r["status"] for r in body["letter"]["replays"]] == [400, None]
    assert await sink.metric("agentfn_deadletters_depth", **PLANNER_LABELS) == 1
    for outcome in ("refused", "unanswered"):
        labels = PLANNER_LABELS | {"outcome": outcome}
        assert await sink.metric("agentfn_deadletters_replayed_total", **labels) == 1


async def test_replay_requests_that_are_wrong(make_sink: MakeSink) -> None:
    sink = await make_sink()
    assert await sink.send(dead_event()) == 202
    (letter,) = await sink.letters()
    replay = f"/v1/letters/{letter['key']}/replay"
    for body, named in [
        ({}, "to"),  # no broker_url either
        ({"to": "ftp://x/"}, "to"),
        ({"to": "http://x/", "force": "yes"}, "force"),
        ({"to": "http://x/", "newid": True}, "newid"),
        ([1], "body"),
    ]:
        status, answer = await sink.api("POST", replay, body=body)
        assert status == 400, body
        assert answer["error"].startswith(f"{named}:"), answer
    status, answer = await sink.api(
        "POST", "/v1/letters/0123456789abcdef/replay", body={"to": "http://x/"}
    )
    assert (status, answer) == (404, {"error": "no letter 0123456789abcdef"})
    assert (await sink.letter(letter["key"]))["replays"] == []


async def test_a_real_broker_dead_letters_and_a_replay_delivers_once(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]], tmp_path: Path
) -> None:
    fixed = False

    def agent(_event: CloudEvent, _n: int) -> Answer:
        return Answer(202) if fixed else Answer(422, b'{"error": "no lines"}')

    sub = await receivers(agent)
    sink = await make_sink()
    documents = [
        trigger(
            "planner",
            sub.url,
            delivery={"retry": 0, "deadLetterSink": {"uri": sink.url + PLANNER}},
        )
    ]
    server = BrokerServer(parse_documents(documents), SqliteEventLog(tmp_path / "log", fsync=False))
    await server.start()
    try:
        broker = RunningBroker(server, await server.listen("127.0.0.1", 0))
        original = CloudEvent.new("order.placed", "/shop", {"order": 42})
        headers, body = to_binary(original)
        async with sink.session.post(broker.url(), headers=headers, data=body) as response:
            assert response.status == 202
        await async_wait_until(sink.letters, message="the dead letter")
        await settled(broker, "planner")
        (raw,) = await sink.letters()
        letter = DeadLetter.from_json(raw)
        assert (letter.error_dest, letter.error_code) == (sub.url, "422")
        assert letter.error_data is not None
        assert letter.error_data.json == {"error": "no lines"}
        assert letter.origin.describe() == "default/default/planner"

        fixed = True
        status, answer = await sink.api(
            "POST", f"/v1/letters/{letter.key}/replay", body={"to": broker.url()}
        )
        assert status == 200
        assert answer["replay"]["ok"] is True
        await async_wait_until(lambda: len(sub.arrivals) == 2, message="the replay")
        await settled(broker, "planner")
        replayed = sub.arrivals[1].event
        assert (replayed.id, replayed.source) == (original.id, original.source)
        assert not any(name.startswith("knativeerror") for name in replayed.attributes)
        assert sub.ids() == [original.id, original.id]
        assert len(await sink.letters()) == 1, "delivered: nothing dead-lettered again"
    finally:
        await server.stop(grace=0.5)


# -- agentfn dlq serve -----------------------------------------------------------------


async def test_dlq_serve_keeps_what_it_acknowledged_across_kill_9(tmp_path: Path) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'letters.sqlite3'}"
    command = [
        *agentfn_command(),
        "dlq",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        store,
    ]
    env = os.environ | {"AGENTFN_DLQ_ALERT_DEPTH": "7", "AGENTFN_BROKER_URL": "http://b:1/"}
    url = f"http://127.0.0.1:{port}"

    def spawn(*flags: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*command, *flags], cwd=PROJECT, env=env, stderr=subprocess.PIPE, text=True
        )

    async with aiohttp.ClientSession() as session:
        proc = spawn()
        try:
            await asyncio.to_thread(wait_for_port, port, timeout=20)
            async with session.get(url + "/v1/depth") as response:
                assert (await response.json())["alert_depth"] == 7, "from AGENTFN_DLQ_ALERT_DEPTH"
            headers, body = to_binary(dead_event())
            async with session.post(url + PLANNER, headers=headers, data=body) as response:
                assert response.status == 202
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        finally:
            if proc.poll() is None:
                proc.kill()

        proc = spawn("--alert-depth", "0")
        try:
            await asyncio.to_thread(wait_for_port, port, timeout=20)
            async with session.get(url + "/v1/letters") as response:
                (letter,) = (await response.json())["letters"]
            assert letter["id"] == "order-1", "acknowledged before the kill: kept"
            async with session.get(url + "/v1/depth") as response:
                assert await response.json() == {
                    "depth": [
                        {
                            "namespace": "default",
                            "broker": "default",
                            "trigger": "planner",
                            "depth": 1,
                        }
                    ],
                    "alert_depth": 0,  # the flag wins over the variable
                }
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr
        assert f"dead-letter sink ready on http://127.0.0.1:{port}" in stderr
        assert "replays to: http://b:1/" in stderr


def test_dlq_serve_refuses_a_store_it_does_not_know(tmp_path: Path) -> None:
    done = subprocess.run(
        [*agentfn_command(), "dlq", "serve", "--store", "mysql://db/x", "--port", "0"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "store: 'mysql://db/x'" in done.stderr


async def test_a_replayed_letter_that_comes_back_waits_again(
    make_sink: MakeSink, receivers: Callable[..., Awaitable[Subscriber]]
) -> None:
    ingress = await receivers()
    sink = await make_sink(broker_url=ingress.url)
    assert await sink.send(dead_event()) == 202
    (letter,) = await sink.letters()
    sink.clock.now = T0 + 10
    assert (await sink.api("POST", f"/v1/letters/{letter['key']}/replay", body={}))[0] == 200
    assert await sink.metric("agentfn_deadletters_depth", **PLANNER_LABELS) == 0

    sink.clock.now = T0 + 20  # the cause was not fixed: the broker dead-letters it again
    assert await sink.send(dead_event(attempt="again")) == 202
    back = await sink.letter(letter["key"])
    assert (back["arrivals"], back["first_arrived_at"], back["arrived_at"]) == (2, T0, T0 + 20)
    assert back["replayed_at"] is None
    assert back["event"]["attempt"] == "again"
    assert len(back["replays"]) == 1
    assert await sink.metric("agentfn_deadletters_stored_total", **PLANNER_LABELS) == 2
    assert await sink.metric("agentfn_deadletters_duplicates_total", **PLANNER_LABELS) == 0
    assert await sink.metric("agentfn_deadletters_depth", **PLANNER_LABELS) == 1
