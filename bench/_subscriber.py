"""A trivial CloudEvents subscriber for benchmarks: counts events, records end-to-end latency.

Each event carries ``benchsent`` (ns since the epoch, set by the load generator); ``GET /stats``
answers the count and latency percentiles. Run: ``python bench/_subscriber.py PORT``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import uvicorn

count = 0
latencies: list[int] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global count
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        lat = sorted(latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6 if lat else 0.0

        body = json.dumps({"count": count, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}).encode()
        if scope["path"] == "/reset":
            count = 0
            latencies.clear()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    for name, value in scope["headers"]:
        if name == b"ce-benchsent":
            latencies.append(time.time_ns() - int(value))
            break
    count += 1
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )
