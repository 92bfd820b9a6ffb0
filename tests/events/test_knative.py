"""Knative's wire rules, defined once in agentfn.events: the TTL a reply loop is cut by, which
answers are retried, and the delivery-order annotation's name."""

from __future__ import annotations

import pytest
from agentfn.brokers import config, delivery
from agentfn.events import CloudEvent, is_retryable_status
from agentfn.events.extensions import (
    DEFAULT_BROKER_TTL,
    KNATIVE_BROKER_TTL,
    broker_ttl,
    next_hop_ttl,
    stamp_broker_ttl,
    ttl_expired,
)
from agentfn.functions import _knative

from agentfn import events


def _event(**extra: object) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "id": "e1", "source": "/t", "type": "t.a", **extra})


def test_broker_ttl_reads_the_attribute() -> None:
    assert broker_ttl(_event(**{KNATIVE_BROKER_TTL: 7})) == 7
    assert broker_ttl(_event(**{KNATIVE_BROKER_TTL: "12"})) == 12


def test_broker_ttl_is_the_default_when_absent_or_unreadable() -> None:
    assert broker_ttl(_event()) == DEFAULT_BROKER_TTL == 255
    assert broker_ttl(_event(**{KNATIVE_BROKER_TTL: "many"})) == DEFAULT_BROKER_TTL


@pytest.mark.parametrize(("ttl", "after"), [(255, 254), (2, 1), (1, 0), (0, 0), (-3, 0)])
def test_next_hop_ttl_takes_one_hop_and_stops_at_zero(ttl: int, after: int) -> None:
    assert next_hop_ttl(_event(**{KNATIVE_BROKER_TTL: ttl})) == after


def test_next_hop_ttl_of_an_event_without_one_starts_from_the_default() -> None:
    assert next_hop_ttl(_event()) == DEFAULT_BROKER_TTL - 1


@pytest.mark.parametrize(("ttl", "expired"), [(1, False), (254, False), (0, True), (-1, True)])
def test_ttl_expired_at_zero(ttl: int, expired: bool) -> None:
    assert ttl_expired(ttl) is expired


def test_stamp_sets_the_default_only_where_absent() -> None:
    stamped = stamp_broker_ttl(_event())
    assert stamped.attributes[KNATIVE_BROKER_TTL] == DEFAULT_BROKER_TTL

    carrying = _event(**{KNATIVE_BROKER_TTL: 3})
    assert stamp_broker_ttl(carrying) is carrying


@pytest.mark.parametrize("status", [None, 404, 408, 409, 429, 500, 502, 503, 599])
def test_retryable_statuses(status: int | None) -> None:
    assert is_retryable_status(status) is True


@pytest.mark.parametrize("status", [200, 202, 204, 301, 400, 401, 403, 410, 413, 422])
def test_statuses_not_retried(status: int) -> None:
    assert is_retryable_status(status) is False


def test_each_rule_has_one_definition() -> None:
    # The broker's and the agent's modules use these very objects, not copies of them.
    assert delivery.is_retryable is events.is_retryable_status
    assert delivery.parse_retry_after is events.parse_retry_after
    assert config.DELIVERY_ORDER_ANNOTATION is events.DELIVERY_ORDER_ANNOTATION
    assert _knative.DELIVERY_ORDER_ANNOTATION is events.DELIVERY_ORDER_ANNOTATION
    assert events.DELIVERY_ORDER_ANNOTATION == "kafka.eventing.knative.dev/delivery.order"
