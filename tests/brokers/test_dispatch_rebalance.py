"""The dispatcher when a partition moves to another member mid-retry (a Kafka rebalance).

The Subscription here is a scripted implementation of our own seam (the Kafka one needs a
rebalance that outlasts its grace, which Tansu's slow joins make slow to stage); the subscriber
is a real HTTP server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agentfn.brokers._dispatch import DispatchLimits, TriggerDispatcher
from agentfn.brokers._sender import Sender
from agentfn.brokers.config import TriggerSpec
from agentfn.brokers.delivery import BackoffPolicy, DeliveryPolicy, Destination
from agentfn.brokers.filters import match_all
from agentfn.brokers.log import LogRecord
from agentfn.brokers.metrics import BrokerMetrics
from agentfn.events import CloudEvent

from tests._waiting import async_wait_until
from tests.brokers._subscribers import Answer, Subscriber


class ScriptedSubscription:
    def __init__(self, records: list[LogRecord]) -> None:
        self.records = records
        self.owned = {r.partition for r in records}
        self.commits: list[dict[int, int]] = []
        self.let_go_of: list[int] = []

    async def fetch(self, max_records: int, timeout: float) -> list[LogRecord]:
        if self.records:
            taken, self.records = self.records[:max_records], self.records[max_records:]
            return taken
        await asyncio.sleep(min(timeout, 0.01))
        return []

    async def commit(self, offsets: Mapping[int, int]) -> None:
        self.commits.append(dict(offsets))

    def assigned(self) -> frozenset[int]:
        return frozenset(self.owned)

    def let_go(self, partition: int) -> None:
        self.let_go_of.append(partition)

    def lag(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


async def test_a_partition_that_moves_away_is_neither_retried_nor_committed_here() -> None:
    moving = CloudEvent.new("t", "/p1", {"p": 1})
    staying = CloudEvent.new("t", "/p0", {"p": 0})
    subscription = ScriptedSubscription([LogRecord(1, 7, moving), LogRecord(0, 3, staying)])

    def answer(event: CloudEvent, n: int) -> Answer:
        if event.id == moving.id:
            subscription.owned.discard(1)  # the rebalance lands while this attempt is out
            return Answer(503)
        return Answer(202)

    sub = await Subscriber(answer).start()
    sender = Sender()
    await sender.start()
    metrics = BrokerMetrics()
    dispatcher = TriggerDispatcher(
        trigger=TriggerSpec("default", "t", "default", Destination(uri=sub.url), match_all),
        policy=DeliveryPolicy(retry=5, backoff_policy=BackoffPolicy.LINEAR, backoff_delay=0.01),
        subscriber_url=sub.url,
        dead_letter_url=None,
        subscription=subscription,
        sender=sender,
        ingest=lambda events: asyncio.sleep(0),
        limits=DispatchLimits(),
        metrics=metrics,
    )
    dispatcher.start()
    try:
        await async_wait_until(
            lambda: (
                metrics.backlog.labels("default", "default", "t")._value.get() == 0
                and staying.id in sub.seen
            ),
            message="both events settled",
        )
        await dispatcher.stop(grace=1.0)
        assert sub.seen[moving.id] == 1, "no retry once the partition belongs to another member"
        # Its last delivery over, the dispatcher lets the partition go (a revocation waiting for
        # it stops waiting); the partition it keeps is never let go of.
        assert subscription.let_go_of == [1]
        committed = {p: o for c in subscription.commits for p, o in c.items()}
        assert committed == {0: 4}, "partition 1 is left to its new owner's committed offset"
        dropped = metrics.dead_lettered.labels("default", "default", "t", "dropped")._value.get()
        assert dropped == 0, "giving a partition up is not giving up on its events"
    finally:
        await sender.aclose()
        await sub.stop()
