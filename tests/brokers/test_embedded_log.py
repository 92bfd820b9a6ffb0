"""The embedded SQLite log below the broker: catch-up reads, trimming, restart positions."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from agentfn.brokers.embedded import SqliteEventLog
from agentfn.brokers.log import LogUnavailableError
from agentfn.events import CloudEvent

from tests._waiting import async_wait_until


def ev(i: int) -> CloudEvent:
    return CloudEvent.new("log.test", "/tests", {"i": i})


async def drain(subscription, want: int, *, batch: int = 7) -> list[int]:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    while len(seen) < want:
        records = await subscription.fetch(batch, timeout=2.0)
        assert records, f"stalled after {len(seen)} of {want}"
        seen.extend(r.event.data["i"] for r in records)
    return seen


async def test_a_subscription_that_overflows_its_buffer_catches_up_from_disk(
    tmp_path: Path,
) -> None:
    log = SqliteEventLog(tmp_path, buffer_limit=10)
    await log.start()
    try:
        sub = await log.subscribe("topic", "group")
        # Appends race the reader: far more than the buffer holds, in many transactions.
        writer = asyncio.gather(*(log.append("topic", [ev(i)]) for i in range(300)))
        seen = await drain(sub, 300)
        await writer
        assert sorted(seen) == list(range(300))
        assert len(seen) == len(set(seen)), "no record twice"
        offsets = [r.offset for r in await sub.fetch(1, timeout=0.05)]
        assert offsets == [], "nothing beyond what was appended"
    finally:
        await log.aclose()


async def test_records_come_in_offset_order_with_no_gap(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path, buffer_limit=25)
    await log.start()
    try:
        sub = await log.subscribe("topic", "group")
        for chunk in range(20):
            await log.append("topic", [ev(chunk * 10 + j) for j in range(10)])
        offsets: list[int] = []
        while len(offsets) < 200:
            offsets.extend(r.offset for r in await sub.fetch(13, timeout=2.0))
        assert offsets == list(range(200))
    finally:
        await log.aclose()


async def test_committed_events_are_trimmed_and_uncommitted_ones_kept(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path, trim_interval=0.05)
    await log.start()
    try:
        fast = await log.subscribe("topic", "fast")
        slow = await log.subscribe("topic", "slow")
        await log.append("topic", [ev(i) for i in range(100)])
        await drain(fast, 100, batch=100)
        await fast.commit({0: 100})
        await drain(slow, 100, batch=100)
        await slow.commit({0: 40})

        def rows() -> list[int]:
            with sqlite3.connect(log.path) as conn:
                return [s for (s,) in conn.execute("SELECT seq FROM events ORDER BY seq")]

        await async_wait_until(lambda: rows() and rows()[0] == 40, message="trim to the slowest")
        assert rows() == list(range(40, 100))
    finally:
        await log.aclose()


async def test_a_restart_resumes_each_group_at_its_committed_offset(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path)
    await log.start()
    sub = await log.subscribe("topic", "group")
    await log.append("topic", [ev(i) for i in range(10)])
    await drain(sub, 10, batch=10)
    await sub.commit({0: 6})  # 6..9 were fetched but their outcome is unknown
    await log.aclose()

    again = SqliteEventLog(tmp_path)
    await again.start()
    try:
        resumed = await again.subscribe("topic", "group")
        assert await drain(resumed, 4, batch=10) == [6, 7, 8, 9]
        newcomer = await again.subscribe("topic", "new-group")
        await again.append("topic", [ev(10)])
        assert await drain(newcomer, 1) == [10], "a new group starts at the end of the log"
    finally:
        await again.aclose()


async def test_a_batch_is_one_transaction(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path, busy_timeout=0.1, write_timeout=2.0)
    await log.start()
    holder = sqlite3.connect(log.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(LogUnavailableError):
            await log.append("topic", [ev(1), ev(2), ev(3)])
        holder.rollback()
        with sqlite3.connect(log.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        records = await log.append("topic", [ev(4), ev(5)])
        assert [r.offset for r in records] == [0, 1], "the failed batch used no offsets"
    finally:
        holder.close()
        await log.aclose()
