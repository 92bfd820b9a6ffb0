"""Prometheus metrics of one agent, in a registry of its own (served at ``GET /metrics``).

A registry per agent app, not prometheus_client's global one: several agents (or tests) in one
process would otherwise collide on metric names. Label children are resolved once per event
type when the app is built, so the hot path does no label lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from agentfn.functions._breaker import BreakerState
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["AgentMetrics", "FailureKind", "TypeMetrics"]

#: Label of events whose type no handler consumes (bounded cardinality).
OTHER_TYPE: Final = "other"

_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class FailureKind(StrEnum):
    """``kind`` label of ``agentfn_events_failed_total``; one per answer that is not 2xx."""

    INVALID = "invalid"  # 400: not a CloudEvent
    NO_HANDLER = "no_handler"  # 400: no handler consumes it
    VALIDATION = "validation"  # 422: payload fails the input model
    IN_FLIGHT = "in_flight"  # 409: a duplicate of an event being handled
    RETRYABLE = "retryable"  # 503: handler raised a retryable error
    TIMEOUT = "timeout"  # 503: handler or downstream timed out
    CIRCUIT_OPEN = "circuit_open"  # 503: a breaker refused an outbound call
    STORE_UNAVAILABLE = "store_unavailable"  # 503: idempotency store unreachable
    ERROR = "error"  # 500: any other exception


class TypeMetrics:
    """The label children of one event type."""

    __slots__ = ("_failures", "duplicates", "handled", "latency")

    def __init__(self, metrics: AgentMetrics, agent: str, event_type: str) -> None:
        self.handled = metrics.handled.labels(agent, event_type)
        self.duplicates = metrics.duplicates.labels(agent, event_type)
        self.latency = metrics.latency.labels(agent, event_type)
        self._failures = {
            kind: metrics.failed.labels(agent, event_type, kind) for kind in FailureKind
        }

    def failed(self, kind: FailureKind) -> None:
        self._failures[kind].inc()


class AgentMetrics:
    """Counters, latency and breaker state of one agent."""

    def __init__(self, agent: str, event_types: Iterable[str]) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("agent", "type")
        self.handled = Counter(
            "agentfn_events_handled",
            "Events handled to completion (2xx).",
            labels,
            registry=self.registry,
        )
        self.duplicates = Counter(
            "agentfn_events_duplicate",
            "Deliveries of an event already handled, answered from the idempotency record.",
            labels,
            registry=self.registry,
        )
        self.failed = Counter(
            "agentfn_events_failed",
            "Deliveries answered with an error, by kind.",
            (*labels, "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "agentfn_handler_duration_seconds",
            "Time spent in the handler.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "agentfn_circuit_breaker_state",
            "Circuit breaker state per destination: 0 closed, 1 open, 2 half-open.",
            ("agent", "destination"),
            registry=self.registry,
        )
        self._types = {t: TypeMetrics(self, agent, t) for t in (*event_types, OTHER_TYPE)}

    def for_type(self, event_type: str) -> TypeMetrics:
        found = self._types.get(event_type)
        return found if found is not None else self._types[OTHER_TYPE]

    def set_breaker_state(self, destination: str, state: BreakerState) -> None:
        self.breaker_state.labels(self.agent, destination).set(int(state))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
