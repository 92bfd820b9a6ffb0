"""The producer side of the Kafka event log, and the log that joins the consumer groups.

An append queues its records with ``KafkaProducer.send``, which does not block once the topic's
metadata is known (:meth:`KafkaEventLog._ensure_topic` sees to that), and the producer's I/O
thread hands the acknowledgements back to the loop, one ``call_soon_threadsafe`` per burst.
The ingress answers 202 only once every record of the request is acknowledged by all in-sync
replicas (``acks=all``, idempotent producer).

Batches. A request's events that fall on one partition (no ``partitionkey``, or one key) are
produced as one Kafka record batch (up to 1 MiB, the largest request), which the broker appends
whole or not at all: the batch is atomic for every reader, Knative's dispatcher included
(read_uncommitted, so transactions would not give it that). Events of one request keyed to
different partitions keep Knative's key -> partition mapping, which per-key order needs, and
are atomic per partition only: on a failure the request is answered 503, and the client's retry
may duplicate the partitions that were written, never lose any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from agentfn.brokers.kafka._handoff import set_error, set_result, unavailable
from agentfn.brokers.kafka.config import (
    DEFAULT_PARTITIONS,
    DEFAULT_RECORD_BYTES,
    DEFAULT_REPLICATION,
    RECORD_OVERHEAD_BYTES,
)
from agentfn.brokers.kafka.subscription import KafkaSubscription
from agentfn.brokers.log import EventTooLargeError, LogRecord, LogUnavailableError
from agentfn.events import CloudEvent, KafkaRecord, to_kafka
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic, OffsetSpec
from kafka.errors import KafkaError, NoError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.record.default_records import DefaultRecordBatchBuilder

from agentfn._lifecycle import Started

__all__ = ["KafkaEventLog"]

log = logging.getLogger(__name__)


def _value(record: KafkaRecord) -> bytes | None:
    # kafka-python refuses a record with neither key nor value; an empty value reads back as
    # "no data", the same as a null one, through the CloudEvents Kafka binding.
    if record.value is None and record.key is None:
        return b""
    return record.value


class KafkaEventLog(Started):
    """:class:`~agentfn.brokers.log.EventLog` over a Kafka cluster (``bootstrap_servers``).

    ``partitions`` and ``replication_factor`` apply to topics this log creates; an existing
    topic is used as it is. ``session_timeout`` is the consumer groups' (Knative's is 10 s).
    ``fetch_max_wait`` is how long a fetch may wait for records (Knative's 0.5 s; Apache Kafka
    answers as soon as a record arrives, Tansu only after about half of it, so against Tansu it
    is what a delivery waits after each append).
    ``write_timeout`` bounds an append: past it the ingress answers 503 and the producer drops
    the records it still holds. ``max_record_bytes`` is the largest record the producers send
    and the topics this log creates take; a larger event is refused with
    :class:`~agentfn.brokers.log.EventTooLargeError` (413), as is one an existing topic refuses.
    ``revoke_grace`` bounds how long a rebalance waits for events in flight on the partitions
    that move. ``name_prefix`` is for test suites sharing one Kafka; it
    is empty in production, where the names must be Knative's.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        replication_factor: int = DEFAULT_REPLICATION,
        session_timeout: float = 10.0,
        fetch_max_wait: float = 0.5,
        write_timeout: float = 10.0,
        linger: float = 0.002,
        revoke_grace: float = 10.0,
        max_record_bytes: int = DEFAULT_RECORD_BYTES,
        buffer_limit: int = 2000,
        name_prefix: str = "",
        client_id: str = "agentfn-broker",
    ) -> None:
        if partitions < 1 or replication_factor < 1:
            raise ValueError("partitions and replication_factor must be at least 1")
        if write_timeout < 0.5 or not 0 <= linger < 0.1:
            raise ValueError("write_timeout must be at least 0.5 s and linger under 0.1 s")
        if max_record_bytes < RECORD_OVERHEAD_BYTES:
            raise ValueError(f"max_record_bytes must be at least {RECORD_OVERHEAD_BYTES}")
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.session_timeout = session_timeout
        self.fetch_max_wait = fetch_max_wait
        self.write_timeout = write_timeout
        self.revoke_grace = revoke_grace
        self.max_record_bytes = max_record_bytes
        self.buffer_limit = buffer_limit
        self.name_prefix = name_prefix
        self._linger_ms = round(linger * 1000)
        self._client_id = client_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None
        self._batch_producer: Any = None
        self._admin: Any = None
        self._admin_lock = threading.Lock()
        self._batch_lock: asyncio.Lock | None = None
        self._topics: set[str] = set()
        self._topic_locks: dict[str, asyncio.Lock] = {}
        self._subscriptions: list[KafkaSubscription] = []
        self._closing = False
        # Acknowledgements the producer's I/O thread hands to the loop: a burst of them (a
        # record batch's worth) costs one call_soon_threadsafe, not one each.
        self._acks: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._acks_due = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _common(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self._client_id,
            # Knative's data plane: back off at most a second, so a Kafka that comes back is
            # used again within a second.
            "reconnect_backoff_max_ms": 1000,
            # A Kafka that is not there at start is an error to report, not to wait 30 s for.
            "bootstrap_timeout_ms": round(max(self.write_timeout, 10.0) * 1000),
        }

    def _producer_config(self, *, linger_ms: int, batch_size: int | None) -> dict[str, Any]:
        delivery_ms = round(self.write_timeout * 1000)
        config = self._common() | {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            # The producer itself gives up on a record when the ingress gives up on the request,
            # so a write answered 503 is not retried into the log later behind the client's
            # back (one already on the wire may still land: a duplicate at worst, once the
            # client sends it again).
            "delivery_timeout_ms": delivery_ms,
            "request_timeout_ms": min(30_000, delivery_ms - linger_ms),
            "max_block_ms": delivery_ms,
            "max_request_size": self.max_record_bytes,
        }
        if batch_size is not None:
            config["batch_size"] = batch_size
        return config

    def _connect(self) -> None:
        self._producer = KafkaProducer(
            **self._producer_config(linger_ms=self._linger_ms, batch_size=None)
        )
        # Multi-event appends get a producer of their own that never sends on its own (a linger
        # far longer than the append takes, a batch size as large as a request): each append
        # sends its records and flushes, so they leave as one record batch per partition.
        max_request = self.max_record_bytes
        batch_linger = round(self.write_timeout * 1000) // 2
        config = self._producer_config(linger_ms=batch_linger, batch_size=max_request)
        config["request_timeout_ms"] = round(self.write_timeout * 1000) - batch_linger
        self._batch_producer = KafkaProducer(**config)
        self._admin = KafkaAdminClient(**self._common())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._batch_lock = asyncio.Lock()
        try:
            await asyncio.to_thread(self._connect)
        except KafkaError as error:
            await asyncio.to_thread(self._disconnect)
            raise LogUnavailableError(
                f"cannot reach Kafka at {self.bootstrap_servers}: {error!r}"
            ) from error

    def _disconnect(self) -> None:
        timeout = self.write_timeout
        for client in (self._producer, self._batch_producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=timeout)
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()

    async def aclose(self) -> None:
        self._closing = True
        await asyncio.gather(*(s.aclose() for s in list(self._subscriptions)))
        await asyncio.to_thread(self._disconnect)

    # -- topics ------------------------------------------------------------------------------

    async def _ensure_topic(self, name: str) -> None:
        """Create ``name`` if it is missing and wait until both producers know its partitions."""
        lock = self._topic_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self._topics:
                return
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self._create_topic, name), self.write_timeout
                )
            except (KafkaError, TimeoutError) as error:
                raise LogUnavailableError(f"topic {name} is not available: {error!r}") from error
            self._topics.add(name)

    def _create_topic(self, name: str) -> None:
        with self._admin_lock:
            try:
                self._admin.create_topics(
                    [
                        NewTopic(
                            name,
                            self.partitions,
                            self.replication_factor,
                            topic_configs={"max.message.bytes": str(self.max_record_bytes)},
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                pass
            else:
                log.info(
                    "created topic %s (%d partitions, replication factor %d)",
                    name,
                    self.partitions,
                    self.replication_factor,
                )
        for producer in (self._producer, self._batch_producer):
            if not producer.partitions_for(name):
                raise LogUnavailableError(f"topic {name} has no partitions in the metadata")

    # -- appending ---------------------------------------------------------------------------

    async def append(self, topic: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        if not events:
            return []
        if self._producer is None or self._closing:
            raise LogUnavailableError("the event log is closed")
        name = self.name_prefix + topic
        if name not in self._topics:
            await self._ensure_topic(name)
        if len(events) == 1:
            return [await self._send_one(name, events[0])]
        return await self._send_batch(name, events)

    async def _send_one(self, name: str, event: CloudEvent) -> LogRecord:
        loop = self._loop
        assert loop is not None
        record = to_kafka(event)
        future: asyncio.Future[Any] = loop.create_future()
        try:
            sent = self._producer.send(
                name, value=_value(record), key=record.key, headers=list(record.headers)
            )
        except (KafkaError, ValueError) as error:
            raise unavailable(error) from error
        # Both run on the producer's I/O thread: hand the outcome to the loop.
        sent.add_callback(self._acked, future, True)
        sent.add_errback(self._acked, future, False)
        # The producer fails a record at write_timeout by itself; this is the backstop.
        timer = loop.call_later(
            self.write_timeout + 1.0,
            set_error,
            future,
            LogUnavailableError(f"no acknowledgement within {self.write_timeout}s"),
        )
        try:
            metadata = await future
        finally:
            timer.cancel()
        return LogRecord(metadata.partition, metadata.offset, event)

    def _acked(self, future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
        """A record's outcome, on the producer's I/O thread (or the loop, if it failed at once)."""
        self._acks.append((future, ok, outcome))
        if not self._acks_due:
            self._acks_due = True
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                self._loop.call_soon_threadsafe(self._settle_acks)

    def _settle_acks(self) -> None:
        # Cleared before draining: an outcome appended after the drain's last look finds it
        # cleared and schedules another drain; one appended before it is drained here.
        self._acks_due = False
        acks = self._acks
        while acks:
            future, ok, outcome = acks.popleft()
            if ok:
                set_result(future, outcome)
            else:
                set_error(future, outcome)

    async def _send_batch(self, name: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        records = [to_kafka(event) for event in events]
        # Checked before any is sent: the producer refuses a record only when it comes to it,
        # after the ones before it were sent, and a batch is stored whole or not at all.
        for index, record in enumerate(records):
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
                record.key, _value(record), list(record.headers)
            )
            if size > self.max_record_bytes:
                raise EventTooLargeError(
                    f"event {index} of the batch is larger than a Kafka record may be"
                    f" ({size} bytes, max_record_bytes {self.max_record_bytes})"
                )
        assert self._batch_lock is not None
        # One batch at a time: a flush sends everything the producer holds, so two appends
        # interleaved could split each other across record batches. The lock is held until
        # the thread is done (its flush is bounded by write_timeout), never released early.
        async with self._batch_lock:
            try:
                metadata = await asyncio.to_thread(self._produce_batch, name, records)
            except (KafkaError, ValueError) as error:
                raise unavailable(error) from error
        return [
            LogRecord(meta.partition, meta.offset, event)
            for meta, event in zip(metadata, events, strict=True)
        ]

    def _produce_batch(self, name: str, records: list[KafkaRecord]) -> list[Any]:
        producer = self._batch_producer
        partitions = sorted(producer.partitions_for(name) or ())
        if not partitions:
            raise LogUnavailableError(f"topic {name} has no partitions in the metadata")
        keyed = [
            partitions[(murmur2(r.key) & 0x7FFFFFFF) % len(partitions)]
            for r in records
            if r.key is not None
        ]
        # Keyless events join the first keyed one's partition (or one chosen at random), so a
        # batch spans as few partitions, hence record batches, as its keys allow.
        anchor = keyed[0] if keyed else random.choice(partitions)  # noqa: S311 - not crypto
        futures = []
        for record in records:
            partition = (
                anchor
                if record.key is None
                else partitions[(murmur2(record.key) & 0x7FFFFFFF) % len(partitions)]
            )
            futures.append(
                producer.send(
                    name,
                    value=_value(record),
                    key=record.key,
                    headers=list(record.headers),
                    partition=partition,
                )
            )
        producer.flush(timeout=self.write_timeout)
        return [future.get(timeout=0) for future in futures]

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        if self._loop is None or self._producer is None:
            raise RuntimeError("start() the log first")
        name, group_id = self.name_prefix + topic, self.name_prefix + group
        await self._ensure_topic(name)
        try:
            await asyncio.to_thread(self._seed_new_group, name, group_id)
        except KafkaError as error:
            raise LogUnavailableError(f"group {group_id}: {error!r}") from error
        subscription = KafkaSubscription(
            self._loop,
            name,
            group_id,
            consumer_config=self._consumer_config(group_id),
            write_timeout=self.write_timeout,
            buffer_limit=self.buffer_limit,
            revoke_grace=self.revoke_grace,
            forget=self._forget,
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    def _seed_new_group(self, name: str, group: str) -> None:
        """Commit the log end for a group that has never committed on ``name``.

        A new Trigger starts at the end of the log, as Knative's do. Committing that position
        before joining (rather than letting the consumer reset to "latest" once it has joined,
        which can take seconds) means every event accepted after ``subscribe`` returns is
        delivered, even if the process dies before the group has settled. Partitions without a
        committed offset later on (the topic grew) start at their beginning: every event in
        them arrived after the group existed.
        """
        with self._admin_lock:
            committed = self._admin.list_group_offsets(group).get(group, {})
            if any(tp.topic == name and meta.offset >= 0 for tp, meta in committed.items()):
                return
            partitions = self._producer.partitions_for(name) or set()
            specs = {TopicPartition(name, p): OffsetSpec.LATEST for p in partitions}
            results = self._admin.reset_group_offsets(group, specs)
        failed = {
            tp.partition: result.get("error")
            for tp, result in results.items()
            if result.get("error") not in (None, NoError)
        }
        if failed:
            # Another member may be seeding or running already; a partition left without an
            # offset starts at its beginning, which delivers more, never less.
            log.warning("group %s: could not set start offsets %s", group, failed)

    def _forget(self, subscription: KafkaSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def _consumer_config(self, group: str) -> dict[str, Any]:
        session_ms = round(self.session_timeout * 1000)
        return self._common() | {
            "group_id": group,
            "enable_auto_commit": False,
            # Only partitions nobody ever committed reach this (see _seed_new_group).
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": min(3000, max(100, session_ms // 3)),
            "max_poll_records": 500,
            "fetch_max_wait_ms": max(1, round(self.fetch_max_wait * 1000)),
        }
