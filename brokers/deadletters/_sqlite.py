"""The embedded dead-letter store: one SQLite file in WAL mode, written by one thread.

The sink answers 202 only once a letter is durable, so every write is a transaction committed
with ``synchronous=FULL`` (an fsync of the WAL: the letter survives ``kill -9`` and a power
loss). That fsync is the cost that matters, so writes are grouped as in the broker's event log
(:mod:`agentfn.brokers.embedded.log`): every write that arrives while one transaction is being
committed waits for the next, and one transaction then makes them all durable. Each write runs
under its own savepoint, so one that fails (an unknown key) leaves the others of its group in.

Reads use a second connection: WAL lets them run beside the writer and they see every commit.
The columns beside the record (its JSON form, :meth:`DeadLetter.to_json`) are there for the
filters; ``seq`` is the first arrival's order and the paging cursor. The depth per Trigger is
a table of counts that SQL triggers keep in the transaction of every change, so reading it (the
sink does after each change) costs one row per Trigger, not a scan of the waiting letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agentfn.brokers.deadletters.letters import DeadLetter, LetterPage, LetterQuery, Replay
from agentfn.brokers.deadletters.store import LetterNotFoundError, LetterStoreUnavailableError

from agentfn._lifecycle import Started

__all__ = ["SqliteLetterStore"]

log = logging.getLogger(__name__)

_SCHEMA: Final = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    namespace TEXT,
    broker TEXT,
    trigger TEXT,
    type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    arrived_at REAL NOT NULL,
    replayed_at REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS letters_trigger ON letters (namespace, broker, trigger);
CREATE INDEX IF NOT EXISTS letters_arrived_at ON letters (arrived_at);
-- Waiting letters per Trigger, kept by SQL triggers in the transaction of every change: the
-- depth the sink reads after each change costs one row per Trigger, however many letters wait.
CREATE TABLE IF NOT EXISTS depth (
    namespace TEXT NOT NULL, broker TEXT NOT NULL, trigger TEXT NOT NULL,
    waiting INTEGER NOT NULL, PRIMARY KEY (namespace, broker, trigger)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS depth_on_insert AFTER INSERT ON letters
WHEN NEW.replayed_at IS NULL BEGIN
    INSERT INTO depth VALUES (
        COALESCE(NEW.namespace, ''), COALESCE(NEW.broker, ''), COALESCE(NEW.trigger, ''), 1
    ) ON CONFLICT DO UPDATE SET waiting = waiting + 1;
END;
CREATE TRIGGER IF NOT EXISTS depth_on_delete AFTER DELETE ON letters
WHEN OLD.replayed_at IS NULL BEGIN
    UPDATE depth SET waiting = waiting - 1 WHERE namespace = COALESCE(OLD.namespace, '')
        AND broker = COALESCE(OLD.broker, '') AND trigger = COALESCE(OLD.trigger, '');
END;
CREATE TRIGGER IF NOT EXISTS depth_on_update_old AFTER UPDATE ON letters
WHEN OLD.replayed_at IS NULL BEGIN
    UPDATE depth SET waiting = waiting - 1 WHERE namespace = COALESCE(OLD.namespace, '')
        AND broker = COALESCE(OLD.broker, '') AND trigger = COALESCE(OLD.trigger, '');
END;
CREATE TRIGGER IF NOT EXISTS depth_on_update_new AFTER UPDATE ON letters
WHEN NEW.replayed_at IS NULL BEGIN
    INSERT INTO depth VALUES (
        COALESCE(NEW.namespace, ''), COALESCE(NEW.broker, ''), COALESCE(NEW.trigger, ''), 1
    ) ON CONFLICT DO UPDATE SET waiting = waiting + 1;
END;
-- A file written before the depth table had letters and no counts: count them once.
INSERT INTO depth
    SELECT COALESCE(namespace, ''), COALESCE(broker, ''), COALESCE(trigger, ''), COUNT(*)
    FROM letters WHERE replayed_at IS NULL AND NOT EXISTS (SELECT 1 FROM depth)
    GROUP BY 1, 2, 3;
COMMIT;
"""

