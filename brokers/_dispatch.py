"""One Trigger = one consumer group: fetch, filter, deliver with retries, dead-letter, commit.

A Trigger's position in the log moves only past events whose outcome is known (delivered,
filtered out, or dead-lettered), so an event in flight when the process dies is delivered again
after the restart (at-least-once). Unordered Triggers deliver concurrently within a bounded
window and commit the contiguous watermark; ordered Triggers deliver one event at a time per
partition, the next waiting until the previous one is delivered or dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentfn.brokers._sender import Attempt, Route, Sender, wait_or_stop
from agentfn.brokers.config import DeliveryOrder, TriggerSpec
from agentfn.brokers.delivery import DeliveryPolicy, is_retryable
from agentfn.brokers.log import EventTooLargeError, LogRecord, LogUnavailableError, Subscription
from agentfn.brokers.metrics import BrokerMetrics, code_class
from agentfn.brokers.retries import RetryObserver, ScheduledRetry
from agentfn.events import CloudEvent, InvalidEventError
from agentfn.events.extensions import (
    KNATIVE_BROKER_TTL,
    KNATIVE_ERROR_CODE,
    KNATIVE_ERROR_DATA,
    KNATIVE_ERROR_DATA_MAX,
    KNATIVE_ERROR_DEST,
    next_hop_ttl,
    ttl_expired,
)

__all__ = ["DispatchLimits", "TriggerDispatcher"]

log = logging.getLogger(__name__)

Ingest = Callable[[Sequence[CloudEvent]], Awaitable[object]]


@dataclass(slots=True)
class DispatchLimits:
    """Bounds shared by every Trigger of a process: one slow subscriber stalls only its own."""

    max_in_flight: int = 512
    subscriber_in_flight: int = 128
    window: int = 1024
    _global: asyncio.Semaphore | None = None
    _per_subscriber: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def global_slots(self) -> asyncio.Semaphore:
        if self._global is None:
            self._global = asyncio.Semaphore(self.max_in_flight)
        return self._global

    def subscriber_slots(self, url: str) -> asyncio.Semaphore:
        slots = self._per_subscriber.get(url)
        if slots is None:
            slots = self._per_subscriber[url] = asyncio.Semaphore(self.subscriber_in_flight)
        return slots


@dataclass(slots=True)
class _Entry:
    record: LogRecord
    epoch: int  # the partition's epoch when fetched; stale once the partition is given up
    done: bool = False


class TriggerDispatcher:
    def __init__(
        self,
        *,
        trigger: TriggerSpec,
        policy: DeliveryPolicy,
        subscriber_url: str,
        dead_letter_url: str | None,
        subscription: Subscription,
        sender: Sender,
        ingest: Ingest,
        limits: DispatchLimits,
        metrics: BrokerMetrics,
        retry_observer: RetryObserver | None = None,
    ) -> None:
        self.trigger = trigger
        self.policy = policy
        self.subscriber_url = subscriber_url
        self.dead_letter_url = dead_letter_url
        self._subscription = subscription
        # Each destination's transport and slots are chosen here, once, not per event.
        self._subscriber = sender.route(subscriber_url)
        self._subscriber_slots = limits.subscriber_slots(subscriber_url)
        self._sink: tuple[Route, asyncio.Semaphore] | None = None
        if dead_letter_url is not None:
            self._sink = sender.route(dead_letter_url), limits.subscriber_slots(dead_letter_url)
        self._ingest = ingest
        self._limits = limits
        self._metrics = metrics
        self._retry_observer = retry_observer
        self._labels = (trigger.namespace, trigger.broker, trigger.name)
        self._ordered = trigger.order is DeliveryOrder.ORDERED
        self._pending: dict[int, deque[_Entry]] = {}
        self._epochs: dict[int, int] = {}
        self._lanes: dict[int, asyncio.Queue[_Entry]] = {}
        self._outstanding = 0
        self._room = asyncio.Event()
        self._to_commit: dict[int, int] = {}
        self._commit_due = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._backlog = metrics.backlog.labels(*self._labels)
        self._latency = metrics.dispatch_latency.labels(*self._labels)
        self._lag = metrics.lag.labels(*self._labels)
        self._by_code: dict[int | None, Any] = {}
        self._active: dict[int, int] = {}  # deliveries in progress per partition

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"trigger-{self.trigger.name}")
        self._committer = asyncio.create_task(
            self._commit_loop(), name=f"commit-{self.trigger.name}"
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop fetching, give attempts in flight ``grace`` seconds, commit what is known."""
        self._stopping.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            _, unfinished = await asyncio.wait(self._tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._flush_commits()
        await self._subscription.aclose()

    # -- fetching ----------------------------------------------------------------------------

    async def _run(self) -> None:
        window = self._limits.window
        while not self._stopping.is_set():
            room = window - self._outstanding
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                records = await self._subscription.fetch(min(room, 500), timeout=1.0)
            except Exception:
                log.exception("trigger %s: fetch failed; trying again", self.trigger.name)
                await wait_or_stop(1.0, self._stopping)
                continue
            for record in records:
                self._accept(record)

    def _accept(self, record: LogRecord) -> None:
        entry = _Entry(record, self._epochs.get(record.partition, 0))
        self._pending.setdefault(record.partition, deque()).append(entry)
        self._outstanding += 1
        self._backlog.inc()
        if not self.trigger.filter(record.event.attributes):
            self._finish(entry)
        elif self._ordered:
            lane = self._lanes.get(record.partition)
            if lane is None:
                lane = self._lanes[record.partition] = asyncio.Queue()
                self._spawn(self._lane(lane))
            lane.put_nowait(entry)
        else:
            self._spawn(self._deliver(entry))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self, lane: asyncio.Queue[_Entry]) -> None:
        while not self._stopping.is_set():
            entry = await lane.get()
            await self._deliver(entry)

    # -- committing --------------------------------------------------------------------------

    def _finish(self, entry: _Entry) -> None:
        entry.done = True
        self._outstanding -= 1
        self._backlog.dec()
        self._room.set()
        if self._stale(entry):
            return  # its partition was given up: the new owner resumes from the last commit
        queue = self._pending[entry.record.partition]
        advanced = None
        while queue and queue[0].done:
            advanced = queue.popleft().record.offset + 1
        if advanced is not None:
            self._to_commit[entry.record.partition] = advanced
            self._commit_due.set()

    async def _commit_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                # Wakes for a commit, or once a second to refresh the backlog gauge.
                await asyncio.wait_for(self._commit_due.wait(), 1.0)
            self._commit_due.clear()
            await self._flush_commits()
            lag = self._subscription.lag()
            if lag is not None:
                self._lag.set(lag)
            # Coalesce: one cursor write per short interval, however many events finished.
            await asyncio.sleep(0.02)

    async def _flush_commits(self) -> None:
        if not self._to_commit:
            return
        offsets, self._to_commit = self._to_commit, {}
        try:
            await self._subscription.commit(offsets)
        except Exception:
            log.exception(
                "trigger %s: commit failed; events may be delivered again", self.trigger.name
            )

    # -- delivering --------------------------------------------------------------------------

    async def _attempt(
        self,
        route: Route,
        slots: asyncio.Semaphore,
        event: CloudEvent,
        *,
        expect_reply: bool,
    ) -> Attempt:
        async with slots, self._limits.global_slots():
            started = time.perf_counter()
            attempt = await route.send(
                event,
                timeout=self.policy.attempt_timeout,
                expect_reply=expect_reply,
                format=self.policy.format,
            )
        self._latency.observe((time.perf_counter() - started) * 1000)
        counter = self._by_code.get(attempt.status)
        if counter is None:
            code = "none" if attempt.status is None else str(attempt.status)
            counter = self._metrics.deliveries.labels(
                *self._labels, code, code_class(attempt.status)
            )
            self._by_code[attempt.status] = counter
        counter.inc()
        return attempt

    def _stale(self, entry: _Entry) -> bool:
        return entry.epoch != self._epochs.get(entry.record.partition, 0)

    def _still_owned(self, entry: _Entry) -> bool:
        """False once the event's partition went to another member (a rebalance).

        Then this member stops working on the partition: the new owner delivers from the last
        committed offset, and a retry here would only be a second, interleaved delivery.
        Nothing of the partition is committed any more by this member.
        """
        if self._stale(entry):
            return False
        partition = entry.record.partition
        if partition in self._subscription.assigned():
            return True
        self._epochs[partition] = entry.epoch + 1
        self._pending.pop(partition, None)
        self._to_commit.pop(partition, None)
        log.info(
            "trigger %s: partition %d moved away; its deliveries stop here",
            self.trigger.name,
            partition,
        )
        return False

    async def _deliver(self, entry: _Entry) -> None:
        partition = entry.record.partition
        self._active[partition] = self._active.get(partition, 0) + 1
        try:
            await self._deliver_owned(entry)
        finally:
            left = self._active[partition] - 1
            if left:
                self._active[partition] = left
            else:
                del self._active[partition]
                # The last delivery of a partition that moved away is over: a revocation
                # waiting for it need not wait for the fetched events that never started.
                if partition not in self._subscription.assigned():
                    self._subscription.let_go(partition)

    async def _deliver_owned(self, entry: _Entry) -> None:
        event = entry.record.event
        retries = 0
        while True:
            if not self._still_owned(entry):
                self._finish(entry)
                return
            attempt = await self._attempt(
                self._subscriber, self._subscriber_slots, event, expect_reply=True
            )
            if attempt.ok:
                if attempt.reply is None or await self._forward_reply(event, attempt.reply):
                    self._finish(entry)
                    return
                attempt = Attempt(status=503, error="the reply could not be stored")
            if not is_retryable(attempt.status) or retries >= self.policy.retry:
                break
            retries += 1
            self._metrics.retries.labels(*self._labels).inc()
            wait = self._schedule_retry(event, retries, attempt, dead_letter=False)
            if await wait_or_stop(wait, self._stopping):
                return  # not finished: the event stays uncommitted and comes back on restart
        if self._still_owned(entry):
            await self._dead_letter(event, attempt)
        self._finish(entry)

    def _schedule_retry(
        self, event: CloudEvent, retry: int, last: Attempt, *, dead_letter: bool
    ) -> float:
        """Decide the wait before ``retry`` of ``event``, report it, and return it in seconds.

        The subscriber's retries and the dead-letter sink's go through here alike.
        """
        url = self.dead_letter_url if dead_letter else self.subscriber_url
        assert url is not None
        decided = ScheduledRetry(
            trigger=f"{self.trigger.namespace}/{self.trigger.name}",
            event_id=event.id,
            url=url,
            dead_letter=dead_letter,
            retry=retry,
            status=last.status,
            wait=self.policy.retry_wait(retry, last.retry_after),
            at=time.monotonic(),
        )
        log.info(
            "trigger %s: event %s answered %s at %s; retry %d/%d in %.2fs (%s)",
            self.trigger.name,
            event.id,
            last.status if last.status is not None else last.error,
            url,
            retry,
            self.policy.retry,
            decided.wait.seconds,
            decided.wait.reason,
        )
        if self._retry_observer is not None:
            self._retry_observer.retry_scheduled(decided)
        return decided.wait.seconds

    async def _forward_reply(self, original: CloudEvent, reply: CloudEvent) -> bool:
        """Route a reply back through the broker; False when it could not be stored."""
        ttl = next_hop_ttl(original)
        if ttl_expired(ttl):
            self._metrics.ttl_dropped.labels(*self._labels).inc()
            log.warning(
                "trigger %s: dropped reply %s (type %s): %s reached 0, a reply loop?",
                self.trigger.name,
                reply.id,
                reply.type,
                KNATIVE_BROKER_TTL,
            )
            return True
        try:
            await self._ingest([reply.with_attributes(**{KNATIVE_BROKER_TTL: ttl})])
        except (LogUnavailableError, EventTooLargeError, InvalidEventError) as error:
            log.warning("trigger %s: reply %s not stored: %s", self.trigger.name, reply.id, error)
            return False
        return True

    async def _dead_letter(self, event: CloudEvent, last: Attempt) -> None:
        outcome_labels = self._metrics.dead_lettered
        if self._sink is None:
            outcome_labels.labels(*self._labels, "dropped").inc()
            log.warning(
                "trigger %s: gave up on event %s (status %s, %s) and no deadLetterSink is set",
                self.trigger.name,
                event.id,
                last.status,
                last.error or "",
            )
            return
        extensions: dict[str, object] = {KNATIVE_ERROR_DEST: self.subscriber_url}
        if last.status is not None:
            extensions[KNATIVE_ERROR_CODE] = str(last.status)
        if last.body:
            data = base64.b64encode(last.body[:KNATIVE_ERROR_DATA_MAX]).decode("ascii")
            extensions[KNATIVE_ERROR_DATA] = data
        letter = event.with_attributes(**extensions)
        retries = 0
        while True:
            attempt = await self._attempt(*self._sink, letter, expect_reply=False)
            if attempt.ok:
                outcome_labels.labels(*self._labels, "sent").inc()
                log.warning(
                    "trigger %s: event %s dead-lettered to %s (last status %s)",
                    self.trigger.name,
                    event.id,
                    self.dead_letter_url,
                    last.status,
                )
                return
            if not is_retryable(attempt.status) or retries >= self.policy.retry:
                break
            retries += 1
            wait = self._schedule_retry(event, retries, attempt, dead_letter=True)
            if await wait_or_stop(wait, self._stopping):
                return
        outcome_labels.labels(*self._labels, "lost").inc()
        log.error(
            "trigger %s: dead-letter sink %s refused event %s (status %s); it is dropped",
            self.trigger.name,
            self.dead_letter_url,
            event.id,
            attempt.status,
        )
