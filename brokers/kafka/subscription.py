"""One consumer group member: a thread that owns a ``KafkaConsumer``, a buffer the loop reads.

The consumer is not thread-safe, so nothing but this thread touches it: it polls, decodes, hands
records to the loop through a bounded buffer (one wake-up per poll, resolving the future
``fetch`` waits on) and commits what the dispatcher asks for. Rebalances happen only inside
``poll``: their callbacks (:mod:`agentfn.brokers.kafka.rebalance`) run on the consumer's own
I/O thread while this thread waits in that call, and reach this member through its
:class:`~agentfn.brokers.kafka.rebalance.Handover` methods only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from agentfn.brokers.kafka._handoff import set_error, set_result, wake
from agentfn.brokers.kafka.rebalance import Due, RebalanceListener, kafka_offsets
from agentfn.brokers.log import LogRecord, LogUnavailableError
from agentfn.events import KafkaRecord, from_kafka
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agentfn._lifecycle import Closing

__all__ = ["KafkaSubscription"]

log = logging.getLogger(__name__)

_POLL_MS: Final = 50  # how long a commit or close waits for the consumer thread, at most
_COMMIT_RETRY: Final = 0.5
_ENDS_EVERY: Final = 0.2  # seconds between looks at the high watermarks (for lag())


class KafkaSubscription(Closing):
    """:class:`~agentfn.brokers.log.Subscription` of one consumer group member.

    ``consumer_config`` is the ``KafkaConsumer``'s; ``write_timeout`` bounds a commit,
    ``buffer_limit`` the records fetched and not yet taken (past it the consumer pauses),
    ``revoke_grace`` how long a revocation waits for the dispatcher. ``forget`` is called once
    the member has left the group.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topic: str,
        group: str,
        *,
        consumer_config: Mapping[str, Any],
        write_timeout: float,
        buffer_limit: int,
        revoke_grace: float,
        forget: Callable[[KafkaSubscription], None],
    ) -> None:
        self._loop = loop
        self.topic = topic
        self.group = group
        self._consumer_config = dict(consumer_config)
        self._write_timeout = write_timeout
        self._buffer_limit = buffer_limit
        self._revoke_grace = revoke_grace
        self._forget = forget
        # Guards everything the consumer thread, its I/O thread and the loop share below.
        self._lock = threading.Lock()
        # Runs of one partition's records, each with the partition's epoch when fetched.
        self._buffer: deque[tuple[int, list[LogRecord]]] = deque()
        self._buffered = 0  # records in _buffer
        self._epochs: dict[int, int] = {}  # bumped when a partition is revoked or lost
        self._owned: frozenset[int] = frozenset()
        self._releasing: frozenset[int] = frozenset()
        # Releasing partitions the dispatcher has let go of: nothing of theirs in delivery.
        self._let_go: set[int] = set()
        self._handed: dict[int, int] = {}  # offset after the last record handed out
        self._wanted: dict[int, int] = {}  # highest offset the dispatcher asked to commit
        self._committed: dict[int, int] = {}  # highest offset this member committed
        self._ends: dict[int, int] = {}  # high watermark per owned partition, as last fetched
        # The group's committed offset when a partition came to this member (for lag only).
        self._start_positions: dict[int, int] = {}
        self._waiters: list[asyncio.Future[None]] = []
        # What fetch() calls wait on while the buffer is empty; the consumer thread takes them
        # (under the lock) and resolves them when it hands records over.
        self._fetchers: list[asyncio.Future[None]] = []
        # The consumer thread's own: when _note_ends last looked, at which partitions, and the
        # partitions whose committed offset it asked for since they were gained.
        self._ends_at = 0.0
        self._ends_owned: frozenset[int] = frozenset()
        self._asked: set[int] = set()
        self._closing = threading.Event()
        self._closed = False
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._commit_sent: float | None = None  # when the commit in flight was sent
        self._commit_retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"kafka-{group}", daemon=True)

    # -- the seam ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._thread.start()
        await self._ready

    def assigned(self) -> frozenset[int]:
        return self._owned

    def lag(self) -> int | None:
        with self._lock:
            owned, ends = self._owned, dict(self._ends)
            positions = dict(self._start_positions)
            for partition, offset in self._committed.items():
                positions[partition] = max(offset, positions.get(partition, offset))
        known = [(ends[p], positions[p]) for p in owned if p in ends and p in positions]
        if not known:
            return None
        return sum(max(0, end - position) for end, position in known)

    async def fetch(self, max_records: int, timeout: float) -> list[LogRecord]:
        loop = self._loop
        deadline = loop.time() + timeout
        while not self._closed:
            taken = self._take(max_records)
            if taken:
                return taken
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # A bare future resolved by the consumer thread, and a timer: no task per wait (as
            # wait_for would make), so records are handed to the dispatcher one loop turn after
            # the thread's wake-up rather than several.
            waiter: asyncio.Future[None] = loop.create_future()
            with self._lock:
                if self._buffer and max_records > 0:
                    continue  # handed over since the look: take it
                self._fetchers.append(waiter)
            timer = loop.call_later(remaining, set_result, waiter, None)
            try:
                await waiter
            finally:
                timer.cancel()
                with self._lock, contextlib.suppress(ValueError):
                    self._fetchers.remove(waiter)
        return []

    async def commit(self, offsets: Mapping[int, int]) -> None:
        with self._lock:
            accepted = self._owned | self._releasing
            raised = False
            for partition, offset in offsets.items():
                # A partition another member owns now: its position is theirs to move.
                if partition in accepted and offset > self._wanted.get(partition, -1):
                    self._wanted[partition] = offset
                    raised = True
            if not raised:
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
        # On timeout the offsets stay wanted and the consumer thread retries them.
        timeout = self._write_timeout
        timer = self._loop.call_later(
            timeout,
            set_error,
            waiter,
            LogUnavailableError(
                f"group {self.group}: commit not confirmed within {timeout}s; it is retried"
            ),
        )
        try:
            await waiter
        finally:
            timer.cancel()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        with self._lock:
            fetchers, self._fetchers = self._fetchers, []
        for fetcher in fetchers:
            set_result(fetcher, None)
        await asyncio.to_thread(self._thread.join, self._write_timeout + 5.0)
        self._forget(self)

    # -- shared state ------------------------------------------------------------------------

    def _take(self, max_records: int) -> list[LogRecord]:
        taken: list[LogRecord] = []
        if not self._buffer:
            return taken
        with self._lock:
            buffer, epochs, handed = self._buffer, self._epochs, self._handed
            while buffer and len(taken) < max_records:
                epoch, run = buffer.popleft()
                self._buffered -= len(run)
                partition = run[0].partition
                if epochs.get(partition, 0) != epoch:
                    continue  # its partition was revoked since: the next owner reads it
                room = max_records - len(taken)
                if len(run) > room:
                    buffer.appendleft((epoch, run[room:]))
                    self._buffered += len(run) - room
                    run = run[:room]
                taken.extend(run)
                handed[partition] = run[-1].offset + 1
        return taken

    def _due_commits(self, partitions: frozenset[int] | None = None) -> Due:
        """Offsets asked for and not yet committed (of ``partitions``, else of all owned)."""
        with self._lock:
            return self._due_locked(self._owned if partitions is None else partitions)

    def _due_locked(self, scope: frozenset[int]) -> Due:
        offsets = {
            p: offset
            for p, offset in self._wanted.items()
            if p in scope and offset > self._committed.get(p, -1)
        }
        waiters, self._waiters = self._waiters, []
        return offsets, waiters

    # -- the handover (agentfn.brokers.kafka.rebalance.Handover) ------------------------------

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def begin_release(self, partitions: frozenset[int]) -> dict[int, int]:
        with self._lock:
            self._owned = self._owned - partitions
            self._releasing = self._releasing | partitions
            self._let_go -= partitions
            for partition in partitions:
                self._epochs[partition] = self._epochs.get(partition, 0) + 1
            return {p: self._handed[p] for p in partitions if p in self._handed}

    def end_release(self, partitions: frozenset[int]) -> Due:
        with self._lock:
            self._releasing = self._releasing - partitions
            self._let_go -= partitions
            return self._due_locked(partitions)

    def let_go(self, partition: int) -> None:
        with self._lock:
            if partition in self._releasing:
                self._let_go.add(partition)

    def settled(self, handed: Mapping[int, int]) -> bool:
        with self._lock:
            return all(
                p in self._let_go
                or max(self._wanted.get(p, -1), self._committed.get(p, -1)) >= offset
                for p, offset in handed.items()
            )

    def assign(self, partitions: frozenset[int]) -> None:
        with self._lock:
            self._owned = self._owned | partitions

    def committed(self, offsets: Mapping[int, int]) -> None:
        with self._lock:
            for partition, offset in offsets.items():
                if offset > self._committed.get(partition, -1):
                    self._committed[partition] = offset

    def answer(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if not waiters:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            if error is None:
                for waiter in waiters:
                    self._loop.call_soon_threadsafe(set_result, waiter, None)
            else:
                for waiter in waiters:
                    self._loop.call_soon_threadsafe(set_error, waiter, error)

    # -- the consumer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(**self._consumer_config)
            listener = RebalanceListener(
                self, consumer, topic=self.topic, group=self.group, grace=self._revoke_grace
            )
            consumer.subscribe([self.topic], listener=listener)
        except Exception as error:
            failure = LogUnavailableError(f"group {self.group}: cannot join: {error!r}")
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(set_error, self._ready, failure)
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(set_result, self._ready, None)
        failing = False
        try:
            while not self._closing.is_set():
                self._commit_async(consumer)
                self._flow_control(consumer)
                try:
                    batches = consumer.poll(timeout_ms=_POLL_MS)
                except KafkaError as error:
                    if not failing:
                        log.warning("group %s: poll failed, retrying: %r", self.group, error)
                    failing = True
                    self._closing.wait(_COMMIT_RETRY)
                    continue
                failing = False
                if batches:
                    self._hand_over(batches)
                self._note_ends(consumer)
        except Exception:
            log.exception("group %s: consumer thread failed", self.group)
        finally:
            self._commit_before_leaving(consumer)
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False, timeout_ms=round(self._write_timeout * 1000))
            _, waiters = self._due_commits(frozenset())
            self.answer(waiters, LogUnavailableError(f"group {self.group}: closed"))

    def _note_ends(self, consumer: Any) -> None:
        # highwater() is what the last fetch response said: no request of its own. lag() is
        # read about once a second, so a few looks a second keep it fresh without taxing every
        # poll. The group's committed offset is asked once per partition this member gains (a
        # blocking round trip: a partition nobody committed must not cost one per poll).
        owned = self._owned
        now = time.monotonic()
        if owned == self._ends_owned and now - self._ends_at < _ENDS_EVERY:
            return
        self._ends_at, self._ends_owned = now, owned
        ends = {}
        starts = {p: o for p, o in self._start_positions.items() if p in owned}
        asked = self._asked & owned
        for partition in owned:
            tp = TopicPartition(self.topic, partition)
            end = consumer.highwater(tp)
            if end is not None:
                ends[partition] = end
            if partition not in starts and partition not in asked:
                with contextlib.suppress(KafkaError):
                    committed = consumer.committed(tp)
                    asked.add(partition)
                    if committed is not None:
                        starts[partition] = committed
        self._asked = asked
        with self._lock:
            self._ends = ends
            self._start_positions = starts

    def _commit_async(self, consumer: Any) -> None:
        """Send what the dispatcher finished, one commit in flight at a time.

        Asynchronous because this thread is the pipeline's narrowest part (it parses and decodes
        every record): a synchronous commit would idle it for a round trip each time. The
        answer comes back through ``poll`` on this thread.
        """
        now = time.monotonic()
        if self._commit_sent is not None:
            if now - self._commit_sent < 2 * self._write_timeout:
                return
            # Requests time out well before this; never let one lost answer stop all commits.
            log.warning("group %s: no answer to a commit, sending again", self.group)
        if now < self._commit_retry_at:
            return
        offsets, waiters = self._due_commits()
        if not offsets:
            self.answer(waiters, None)
            return

        def answered(_: object, response: object) -> None:
            self._commit_sent = None
            if isinstance(response, BaseException):
                log.warning("group %s: commit failed, will retry: %r", self.group, response)
                self._commit_retry_at = time.monotonic() + _COMMIT_RETRY
                self.answer(waiters, response)
            else:
                self.committed(offsets)
                self.answer(waiters, None)

        self._commit_sent = now
        try:
            consumer.commit_async(kafka_offsets(self.topic, offsets), callback=answered)
        except KafkaError as error:
            answered(None, error)

    def _commit_before_leaving(self, consumer: Any) -> None:
        offsets, waiters = self._due_commits()
        error: BaseException | None = None
        if offsets:
            try:
                consumer.commit(
                    kafka_offsets(self.topic, offsets),
                    timeout_ms=round(self._write_timeout * 1000),
                )
            except KafkaError as failure:
                error = failure
                log.warning("group %s: last commit failed: %r", self.group, failure)
            else:
                self.committed(offsets)
        self.answer(waiters, error)

    def _flow_control(self, consumer: Any) -> None:
        # Pause rather than stop polling: polling is what takes part in rebalances.
        size = self._buffered
        if size >= self._buffer_limit:
            consumer.pause(*consumer.assignment())
        elif size < self._buffer_limit // 2 and consumer.paused():
            consumer.resume(*consumer.paused())

    def _hand_over(self, batches: Mapping[Any, list[Any]]) -> None:
        runs: list[list[LogRecord]] = []
        for messages in batches.values():
            run = [r for r in map(self._decode, messages) if r is not None]
            if run:
                runs.append(run)
        if not runs:
            return
        with self._lock:
            # Rebalances happen inside poll(), on this thread's watch: these epochs are the
            # ones the records were fetched under.
            epochs = self._epochs
            self._buffer.extend((epochs.get(run[0].partition, 0), run) for run in runs)
            self._buffered += sum(map(len, runs))
            fetchers, self._fetchers = self._fetchers, []
        if fetchers:  # one wake-up for everything this poll returned
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(wake, fetchers)

    def _decode(self, message: Any) -> LogRecord | None:
        try:
            try:
                # A kafka-python ConsumerRecord has the fields from_kafka reads (value, headers
                # as (str, bytes) pairs, key): adapting every record through KafkaRecord.of
                # would cost a tenth of this thread's time. Only a null header value needs it.
                event = from_kafka(message)
            except AttributeError:
                event = from_kafka(KafkaRecord.of(message.value, message.headers, message.key))
        except ValueError as error:  # InvalidEventError and its kin
            # Never block a partition on a record nobody can deliver: skip it, and the offsets
            # committed after the records around it move past it.
            log.warning(
                "%s-%d@%d is not a CloudEvent, skipped: %s",
                self.topic,
                message.partition,
                message.offset,
                error,
            )
            return None
        return LogRecord(message.partition, message.offset, event)
