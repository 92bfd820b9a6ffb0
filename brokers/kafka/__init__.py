"""The Kafka event log: the layout and semantics of Knative's Kafka Broker, over kafka-python.

Interoperable by construction: one topic per broker (``knative-broker-<namespace>-<name>``),
each event one record in binary content mode (``ce_`` headers, the data as the value, the
``partitionkey`` extension as the key), one consumer group per Trigger
(``knative-trigger-<namespace>-<name>``) whose offsets live in Kafka. Events written by Knative's
Kafka Broker are dispatched here and the other way round, so an agent system moves between the
two without touching a topic.

The parts, one module each:

* :mod:`~agentfn.brokers.kafka.config`: the ``kafka-broker-config`` ConfigMap and the defaults;
* :mod:`~agentfn.brokers.kafka.log`: :class:`KafkaEventLog`, the producer side (appends and
  record batches) and the consumer groups it joins;
* :mod:`~agentfn.brokers.kafka.subscription`: one group member, a thread that owns its
  ``KafkaConsumer`` and a buffer the loop reads;
* :mod:`~agentfn.brokers.kafka.rebalance`: the rebalance listener, and the
  :class:`~agentfn.brokers.kafka.rebalance.Handover` interface through which it moves a
  member's partitions.

Threads. kafka-python blocks, and each of its clients runs its own I/O thread; the event loop
never waits on either. Rebalances happen only inside ``poll``: their callbacks run on the
consumer's own I/O thread while the subscription's thread waits in that call.

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
"""

from agentfn.brokers.kafka.config import (
    DEFAULT_PARTITIONS,
    DEFAULT_RECORD_BYTES,
    DEFAULT_REPLICATION,
    RECORD_OVERHEAD_BYTES,
    KafkaBrokerConfig,
)
from agentfn.brokers.kafka.log import KafkaEventLog

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_RECORD_BYTES",
    "DEFAULT_REPLICATION",
    "RECORD_OVERHEAD_BYTES",
    "KafkaBrokerConfig",
    "KafkaEventLog",
]
