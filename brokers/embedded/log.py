"""The embedded event log: SQLite in WAL mode, written by one thread with group commits.

Why SQLite rather than a hand-rolled append-only file: a batch must be stored all-or-nothing,
cursors must move atomically with nothing torn on ``kill -9``, and old events must be trimmed;
SQLite gives all three, crash-safe, in the standard library. The cost that matters is the
fsync per commit, so appends are grouped: every append that arrives while one transaction is
being written waits for the next, and one transaction (one fsync) then makes them all durable.
``bench/bench_broker.py`` measures it.

Reads stay off the disk in the steady state: after each commit the writer hands the new
records to every live subscription of the topic (:mod:`agentfn.brokers.embedded.subscription`).
The embedded log has one partition per topic.

This is for development, tests and single-machine use. Production scale belongs to Knative's
Kafka Broker (or the Kafka backend of this broker), never to this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentfn.brokers.embedded.subscription import PARTITION, SqliteSubscription
from agentfn.brokers.log import LogRecord, LogUnavailableError
from agentfn.events import CloudEvent
from agentfn.events.http import event_from_json, event_to_json

from agentfn._lifecycle import Started

__all__ = ["SqliteEventLog"]

log = logging.getLogger(__name__)

_TRIM_ROWS: Final = 5_000  # most rows one trim deletes
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    topic TEXT NOT NULL, grp TEXT NOT NULL, next_seq INTEGER NOT NULL, PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Append:
    topic: str
    events: Sequence[CloudEvent]
    future: asyncio.Future[list[LogRecord]]


@dataclass(slots=True)
class _Pending:
    appends: list[_Append] = field(default_factory=list)
    commits: dict[tuple[str, str], int] = field(default_factory=dict)


def _encode(event: CloudEvent) -> bytes:
    return json.dumps(event_to_json(event), separators=(",", ":"), ensure_ascii=False).encode()


def _give_up(future: asyncio.Future[list[LogRecord]], seconds: float) -> None:
    # The write may still land later; the client was told 503 and will send again
    # (a duplicate at worst, never a loss).
    if not future.done():
        future.set_exception(LogUnavailableError(f"no durable write within {seconds}s"))


def _decode(body: bytes) -> CloudEvent:
    return event_from_json(json.loads(body))


class SqliteEventLog(Started):
    """:class:`~agentfn.brokers.log.EventLog` over one SQLite file in ``data_dir``.

    ``fsync=True`` (the default) makes every answered append survive power loss; ``False``
    keeps it safe against a crash of the process (``kill -9``) but not of the machine.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        fsync: bool = True,
        buffer_limit: int = 20_000,
        write_timeout: float = 10.0,
        busy_timeout: float = 5.0,
        trim_interval: float = 0.5,
    ) -> None:
        self.path = Path(data_dir) / "events.sqlite3"
        self.buffer_limit = buffer_limit
        self._fsync = fsync
        self._write_timeout = write_timeout
        self._busy_timeout = busy_timeout
        self._trim_interval = trim_interval
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._writer_idle = False  # guarded by _cond: wake the writer only when it sleeps
        self._closing = False
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._next_seq: dict[str, int] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._subscriptions: dict[str, list[SqliteSubscription]] = {}
        self._trimmed: dict[str, int] = {}  # writer thread only: seq below which all is gone

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        return conn

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.executescript(_SCHEMA)
        self._next_seq = dict(conn.execute("SELECT topic, next_seq FROM topics").fetchall())
        self._trimmed = dict(
            conn.execute("SELECT topic, MIN(seq) FROM events GROUP BY topic").fetchall()
        )
        for topic, grp, next_seq in conn.execute("SELECT topic, grp, next_seq FROM cursors"):
            self._cursors[(topic, grp)] = next_seq
        self._reader = conn
        self._thread = threading.Thread(
            target=self._write_loop, name="agentfn-log-writer", daemon=True
        )
        self._thread.start()

    async def aclose(self) -> None:
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                await subscription.aclose()
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._reader is not None:
            self._reader.close()

    # -- appending ---------------------------------------------------------------------------

    async def append(self, topic: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        if not events:
            return []
        assert self._loop is not None, "start() the log first"
        future: asyncio.Future[list[LogRecord]] = self._loop.create_future()
        with self._cond:
            if self._closing or self._failed is not None:
                raise LogUnavailableError("the event log is closed")
            self._pending.appends.append(_Append(topic, events, future))
            if self._writer_idle:
                self._cond.notify()
        # One timer, not wait_for(shield()): this runs for every request on the hot path.
        timer = self._loop.call_later(self._write_timeout, _give_up, future, self._write_timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def save_position(self, topic: str, group: str, next_offset: int) -> None:
        with self._cond:
            self._pending.commits[(topic, group)] = next_offset
            if self._writer_idle:
                self._cond.notify()

    def _write_loop(self) -> None:
        conn = self._connect()
        last_trim = time.monotonic()
        try:
            while True:
                with self._cond:
                    while not self._pending.appends and not self._pending.commits:
                        if self._closing:
                            return
                        self._writer_idle = True
                        self._cond.wait(self._trim_interval)
                        self._writer_idle = False
                        if time.monotonic() - last_trim >= self._trim_interval:
                            break
                    batch, self._pending = self._pending, _Pending()
                trim = time.monotonic() - last_trim >= self._trim_interval
                if trim:
                    last_trim = time.monotonic()
                self._write(conn, batch, trim=trim)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: _Pending, *, trim: bool) -> None:
        assigned: list[tuple[_Append, int]] = []
        next_seq = dict(self._next_seq)
        trims = self._trim_ranges() if trim else []
        if not batch.appends and not batch.commits and not trims:
            return  # an idle tick: no transaction, no fsync
        try:
            conn.execute("BEGIN IMMEDIATE")
            for append in batch.appends:
                first = next_seq.get(append.topic, 0)
                conn.executemany(
                    "INSERT INTO events (topic, seq, body) VALUES (?, ?, ?)",
                    [(append.topic, first + i, _encode(e)) for i, e in enumerate(append.events)],
                )
                next_seq[append.topic] = first + len(append.events)
                assigned.append((append, first))
            touched = {a.topic for a in batch.appends}
            conn.executemany(
                "INSERT OR REPLACE INTO topics (topic, next_seq) VALUES (?, ?)",
                [(t, next_seq[t]) for t in touched],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO cursors (topic, grp, next_seq) VALUES (?, ?, ?)",
                [(t, g, s) for (t, g), s in batch.commits.items()],
            )
            conn.executemany("DELETE FROM events WHERE topic = ? AND seq >= ? AND seq < ?", trims)
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError, TypeError) as error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("event log write failed: %s", error)
            failure = LogUnavailableError(f"event log write failed: {error}")
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._fail, batch.appends, failure)
            if batch.commits:
                with self._cond:  # keep the cursor moves for the next transaction
                    for key, seq in batch.commits.items():
                        self._pending.commits.setdefault(key, seq)
            return
        self._next_seq = next_seq
        self._cursors.update(batch.commits)
        for topic, _, upto in trims:
            self._trimmed[topic] = upto
        if assigned:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._publish, assigned)

    def _trim_ranges(self) -> list[tuple[str, int, int]]:
        # Keep every event some live Trigger has not yet moved past; nothing else is read.
        # Bounded and frequent: one big DELETE inside a group commit would hold every waiting
        # ingress request for its whole duration.
        ranges = []
        for topic, subscriptions in list(self._subscriptions.items()):
            if not subscriptions:
                continue
            low = min(s.committed for s in subscriptions)
            floor = self._trimmed.get(topic, 0)
            upto = min(low, floor + _TRIM_ROWS)
            if upto > floor:
                ranges.append((topic, floor, upto))
        return ranges

    @staticmethod
    def _fail(appends: list[_Append], error: LogUnavailableError) -> None:
        for append in appends:
            if not append.future.done():
                append.future.set_exception(error)

    def _publish(self, assigned: list[tuple[_Append, int]]) -> None:
        for append, first in assigned:
            records = [
                LogRecord(PARTITION, first + i, event) for i, event in enumerate(append.events)
            ]
            if not append.future.done():
                append.future.set_result(records)
            for subscription in self._subscriptions.get(append.topic, ()):
                subscription.on_appended(records)

    # -- reading -----------------------------------------------------------------------------

    # -- the subscriptions' store (agentfn.brokers.embedded.subscription.Store) --------------

    def end_of(self, topic: str) -> int:
        return self._next_seq.get(topic, 0)

    async def read_after(self, topic: str, after: int, limit: int) -> list[LogRecord]:
        def query() -> list[tuple[int, bytes]]:
            assert self._reader is not None
            with self._reader_lock:
                return self._reader.execute(
                    "SELECT seq, body FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (topic, after, limit),
                ).fetchall()

        try:
            rows = await asyncio.to_thread(query)
        except sqlite3.Error as error:
            log.warning("event log read failed, will retry: %s", error)
            return []
        return [LogRecord(PARTITION, seq, _decode(body)) for seq, body in rows]

    async def subscribe(self, topic: str, group: str) -> SqliteSubscription:
        if self._loop is None:
            raise RuntimeError("start() the log first")
        committed = self._cursors.get((topic, group))
        if committed is None:
            # A new group starts at the end of the log, as Knative's Triggers do.
            committed = self._next_seq.get(topic, 0)
            self._cursors[(topic, group)] = committed
            self.save_position(topic, group, committed)
        subscription = SqliteSubscription(
            self, topic, group, committed - 1, buffer_limit=self.buffer_limit
        )
        self._subscriptions.setdefault(topic, []).append(subscription)
        return subscription

    def forget(self, subscription: SqliteSubscription) -> None:
        subscriptions = self._subscriptions.get(subscription.topic, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
