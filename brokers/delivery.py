"""Knative delivery semantics: which answers are retried, and when the next attempt is due.

:class:`DeliveryPolicy` maps one-to-one onto Knative's ``delivery`` spec (``retry``,
``backoffPolicy``, ``backoffDelay``, ``timeout``, ``retryAfterMax``, ``deadLetterSink``,
``format``).

Backoff formula. Knative's Kafka Broker waits ``backoffDelay * 2**k`` before retry ``k``
(k = 1, 2, ...), its channel-based broker ``backoffDelay * 2**(k-1)``. We follow the Kafka
Broker, since the Kafka backend must behave like it: exponential waits ``delay * 2**k`` and
linear waits ``delay * k`` before retry ``k``. With Knative's defaults (retry 10, exponential,
PT0.2S) the waits are 0.4 s, 0.8 s, ... 204.8 s.

``Retry-After`` (RFC 9110 10.2.3, seconds or an HTTP date) on a 429 or 503 is honoured: the
wait is ``max(backoff, Retry-After)``, cut to ``retryAfterMax`` when that is set. Which answers
are retried and how ``Retry-After`` reads are :mod:`agentfn.events` rules, re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from agentfn.events import DeliveryFormat, parse_retry_after
from agentfn.events import is_retryable_status as is_retryable

# is_retryable and parse_retry_after are Knative's wire rules, defined in agentfn.events (the
# agent's publisher applies them too); they stay importable from here.

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "KNATIVE_DEFAULT_DELIVERY",
    "BackoffPolicy",
    "DeliveryPolicy",
    "Destination",
    "RetryWait",
    "WaitReason",
    "is_retryable",
    "parse_duration",
    "parse_retry_after",
]

_DURATION = re.compile(
    r"P(?!$)(?:(?P<d>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?",
    re.IGNORECASE,
)

#: Per-attempt timeout when ``delivery.timeout`` is unset: a hung subscriber must not hold a
#: delivery slot forever.
DEFAULT_ATTEMPT_TIMEOUT: Final = 60.0


def parse_duration(text: str, *, field: str = "duration") -> float:
    """Seconds in an ISO 8601 duration such as ``PT0.2S``, ``PT1M30S`` or ``P1DT2H``."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{field}: {text!r} is not an ISO 8601 duration (e.g. PT0.2S)")
    parts = {k: float(v.replace(",", ".")) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


class BackoffPolicy(StrEnum):
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class WaitReason(StrEnum):
    """What set the wait before a retry."""

    BACKOFF = "backoff"
    RETRY_AFTER = "retry-after"  # the answer's Retry-After, longer than the backoff
    RETRY_AFTER_MAX = "retry-after-max"  # a longer Retry-After, cut to retryAfterMax


@dataclass(frozen=True, slots=True)
class RetryWait:
    """The wait before one retry and why it is that long."""

    seconds: float
    reason: WaitReason


@dataclass(frozen=True, slots=True)
class Destination:
    """An addressable: a URI, or a reference to a Service resolved to one at start-up."""

    uri: str | None = None
    ref_name: str | None = None
    ref_namespace: str | None = None
    ref_kind: str | None = None

    def __post_init__(self) -> None:
        if self.uri is None and self.ref_name is None:
            raise ValueError("a destination needs a uri or a ref")

    def describe(self) -> str:
        if self.ref_name is not None:
            return f"{self.ref_kind or 'Service'}/{self.ref_name}"
        return self.uri or ""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Knative ``delivery``: ``retry`` extra attempts after the first, spaced by the backoff."""

    retry: int = 10
    backoff_policy: BackoffPolicy = BackoffPolicy.EXPONENTIAL
    backoff_delay: float = 0.2
    timeout: float | None = None
    retry_after_max: float | None = None
    dead_letter_sink: Destination | None = None
    #: ``delivery.format``: the content mode of every delivery, dead letters included; ``None``
    #: (unset) lets :func:`agentfn.events.http.to_http` choose per event.
    format: DeliveryFormat | None = None

    def __post_init__(self) -> None:
        if self.retry < 0:
            raise ValueError("delivery.retry: must be >= 0")
        if self.backoff_delay < 0:
            raise ValueError("delivery.backoffDelay: must be >= 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("delivery.timeout: must be > 0")
        if self.retry_after_max is not None and self.retry_after_max < 0:
            raise ValueError("delivery.retryAfterMax: must be >= 0")
        if self.format is not None and not isinstance(self.format, DeliveryFormat):
            raise ValueError(f"delivery.format: {self.format!r} is not json or binary")

    @property
    def attempt_timeout(self) -> float:
        return DEFAULT_ATTEMPT_TIMEOUT if self.timeout is None else self.timeout

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        if self.backoff_policy is BackoffPolicy.LINEAR:
            return self.backoff_delay * retry
        return self.backoff_delay * float(2**retry)

    def retry_wait(self, retry: int, retry_after: float | None) -> RetryWait:
        """The wait before ``retry`` and its reason, given the last answer's ``Retry-After``.

        The backoff is the floor; a longer ``Retry-After`` wins, cut to ``retryAfterMax``.
        On a tie the backoff is named: the header changed nothing.
        """
        backoff = self.backoff(retry)
        if retry_after is None:
            return RetryWait(backoff, WaitReason.BACKOFF)
        asked, reason = retry_after, WaitReason.RETRY_AFTER
        if self.retry_after_max is not None and retry_after > self.retry_after_max:
            asked, reason = self.retry_after_max, WaitReason.RETRY_AFTER_MAX
        if asked > backoff:
            return RetryWait(asked, reason)
        return RetryWait(backoff, WaitReason.BACKOFF)


#: ``config-br-defaults`` / ``default-broker`` of Knative Eventing: retry 10, exponential, PT0.2S.
KNATIVE_DEFAULT_DELIVERY: Final = DeliveryPolicy()
