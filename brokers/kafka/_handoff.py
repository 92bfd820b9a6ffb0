"""Outcomes that kafka-python's threads hand to the event loop, and the errors they become.

Every future here may already be done (a timer gave up on it first), so none is set twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentfn.brokers.log import EventTooLargeError, LogUnavailableError
from kafka.errors import MessageSizeTooLargeError

__all__ = ["set_error", "set_result", "unavailable", "wake"]


def set_result(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def set_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(unavailable(error))


def wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        set_result(waiter, None)


def unavailable(error: BaseException) -> LogUnavailableError | EventTooLargeError:
    if isinstance(error, LogUnavailableError | EventTooLargeError):
        return error
    if isinstance(error, MessageSizeTooLargeError):
        # Refused by the producer (max.request.size) or by the topic (max.message.bytes):
        # sending it again cannot help, so it is no "unavailable" the client should retry.
        return EventTooLargeError(f"the event is larger than a Kafka record may be: {error}")
    return LogUnavailableError(f"Kafka did not acknowledge the write: {error!r}")
