"""Process-wide settings of the long-running commands (broker, dev, serve): the CLI owns them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from typing import Final

#: Allocations between young-generation collections. CPython's 700 suits scripts; a server
#: allocating a few objects per event at thousands of events/s collects hundreds of times a
#: second, and the older-generation passes that follow dominate its tail latency. Measured with
#: bench/bench_broker.py at half load: p99 23 ms with the defaults, 6 ms with this and freeze().
_YOUNG_THRESHOLD: Final = 10_000


def tune_gc_for_serving() -> None:
    """Freeze what start-up allocated (later full collections skip it) and collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, max(middle, 20), max(old, 100))


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets (Knative stops a pod with SIGTERM), in this loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    return stop
