"""The rebalance protocol between a consumer group member and kafka-python's listener.

A member hands partitions over in three steps: it stops handing out their records
(:meth:`Handover.begin_release`), the listener waits up to the grace for the dispatcher to
finish what it was handed (:meth:`Handover.settled`), then it stops taking commits for them
(:meth:`Handover.end_release`) and the listener commits what was asked for, before the
partitions move. The listener owns the Kafka side (the consumer's commit); the member owns its
bookkeeping, behind this interface and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from agentfn.brokers.log import LogUnavailableError
from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

__all__ = ["Handover", "RebalanceListener", "kafka_offsets"]

log = logging.getLogger(__name__)

#: What a member asked to commit and has not, and the commits waiting on it.
Due = tuple[dict[int, int], list[asyncio.Future[None]]]


class Handover(Protocol):
    """A consumer group member's side of a rebalance; called on the consumer's I/O thread."""

    @property
    def closing(self) -> bool:
        """Whether the member is leaving (a revocation then waits no longer)."""
        ...

    def begin_release(self, partitions: frozenset[int]) -> Mapping[int, int]:
        """Stop handing out records of ``partitions``; the offset after the last one handed."""
        ...

    def settled(self, handed: Mapping[int, int]) -> bool:
        """Whether the dispatcher finished everything it was handed (``begin_release``'s)."""
        ...

    def end_release(self, partitions: frozenset[int]) -> Due:
        """Stop taking commits for ``partitions``; what was asked for them and not committed."""
        ...

    def committed(self, offsets: Mapping[int, int]) -> None:
        """Kafka confirmed ``offsets`` (``partition -> next offset``) as the group's position."""
        ...

    def answer(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        """Tell the commits waiting in ``waiters`` how they ended (``None``: committed)."""
        ...

    def assign(self, partitions: frozenset[int]) -> None:
        """``partitions`` are this member's now."""
        ...


def kafka_offsets(topic: str, offsets: Mapping[int, int]) -> dict[Any, Any]:
    """``partition -> next offset`` as kafka-python commits it."""
    return {
        TopicPartition(topic, p): OffsetAndMetadata(offset, "", -1) for p, offset in offsets.items()
    }


class RebalanceListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on the consumer's I/O thread, awaited there, so heartbeats go on meanwhile."""

    def __init__(
        self, member: Handover, consumer: Any, *, topic: str, group: str, grace: float
    ) -> None:
        self._member = member
        self._consumer = consumer
        self._topic = topic
        self._group = group
        self._grace = grace
        # kafka-python 3 has no public way to wait inside its own loop; without this private
        # sleep the revocation commits what is finished and does not wait for the rest.
        self._sleep: Callable[[float], Any] | None = getattr(
            getattr(consumer, "_net", None), "sleep", None
        )

    def _partitions_of(self, tps: Iterable[Any]) -> frozenset[int]:
        return frozenset(tp.partition for tp in tps if tp.topic == self._topic)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        partitions = self._partitions_of(revoked)
        if not partitions:
            return
        member = self._member
        log.info("group %s: partitions %s revoked", self._group, sorted(partitions))
        handed = member.begin_release(partitions)
        deadline = time.monotonic() + self._grace
        while (
            self._sleep is not None
            and not member.closing
            and not member.settled(handed)
            and time.monotonic() < deadline
        ):
            await self._sleep(0.01)
        if not member.settled(handed):
            log.warning(
                "group %s: partitions %s move with events still in flight; "
                "they may be delivered again by the next owner",
                self._group,
                sorted(partitions),
            )
        offsets, waiters = member.end_release(partitions)
        error: BaseException | None = None
        if offsets:
            try:
                await self._consumer.commit_async(kafka_offsets(self._topic, offsets))
            except KafkaError as failure:
                error = failure
                log.warning("group %s: commit on revocation failed: %r", self._group, failure)
            else:
                member.committed(offsets)
        member.answer(waiters, error)

    async def on_partitions_lost(self, lost: set[Any]) -> None:
        # Evicted: the group has moved on, a commit would be refused; just stop handing out.
        partitions = self._partitions_of(lost)
        if partitions:
            log.info("group %s: partitions %s lost", self._group, sorted(partitions))
            self._member.begin_release(partitions)
            _, waiters = self._member.end_release(partitions)
            self._member.answer(
                waiters, LogUnavailableError(f"partitions {sorted(partitions)} were lost")
            )

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        partitions = self._partitions_of(assigned)
        log.info("group %s: partitions %s assigned", self._group, sorted(partitions))
        self._member.assign(partitions)
