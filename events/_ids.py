"""Time-ordered event ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_event_id"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_event_id() -> str:
    """A UUIDv7 string: unique, and sortable by creation time within one process.

    The 12-bit ``rand_a`` field is a counter within the same millisecond (RFC 9562 method 1), so
    ids minted in a burst still sort in the order they were made; ``rand_b`` is 62 random bits.
    """
    global _last_ms, _counter  # noqa: PLW0603 - process-wide monotonic state is the point
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, int.from_bytes(os.urandom(2)) & 0x3FF
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter spent: borrow the next millisecond
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
