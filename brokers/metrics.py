"""Prometheus metrics of one broker process, named as Knative's broker ingress and filter do.

Each :class:`BrokerMetrics` owns its registry, so several brokers in one process (tests) never
share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["BrokerMetrics"]

_LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def code_class(code: int | None) -> str:
    return "none" if code is None else f"{code // 100}xx"


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingress_events = Counter(
            "broker_ingress_event_count",
            "Events (batch members counted one by one) received by the ingress, by answer",
            ["namespace_name", "broker_name", "response_code", "response_code_class"],
            registry=r,
        )
        self.ingress_latency = Histogram(
            "broker_ingress_event_dispatch_latencies",
            "Milliseconds from request to the ingress answer (store durable)",
            ["namespace_name", "broker_name"],
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.deliveries = Counter(
            "broker_filter_event_count",
            "Delivery attempts to Trigger subscribers, by response code (none: no answer)",
            [
                "namespace_name",
                "broker_name",
                "trigger_name",
                "response_code",
                "response_code_class",
            ],
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "broker_filter_event_dispatch_latencies",
            "Milliseconds of one delivery attempt to a subscriber",
            ["namespace_name", "broker_name", "trigger_name"],
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.retries = Counter(
            "broker_filter_event_retry_count",
            "Delivery attempts after the first",
            ["namespace_name", "broker_name", "trigger_name"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "broker_filter_dead_letter_count",
            "Events given up on, by outcome (sent to the sink, or dropped without one)",
            ["namespace_name", "broker_name", "trigger_name", "outcome"],
            registry=r,
        )
        self.ttl_dropped = Counter(
            "broker_filter_ttl_exhausted_count",
            "Replies dropped because their knativebrokerttl reached 0 (reply loops)",
            ["namespace_name", "broker_name", "trigger_name"],
            registry=r,
        )
        self.backlog = Gauge(
            "broker_trigger_backlog",
            "Events fetched for a Trigger whose outcome is not yet known (in flight or waiting)",
            ["namespace_name", "broker_name", "trigger_name"],
            registry=r,
        )

        self.lag = Gauge(
            "broker_trigger_store_backlog",
            "Events stored beyond a Trigger's committed position: its backlog in the store",
            ["namespace_name", "broker_name", "trigger_name"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
