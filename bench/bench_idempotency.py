"""Idempotency overhead of the agent runtime: events/s with dedupe off, embedded, and Redis.

Every row is the same trivial typed agent (``bench.ping`` -> reply ``bench.pong``) served by
uvicorn (uvloop + httptools) in its own process, loaded over loopback by this script (C
keep-alive connections, every event a fresh id, so each one is claimed and completed). The
``plain ASGI`` row is the floor: a raw ASGI app doing the same CloudEvent work by hand (parse,
build the reply, answer binary mode) with no runtime at all.

Writes every cell (the plain floor's included) and its ratio to the floor to
``bench/results/bench_idempotency.json`` (``--json`` elsewhere). Run:
``python bench/bench_idempotency.py [--events N] [--concurrency 1,16] [--rounds R]`` (about
30-50 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agentfn.brokers._http1 import Http1Pool  # noqa: E402

from bench._harness import report  # noqa: E402
from bench._harness.http import binary_headers  # noqa: E402
from tests._servers import free_port, redis_server, wait_for_port  # noqa: E402

MODES = ("plain", "off", "embedded", "redis")
LABELS = {
    "plain": "plain ASGI (no runtime)",
    "off": "runtime, dedupe off",
    "embedded": "runtime, embedded dedupe",
    "redis": "runtime, Redis dedupe",
}


# -- the server side (run in a child process) ----------------------------------------------------


def _plain_app() -> Any:
    from agentfn.events import CloudEvent, from_http, to_binary

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body", False):
            message = await receive()
            body += message.get("body", b"")
        event = from_http(scope["headers"], body)[0]
        reply = CloudEvent.new("bench.pong", "/bench/plain", {"n": event.data["n"] + 1})
        headers, payload = to_binary(reply)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": payload})

    return app


def _agent_app(mode: str, redis_url: str | None) -> Any:
    from agentfn.functions import Agent, Settings
    from pydantic import BaseModel

    class Ping(BaseModel):
        n: int

    class Pong(BaseModel):
        n: int

    agent = Agent("bench")

    @agent.on("bench.ping", emits={"bench.pong": Pong})
    async def ping(event: Ping) -> Pong:
        return Pong(n=event.n + 1)

    settings = Settings(idempotency=mode, redis_url=redis_url)  # type: ignore[arg-type]
    return agent.app(settings=settings)


def serve(mode: str, port: int, redis_url: str | None) -> None:
    import uvicorn

    app = _plain_app() if mode == "plain" else _agent_app(mode, redis_url)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


# -- the load generator ----------------------------------------------------------------------------


async def _load(url: str, events: int, concurrency: int, run: str) -> float:
    """POST ``events`` fresh events over ``concurrency`` keep-alive connections; events/s.

    The generator shares the machine with what it measures, so it uses the broker's lean
    HTTP/1.1 client (a fraction of aiohttp's CPU per request), the same for every row.
    """
    parts = urlsplit(url)
    host, port, target = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    pool = Http1Pool()
    counter = iter(range(events))

    async def worker() -> None:
        for i in counter:
            headers = binary_headers(f"{run}-{i}", "bench.ping")
            response = await pool.post(host, port, target, headers, b'{"n":1}', timeout=30)
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pool.close()
    return events / (time.perf_counter() - started)


def _start(mode: str, redis_url: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve", mode, "--port", str(port)]
    if redis_url:
        argv += ["--redis", redis_url]
    server = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for_port(port, timeout=30)
    return server, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs per cell")
    parser.add_argument("--serve", choices=MODES)
    parser.add_argument("--port", type=int)
    parser.add_argument("--redis")
    parser.add_argument(
        "--json",
        type=Path,
        default=report.script_result_path("bench_idempotency"),
        help="write the results here (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis)
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    best = {mode: [0.0] * len(levels) for mode in MODES}
    with redis_server() as redis:
        servers = {m: _start(m, redis.url if m == "redis" else None) for m in MODES}
        try:
            for mode, (_, url) in servers.items():
                asyncio.run(_load(url, 500, 4, f"warm-{mode}"))
            # Rounds interleave the modes, and each cell keeps its best run, so a burst of
            # load from elsewhere on the machine hurts one run, not one mode.
            for round_ in range(args.rounds):
                for mode, (_, url) in servers.items():
                    for i, level in enumerate(levels):
                        rate = asyncio.run(_load(url, args.events, level, f"{round_}-{level}"))
                        best[mode][i] = max(best[mode][i], rate)
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(timeout=10)
    print(
        f"\n{args.events} events per run, best of {args.rounds}, events/s (vs plain ASGI), "
        f"{os.cpu_count()} CPUs shared by load generator, server and Redis"
    )
    header = f"{'server':<28}" + "".join(f"{f'c={c}':>20}" for c in levels)
    print(header)
    print("-" * len(header))
    for mode in MODES:
        cells = "".join(
            f"{rate:>10.0f} ({rate / best['plain'][i]:>5.0%})" for i, rate in enumerate(best[mode])
        )
        print(f"{LABELS[mode]:<28}{cells}")
    rows = [
        {
            "mode": mode,
            "label": LABELS[mode],
            "concurrency": level,
            "events_per_s": best[mode][i],
            "vs_plain": best[mode][i] / best["plain"][i],
        }
        for mode in MODES
        for i, level in enumerate(levels)
    ]
    path = report.write_script(
        "bench_idempotency",
        {"events": args.events, "concurrency": levels, "best_of": args.rounds},
        {"rows": rows},
        args.json,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
