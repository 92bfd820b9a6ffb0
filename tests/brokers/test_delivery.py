"""Knative delivery semantics: retryable answers, backoff, Retry-After, ISO 8601 durations, and
the record of scheduled retries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from agentfn.brokers.delivery import (
    KNATIVE_DEFAULT_DELIVERY,
    BackoffPolicy,
    DeliveryPolicy,
    Destination,
    RetryWait,
    WaitReason,
    is_retryable,
    parse_duration,
    parse_retry_after,
)
from agentfn.brokers.retries import RetryRecord, ScheduledRetry
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)


# --- is_retryable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (None, "no response: connection refused, reset or timed out"),
        (404, "subscriber not ready yet"),
        (408, "request timeout"),
        (409, "conflict"),
        (429, "too many requests"),
        (500, "internal server error"),
        (501, "not implemented"),
        (502, "bad gateway"),
        (503, "service unavailable"),
        (504, "gateway timeout"),
        (599, "last 5xx"),
    ],
)
def test_retryable_statuses_are_tried_again(status: int | None, reason: str) -> None:
    assert is_retryable(status) is True, reason


@pytest.mark.parametrize(
    "status",
    [200, 202, 204, 301, 302, 304, 307, 308, 400, 401, 403, 405, 410, 413, 415, 422, 451, 499],
)
def test_other_statuses_are_final(status: int) -> None:
    assert is_retryable(status) is False


@pytest.mark.parametrize("status", range(400, 500))
def test_only_four_client_errors_are_retried(status: int) -> None:
    assert is_retryable(status) is (status in {404, 408, 409, 429})


# --- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", range(1, 11))
def test_exponential_backoff_is_delay_times_two_to_the_retry(retry: int) -> None:
    policy = DeliveryPolicy(backoff_policy=BackoffPolicy.EXPONENTIAL, backoff_delay=0.5)

    assert policy.backoff(retry) == pytest.approx(0.5 * 2**retry)


@pytest.mark.parametrize("retry", range(1, 11))
def test_linear_backoff_is_delay_times_retry(retry: int) -> None:
    policy = DeliveryPolicy(backoff_policy=BackoffPolicy.LINEAR, backoff_delay=0.5)

    assert policy.backoff(retry) == pytest.approx(0.5 * retry)


def test_knative_default_waits_follow_the_kafka_broker_formula() -> None:
    waits = [KNATIVE_DEFAULT_DELIVERY.backoff(k) for k in range(1, 11)]

    assert waits == pytest.approx([0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8])


@pytest.mark.parametrize("policy", list(BackoffPolicy))
def test_zero_backoff_delay_means_no_wait(policy: BackoffPolicy) -> None:
    assert DeliveryPolicy(backoff_policy=policy, backoff_delay=0.0).backoff(5) == 0.0


@pytest.mark.parametrize("retry", [0, -1])
def test_backoff_rejects_retry_numbers_below_one(retry: int) -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        KNATIVE_DEFAULT_DELIVERY.backoff(retry)


@given(
    policy=st.sampled_from(list(BackoffPolicy)),
    delay=st.floats(min_value=0.0, max_value=3600.0, allow_nan=False),
    k=st.integers(min_value=1, max_value=60),
)
def test_backoff_never_shrinks_from_one_retry_to_the_next(
    policy: BackoffPolicy, delay: float, k: int
) -> None:
    delivery = DeliveryPolicy(backoff_policy=policy, backoff_delay=delay)

    assert delivery.backoff(k + 1) >= delivery.backoff(k)


@given(
    delay=st.floats(min_value=0.001, max_value=3600.0, allow_nan=False),
    k=st.integers(min_value=2, max_value=60),
)
def test_exponential_backoff_is_never_below_linear(delay: float, k: int) -> None:
    exponential = DeliveryPolicy(backoff_policy=BackoffPolicy.EXPONENTIAL, backoff_delay=delay)
    linear = DeliveryPolicy(backoff_policy=BackoffPolicy.LINEAR, backoff_delay=delay)

    assert exponential.backoff(k) > linear.backoff(k)


# --- retry_wait: backoff and Retry-After ----------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "retry_after_max", "expected"),
    [
        (None, None, 0.8),  # no Retry-After: the backoff alone
        (None, 1.0, 0.8),  # retryAfterMax does not cut the backoff
        (5.0, None, 5.0),  # asks for longer than the backoff: honoured
        (0.1, None, 0.8),  # asks for shorter: the backoff still applies
        (0.0, None, 0.8),  # "Retry-After: 0" does not skip the backoff
        (30.0, 10.0, 10.0),  # capped by retryAfterMax
        (30.0, 0.0, 0.8),  # retryAfterMax 0 ignores the header, keeps the backoff
        (30.0, 0.5, 0.8),  # cap below the backoff: the backoff wins
        (2.0, 10.0, 2.0),  # under the cap: as asked
    ],
)
def test_retry_wait_combines_backoff_and_retry_after(
    retry_after: float | None, retry_after_max: float | None, expected: float
) -> None:
    # Exponential 0.2 s: the backoff before retry 2 is 0.8 s.
    policy = DeliveryPolicy(backoff_delay=0.2, retry_after_max=retry_after_max)

    assert policy.retry_wait(2, retry_after).seconds == pytest.approx(expected)


def test_retry_wait_names_the_backoff_for_each_retry() -> None:
    policy = DeliveryPolicy(backoff_delay=0.2)

    assert [policy.retry_wait(k, None) for k in (1, 2, 3)] == [
        RetryWait(0.4, WaitReason.BACKOFF),
        RetryWait(0.8, WaitReason.BACKOFF),
        RetryWait(1.6, WaitReason.BACKOFF),
    ]


@pytest.mark.parametrize(
    ("retry_after", "retry_after_max", "expected"),
    [
        (1.0, None, RetryWait(1.0, WaitReason.RETRY_AFTER)),
        (1.0, 5.0, RetryWait(1.0, WaitReason.RETRY_AFTER)),
        (30.0, 0.5, RetryWait(0.5, WaitReason.RETRY_AFTER_MAX)),
        (0.1, None, RetryWait(0.4, WaitReason.BACKOFF)),  # shorter than the backoff
        (0.4, None, RetryWait(0.4, WaitReason.BACKOFF)),  # a tie changes nothing
        (30.0, 0.3, RetryWait(0.4, WaitReason.BACKOFF)),  # cut below the backoff
        (30.0, 0.0, RetryWait(0.4, WaitReason.BACKOFF)),
        (0.5, 0.5, RetryWait(0.5, WaitReason.RETRY_AFTER)),  # at the cap, not cut
    ],
)
def test_retry_wait_says_whether_retry_after_or_its_cap_set_the_wait(
    retry_after: float, retry_after_max: float | None, expected: RetryWait
) -> None:
    # Exponential 0.2 s: the backoff before retry 1 is 0.4 s.
    policy = DeliveryPolicy(backoff_delay=0.2, retry_after_max=retry_after_max)

    assert policy.retry_wait(1, retry_after) == expected
    assert policy.retry_wait(1, retry_after).seconds == expected.seconds


def test_retry_wait_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryWait(1.0, WaitReason.BACKOFF).seconds = 2.0  # type: ignore[misc]


@given(
    k=st.integers(min_value=1, max_value=20),
    retry_after=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6, allow_nan=False)),
    cap=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6, allow_nan=False)),
)
def test_retry_wait_is_never_shorter_than_backoff_nor_over_a_capped_header(
    k: int, retry_after: float | None, cap: float | None
) -> None:
    policy = DeliveryPolicy(backoff_delay=0.2, retry_after_max=cap)
    wait = policy.retry_wait(k, retry_after).seconds

    assert wait >= policy.backoff(k)
    assert wait <= max(policy.backoff(k), retry_after if retry_after is not None else 0.0)
    if cap is not None:
        assert wait <= max(policy.backoff(k), cap)


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  7 ", 7.0),
        ("86400", 86400.0),
    ],
)
def test_retry_after_in_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize("ahead", [timedelta(seconds=1), timedelta(seconds=90), timedelta(days=1)])
def test_retry_after_http_date_in_the_future_is_seconds_from_now(ahead: timedelta) -> None:
    header = format_datetime(NOW + ahead, usegmt=True)  # "Fri, 14 Mar 2025 12:01:30 GMT"

    assert parse_retry_after(header, now=NOW) == pytest.approx(ahead.total_seconds())


def test_retry_after_rfc9110_example_date() -> None:
    now = datetime(2015, 10, 21, 7, 0, 0, tzinfo=UTC)

    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == pytest.approx(28 * 60)


def test_retry_after_date_without_zone_is_read_as_utc() -> None:
    # "-0000" is RFC 5322 for "zone unknown"; parsedate_to_datetime gives a naive datetime.
    header = "Fri, 14 Mar 2025 12:00:30 -0000"

    assert parse_retry_after(header, now=NOW) == pytest.approx(30.0)


def test_retry_after_date_with_an_offset_is_converted() -> None:
    # 13:00:10 at +01:00 is 12:00:10 UTC.
    assert parse_retry_after("Fri, 14 Mar 2025 13:00:10 +0100", now=NOW) == pytest.approx(10.0)


@pytest.mark.parametrize("behind", [timedelta(seconds=1), timedelta(days=3650)])
def test_retry_after_date_in_the_past_means_no_wait(behind: timedelta) -> None:
    header = format_datetime(NOW - behind, usegmt=True)

    assert parse_retry_after(header, now=NOW) == 0.0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "Friday",
        "Fri, 99 Foo 2025 25:61:00 GMT",
        "²",  # a Unicode digit, which latin-1 header decoding can produce
        "١٢",  # Arabic-Indic digits are not HTTP delay-seconds
    ],
)
def test_unreadable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


def test_retry_after_date_defaults_to_the_current_time() -> None:
    header = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    seconds = parse_retry_after(header)

    assert seconds is not None
    assert 3500 < seconds <= 3600


# --- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.2S", 0.2),
        ("PT1S", 1.0),
        ("PT0S", 0.0),
        ("PT1,5S", 1.5),
        ("PT1M30S", 90.0),
        ("PT10M", 600.0),
        ("PT2H", 7200.0),
        ("PT1H0.5M", 3630.0),
        ("P1D", 86400.0),
        ("P1DT2H", 93600.0),
        ("P1DT2H3M4S", 93784.0),
        ("P0.5D", 43200.0),
        ("pt2s", 2.0),
        ("  PT3S\n", 3.0),
    ],
)
def test_iso8601_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "0.2",
        "2s",
        "PTS",
        "PT1",
        "P1H",  # hours belong after the T
        "PT1D",  # days belong before the T
        "PT1S2M",  # out of order
        "PT.5S",
        "PT1.S",
        "-PT1S",
        "PT-1S",
        "P1W",
        "PT1S extra",
    ],
)
def test_non_iso8601_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO 8601 duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 5, 0.2, ["PT1S"]])
def test_durations_that_are_not_text_are_rejected(value: Any) -> None:
    with pytest.raises(ValueError, match="is not an ISO 8601 duration"):
        parse_duration(value)


def test_duration_error_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^spec\.delivery\.timeout: 'ten' is not"):
        parse_duration("ten", field="spec.delivery.timeout")


# --- DeliveryPolicy and Destination ---------------------------------------------------------


def test_knative_default_delivery() -> None:
    assert KNATIVE_DEFAULT_DELIVERY.retry == 10
    assert KNATIVE_DEFAULT_DELIVERY.backoff_policy is BackoffPolicy.EXPONENTIAL
    assert KNATIVE_DEFAULT_DELIVERY.backoff_delay == pytest.approx(0.2)
    assert KNATIVE_DEFAULT_DELIVERY.timeout is None
    assert KNATIVE_DEFAULT_DELIVERY.retry_after_max is None
    assert KNATIVE_DEFAULT_DELIVERY.dead_letter_sink is None
    assert DeliveryPolicy() == KNATIVE_DEFAULT_DELIVERY


def test_delivery_policy_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNATIVE_DEFAULT_DELIVERY.retry = 3  # type: ignore[misc]


@pytest.mark.parametrize(("timeout", "expected"), [(None, 60.0), (2.5, 2.5), (600.0, 600.0)])
def test_attempt_timeout_falls_back_to_the_documented_60_seconds(
    timeout: float | None, expected: float
) -> None:
    assert DeliveryPolicy(timeout=timeout).attempt_timeout == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry": -1}, r"delivery\.retry: must be >= 0"),
        ({"backoff_delay": -0.1}, r"delivery\.backoffDelay: must be >= 0"),
        ({"timeout": 0.0}, r"delivery\.timeout: must be > 0"),
        ({"timeout": -1.0}, r"delivery\.timeout: must be > 0"),
        ({"retry_after_max": -1.0}, r"delivery\.retryAfterMax: must be >= 0"),
    ],
)
def test_invalid_delivery_policies_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeliveryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"retry": 0}, {"backoff_delay": 0.0}, {"retry_after_max": 0.0}, {"timeout": 0.001}],
)
def test_boundary_delivery_policies_are_accepted(kwargs: dict[str, Any]) -> None:
    policy = DeliveryPolicy(**kwargs)

    for name, value in kwargs.items():
        assert getattr(policy, name) == value


def test_destination_needs_a_uri_or_a_ref() -> None:
    with pytest.raises(ValueError, match="needs a uri or a ref"):
        Destination()


@pytest.mark.parametrize(
    ("destination", "described"),
    [
        (
            Destination(uri="http://dlq.default.svc.cluster.local"),
            "http://dlq.default.svc.cluster.local",
        ),
        (Destination(ref_name="dlq"), "Service/dlq"),
        (Destination(ref_name="dlq", ref_kind="Broker"), "Broker/dlq"),
        (Destination(uri="/dead", ref_name="dlq", ref_kind="Service"), "Service/dlq"),
    ],
)
def test_destination_describe(destination: Destination, described: str) -> None:
    assert destination.describe() == described


# --- RetryRecord ----------------------------------------------------------------------------


def _scheduled(event_id: str, retry: int, *, dead_letter: bool = False) -> ScheduledRetry:
    return ScheduledRetry(
        trigger="default/t",
        event_id=event_id,
        url="http://127.0.0.1:1/",
        dead_letter=dead_letter,
        retry=retry,
        status=503,
        wait=RetryWait(0.25, WaitReason.BACKOFF),
        at=10.0,
    )


def test_retry_record_keeps_the_latest_decisions_per_event_and_destination() -> None:
    record = RetryRecord(limit=3)
    decisions = [
        _scheduled("a", 1),
        _scheduled("b", 1),
        _scheduled("a", 2),
        _scheduled("a", 1, dead_letter=True),
    ]
    for decision in decisions:
        record.retry_scheduled(decision)

    assert list(record) == decisions[1:]  # bounded: the oldest went
    assert record.of("a") == [decisions[2]]
    assert record.of("a", dead_letter=True) == [decisions[3]]
    assert decisions[0].due == 10.25


def test_retry_record_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="limit: must be >= 1"):
        RetryRecord(limit=0)