_COLUMNS: Final = "namespace, broker, trigger, type, event_id, arrived_at, replayed_at, record"


def _encode(letter: DeadLetter) -> str:
    return json.dumps(letter.to_json(), separators=(",", ":"), ensure_ascii=False)


def _decode(record: str) -> DeadLetter:
    return DeadLetter.from_json(json.loads(record))


def _row(letter: DeadLetter) -> tuple[Any, ...]:
    """The values of :data:`_COLUMNS` for ``letter``."""
    origin = letter.origin
    return (
        origin.namespace,
        origin.broker,
        origin.trigger,
        letter.event.type,
        letter.event.id,
        letter.arrived_at,
        letter.replayed_at,
        _encode(letter),
    )


def _find(conn: sqlite3.Connection, key: str) -> DeadLetter | None:
    row = conn.execute("SELECT record FROM letters WHERE key = ?", (key,)).fetchone()
    return None if row is None else _decode(row[0])


def _update(conn: sqlite3.Connection, letter: DeadLetter) -> None:
    conn.execute(
        "UPDATE letters SET namespace = ?, broker = ?, trigger = ?, type = ?, event_id = ?,"
        " arrived_at = ?, replayed_at = ?, record = ? WHERE key = ?",
        (*_row(letter), letter.key),
    )


def _append(conn: sqlite3.Connection, letter: DeadLetter) -> tuple[DeadLetter, bool]:
    stored = _find(conn, letter.key)
    if stored is None:
        conn.execute(
            f"INSERT INTO letters (key, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
            (letter.key, *_row(letter)),
        )
        return letter, True
    if stored.waiting:
        return stored, False  # the broker retried the sink: the letter is kept once
    reopened = stored.returned(letter)
    _update(conn, reopened)
    return reopened, True


def _record_replay(conn: sqlite3.Connection, key: str, replay: Replay) -> DeadLetter:
    stored = _find(conn, key)
    if stored is None:
        raise LetterNotFoundError(key)
    replayed = stored.with_replay(replay)
    _update(conn, replayed)
    return replayed


def _delete(conn: sqlite3.Connection, keys: Sequence[str]) -> list[DeadLetter]:
    deleted = []
    for key in dict.fromkeys(keys):  # a key named twice is one letter
        stored = _find(conn, key)  # not DELETE ... RETURNING: that needs SQLite 3.35
        if stored is not None:
            conn.execute("DELETE FROM letters WHERE key = ?", (key,))
            deleted.append(stored)
    return deleted


