"""The micro-batcher's decisions, asserted exactly from its record (no timing in assertions).

The encoder here stands in for the model (the batching logic is what is under test; the real
model behind it is tested over sockets in test_model_server.py): it records each call's texts
and thread, and can be held mid-call to make queueing observable.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from agentfn.inference import (
    BatchDecision,
    BatcherMetrics,
    BatchReason,
    MicroBatcher,
    QueueFullError,
)
from prometheus_client import CollectorRegistry

from tests._waiting import async_wait_until

FULL, EXPECTED, WAITED = BatchReason.FULL, BatchReason.EXPECTED, BatchReason.WAITED
LONG_WAIT_S = 60.0  # a batch that forms before this is not waiting for its deadline


class Encoder:
    """Upper-cases each text; records calls; ``hold()`` blocks calls until ``release()``
    (all of them) or ``step()`` (the one running)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self._gate = threading.Condition()
        self._held = False
        self._steps = 0
        self.fail_next: Exception | None = None

    def hold(self) -> None:
        with self._gate:
            self._held = True

    def release(self) -> None:
        with self._gate:
            self._held = False
            self._gate.notify_all()

    def step(self) -> None:
        with self._gate:
            self._steps += 1
            self._gate.notify_all()

    def __call__(self, texts: list[str]) -> list[str]:
        self.threads.add(threading.get_ident())
        self.calls.append(list(texts))
        with self._gate:
            self._gate.wait_for(lambda: not self._held or self._steps > 0, timeout=30)
            if self._held and self._steps:
                self._steps -= 1
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return [text.upper() for text in texts]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def batcher(
    encoder: Encoder,
    registry: CollectorRegistry,
    *,
    size: int,
    wait: float,
    queued: int = 1000,
    history: int = 100,
) -> MicroBatcher[str]:
    return MicroBatcher(
        encoder,
        max_batch_size=size,
        max_wait_s=wait,
        max_queued_items=queued,
        metrics=BatcherMetrics("test-model", registry),
        history=history,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"model": "test-model", **labels})


async def test_three_concurrent_requests_fill_one_batch(registry: CollectorRegistry) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=3, wait=LONG_WAIT_S)
    results = await asyncio.gather(b.submit(["a"]), b.submit(["b"]), b.submit(["c"]))
    assert results == [["A"], ["B"], ["C"]]
    assert list(b.decisions) == [BatchDecision(texts=3, requests=3, reason=FULL)]
    assert encoder.calls == [["a", "b", "c"]]
    assert sample(registry, "agentfn_model_batches_total", reason="full") == 1
    assert sample(registry, "agentfn_model_batches_total", reason="waited") == 0
    assert sample(registry, "agentfn_model_batch_texts_sum") == 3
    assert sample(registry, "agentfn_model_pending_texts") == 0
    await b.aclose()


async def test_a_lone_request_never_waits_for_company(registry: CollectorRegistry) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=32, wait=LONG_WAIT_S)
    for text in "abc":
        assert await b.submit([text]) == [text.upper()]
    # One request at a time, each the one expected: none waited (else this took minutes).
    assert list(b.decisions) == [BatchDecision(texts=1, requests=1, reason=EXPECTED)] * 3
    assert sample(registry, "agentfn_model_batches_total", reason="expected") == 3
    assert sample(registry, "agentfn_model_batches_total", reason="waited") == 0
    await b.aclose()


async def test_fewer_than_expected_go_when_the_wait_runs_out(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=4, wait=0.001)
    assert await asyncio.gather(b.submit(["a"]), b.submit(["b"]), b.submit(["c"])) == [
        ["A"],
        ["B"],
        ["C"],
    ]
    # Three requests shared the last call: the next batch waits for three, at most 1 ms.
    assert await asyncio.gather(b.submit(["d"]), b.submit(["e"])) == [["D"], ["E"]]
    assert list(b.decisions) == [BatchDecision(3, 3, EXPECTED), BatchDecision(2, 2, WAITED)]
    assert encoder.calls == [["a", "b", "c"], ["d", "e"]]
    assert sample(registry, "agentfn_model_batches_total", reason="waited") == 1
    assert sample(registry, "agentfn_model_batches_total", reason="full") == 0
    # Two shared that one: two are expected now, and two go at once.
    assert await asyncio.gather(b.submit(["f"]), b.submit(["g"])) == [["F"], ["G"]]
    assert b.decisions[-1] == BatchDecision(2, 2, EXPECTED)
    await b.aclose()


async def test_concurrent_callers_coming_back_apart_share_one_call(
    registry: CollectorRegistry,
) -> None:
    """Eight clients in a closed loop: the first alone, seven during its call, then all eight.

    When the first call ends, seven wait and one was answered: eight are expected, so the seven
    wait for the first client to come back instead of going as a batch of seven (from then on
    the clients would alternate in two half batches).
    """
    encoder = Encoder()
    b = batcher(encoder, registry, size=32, wait=LONG_WAIT_S)
    encoder.hold()
    first = asyncio.ensure_future(b.submit(["a0"]))
    await async_wait_until(lambda: len(encoder.calls) == 1, message="the first model call")
    seven = [asyncio.ensure_future(b.submit([f"b{i}"])) for i in range(7)]
    await async_wait_until(lambda: b.waiting == 7, message="seven queued")
    encoder.release()
    assert await first == ["A0"]
    assert (len(encoder.calls), b.waiting) == (1, 7)  # the seven wait for the eighth
    assert await b.submit(["a1"]) == ["A1"]
    assert [await task for task in seven] == [[f"B{i}"] for i in range(7)]
    assert list(b.decisions) == [BatchDecision(1, 1, EXPECTED), BatchDecision(8, 8, EXPECTED)]
    assert encoder.calls[1] == [*(f"b{i}" for i in range(7)), "a1"]
    await b.aclose()


