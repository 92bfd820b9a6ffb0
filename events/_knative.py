"""Knative Eventing's wire rules, each written once: the broker and the agent runtime both apply
them, and a rule that drifts between the two is a bug one side would never see.

Pure functions of their arguments (no I/O, no clock unless one is passed in).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from agentfn.events._event import CloudEvent

__all__ = [
    "DEFAULT_BROKER_TTL",
    "DELIVERY_ORDER_ANNOTATION",
    "KNATIVE_BROKER_TTL",
    "RETRYABLE_4XX",
    "broker_ttl",
    "is_retryable_status",
    "next_hop_ttl",
    "parse_retry_after",
    "stamp_broker_ttl",
    "ttl_expired",
]

#: The Trigger annotation of Knative's Kafka Broker choosing ordered or unordered delivery.
DELIVERY_ORDER_ANNOTATION: Final = "kafka.eventing.knative.dev/delivery.order"

#: Statuses Knative retries besides 5xx (eventing's kncloudevents retry checker).
RETRYABLE_4XX: Final = frozenset({404, 408, 409, 429})


# -- knativebrokerttl ---------------------------------------------------------------------------

#: Hops left before a reply loop is cut; set by the broker ingress, decremented per reply.
KNATIVE_BROKER_TTL: Final = "knativebrokerttl"
DEFAULT_BROKER_TTL: Final = 255


def broker_ttl(event: CloudEvent) -> int:
    """The hops ``event`` has left: its ``knativebrokerttl``, or the default when absent or not
    an integer (an unreadable value must not cut a chain the ingress would have let through)."""
    raw = event.attributes.get(KNATIVE_BROKER_TTL)
    if raw is None:
        return DEFAULT_BROKER_TTL
    try:
        return int(raw)
    except ValueError:
        return DEFAULT_BROKER_TTL


def next_hop_ttl(event: CloudEvent) -> int:
    """The TTL an event caused by ``event`` carries: one hop fewer, never below 0."""
    return max(broker_ttl(event) - 1, 0)


def ttl_expired(ttl: int) -> bool:
    """Whether an event with ``ttl`` hops left is dropped rather than routed (a reply loop)."""
    return ttl <= 0


def stamp_broker_ttl(event: CloudEvent) -> CloudEvent:
    """``event`` with the default TTL when it carries none, as Knative's ingress sets it."""
    if KNATIVE_BROKER_TTL in event.attributes:
        return event
    return event.with_attributes(**{KNATIVE_BROKER_TTL: DEFAULT_BROKER_TTL})


# -- retries ------------------------------------------------------------------------------------


def is_retryable_status(status: int | None) -> bool:
    """Whether a delivery that ended with ``status`` is tried again (None: no response at all)."""
    return status is None or status >= 500 or status in RETRYABLE_4XX


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header (RFC 9110 10.2.3: delay-seconds or an HTTP date) asks
    to wait, or None when absent or unreadable; a date in the past is 0."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: '²' is a digit
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
