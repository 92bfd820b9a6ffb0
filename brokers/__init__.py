"""How events move: ingress, Triggers, delivery, the embedded and Kafka backends, dead letters.

The names most programs need, from one place::

    from agentfn.brokers import BrokerServer, SqliteEventLog, parse_documents

    server = BrokerServer(parse_documents(documents), SqliteEventLog(data_dir))

Each name is imported from its module when first used (PEP 562): ``import agentfn.brokers``
loads none of them, and the Kafka backend (kafka-python) loads only when it is named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentfn._lazy import lazy_exports

if TYPE_CHECKING:
    from agentfn.brokers.config import (
        BrokerSpec,
        ConfigError,
        Topology,
        TriggerSpec,
        load_topology,
        parse_documents,
    )
    from agentfn.brokers.delivery import BackoffPolicy, DeliveryPolicy, Destination
    from agentfn.brokers.embedded import SqliteEventLog
    from agentfn.brokers.inprocess import LocalSubscriber
    from agentfn.brokers.kafka import KafkaBrokerConfig, KafkaEventLog
    from agentfn.brokers.log import (
        EventLog,
        EventTooLargeError,
        LogRecord,
        LogUnavailableError,
        Subscription,
    )
    from agentfn.brokers.retries import RetryObserver, RetryRecord
    from agentfn.brokers.server import BrokerServer
    from agentfn.brokers.settings import BrokerSettings

#: Module -> the public names taken from it.
_MODULES: Final = {
    "agentfn.brokers.config": (
        "BrokerSpec",
        "ConfigError",
        "Topology",
        "TriggerSpec",
        "load_topology",
        "parse_documents",
    ),
    "agentfn.brokers.delivery": ("BackoffPolicy", "DeliveryPolicy", "Destination"),
    "agentfn.brokers.embedded": ("SqliteEventLog",),
    "agentfn.brokers.inprocess": ("LocalSubscriber",),
    "agentfn.brokers.kafka": ("KafkaBrokerConfig", "KafkaEventLog"),
    "agentfn.brokers.log": (
        "EventLog",
        "EventTooLargeError",
        "LogRecord",
        "LogUnavailableError",
        "Subscription",
    ),
    "agentfn.brokers.retries": ("RetryObserver", "RetryRecord"),
    "agentfn.brokers.server": ("BrokerServer",),
    "agentfn.brokers.settings": ("BrokerSettings",),
}
_EXPORTS: Final = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "BackoffPolicy",
    "BrokerServer",
    "BrokerSettings",
    "BrokerSpec",
    "ConfigError",
    "DeliveryPolicy",
    "Destination",
    "EventLog",
    "EventTooLargeError",
    "KafkaBrokerConfig",
    "KafkaEventLog",
    "LocalSubscriber",
    "LogRecord",
    "LogUnavailableError",
    "RetryObserver",
    "RetryRecord",
    "SqliteEventLog",
    "Subscription",
    "Topology",
    "TriggerSpec",
    "load_topology",
    "parse_documents",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)
