"""The Kafka event log: the layout and semantics of Knative's Kafka Broker, over kafka-python.

Interoperable by construction: one topic per broker (``knative-broker-<namespace>-<name>``),
each event one record in binary content mode (``ce_`` headers, the data as the value, the
``partitionkey`` extension as the key), one consumer group per Trigger
(``knative-trigger-<namespace>-<name>``) whose offsets live in Kafka. Events written by Knative's
Kafka Broker are dispatched here and the other way round, so an agent system moves between the
two without touching a topic.

Threads. kafka-python blocks, and each of its clients runs its own I/O thread; the event loop
never waits on either:

* an append queues its records with ``KafkaProducer.send``, which does not block once the topic's
  metadata is known (:meth:`KafkaEventLog._ensure_topic` sees to that), and the producer's I/O
  thread hands the acknowledgements back to the loop, one ``call_soon_threadsafe`` per burst;
* each subscription has one thread that owns its ``KafkaConsumer`` (not thread-safe, so nothing
  else touches it): it polls, decodes, hands records to the loop through a bounded buffer (one
  wake-up per poll, resolving the future ``fetch`` waits on) and commits what the dispatcher
  asks for. Rebalances happen only inside ``poll``: their callbacks run on the consumer's own
  I/O thread while the subscription's thread waits in that call.

Delivery semantics (at-least-once, as Knative's): the ingress answers 202 only once every record
of the request is acknowledged by all in-sync replicas (``acks=all``, idempotent producer). A
consumer group commits only offsets the dispatcher reports as finished (delivered, filtered out
or dead-lettered), and the dispatcher reports only a contiguous watermark.

Rebalances. When partitions are revoked, records of them still buffered are dropped (the next
owner starts from the committed offset), the revocation waits up to ``revoke_grace`` seconds for
the dispatcher to finish what it was handed, and commits that before the partitions move; so in
the normal case the next owner neither repeats nor overtakes an event this member delivered.
What is still unfinished after the grace is delivered by both members (at-least-once), each in
partition order.

Batches. A request's events that fall on one partition (no ``partitionkey``, or one key) are
produced as one Kafka record batch (up to 1 MiB, the largest request), which the broker appends
whole or not at all: the batch is
atomic for every reader, Knative's dispatcher included (read_uncommitted, so transactions would
not give it that). Events of one request keyed to different partitions keep Knative's key ->
partition mapping, which per-key order needs, and are atomic per partition only: on a failure
the request is answered 503, and the client's retry may duplicate the partitions that were
written, never lose any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from agentfn.brokers.log import EventTooLargeError, LogRecord, StoreUnavailableError
from agentfn.events import CloudEvent, KafkaRecord, from_kafka, to_kafka
from kafka import (
    AsyncConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic, OffsetSpec
from kafka.errors import KafkaError, MessageSizeTooLargeError, NoError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import OffsetAndMetadata

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_RECORD_BYTES",
    "DEFAULT_REPLICATION",
    "RECORD_OVERHEAD_BYTES",
    "KafkaBrokerConfig",
    "KafkaEventLog",
]

log = logging.getLogger(__name__)

#: Knative's ``default.topic.partitions``.
DEFAULT_PARTITIONS: Final = 10
#: One replica: a local or CI Kafka has one broker (cluster manifests say 3).
DEFAULT_REPLICATION: Final = 1
#: Room in a record beyond the HTTP body the ingress accepted: the attributes, which binary
#: mode carries in headers outside the body, and the record and batch framing.
RECORD_OVERHEAD_BYTES: Final = 64 * 1024
#: The largest record (``max.request.size``, and ``max.message.bytes`` of the topics this log
#: creates): the ingress's default 1 MiB body and the overhead. Knative's data plane stops at
#: 1 MiB including the headers, so an event the ingress takes would not always fit.
DEFAULT_RECORD_BYTES: Final = 1024 * 1024 + RECORD_OVERHEAD_BYTES

_PARTITIONS_KEY: Final = "default.topic.partitions"
_REPLICATION_KEY: Final = "default.topic.replication.factor"
_BOOTSTRAP_KEY: Final = "bootstrap.servers"
_POLL_MS: Final = 50  # how long a commit or close waits for the consumer thread, at most
_COMMIT_RETRY: Final = 0.5
_ENDS_EVERY: Final = 0.2  # seconds between looks at the high watermarks (for lag())


@dataclass(frozen=True, slots=True)
class KafkaBrokerConfig:
    """What Knative's ``kafka-broker-config`` ConfigMap says about topics and the cluster."""

    bootstrap_servers: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = DEFAULT_REPLICATION

    @classmethod
    def from_configmap(cls, path: str | Path) -> KafkaBrokerConfig:
        """Read a ``kafka-broker-config``-style ConfigMap (YAML); absent keys keep defaults."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            documents = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not YAML: {error}") from None
        configmaps = [
            d
            for d in documents
            if isinstance(d, dict) and d.get("kind", "ConfigMap") == "ConfigMap"
        ]
        if len(configmaps) != 1 or not isinstance(configmaps[0].get("data", {}), dict):
            raise ValueError(f"{path}: expected one ConfigMap with a data mapping")
        data: dict[str, object] = configmaps[0].get("data") or {}

        def positive(key: str, default: int) -> int:
            raw = data.get(key)
            if raw is None:
                return default
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{path}: data.{key}: {raw!r} is not an integer") from None
            if value < 1:
                raise ValueError(f"{path}: data.{key}: must be at least 1, not {value}")
            return value

        bootstrap = data.get(_BOOTSTRAP_KEY)
        return cls(
            bootstrap_servers=str(bootstrap).strip() or None if bootstrap is not None else None,
            partitions=positive(_PARTITIONS_KEY, DEFAULT_PARTITIONS),
            replication_factor=positive(_REPLICATION_KEY, DEFAULT_REPLICATION),
        )


def _set_result(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(_unavailable(error))


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _set_result(waiter, None)


def _unavailable(error: BaseException) -> StoreUnavailableError | EventTooLargeError:
    if isinstance(error, StoreUnavailableError | EventTooLargeError):
        return error
    if isinstance(error, MessageSizeTooLargeError):
        # Refused by the producer (max.request.size) or by the topic (max.message.bytes):
        # sending it again cannot help, so it is no "unavailable" the client should retry.
        return EventTooLargeError(f"the event is larger than a Kafka record may be: {error}")
    return StoreUnavailableError(f"Kafka did not acknowledge the write: {error!r}")


def _value(record: KafkaRecord) -> bytes | None:
    # kafka-python refuses a record with neither key nor value; an empty value reads back as
    # "no data", the same as a null one, through the CloudEvents Kafka binding.
    if record.value is None and record.key is None:
        return b""
    return record.value


class KafkaEventLog:
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
        self._subscriptions: list[_KafkaSubscription] = []
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
            raise StoreUnavailableError(
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

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(s.close() for s in list(self._subscriptions)))
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
                raise StoreUnavailableError(f"topic {name} is not available: {error!r}") from error
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
                raise StoreUnavailableError(f"topic {name} has no partitions in the metadata")

    # -- appending ---------------------------------------------------------------------------

    async def append(self, topic: str, events: Sequence[CloudEvent]) -> list[LogRecord]:
        if not events:
            return []
        if self._producer is None or self._closing:
            raise StoreUnavailableError("the event log is closed")
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
            raise _unavailable(error) from error
        # Both run on the producer's I/O thread: hand the outcome to the loop.
        sent.add_callback(self._acked, future, True)
        sent.add_errback(self._acked, future, False)
        # The producer fails a record at write_timeout by itself; this is the backstop.
        timer = loop.call_later(
            self.write_timeout + 1.0,
            _set_error,
            future,
            StoreUnavailableError(f"no acknowledgement within {self.write_timeout}s"),
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
                _set_result(future, outcome)
            else:
                _set_error(future, outcome)

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
                raise _unavailable(error) from error
        return [
            LogRecord(meta.partition, meta.offset, event)
            for meta, event in zip(metadata, events, strict=True)
        ]

    def _produce_batch(self, name: str, records: list[KafkaRecord]) -> list[Any]:
        producer = self._batch_producer
        partitions = sorted(producer.partitions_for(name) or ())
        if not partitions:
            raise StoreUnavailableError(f"topic {name} has no partitions in the metadata")
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

    async def subscribe(self, topic: str, group: str) -> _KafkaSubscription:
        if self._loop is None or self._producer is None:
            raise RuntimeError("start() the log first")
        name, group_id = self.name_prefix + topic, self.name_prefix + group
        await self._ensure_topic(name)
        try:
            await asyncio.to_thread(self._seed_new_group, name, group_id)
        except KafkaError as error:
            raise StoreUnavailableError(f"group {group_id}: {error!r}") from error
        subscription = _KafkaSubscription(self, name, group_id)
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

    def _forget(self, subscription: _KafkaSubscription) -> None:
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


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on the consumer's I/O thread, awaited there, so heartbeats go on meanwhile."""

    def __init__(self, subscription: _KafkaSubscription, consumer: Any) -> None:
        self._subscription = subscription
        self._consumer = consumer
        # kafka-python 3 has no public way to wait inside its own loop; without this private
        # sleep the revocation commits what is finished and does not wait for the rest.
        self._sleep: Callable[[float], Any] | None = getattr(
            getattr(consumer, "_net", None), "sleep", None
        )

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        partitions = self._subscription._partitions_of(revoked)
        if not partitions:
            return
        sub = self._subscription
        log.info("group %s: partitions %s revoked", sub.group, sorted(partitions))
        handed = sub._begin_release(partitions)
        deadline = time.monotonic() + sub._owner.revoke_grace
        while (
            self._sleep is not None
            and not sub._closing.is_set()
            and not sub._settled(handed)
            and time.monotonic() < deadline
        ):
            await self._sleep(0.01)
        if not sub._settled(handed):
            log.warning(
                "group %s: partitions %s move with events still in flight; "
                "they may be delivered again by the next owner",
                sub.group,
                sorted(partitions),
            )
        offsets, waiters = sub._end_release(partitions)
        error: BaseException | None = None
        if offsets:
            try:
                await self._consumer.commit_async(sub._kafka_offsets(offsets))
            except KafkaError as failure:
                error = failure
                log.warning("group %s: commit on revocation failed: %r", sub.group, failure)
            else:
                sub._committed_now(offsets)
        sub._settle(waiters, error)

    async def on_partitions_lost(self, lost: set[Any]) -> None:
        # Evicted: the group has moved on, a commit would be refused; just stop handing out.
        partitions = self._subscription._partitions_of(lost)
        if partitions:
            log.info("group %s: partitions %s lost", self._subscription.group, sorted(partitions))
            self._subscription._begin_release(partitions)
            _, waiters = self._subscription._end_release(partitions)
            self._subscription._settle(
                waiters, StoreUnavailableError(f"partitions {sorted(partitions)} were lost")
            )

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        partitions = self._subscription._partitions_of(assigned)
        log.info("group %s: partitions %s assigned", self._subscription.group, sorted(partitions))
        self._subscription._assign(partitions)


