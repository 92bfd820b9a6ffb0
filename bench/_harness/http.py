"""The HTTP producer of our side and of the floor: binary-mode CloudEvents over keep-alive.

It uses the broker's lean HTTP/1.1 client (a fraction of aiohttp's CPU per request): the
producer shares the two cores with what it measures, and a heavy client would bill its own cost
to the system under test.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final
from urllib.parse import urlsplit

from agentfn.brokers._http1 import Http1Pool

#: Keep-alive connections of a bulk send (the same philosophy as the peers' producers: as
#: many requests in flight as it takes to keep the receiver busy).
CONCURRENCY: Final = 32


def binary_headers(
    event_id: str, event_type: str, *, source: str = "/bench", **extensions: str
) -> dict[str, str]:
    """Binary-mode headers of a CloudEvent with a JSON body, built as a plain dict: a load
    generator must cost as little per event as it can."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": event_type,
        "content-type": "application/json",
    }
    headers.update({f"ce-{name}": value for name, value in extensions.items()})
    return headers


class CloudEventSender:
    """POSTs payloads as ``event_type`` CloudEvents to ``url``; any non-2xx answer fails."""

    def __init__(self, url: str, event_type: str, *, source: str = "/bench") -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._target = parts.path or "/"
        self._type = event_type
        self._source = source
        self._pool = Http1Pool()

    async def send_one(self, payload: dict[str, Any]) -> None:
        event_id = f"{payload['run']}-{payload['i']}"
        headers = binary_headers(event_id, self._type, source=self._source)
        body = json.dumps(payload, separators=(",", ":")).encode()
        response = await self._pool.post(
            self._host, self._port, self._target, headers, body, timeout=30
        )
        if response.status >= 300:
            raise RuntimeError(
                f"{self._target} answered {response.status}: {response.body[:200]!r}"
            )

    async def send_all(self, payloads: list[dict[str, Any]]) -> None:
        items = iter(payloads)

        async def worker() -> None:
            for item in items:
                await self.send_one(item)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    def close(self) -> None:
        self._pool.close()
