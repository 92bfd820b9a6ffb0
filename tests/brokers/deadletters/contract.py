"""The dead-letter store contract: every implementation runs these tests unchanged.

A store's test module subclasses :class:`LetterStoreContract` and overrides two fixtures,
``backend`` (where this test's letters live) and ``outage_backend`` (one whose writes the test
may cut and restore: for Redis, a server of the test's own). A :class:`StoreBackend` makes
store objects over the same data (a reopen is a new object on it, as a restarted sink is).

Every time is given (``at=``); no assertion reads a clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from agentfn.brokers.deadletters.letters import (
    DeadLetter,
    LetterPage,
    LetterQuery,
    Replay,
    TriggerRef,
)
from agentfn.brokers.deadletters.store import (
    DeadLetterStore,
    LetterNotFoundError,
    LetterStoreUnavailableError,
)
from agentfn.events import CloudEvent
from agentfn.events.extensions import (
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DEST,
)

DEST = "http://planner.default.svc.cluster.local/"
PLANNER = "/default/default/planner"
T0 = 1_700_000_000.123456  # digits past the millisecond: times must come back exact


class StoreBackend(ABC):
    """Where one test's letters live; every store it makes sees the same letters."""

    @abstractmethod
    def make(self) -> DeadLetterStore:
        """A new store object over this backend's data, not started."""

    async def cut(self) -> None:
        """Make the stores' next writes fail (the disk, the server gone)."""
        raise NotImplementedError

    async def restore(self) -> None:
        """Undo :meth:`cut`."""
        raise NotImplementedError


def dead_event(
    n: int,
    *,
    type_: str = "test.task",
    source: str = "/tests",
    code: str = "422",
    dest: str = DEST,
    body: bytes = b'{"error": "bad input"}',
    data: Any = None,
) -> CloudEvent:
    """An event as the broker posts it to a deadLetterSink: with Knative's error extensions."""
    return CloudEvent.new(
        type_,
        source,
        {"n": n} if data is None else data,
        id=f"event-{n}",
        **{
            KNATIVE_ERROR_DEST: dest,
            KNATIVE_ERROR_CODE: code,
            KNATIVE_ERROR_DATA: base64.b64encode(body).decode(),
        },
    )


def letter(n: int, *, path: str = PLANNER, at: float = T0, **event: Any) -> DeadLetter:
    return DeadLetter.received(dead_event(n, **event), TriggerRef.from_path(path), at=at)


def again(original: DeadLetter, *, at: float, code: str = "500") -> DeadLetter:
    """The same dead letter arriving again (same source, id, knativeerrordest)."""
    event = original.event.with_attributes(**{KNATIVE_ERROR_CODE: code})
    return DeadLetter.received(event, original.origin, at=at)


def accepted(at: float, status: int = 202) -> Replay:
    return Replay(
        at=at, to="http://broker/default/default", event_id="x", new_id=False, status=status
    )


def refused(at: float, status: int | None = 503) -> Replay:
    error = "connection refused" if status is None else "try later"
    return Replay(
        at=at,
        to="http://broker/default/default",
        event_id="x",
        new_id=False,
        status=status,
        error=error,
    )


def keys(page: LetterPage | Sequence[DeadLetter]) -> list[str]:
    letters = page.letters if isinstance(page, LetterPage) else page
    return [one.key for one in letters]


async def every_page(store: DeadLetterStore, query: LetterQuery) -> list[LetterPage]:
    pages = [await store.list(query)]
    while pages[-1].next is not None:
        assert len(pages) < 100, "paging does not end"
        pages.append(
            await store.list(
                LetterQuery(**{**_fields(query), "after": pages[-1].next})  # type: ignore[arg-type]
            )
        )
    return pages


def _fields(query: LetterQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


class LetterStoreContract:
    """What every dead-letter store must do. Subclasses override the two backend fixtures."""

    @pytest.fixture
    def backend(self) -> StoreBackend:
        raise NotImplementedError

    @pytest.fixture
    def outage_backend(self) -> StoreBackend:
        raise NotImplementedError

    @pytest.fixture
    async def opened(self) -> AsyncIterator[list[DeadLetterStore]]:
        """Stores a test started; closed after it, whatever happened."""
        stores: list[DeadLetterStore] = []
        yield stores
        for store in stores:
            await store.aclose()

    @pytest.fixture
    async def store(self, backend: StoreBackend, opened: list[DeadLetterStore]) -> DeadLetterStore:
        return await self.start(backend, opened)

    @staticmethod
    async def start(backend: StoreBackend, opened: list[DeadLetterStore]) -> DeadLetterStore:
        store = backend.make()
        await store.start()
        opened.append(store)
        return store

    # -- append ------------------------------------------------------------------------------

    async def test_a_new_letter_is_stored_whole(self, store: DeadLetterStore) -> None:
        new = letter(1, data=b"\x00\xffraw bytes")
        assert await store.append(new) == (new, True)
        assert await store.get(new.key) == new
        (listed,) = (await store.list(LetterQuery())).letters
        assert listed == new
        assert listed.event.data == b"\x00\xffraw bytes"
        assert listed.error_data is not None
        assert listed.error_data.json == {"error": "bad input"}

    async def test_a_redacted_letter_comes_back_redacted(self, store: DeadLetterStore) -> None:
        event = dead_event(1, body=b'{"token": "secret"}')
        redacted = DeadLetter.received(event, TriggerRef.from_path(PLANNER), at=T0, redact=True)
        await store.append(redacted)
        stored = await store.get(redacted.key)
        assert stored == redacted
        assert stored.error_data is not None
        assert stored.error_data.raw is None
        assert stored.error_data.redacted
        assert KNATIVE_ERROR_DATA not in stored.event.attributes
        assert "secret" not in json.dumps(stored.to_json())

    async def test_the_same_letter_while_waiting_is_kept_once_unchanged(
        self, store: DeadLetterStore
    ) -> None:
        first = letter(1, at=T0)
        await store.append(first)
        retried = again(first, at=T0 + 5, code="503")
        assert await store.append(retried) == (first, False)
        assert await store.get(first.key) == first
        assert keys(await store.list(LetterQuery())) == [first.key]
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}

    async def test_a_letter_back_after_an_accepted_replay_reopens_its_record(
        self, store: DeadLetterStore
    ) -> None:
        first = letter(1, at=T0)
        other = letter(2, at=T0 + 1)
        await store.append(first)
        await store.append(other)
        replayed = await store.record_replay(first.key, accepted(T0 + 10))
        back = again(first, at=T0 + 20, code="500")

        reopened, new = await store.append(back)
        assert new
        assert reopened == replayed.returned(back)
        assert reopened.arrivals == 2
        assert reopened.waiting
        assert reopened.error_code == "500"
        assert reopened.first_arrived_at == T0
        assert reopened.arrived_at == T0 + 20
        assert reopened.replays == (accepted(T0 + 10),)  # the history stays
        assert await store.get(first.key) == reopened
        # Still one record, still in first-arrival order, waiting again.
        assert keys(await store.list(LetterQuery())) == [first.key, other.key]
        assert dict(await store.depth()) == {("default", "default", "planner"): 2}
        # While it waits again, a retry of the sink is a duplicate once more.
        assert await store.append(again(first, at=T0 + 21, code="502")) == (reopened, False)

    async def test_a_refused_or_unanswered_replay_does_not_end_the_wait(
        self, store: DeadLetterStore
    ) -> None:
        first = letter(1)
        await store.append(first)
        after_refusal = await store.record_replay(first.key, refused(T0 + 10, 503))
        after_silence = await store.record_replay(first.key, refused(T0 + 11, None))
        assert after_refusal.waiting
        assert after_silence.waiting
        assert after_silence.replays == (refused(T0 + 10, 503), refused(T0 + 11, None))
        assert await store.get(first.key) == after_silence
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}
        assert await store.append(again(first, at=T0 + 20)) == (after_silence, False)

    async def test_every_replay_is_recorded_and_the_latest_accepted_one_counts(
        self, store: DeadLetterStore
    ) -> None:
        first = letter(1)
        await store.append(first)
        once = await store.record_replay(first.key, accepted(T0 + 10))
        assert once == first.with_replay(accepted(T0 + 10))
        assert once.replayed_at == T0 + 10
        assert dict(await store.depth()) == {}
        forced = await store.record_replay(first.key, accepted(T0 + 30, status=200))
        assert forced.replayed_at == T0 + 30
        assert forced.replays == (accepted(T0 + 10), accepted(T0 + 30, status=200))
        refused_later = await store.record_replay(first.key, refused(T0 + 40))
        assert refused_later.replayed_at == T0 + 30  # a refusal does not undo the acceptance
        assert await store.get(first.key) == refused_later
        assert dict(await store.depth()) == {}

    async def test_concurrent_appends_of_one_letter_keep_exactly_one_record(
        self, store: DeadLetterStore
    ) -> None:
        first = letter(1)
        results = await asyncio.gather(*(store.append(first) for _ in range(20)))
        assert [new for _, new in results].count(True) == 1
        assert all(stored == first for stored, _ in results)
        assert keys(await store.list(LetterQuery())) == [first.key]
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}

        await store.record_replay(first.key, accepted(T0 + 10))
        back = [again(first, at=T0 + 20 + i) for i in range(20)]
        results = await asyncio.gather(*(store.append(one) for one in back))
        assert [new for _, new in results].count(True) == 1  # reopened once, not 20 times
        stored = await store.get(first.key)
        assert stored is not None
        assert stored.arrivals == 2
        assert all(one == stored for one, _ in results)
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}

    async def test_two_stores_on_the_same_data_keep_one_record(
        self, backend: StoreBackend, opened: list[DeadLetterStore]
    ) -> None:
        # Two sinks (replicas) receiving the same retried letter at once.
        one = await self.start(backend, opened)
        two = await self.start(backend, opened)
        first = letter(1)
        results = await asyncio.gather(
            *(store.append(first) for _ in range(10) for store in (one, two))
        )
        assert [new for _, new in results].count(True) == 1
        assert keys(await one.list(LetterQuery())) == [first.key]
        assert dict(await two.depth()) == {("default", "default", "planner"): 1}

    # -- list --------------------------------------------------------------------------------

    async def test_list_is_in_first_arrival_order(self, store: DeadLetterStore) -> None:
        # Arrival times out of order (clocks of several sinks): the order is the store's.
        a = letter(1, at=T0 + 30)
        b = letter(2, at=T0 + 10, path="/other/default/audit")
        c = letter(3, at=T0 + 20, path="/default/default/writer")
        for one in (a, b, c):
            await store.append(one)
        await store.record_replay(a.key, accepted(T0 + 40))
        await store.append(again(a, at=T0 + 50))  # reopened: keeps its place
        assert keys(await store.list(LetterQuery())) == [a.key, b.key, c.key]

    async def test_every_filter_selects_exactly_its_letters(self, store: DeadLetterStore) -> None:
        planner = letter(1, at=T0)
        writer = letter(2, at=T0 + 10, path="/default/default/writer", type_="test.draft")
        audit = letter(3, at=T0 + 20, path="/default/audit/planner")
        other_ns = letter(4, at=T0 + 30, path="/team-b/default/planner")
        unknown = letter(5, at=T0 + 40, path="/")
        replayed = letter(6, at=T0 + 50, type_="test.draft")
        for one in (planner, writer, audit, other_ns, unknown, replayed):
            await store.append(one)
        await store.record_replay(replayed.key, accepted(T0 + 60))
        await store.record_replay(planner.key, refused(T0 + 60))  # still waiting

        cases: list[tuple[LetterQuery, list[DeadLetter]]] = [
            (LetterQuery(), [planner, writer, audit, other_ns, unknown, replayed]),
            (LetterQuery(namespace="default"), [planner, writer, audit, replayed]),
            (LetterQuery(namespace="team-b"), [other_ns]),
            (LetterQuery(broker="audit"), [audit]),
            (LetterQuery(broker="default"), [planner, writer, other_ns, replayed]),
            (LetterQuery(trigger="planner"), [planner, audit, other_ns, replayed]),
            (LetterQuery(trigger="writer"), [writer]),
            (
                LetterQuery(namespace="default", broker="default", trigger="planner"),
                [planner, replayed],
            ),
            (LetterQuery(type="test.draft"), [writer, replayed]),
            (LetterQuery(event_id="event-3"), [audit]),
            (LetterQuery(event_id="event-99"), []),
            (LetterQuery(since=T0 + 20), [audit, other_ns, unknown, replayed]),
            (LetterQuery(before=T0 + 20), [planner, writer]),
            (LetterQuery(since=T0 + 10, before=T0 + 30), [writer, audit]),
            (LetterQuery(replayed=True), [replayed]),
            (LetterQuery(replayed=False), [planner, writer, audit, other_ns, unknown]),
            (LetterQuery(trigger="planner", replayed=False), [planner, audit, other_ns]),
            (LetterQuery(type="test.draft", since=T0 + 11), [replayed]),
        ]
        for query, expected in cases:
            assert keys(await store.list(query)) == keys(expected), query

    async def test_since_and_before_follow_the_latest_arrival(self, store: DeadLetterStore) -> None:
        first = letter(1, at=T0)
        await store.append(first)
        await store.record_replay(first.key, accepted(T0 + 10))
        await store.append(again(first, at=T0 + 100))
        assert keys(await store.list(LetterQuery(since=T0 + 50))) == [first.key]
        assert keys(await store.list(LetterQuery(before=T0 + 50))) == []
        assert keys(await store.list(LetterQuery(replayed=False))) == [first.key]

    async def test_paging_visits_every_letter_exactly_once(self, store: DeadLetterStore) -> None:
        letters = [letter(n, at=T0 + n) for n in range(5)]
        for one in letters:
            await store.append(one)
        pages = await every_page(store, LetterQuery(limit=2))
        assert [len(page.letters) for page in pages] == [2, 2, 1]
        assert [key for page in pages for key in keys(page)] == keys(letters)
        assert pages[-1].next is None

        exact = await every_page(store, LetterQuery(limit=5))
        assert [len(page.letters) for page in exact] == [5]
        assert exact[0].next is None

    async def test_paging_with_a_filter_skips_the_others(self, store: DeadLetterStore) -> None:
        letters = [
            letter(n, at=T0 + n, path=PLANNER if n % 2 else "/default/default/writer")
            for n in range(11)
        ]
        for one in letters:
            await store.append(one)
        wanted = [one for one in letters if one.origin.trigger == "planner"]
        pages = await every_page(store, LetterQuery(trigger="planner", limit=2))
        assert [len(page.letters) for page in pages] == [2, 2, 1]
        assert [key for page in pages for key in keys(page)] == keys(wanted)

    async def test_letters_appended_while_paging_come_on_a_later_page(
        self, store: DeadLetterStore
    ) -> None:
        for n in range(3):
            await store.append(letter(n))
        page = await store.list(LetterQuery(limit=2))
        late = letter(9)
        await store.append(late)
        rest = await store.list(LetterQuery(limit=2, after=page.next))
        assert keys(rest) == [letter(2).key, late.key]
        assert rest.next is None

    async def test_an_empty_store(self, store: DeadLetterStore) -> None:
        assert await store.list(LetterQuery()) == LetterPage((), None)
        assert dict(await store.depth()) == {}
        assert await store.delete([]) == []

    async def test_a_cursor_that_is_not_one_is_a_value_error(self, store: DeadLetterStore) -> None:
        with pytest.raises(ValueError, match="after"):
            await store.list(LetterQuery(after="not a cursor"))

    # -- get, replay, delete -----------------------------------------------------------------

    async def test_get_of_an_unknown_key_is_none(self, store: DeadLetterStore) -> None:
        await store.append(letter(1))
        assert await store.get("0123456789abcdef") is None

    async def test_a_replay_of_an_unknown_key_is_not_found(self, store: DeadLetterStore) -> None:
        with pytest.raises(LetterNotFoundError):
            await store.record_replay("0123456789abcdef", accepted(T0))
        assert await store.list(LetterQuery()) == LetterPage((), None)

    async def test_delete_returns_the_letters_that_existed(self, store: DeadLetterStore) -> None:
        a, b, c = letter(1), letter(2), letter(3, path="/default/default/writer")
        for one in (a, b, c):
            await store.append(one)
        replayed_a = await store.record_replay(a.key, accepted(T0 + 10))
        deleted = await store.delete([a.key, "0123456789abcdef", c.key, c.key])
        assert sorted(keys(deleted)) == sorted([a.key, c.key])
        assert {one.key: one for one in deleted} == {a.key: replayed_a, c.key: c}
        assert await store.get(a.key) is None
        assert keys(await store.list(LetterQuery())) == [b.key]
        assert dict(await store.depth()) == {("default", "default", "planner"): 1}
        assert await store.delete([a.key]) == []
        # A deleted letter that arrives again is a new one, last in the order.
        back = again(a, at=T0 + 20)
        assert await store.append(back) == (back, True)
        assert keys(await store.list(LetterQuery())) == [b.key, a.key]

    # -- depth -------------------------------------------------------------------------------

    async def test_depth_counts_waiting_letters_per_trigger(self, store: DeadLetterStore) -> None:
        a = letter(1)
        b = letter(2)
        c = letter(3, path="/default/default/writer")
        d = letter(4, path="/default/default")  # the Trigger not named: ""
        e = letter(5, path="/")
        for one in (a, b, c, d, e):
            await store.append(one)
        assert dict(await store.depth()) == {
            ("default", "default", "planner"): 2,
            ("default", "default", "writer"): 1,
            ("default", "default", ""): 1,
            ("", "", ""): 1,
        }
        await store.record_replay(c.key, accepted(T0 + 10))
        await store.delete([e.key])
        assert dict(await store.depth()) == {
            ("default", "default", "planner"): 2,
            ("default", "default", ""): 1,
        }  # no zeros
        await store.append(again(c, at=T0 + 20))
        await store.record_replay(a.key, accepted(T0 + 30))
        await store.delete([b.key, d.key])
        assert dict(await store.depth()) == {("default", "default", "writer"): 1}

    async def test_a_letter_reopened_through_another_trigger_counts_there(
        self, store: DeadLetterStore
    ) -> None:
        a = letter(1)
        await store.append(a)
        await store.record_replay(a.key, accepted(T0 + 10))
        # Replayed, then dead-lettered again by a Trigger with another path to the sink.
        back = DeadLetter.received(
            a.event, TriggerRef.from_path("/default/default/writer"), at=T0 + 20
        )
        stored, created = await store.append(back)
        assert created
        assert stored.origin.trigger == "writer"
        assert dict(await store.depth()) == {("default", "default", "writer"): 1}
        await store.record_replay(a.key, accepted(T0 + 30))
        assert dict(await store.depth()) == {}

    # -- durability and failure --------------------------------------------------------------

    async def test_letters_survive_closing_and_reopening(
        self, backend: StoreBackend, opened: list[DeadLetterStore]
    ) -> None:
        store = await self.start(backend, opened)
        a, b = letter(1, at=T0), letter(2, at=T0 + 1, path="/default/default/writer")
        await store.append(a)
        await store.append(b)
        replayed = await store.record_replay(a.key, accepted(T0 + 10))
        await store.aclose()
        opened.remove(store)

        reopened = await self.start(backend, opened)
        assert await reopened.get(a.key) == replayed
        assert (await reopened.list(LetterQuery())).letters == (replayed, b)
        assert dict(await reopened.depth()) == {("default", "default", "writer"): 1}
        assert await reopened.append(a) == (replayed.returned(a), True)

    async def test_a_store_that_cannot_write_raises_unavailable(
        self, outage_backend: StoreBackend, opened: list[DeadLetterStore]
    ) -> None:
        store = await self.start(outage_backend, opened)
        kept, refused_letter = letter(1), letter(2)
        await store.append(kept)
        await outage_backend.cut()
        try:
            with pytest.raises(LetterStoreUnavailableError) as raised:
                await store.append(refused_letter)
            assert "dead-letter store" in str(raised.value)
            with pytest.raises(LetterStoreUnavailableError):
                await store.record_replay(kept.key, accepted(T0 + 10))
            with pytest.raises(LetterStoreUnavailableError):
                await store.delete([kept.key])
        finally:
            await outage_backend.restore()
        # Writable again: the broker's retry of the refused letter is stored.
        assert await store.append(refused_letter) == (refused_letter, True)