def _where(query: LetterQuery) -> tuple[str, list[Any]]:
    clauses = []
    params: list[Any] = []
    for column, value in (
        ("namespace", query.namespace),
        ("broker", query.broker),
        ("trigger", query.trigger),
        ("type", query.type),
        ("event_id", query.event_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        clauses.append("arrived_at >= ?")
        params.append(query.since)
    if query.before is not None:
        clauses.append("arrived_at < ?")
        params.append(query.before)
    if query.replayed is not None:
        clauses.append("replayed_at IS NOT NULL" if query.replayed else "replayed_at IS NULL")
    if query.after is not None:
        clauses.append("seq > ?")
        params.append(_cursor(query.after))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _cursor(after: str) -> int:
    try:
        return int(after)
    except ValueError:
        raise ValueError(f"after: {after!r} is not a cursor of this store") from None


@dataclass(slots=True)
class _Write:
    apply: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (timeout) or was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _give_up(future: asyncio.Future[Any], seconds: float) -> None:
    # The write may still land later; the broker was told 503 and sends the letter again,
    # which is a duplicate at worst (kept once), never a loss.
    if not future.done():
        future.set_exception(
            LetterStoreUnavailableError(f"dead-letter store: no durable write within {seconds}s")
        )


class SqliteLetterStore(Started):
    """:class:`~agentfn.brokers.deadletters.store.DeadLetterStore` over one SQLite file.

    ``busy_timeout``: how long a write waits for another process's lock on the file before it
    fails (:class:`LetterStoreUnavailableError`); ``write_timeout``: how long a caller waits for
    its write to be durable.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, write_timeout: float = 10.0
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._write_timeout = write_timeout
        self._cond = threading.Condition()
        self._pending: list[_Write] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self._busy_timeout, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the dead-letter store is started already")
        self._loop = asyncio.get_running_loop()
        try:
            self._reader = await asyncio.to_thread(self._open)
            writer = await asyncio.to_thread(self._connect)
        except (OSError, sqlite3.Error) as error:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            raise LetterStoreUnavailableError(
                f"dead-letter store: cannot open {self.path}: {error}"
            ) from error
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name="agentfn-deadletters-writer", daemon=True
        )
        self._thread.start()

    async def aclose(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._reader is not None:
            with self._reader_lock:
                self._reader.close()
            self._reader = None

    # -- writing -------------------------------------------------------------------------------

    async def _write(self, apply: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = self._loop
        if loop is None or self._thread is None:
            raise LetterStoreUnavailableError("dead-letter store: not started")
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._closing:
                raise LetterStoreUnavailableError("dead-letter store: closed")
            self._pending.append(_Write(apply, future))
            self._cond.notify()
        timer = loop.call_later(self._write_timeout, _give_up, future, self._write_timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending:
                        if self._closing:
                            return
                        self._cond.wait()
                    batch, self._pending = self._pending, []
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                conn.execute("SAVEPOINT letter")
                try:
                    outcomes.append((write.apply(conn), None))
                except sqlite3.Error:
                    raise
                except Exception as error:  # handed to that write's caller
                    conn.execute("ROLLBACK TO letter")
                    outcomes.append((None, error))
                conn.execute("RELEASE letter")
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("dead-letter store write failed (%s): %s", self.path, error)
            failure = LetterStoreUnavailableError(
                f"dead-letter store: write to {self.path} failed: {error}"
            )
            outcomes = [(None, failure)] * len(batch)
        assert self._loop is not None
        for write, (result, failed) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(_settle, write.future, result, failed)

    async def append(self, letter: DeadLetter) -> tuple[DeadLetter, bool]:
        result: tuple[DeadLetter, bool] = await self._write(lambda conn: _append(conn, letter))
        return result

    async def record_replay(self, key: str, replay: Replay) -> DeadLetter:
        result: DeadLetter = await self._write(lambda conn: _record_replay(conn, key, replay))
        return result

    async def delete(self, keys: Sequence[str]) -> list[DeadLetter]:
        if not keys:
            return []
        result: list[DeadLetter] = await self._write(lambda conn: _delete(conn, keys))
        return result

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        def query() -> list[Any]:
            with self._reader_lock:
                if self._reader is None:
                    raise LetterStoreUnavailableError("dead-letter store: not started")
                return self._reader.execute(sql, params).fetchall()

        try:
            return await asyncio.to_thread(query)
        except sqlite3.Error as error:
            raise LetterStoreUnavailableError(
                f"dead-letter store: read from {self.path} failed: {error}"
            ) from error

    async def list(self, query: LetterQuery) -> LetterPage:
        where, params = _where(query)
        rows = await self._read(
            f"SELECT seq, record FROM letters{where} ORDER BY seq LIMIT ?",  # noqa: S608 - built from constants
            [*params, query.limit + 1],  # one more: is there a next page?
        )
        page = rows[: query.limit]
        letters = tuple(_decode(record) for _, record in page)
        return LetterPage(letters, str(page[-1][0]) if len(rows) > query.limit else None)

    async def get(self, key: str) -> DeadLetter | None:
        rows = await self._read("SELECT record FROM letters WHERE key = ?", (key,))
        return _decode(rows[0][0]) if rows else None

    async def depth(self) -> Mapping[tuple[str, str, str], int]:
        rows = await self._read(
            "SELECT namespace, broker, trigger, waiting FROM depth WHERE waiting > 0", ()
        )
        return {(ns, broker, trigger): waiting for ns, broker, trigger, waiting in rows}
