"""A bounded micro-batcher: requests that arrive together share one model call.

A model call costs nearly the same for one text as for a few dozen (on a GPU, for hundreds), so
texts of concurrent requests are combined. When the model is free, a batch goes at once if
``max_batch_size`` texts wait (full), or if as many requests wait as are expected: the requests
the last model call answered plus those that waited while it ran (expected: callers in a closed
loop come back, so a lone client's request never waits, and concurrent clients keep sharing
calls). Otherwise it waits for more at most ``max_wait_s`` after the later of the oldest
request's arrival and the model coming free (waited). Requests that arrive while the model
computes form the next batch. Both halves matter for concurrent clients: their requests come
back a moment apart, and a batch that went as soon as the model was free, or a wait counted
from an arrival during the last call, would split them into alternating half batches for good.
A request bigger than the batch size is split over several calls (its parts answered together).
Model calls run one at a time on one worker thread, so the event loop keeps serving (health
checks, new requests joining the next batch) while the model computes, and the model is never
entered from two threads.

Bounded: more than ``max_queued_items`` texts accepted and not yet answered refuses the next
request (:class:`QueueFullError`, the server's 503) instead of queueing without end. Every batch
decision is recorded (:attr:`MicroBatcher.decisions`, the last ``history`` of them) with its
reason, and counted in Prometheus metrics, so what the batcher did is observable and tested
exactly rather than by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "BatchDecision",
    "BatchReason",
    "BatcherMetrics",
    "MicroBatcher",
    "QueueFullError",
]

R = TypeVar("R")
T = TypeVar("T")

_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class BatchReason(StrEnum):
    """Why a batch was formed when it was."""

    FULL = "full"  # max_batch_size texts were waiting
    EXPECTED = "expected"  # as many requests were waiting as the last model call held
    WAITED = "waited"  # fewer, and the wait for more (max_wait_s) ran out


@dataclass(frozen=True)
class BatchDecision:
    """One model call: how many ``texts``, from how many ``requests`` (or parts), and why."""

    texts: int
    requests: int
    reason: BatchReason


class QueueFullError(RuntimeError):
    """Too many texts wait already; the request was not queued (retry later)."""

    def __init__(self, texts: int, pending: int, limit: int) -> None:
        super().__init__(
            f"the model's queue is full: {pending} texts wait, {texts} more would exceed "
            f"AGENTFN_MODEL_MAX_QUEUED_ITEMS={limit}"
        )
        self.texts = texts
        self.pending = pending
        self.limit = limit


class BatcherMetrics:
    """The batcher's metrics, on ``registry`` (kserve serves prometheus_client's default)."""

    def __init__(self, model: str, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ("model",)
        self.batch_texts = Histogram(
            "agentfn_model_batch_texts",
            "Texts per model call",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        ).labels(model)
        batches = Counter(
            "agentfn_model_batches",
            "Model calls, by why the batch was formed (full, expected or waited)",
            (*labels, "reason"),
            registry=registry,
        )
        self.batches = {reason: batches.labels(model, reason.value) for reason in BatchReason}
        self.batch_seconds = Histogram(
            "agentfn_model_batch_seconds",
            "Duration of one model call",
            labels,
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        ).labels(model)
        self.pending_texts = Gauge(
            "agentfn_model_pending_texts",
            "Texts accepted and not yet answered",
            labels,
            registry=registry,
        ).labels(model)
        self.rejected = Counter(
            "agentfn_model_rejected_requests",
            "Requests refused because the queue was full",
            labels,
            registry=registry,
        ).labels(model)


class _Request(Generic[R]):
    __slots__ = ("done", "finished", "future", "results", "taken", "texts")

    def __init__(self, texts: list[str], future: asyncio.Future[list[R]]) -> None:
        self.texts = texts
        self.future = future
        self.taken = 0  # texts handed to model calls so far
        self.done = 0  # texts whose result came back
        self.results: list[R | None] = [None] * len(texts)
        self.finished = False


class MicroBatcher(Generic[R]):
    """Combines concurrent :meth:`submit` calls into model calls of ``encode``.

    ``encode(texts)`` returns one result per text, in order; it runs on the batcher's one
    worker thread. ``max_wait_s`` is measured from the later of the oldest waiting request's
    arrival and the end of the last model call, so a request waits for company at most that
    long once the model is free (and not at all when the requests expected are there).
    """

    def __init__(
        self,
        encode: Callable[[list[str]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queued_items: int,
        metrics: BatcherMetrics | None = None,
        history: int = 1024,
        thread_name: str = "agentfn-model",
    ) -> None:
        if max_batch_size < 1 or max_queued_items < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queued_items must be >= 1, max_wait_s >= 0")
        self._encode = encode
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queued_items = max_queued_items
        self._metrics = metrics
        #: The last ``history`` batch decisions, oldest first.
        self.decisions: deque[BatchDecision] = deque(maxlen=history)
        #: Model calls made, and texts embedded by them, since the batcher was made.
        self.model_calls = 0
        self.texts_encoded = 0
        self._queue: deque[tuple[_Request[R], float]] = deque()
        self._pending = 0
        self._waiting = 0
        #: Requests the next batch waits for: those the last model call answered and those
        #: that were waiting when it ended.
        self._expected = 1
        self._free_since = float("-inf")  # loop time the last model call ended
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._closed = False

    @property
    def pending(self) -> int:
        """Texts accepted and not yet answered (what ``max_queued_items`` bounds)."""
        return self._pending

    @property
    def waiting(self) -> int:
        """Texts not yet handed to a model call."""
        return self._waiting

    def run_on_worker(self, function: Callable[[], T]) -> T:
        """``function()`` on the thread that runs the model calls, waited for (from no loop).

        For the model's warm-up: torch's OpenMP keeps a pool of threads per thread that enters
        it, so a first call made on another thread (the one that loads the model) leaves a
        second pool whose spinning threads slow every later call (measured: 9.5 -> 13 ms for
        one text on two cores).
        """
        return self._executor.submit(function).result()

    async def submit(self, texts: Sequence[str]) -> list[R]:
        """The results of ``texts``, in order, computed in one or more shared model calls.

        Raises :class:`QueueFullError` at once when the queue cannot take them, and whatever
        ``encode`` raised for a call that held any of them.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        count = len(texts)
        if count == 0:
            return []
        if self._pending + count > self.max_queued_items:
            if self._metrics is not None:
                self._metrics.rejected.inc()
            raise QueueFullError(count, self._pending, self.max_queued_items)
        loop = asyncio.get_running_loop()
        request: _Request[R] = _Request(list(texts), loop.create_future())
        self._queue.append((request, loop.time()))
        self._pending += count
        self._waiting += count
        self._set_pending_gauge()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(self._wakeup), name="agentfn-batcher")
        self._wakeup.set()
        return await request.future

    async def aclose(self) -> None:
        """Stop forming batches; requests still waiting fail. Idempotent."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        queued, self._queue = self._queue, deque()
        for request, _ in queued:
            self._fail(request, RuntimeError("the model server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the worker ------------------------------------------------------------------------

    async def _run(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            deadline = max(self._queue[0][1], self._free_since) + self.max_wait_s
            while (reason := self._ready()) is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    reason = BatchReason.WAITED
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    reason = self._ready() or BatchReason.WAITED
                    break
            texts, parts = self._take(reason)
            if texts:
                await self._call(loop, texts, parts)
                self._free_since = loop.time()
                # Its callers may come back (a closed loop), and those waiting are here:
                # together, the company the next batch waits for.
                self._expected = len(
                    {id(request) for request, _, _ in parts}
                    | {id(request) for request, _ in self._queue if not request.future.done()}
                )

    def _ready(self) -> BatchReason | None:
        """Why a batch can go now without waiting, or None."""
        if self._waiting >= self.max_batch_size:
            return BatchReason.FULL
        requests = sum(1 for request, _ in self._queue if not request.future.done())
        return BatchReason.EXPECTED if requests >= self._expected else None

    def _drop_abandoned(self) -> None:
        """Requests whose caller gave up (cancelled) before their turn never reach the model."""
        while self._queue and self._queue[0][0].future.done():
            request, _ = self._queue.popleft()
            self._waiting -= len(request.texts) - request.taken
            self._finish(request)

    def _take(self, reason: BatchReason) -> tuple[list[str], list[tuple[_Request[R], int, int]]]:
        texts: list[str] = []
        parts: list[tuple[_Request[R], int, int]] = []
        while self._queue and len(texts) < self.max_batch_size:
            request = self._queue[0][0]
            if request.future.done():
                self._drop_abandoned()
                continue
            start = request.taken
            stop = min(len(request.texts), start + self.max_batch_size - len(texts))
            texts.extend(request.texts[start:stop])
            parts.append((request, start, stop))
            request.taken = stop
            self._waiting -= stop - start
            if stop == len(request.texts):
                self._queue.popleft()
        if texts:
            if len(texts) == self.max_batch_size:
                reason = BatchReason.FULL
            elif reason is BatchReason.FULL:  # requests given up meanwhile left it short
                reason = BatchReason.WAITED
            self.decisions.append(BatchDecision(len(texts), len(parts), reason))
            if self._metrics is not None:
                self._metrics.batches[reason].inc()
                self._metrics.batch_texts.observe(len(texts))
        return texts, parts

    async def _call(
        self,
        loop: asyncio.AbstractEventLoop,
        texts: list[str],
        parts: list[tuple[_Request[R], int, int]],
    ) -> None:
        started = loop.time()
        try:
            rows = await loop.run_in_executor(self._executor, self._encode, texts)
            if len(rows) != len(texts):
                raise RuntimeError(f"the model returned {len(rows)} results for {len(texts)} texts")
        except asyncio.CancelledError:  # closed mid-call: its requests get no answer
            for request, _, _ in parts:
                self._fail(request, RuntimeError("the model server is shutting down"))
            raise
        except Exception as error:
            for request, _, _ in parts:
                self._fail(request, error)
            return
        finally:
            self.model_calls += 1
            if self._metrics is not None:
                self._metrics.batch_seconds.observe(loop.time() - started)
        self.texts_encoded += len(texts)
        offset = 0
        for request, start, stop in parts:
            request.results[start:stop] = rows[offset : offset + stop - start]
            offset += stop - start
            request.done += stop - start
            if request.done == len(request.texts):
                if not request.future.done():
                    # Every slot is filled: the Nones are gone.
                    request.future.set_result(request.results)  # type: ignore[arg-type]
                self._finish(request)

    def _fail(self, request: _Request[R], error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        if request.taken < len(request.texts):
            # Its remaining parts must not run: take it out of the queue.
            self._waiting -= len(request.texts) - request.taken
            request.taken = len(request.texts)
            self._queue = deque(item for item in self._queue if item[0] is not request)
        self._finish(request)

    def _finish(self, request: _Request[R]) -> None:
        if not request.finished:
            request.finished = True
            self._pending -= len(request.texts)
            self._set_pending_gauge()

    def _set_pending_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.pending_texts.set(self._pending)
