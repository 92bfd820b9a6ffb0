"""The floor: the producer posting straight to a plain ASGI CloudEvent handler on uvicorn.

No broker, no runtime, no durability: one HTTP hop into a raw ASGI app (uvloop + httptools)
that reads the binary-mode event, does the shared handler work (one Redis round trip) and
answers 202. It bounds what any design with an HTTP hop per event can do on this machine; ours
has two (producer -> broker, broker -> agent) plus a durable log.

Run alone: ``python -m bench.peers.floor PORT REDIS_URL``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench._harness import procs
from bench._harness.core import ColdStart, Env, Knobs, Running, Workload, system_run
from bench._harness.http import CONCURRENCY, CloudEventSender
from bench._harness.work import ATTEMPT_LUA, RECORD_LUA, InjectedFailure, run_async


def make_app(redis_url: str) -> Any:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    record, attempt = client.register_script(RECORD_LUA), client.register_script(ATTEMPT_LUA)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        status = 202
        if scope["method"] == "POST":
            # Binary mode: the attributes are ce-* headers and the body is the data; the
            # handler needs only the data.
            try:
                await run_async(record, attempt, json.loads(b"".join(chunks)))
            except InjectedFailure:
                status = 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@dataclass
class Floor:
    key: str = "floor"
    label: str = "floor: plain ASGI handler on uvicorn, no broker"
    role: str = "floor"
    scenarios: frozenset[str] = frozenset({"throughput", "cold_start"})

    def knobs(self) -> Knobs:
        return Knobs(
            processes="1 uvicorn process (uvloop, httptools)",
            concurrency=f"producer {CONCURRENCY} HTTP connections",
            guarantees="none beyond the handler's dedupe: no log, no retry",
        )

    def serve_argv(self, port: int, redis_url: str) -> list[str]:
        return [procs.PYTHON, "-m", "bench.peers.floor", str(port), redis_url]

    async def cold_start(self, group: procs.Procs, redis_url: str) -> ColdStart:
        port = procs.free_port()
        return ColdStart(
            name="floor",
            argv=self.serve_argv(port, redis_url),
            env=procs.base_env(),
            url=f"http://127.0.0.1:{port}/",
        )

    @contextlib.asynccontextmanager
    async def running(self, env: Env, workload: Workload) -> AsyncIterator[Running]:
        async with system_run(env, self.key) as (group, teardown):
            redis_url = await procs.start_redis(group)
            port = procs.free_port()
            server = group.spawn("floor", self.serve_argv(port, redis_url))
            await procs.wait_for_port(port, server)
            sender = CloudEventSender(f"http://127.0.0.1:{port}/", "bench.a")
            teardown.defer(sender.close)
            running = Running(
                redis_url=redis_url,
                group=group,
                send_one=sender.send_one,
                send_all=sender.send_all,
                watched=[server],
                pids={"worker": server.pid},
            )
            teardown.defer(running.aclose)
            yield running


SYSTEMS = [Floor()]


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        make_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="off",
    )
