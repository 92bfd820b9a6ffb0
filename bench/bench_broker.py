"""Embedded broker throughput and latency: ingress -> store -> Trigger -> trivial subscriber.

Three processes on loopback: the load generator (this script, aiohttp, C connections), the
broker (``agentfn broker``), and a trivial subscriber. Reports events/s end to end (first POST
until the subscriber has counted every event) and the subscriber-side latency p50/p99, next to
the floor: the same load posted straight to the subscriber (no broker hop).

Writes every case, the floor's included, and the ratios to ``bench/results/bench_broker.json``
(``--json`` elsewhere). Run: ``python bench/bench_broker.py [--events N] [--concurrency C]
[--no-fsync]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agentfn.brokers._http1 import Http1Pool  # noqa: E402

from bench._harness import report  # noqa: E402
from bench._harness.http import binary_headers  # noqa: E402
from tests._servers import free_port, wait_for_port  # noqa: E402


async def _post_all(url: str, events: int, concurrency: int) -> float:
    """POST ``events`` binary-mode events over ``concurrency`` keep-alive connections.

    The generator shares the machine's two cores with what it measures, so it uses the broker's
    lean HTTP/1.1 client (~5x less CPU per request than aiohttp) for every case alike.
    """
    parts = urlsplit(url)
    host, port, target = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    pool = Http1Pool()
    counter = iter(range(events))
    started = time.perf_counter()

    async def worker() -> None:
        for i in counter:
            headers = binary_headers(f"e{i}", "bench.event", benchsent=str(time.time_ns()))
            response = await pool.post(host, port, target, headers, b'{"n":1}', timeout=30)
            if response.status >= 300:
                raise RuntimeError(f"{url} answered {response.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed


async def _post_paced(url: str, rate: float, seconds: float) -> int:
    """POST at a fixed ``rate`` (open loop) for ``seconds``; returns how many were sent."""
    parts = urlsplit(url)
    host, port, target = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    pool = Http1Pool()
    total = int(rate * seconds)
    slots = asyncio.Semaphore(512)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int) -> None:
        async with slots:
            headers = binary_headers(f"p{i}", "bench.event", benchsent=str(time.time_ns()))
            response = await pool.post(host, port, target, headers, b'{"n":1}', timeout=30)
            if response.status >= 300:
                raise RuntimeError(f"{url} answered {response.status}")

    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    pool.close()
    return total


async def _run_paced(name: str, url: str, sub_port: int, rate: float) -> dict[str, float]:
    await _stats(sub_port, "/reset")
    sent = await _post_paced(url, rate, seconds=5.0)
    deadline = time.monotonic() + 60
    while (stats := await _stats(sub_port))["count"] < sent:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: only {stats['count']} of {sent} delivered")
        await asyncio.sleep(0.02)
    return {
        "case": name,
        "events": sent,
        "rate": rate,
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
    }


async def _stats(port: int, path: str = "/stats") -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as r,
    ):
        return json.loads(await r.read())


async def _run_case(
    name: str, url: str, sub_port: int, events: int, concurrency: int
) -> dict[str, float]:
    await _stats(sub_port, "/reset")
    started = time.perf_counter()
    post_seconds = await _post_all(url, events, concurrency)
    deadline = time.monotonic() + 120
    while (stats := await _stats(sub_port))["count"] < events:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: only {stats['count']} of {events} delivered")
        await asyncio.sleep(0.02)
    total = time.perf_counter() - started
    return {
        "case": name,
        "events": events,
        "ingress_eps": events / post_seconds,
        "end_to_end_eps": events / total,
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument(
        "--json",
        type=Path,
        default=report.script_result_path("bench_broker"),
        help="write the results here (default: %(default)s)",
    )
    args = parser.parse_args()
    sub_port, broker_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="agentfn-bench-")
    triggers = Path(data_dir) / "triggers.yaml"
    triggers.write_text(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: bench}\n"
        f"spec:\n  broker: default\n  filter: {{attributes: {{type: bench.event}}}}\n"
        f"  subscriber: {{uri: 'http://127.0.0.1:{sub_port}/'}}\n"
    )
    python = sys.executable
    agentfn = [str(Path(python).parent / "agentfn")]
    procs = [
        subprocess.Popen([python, str(ROOT / "bench" / "_subscriber.py"), str(sub_port)]),
        subprocess.Popen(
            [
                *agentfn,
                "--log-level",
                "WARNING",
                "broker",
                "--port",
                str(broker_port),
                "--data-dir",
                data_dir,
                "--triggers",
                str(triggers),
                *(["--no-fsync"] if args.no_fsync else []),
            ],
            cwd=ROOT,
        ),
    ]
    try:
        wait_for_port(sub_port)
        wait_for_port(broker_port)
        results = []
        for _ in range(2):  # alternate the floor and the broker, twice
            results.append(
                asyncio.run(
                    _run_case(
                        "floor: direct to subscriber",
                        f"http://127.0.0.1:{sub_port}/",
                        sub_port,
                        args.events,
                        args.concurrency,
                    )
                )
            )
            results.append(
                asyncio.run(
                    _run_case(
                        f"embedded broker (fsync={'off' if args.no_fsync else 'on'})",
                        f"http://127.0.0.1:{broker_port}/default/default",
                        sub_port,
                        args.events,
                        args.concurrency,
                    )
                )
            )
        best = max(r["end_to_end_eps"] for r in results if r["case"].startswith("embedded"))
        paced = [
            asyncio.run(_run_paced(f"{name} @ {best / 2:.0f}/s", url, sub_port, best / 2))
            for name, url in (
                ("floor", f"http://127.0.0.1:{sub_port}/"),
                ("embedded broker", f"http://127.0.0.1:{broker_port}/default/default"),
            )
        ]
        print(
            "throughput (closed loop, the generator as fast as answers come; latency is queueing)"
        )
        print(f"{'case':40} {'ingress ev/s':>12} {'e2e ev/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for r in results:
            print(
                f"{r['case']:40} {r['ingress_eps']:12.0f} {r['end_to_end_eps']:10.0f} "
                f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
            )
        print("latency at half the broker's measured maximum (open loop, 5 s)")
        for r in paced:
            print(f"{r['case']:40} {r['p50_ms']:8.2f} ms p50 {r['p99_ms']:8.2f} ms p99")
        floor_best = max(r["end_to_end_eps"] for r in results if r["case"].startswith("floor"))
        paced_floor, paced_broker = paced
        summary = {
            "broker_eps": best,
            "floor_eps": floor_best,
            "broker_over_floor": best / floor_best,
            "paced_rate": best / 2,
            "paced_broker_p50_ms": paced_broker["p50_ms"],
            "paced_broker_p99_ms": paced_broker["p99_ms"],
            "paced_floor_p50_ms": paced_floor["p50_ms"],
            "paced_floor_p99_ms": paced_floor["p99_ms"],
        }
        results.extend(paced)
        path = report.write_script(
            "bench_broker",
            {
                "events": args.events,
                "concurrency": args.concurrency,
                "fsync": not args.no_fsync,
                "best_of": 2,
            },
            {"summary": summary, "results": results},
            args.json,
        )
        print(f"wrote {path}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