class _KafkaSubscription:
    """One consumer group member: a thread owning a KafkaConsumer, a buffer read by the loop."""

    def __init__(self, owner: KafkaEventLog, topic: str, group: str) -> None:
        assert owner._loop is not None
        self._owner = owner
        self._loop = owner._loop
        self.topic = topic
        self.group = group
        # Guards everything the consumer thread, its I/O thread and the loop share below.
        self._lock = threading.Lock()
        # Runs of one partition's records, each with the partition's epoch when fetched.
        self._buffer: deque[tuple[int, list[LogRecord]]] = deque()
        self._buffered = 0  # records in _buffer
        self._epochs: dict[int, int] = {}  # bumped when a partition is revoked or lost
        self._owned: frozenset[int] = frozenset()
        self._releasing: frozenset[int] = frozenset()
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
            timer = loop.call_later(remaining, _set_result, waiter, None)
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
        timeout = self._owner.write_timeout
        timer = self._loop.call_later(
            timeout,
            _set_error,
            waiter,
            StoreUnavailableError(
                f"group {self.group}: commit not confirmed within {timeout}s; it is retried"
            ),
        )
        try:
            await waiter
        finally:
            timer.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        with self._lock:
            fetchers, self._fetchers = self._fetchers, []
        for fetcher in fetchers:
            _set_result(fetcher, None)
        await asyncio.to_thread(self._thread.join, self._owner.write_timeout + 5.0)
        self._owner._forget(self)

    # -- shared state ------------------------------------------------------------------------

    def _partitions_of(self, tps: Iterable[Any]) -> frozenset[int]:
        return frozenset(tp.partition for tp in tps if tp.topic == self.topic)

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

    def _begin_release(self, partitions: frozenset[int]) -> dict[int, int]:
        with self._lock:
            self._owned = self._owned - partitions
            self._releasing = self._releasing | partitions
            for partition in partitions:
                self._epochs[partition] = self._epochs.get(partition, 0) + 1
            return {p: self._handed[p] for p in partitions if p in self._handed}

    def _end_release(
        self, partitions: frozenset[int]
    ) -> tuple[dict[int, int], list[asyncio.Future[None]]]:
        """Stop taking commits for ``partitions``; what was asked for them and not committed."""
        with self._lock:
            self._releasing = self._releasing - partitions
            return self._due_locked(partitions)

    def _settled(self, handed: Mapping[int, int]) -> bool:
        """Whether the dispatcher finished everything it was handed of these partitions."""
        with self._lock:
            return all(
                max(self._wanted.get(p, -1), self._committed.get(p, -1)) >= offset
                for p, offset in handed.items()
            )

    def _assign(self, partitions: frozenset[int]) -> None:
        with self._lock:
            self._owned = self._owned | partitions

    def _due_commits(
        self, partitions: frozenset[int] | None = None
    ) -> tuple[dict[int, int], list[asyncio.Future[None]]]:
        """Offsets asked for and not yet committed (of ``partitions``, else of all owned)."""
        with self._lock:
            return self._due_locked(self._owned if partitions is None else partitions)

    def _due_locked(
        self, scope: frozenset[int]
    ) -> tuple[dict[int, int], list[asyncio.Future[None]]]:
        offsets = {
            p: offset
            for p, offset in self._wanted.items()
            if p in scope and offset > self._committed.get(p, -1)
        }
        waiters, self._waiters = self._waiters, []
        return offsets, waiters

    def _committed_now(self, offsets: Mapping[int, int]) -> None:
        with self._lock:
            for partition, offset in offsets.items():
                if offset > self._committed.get(partition, -1):
                    self._committed[partition] = offset

    def _kafka_offsets(self, offsets: Mapping[int, int]) -> dict[Any, Any]:
        return {
            TopicPartition(self.topic, p): OffsetAndMetadata(offset, "", -1)
            for p, offset in offsets.items()
        }

    def _settle(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if not waiters:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            if error is None:
                for waiter in waiters:
                    self._loop.call_soon_threadsafe(_set_result, waiter, None)
            else:
                for waiter in waiters:
                    self._loop.call_soon_threadsafe(_set_error, waiter, error)

    # -- the consumer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(**self._owner._consumer_config(self.group))
            consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        except Exception as error:
            failure = StoreUnavailableError(f"group {self.group}: cannot join: {error!r}")
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_set_error, self._ready, failure)
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_set_result, self._ready, None)
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
                consumer.close(autocommit=False, timeout_ms=round(self._owner.write_timeout * 1000))
            _, waiters = self._due_commits(frozenset())
            self._settle(waiters, StoreUnavailableError(f"group {self.group}: closed"))

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
            if now - self._commit_sent < 2 * self._owner.write_timeout:
                return
            # Requests time out well before this; never let one lost answer stop all commits.
            log.warning("group %s: no answer to a commit, sending again", self.group)
        if now < self._commit_retry_at:
            return
        offsets, waiters = self._due_commits()
        if not offsets:
            self._settle(waiters, None)
            return

        def answered(_: object, response: object) -> None:
            self._commit_sent = None
            if isinstance(response, BaseException):
                log.warning("group %s: commit failed, will retry: %r", self.group, response)
                self._commit_retry_at = time.monotonic() + _COMMIT_RETRY
                self._settle(waiters, response)
            else:
                self._committed_now(offsets)
                self._settle(waiters, None)

        self._commit_sent = now
        try:
            consumer.commit_async(self._kafka_offsets(offsets), callback=answered)
        except KafkaError as error:
            answered(None, error)

    def _commit_before_leaving(self, consumer: Any) -> None:
        offsets, waiters = self._due_commits()
        error: BaseException | None = None
        if offsets:
            try:
                consumer.commit(
                    self._kafka_offsets(offsets),
                    timeout_ms=round(self._owner.write_timeout * 1000),
                )
            except KafkaError as failure:
                error = failure
                log.warning("group %s: last commit failed: %r", self.group, failure)
            else:
                self._committed_now(offsets)
        self._settle(waiters, error)

    def _flow_control(self, consumer: Any) -> None:
        # Pause rather than stop polling: polling is what takes part in rebalances.
        size = self._buffered
        if size >= self._owner.buffer_limit:
            consumer.pause(*consumer.assignment())
        elif size < self._owner.buffer_limit // 2 and consumer.paused():
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
                self._loop.call_soon_threadsafe(_wake, fetchers)

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
