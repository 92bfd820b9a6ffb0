"""The dead-letter store contract against the embedded SQLite store, and what is its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentfn.brokers.deadletters import SqliteLetterStore, open_store
from agentfn.brokers.deadletters.letters import DeadLetter, LetterQuery
from agentfn.brokers.deadletters.store import LetterNotFoundError, LetterStoreUnavailableError

from tests.brokers.deadletters.contract import (
    PLANNER,
    LetterStoreContract,
    StoreBackend,
    accepted,
    letter,
)

PROJECT = Path(__file__).resolve().parents[3]
PLANNER_LABELS = ("default", "default", "planner")


class SqliteBackend(StoreBackend):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._holders: list[sqlite3.Connection] = []

    def make(self) -> SqliteLetterStore:
        return SqliteLetterStore(self.path, busy_timeout=0.2, write_timeout=5.0)

    async def cut(self) -> None:
        # Another process holding the file's write lock: a real way for writes to fail, and
        # one that works when the tests run as root (permissions would not stop root).
        holder = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        self._holders.append(holder)

    async def restore(self) -> None:
        self.release()

    def release(self) -> None:
        while self._holders:
            holder = self._holders.pop()
            holder.rollback()
            holder.close()


class TestSqliteLetterStore(LetterStoreContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[SqliteBackend]:
        backend = SqliteBackend(tmp_path / "letters" / "deadletters.sqlite3")
        yield backend
        backend.release()

    @pytest.fixture
    def outage_backend(self, backend: SqliteBackend) -> SqliteBackend:
        return backend


async def test_the_file_and_its_folders_are_made_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "letters.sqlite3"
    async with SqliteLetterStore(path) as store:
        await store.append(letter(1))
        # synchronous is a setting of each connection: the store's own say FULL (fsync on commit).
        own = store._connect()
        try:
            assert own.execute("PRAGMA synchronous").fetchone() == (2,)
        finally:
            own.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(letters)")}
        assert columns >= {
            "seq", "key", "namespace", "broker", "trigger", "type", "event_id",
            "arrived_at", "replayed_at", "record",
        }  # fmt: skip
        indexed = {
            conn.execute(f"PRAGMA index_info({name})").fetchone()[2]
            for _, name, *_ in conn.execute("PRAGMA index_list(letters)")
        }
        assert {"key", "namespace", "arrived_at"} <= indexed
    finally:
        conn.close()


async def test_a_file_without_the_depth_counts_is_counted_once_on_open(tmp_path: Path) -> None:
    """The depth is kept in a table by SQL triggers; a file written before it existed (or whose
    counts were lost) is counted from its letters when opened, and then kept from there."""
    path = tmp_path / "letters.sqlite3"
    async with SqliteLetterStore(path) as store:
        for n in (1, 2, 3):
            await store.append(letter(n))
        await store.record_replay(letter(1).key, accepted(2_000.0))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE depth")
    conn.commit()
    conn.close()
    async with SqliteLetterStore(path) as store:
        assert dict(await store.depth()) == {PLANNER_LABELS: 2}
        await store.append(letter(4))
        assert dict(await store.depth()) == {PLANNER_LABELS: 3}
    async with SqliteLetterStore(path) as store:  # counted once, not again on each open
        assert dict(await store.depth()) == {PLANNER_LABELS: 3}


async def test_open_store_names_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "x" / "letters.sqlite3"
    store = open_store(f"sqlite:///{path}")  # an absolute path: sqlite:////...
    assert isinstance(store, SqliteLetterStore)
    assert store.path == path


async def test_a_file_that_cannot_be_made_raises_unavailable_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the folder should be")
    store = SqliteLetterStore(blocker / "letters.sqlite3")
    with pytest.raises(LetterStoreUnavailableError, match="not-a-folder"):
        await store.start()
    await store.aclose()


async def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = SqliteLetterStore(tmp_path / "letters.sqlite3")
    with pytest.raises(LetterStoreUnavailableError, match="not started"):
        await store.append(letter(1))
    await store.start()
    await store.aclose()
    with pytest.raises(LetterStoreUnavailableError):
        await store.append(letter(1))


async def test_a_failing_write_does_not_undo_the_others_committed_with_it(
    tmp_path: Path,
) -> None:
    # Writes made at once share a transaction; each runs under its own savepoint.
    async with SqliteLetterStore(tmp_path / "letters.sqlite3") as store:
        letters = [letter(n) for n in range(30)]
        results = await asyncio.gather(
            *(store.append(one) for one in letters[:15]),
            store.record_replay("0123456789abcdef", accepted(0)),
            *(store.append(one) for one in letters[15:]),
            return_exceptions=True,
        )
        assert isinstance(results[15], LetterNotFoundError)
        assert [r for i, r in enumerate(results) if i != 15] == [(one, True) for one in letters]
        page = await store.list(LetterQuery(limit=1000))
        assert [one.key for one in page.letters] == [one.key for one in letters]


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from agentfn.brokers.deadletters import SqliteLetterStore
    from tests.brokers.deadletters.contract import letter

    async def main():
        store = SqliteLetterStore(sys.argv[1])
        await store.start()
        for n in range(int(sys.argv[2])):
            await store.append(letter(n))
            print(n, flush=True)  # the sink would answer 202 now
        sys.stdin.read()  # killed while waiting here

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_every_answered_append_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "letters.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), "20"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        answered = [int(child.stdout.readline()) for _ in range(20)]
        assert answered == list(range(20))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    async def read() -> tuple[DeadLetter, ...]:
        async with SqliteLetterStore(path) as store:
            return (await store.list(LetterQuery(limit=1000))).letters

    stored = asyncio.run(read())
    assert [one.key for one in stored] == [letter(n).key for n in range(20)]
    assert all(one.origin.describe() == PLANNER.strip("/") for one in stored)