async def test_a_request_bigger_than_the_batch_is_split_and_answered_whole(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=3, wait=0)
    texts = [f"t{i}" for i in range(7)]
    assert await b.submit(texts) == [text.upper() for text in texts]
    assert list(b.decisions) == [
        BatchDecision(3, 1, FULL),
        BatchDecision(3, 1, FULL),
        BatchDecision(1, 1, EXPECTED),
    ]
    assert encoder.calls == [texts[0:3], texts[3:6], texts[6:7]]
    await b.aclose()


async def test_parts_of_requests_share_batches_in_arrival_order(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=3, wait=0)
    first, second = await asyncio.gather(b.submit(["a", "b"]), b.submit(["c", "d", "e"]))
    assert (first, second) == (["A", "B"], ["C", "D", "E"])
    # Wait 0: the rest goes at once, though two requests were expected.
    assert list(b.decisions) == [BatchDecision(3, 2, FULL), BatchDecision(2, 1, WAITED)]
    assert encoder.calls == [["a", "b", "c"], ["d", "e"]]
    await b.aclose()


async def test_model_calls_run_one_at_a_time_off_the_event_loop(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=2, wait=0)
    encoder.hold()
    first = asyncio.ensure_future(b.submit(["a", "b"]))
    await async_wait_until(lambda: len(encoder.calls) == 1, message="the first model call")
    # While the model computes, the loop serves: requests queue for the next call.
    later = [asyncio.ensure_future(b.submit([text])) for text in "cde"]
    await async_wait_until(lambda: b.waiting == 3, message="three texts queued")
    assert len(encoder.calls) == 1  # no second call while the first runs
    encoder.release()
    assert await first == ["A", "B"]
    assert [await task for task in later] == [["C"], ["D"], ["E"]]
    assert encoder.calls == [["a", "b"], ["c", "d"], ["e"]]
    assert len(encoder.threads) == 1
    assert threading.get_ident() not in encoder.threads
    await b.aclose()


async def test_a_full_queue_refuses_at_once_and_recovers(registry: CollectorRegistry) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=3, wait=0, queued=4)
    encoder.hold()
    running = asyncio.ensure_future(b.submit(["a", "b", "c"]))
    await async_wait_until(lambda: len(encoder.calls) == 1, message="the first model call")
    queued = asyncio.ensure_future(b.submit(["d"]))
    await async_wait_until(lambda: b.pending == 4, message="four texts pending")
    with pytest.raises(QueueFullError, match="AGENTFN_MODEL_MAX_QUEUED_ITEMS=4") as refused:
        await b.submit(["e"])
    assert (refused.value.pending, refused.value.texts, refused.value.limit) == (4, 1, 4)
    assert sample(registry, "agentfn_model_rejected_requests_total") == 1
    assert sample(registry, "agentfn_model_pending_texts") == 4
    encoder.release()
    assert await running == ["A", "B", "C"]
    assert await queued == ["D"]
    assert b.pending == 0
    assert await b.submit(["e"]) == ["E"]
    await b.aclose()


async def test_a_failed_model_call_fails_its_requests_and_the_batcher_goes_on(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=4, wait=LONG_WAIT_S)
    encoder.fail_next = RuntimeError("out of memory")
    outcomes = await asyncio.gather(
        b.submit(["a", "b"]), b.submit(["c", "d"]), return_exceptions=True
    )
    assert [str(outcome) for outcome in outcomes] == ["out of memory", "out of memory"]
    assert b.pending == 0
    assert await asyncio.gather(b.submit(["e", "f"]), b.submit(["g", "h"])) == [
        ["E", "F"],
        ["G", "H"],
    ]
    await b.aclose()


async def test_a_request_whose_caller_gave_up_never_reaches_the_model(
    registry: CollectorRegistry,
) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=1, wait=0)
    encoder.hold()
    running = asyncio.ensure_future(b.submit(["a"]))
    await async_wait_until(lambda: len(encoder.calls) == 1, message="the first model call")
    abandoned = asyncio.ensure_future(b.submit(["gone"]))
    kept = asyncio.ensure_future(b.submit(["b"]))
    await async_wait_until(lambda: b.waiting == 2, message="two queued")
    abandoned.cancel()
    encoder.release()
    assert await running == ["A"]
    assert await kept == ["B"]
    assert encoder.calls == [["a"], ["b"]]
    assert b.pending == 0
    await b.aclose()


async def test_the_record_is_bounded(registry: CollectorRegistry) -> None:
    b = batcher(Encoder(), registry, size=1, wait=0, history=2)
    assert await b.submit(["a", "b", "c"]) == ["A", "B", "C"]
    assert len(b.decisions) == 2
    assert b.model_calls == 3
    assert b.texts_encoded == 3
    await b.aclose()


async def test_closing_fails_what_waits_and_refuses_more(registry: CollectorRegistry) -> None:
    encoder = Encoder()
    b = batcher(encoder, registry, size=1, wait=0)
    encoder.hold()
    running = asyncio.ensure_future(b.submit(["a"]))
    await async_wait_until(lambda: len(encoder.calls) == 1, message="the first model call")
    waiting = asyncio.ensure_future(b.submit(["b"]))
    await async_wait_until(lambda: b.waiting == 1, message="one queued")
    await b.aclose()
    encoder.release()
    for request in (running, waiting):
        with pytest.raises(RuntimeError, match="shutting down"):
            await request
    with pytest.raises(RuntimeError, match="closed"):
        await b.submit(["c"])


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Encoder(), max_batch_size=0, max_wait_s=0, max_queued_items=1)
