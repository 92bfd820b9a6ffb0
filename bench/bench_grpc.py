"""The agent's gRPC front door against raw ``grpc.aio``, and against its own HTTP door.

One trivial typed agent (``bench.ping`` -> reply ``bench.pong``, as in
``bench/bench_idempotency.py``) is served by ``agentfn serve --grpc-port`` in a child process:
HTTP on one port, gRPC on another, one process, the default embedded idempotency store (every
call a fresh id, so each one is claimed and its reply stored). This process calls it:

- gRPC unary ``Call`` through the generated ``grpc.aio`` stub, and through the project's
  ``AgentClient`` (deadline, retry policy, breaker: what a peer agent would use);
- the bidirectional ``Session`` as ping-pong: each caller keeps one stream open, sends one event
  and awaits its reply before the next;
- the HTTP CloudEvent request/reply (binary mode, keep-alive, one connection per caller) with the
  broker's lean HTTP/1.1 client, as ``bench/_harness`` sends.

The floor is a raw ``grpc.aio`` server of the same ``agentfn.v1.Agent`` service in its own
process whose handlers only echo the message back, called the same way (same stub, same channel
options, same event loop). For 1 and 16 concurrent callers: p50/p99 latency and calls/s; each
cell is the best of the rounds (rounds alternate the cases, so a burst of load elsewhere on the
machine hurts one run, not one case), and ours is reported as a ratio to the floor.

Writes every cell and ratio with the machine to ``bench/results/bench_grpc.json`` (``--json``
elsewhere). Run: ``python bench/bench_grpc.py [--calls N] [--rounds R] [--quick]`` (about 60-90 s;
``--quick``: a smoke run of a few seconds, written elsewhere unless ``--json`` says where).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import grpc  # noqa: E402
from agentfn.brokers._http1 import Http1Pool  # noqa: E402
from agentfn.events.proto import agent_pb2, agent_pb2_grpc, cloudevents_pb2  # noqa: E402
from agentfn.functions import Agent  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from bench._harness import procs, report  # noqa: E402
from bench._harness.http import binary_headers  # noqa: E402

# -- the agent ``agentfn serve bench/bench_grpc.py:agent`` serves ------------------------------


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int


agent = Agent("bench")


@agent.on("bench.ping", emits={"bench.pong": Pong})
async def ping(event: Ping) -> Pong:
    return Pong(n=event.n + 1)


# -- the floor: raw grpc.aio, the same service, handlers that echo -----------------------------

#: The event loops grpc.aio runs on (``--tuning`` measures the floor on each pairing).
LOOPS: Final = ("uvloop", "asyncio")
#: Extra options of the floor's server and of the stub channels (``--server-option``,
#: ``--channel-option``). None by default: ``grpc.enable_retries=0`` and
#: ``grpc.optimization_target`` (latency, throughput) measured no better than grpc's defaults
#: here, within this machine's run-to-run noise. The agent's server and ``AgentClient`` use
#: their own (keep-alive, limits, retry policy).
SERVER_OPTIONS: Final[list[tuple[str, Any]]] = []
CHANNEL_OPTIONS: Final[list[tuple[str, Any]]] = []


class _Echo(agent_pb2_grpc.AgentServicer):
    """Nothing but the transport: the request back as the reply."""

    async def Call(  # noqa: N802 (the generated servicer's method name)
        self, request: cloudevents_pb2.CloudEvent, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.Reply:
        return agent_pb2.Reply(event=request)

    async def Session(  # noqa: N802 (the generated servicer's method name)
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # read()/write() rather than an async generator: grpc.aio's faster streaming form.
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(message)


async def _serve_floor(port: int) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    agent_pb2_grpc.add_AgentServicer_to_server(_Echo(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


_T = TypeVar("_T")


def _run(main: Coroutine[Any, Any, _T], loop: str) -> _T:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# -- the callers -------------------------------------------------------------------------------

#: One caller's call: the event id in; it raises unless the reply is the expected one.
Call = Callable[[str], Awaitable[None]]


def _ping(event_id: str) -> cloudevents_pb2.CloudEvent:
    message = cloudevents_pb2.CloudEvent(
        id=event_id, source="/bench", spec_version="1.0", type="bench.ping", text_data='{"n":1}'
    )
    message.attributes["datacontenttype"].ce_string = "application/json"
    return message


def _check(reply: cloudevents_pb2.CloudEvent, sent: str, floor: bool) -> None:
    if floor:
        if reply.id != sent:
            raise RuntimeError(f"the floor echoed {reply.id!r} for {sent!r}")
    elif reply.type != "bench.pong" or reply.text_data.replace(" ", "") != '{"n":2}':
        raise RuntimeError(f"the agent answered {reply.type!r} {reply.text_data!r}")


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    #: "floor" or "agent": which server it calls.
    server: str
    #: "unary", "session", "client" (AgentClient.call) or "http".
    transport: str
    #: The floor case its ratio is taken against; None: it is a floor.
    floor: str | None
    #: The event loop of the callers (this process), and of the floor server.
    client_loop: str = "uvloop"
    floor_loop: str = "uvloop"
    #: "asyncio": ``agentfn serve`` as it runs; "uvloop": the same command under uvloop's
    #: event loop policy (what the runtime would gain from it).
    agent_loop: str = "asyncio"


CASES: Final = (
    Case("floor_unary", "raw grpc.aio echo, unary", "floor", "unary", None),
    Case("floor_session", "raw grpc.aio echo, Session ping-pong", "floor", "session", None),
    Case("grpc_unary", "agent, gRPC unary (grpc.aio stub)", "agent", "unary", "floor_unary"),
    Case("grpc_client", "agent, gRPC unary (AgentClient)", "agent", "client", "floor_unary"),
    Case("grpc_session", "agent, gRPC Session ping-pong", "agent", "session", "floor_session"),
    Case("http", "agent, HTTP/1.1 CloudEvent request/reply", "agent", "http", "floor_unary"),
)


@contextlib.asynccontextmanager
async def _callers(case: Case, target: str, http_port: int, n: int) -> AsyncIterator[list[Call]]:
    """``n`` callers of ``case``, set up (channel, streams, connections) before any is timed."""
    floor = case.server == "floor"
    if case.transport == "http":
        pool = Http1Pool()

        def http_call() -> Call:
            async def call(event_id: str) -> None:
                headers = binary_headers(event_id, "bench.ping")
                response = await pool.post(
                    "127.0.0.1", http_port, "/", headers, b'{"n":1}', timeout=30
                )
                if response.status != 200 or response.body.replace(b" ", b"") != b'{"n":2}':
                    raise RuntimeError(f"HTTP answered {response.status} {response.body[:200]!r}")

            return call

        try:
            yield [http_call() for _ in range(n)]
        finally:
            pool.close()
        return
    if case.transport == "client":
        from agentfn.functions import AgentClient

        async with AgentClient(target) as client:

            async def client_call(event_id: str) -> None:
                # A model, as a peer agent calls: the client makes the event (a fresh id).
                reply = await client.call(Ping(n=1), type="bench.ping")
                if reply is None or reply.type != "bench.pong" or reply.data != {"n": 2}:
                    raise RuntimeError(f"AgentClient got {reply!r}")

            yield [client_call] * n
        return
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
        await channel.channel_ready()
        if case.transport == "unary":

            async def unary_call(event_id: str) -> None:
                reply = await stub.Call(_ping(event_id), timeout=30)
                if not reply.HasField("event"):
                    raise RuntimeError("the reply carries no event")
                _check(reply.event, event_id, floor)

            yield [unary_call] * n
            return
        streams = [stub.Session() for _ in range(n)]
        try:

            def session_call(stream: Any) -> Call:
                async def call(event_id: str) -> None:
                    await stream.write(_ping(event_id))
                    reply = await stream.read()
                    if reply is grpc.aio.EOF:
                        raise RuntimeError("the Session ended")
                    _check(reply, event_id, floor)

                return call

            yield [session_call(stream) for stream in streams]
        finally:
            for stream in streams:
                await stream.done_writing()
            for stream in streams:
                while await stream.read() is not grpc.aio.EOF:
                    pass


@dataclass
class Cell:
    calls_per_s: float
    p50_us: float
    p99_us: float


def _percentile(ordered: list[int], q: float) -> float:
    """Nearest rank: the smallest latency at least ``q`` of the calls did not exceed."""
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1] / 1000


async def _measure(callers: list[Call], calls: int, run: str) -> Cell:
    latencies: list[int] = []
    ids = iter(range(calls))
    clock = time.perf_counter_ns

    async def worker(call: Call) -> None:
        for i in ids:
            started = clock()
            await call(f"{run}-{i}")
            latencies.append(clock() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(call) for call in callers))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Cell(calls / elapsed, _percentile(latencies, 0.5), _percentile(latencies, 0.99))


# -- the run -------------------------------------------------------------------------------------


#: ``agentfn`` under uvloop's event loop policy (its ``asyncio.run`` then makes a uvloop loop).
_UNDER_UVLOOP: Final = (
    "import uvloop; uvloop.install(); from agentfn.functions.cli import main; main()"
)


@dataclass
class Servers:
    #: The floor's ``host:port`` by its server's event loop.
    floors: dict[str, str]
    #: The agent's gRPC ``host:port`` and HTTP port by its event loop.
    agents: dict[str, tuple[str, int]]


async def _start(group: procs.Procs, cases: list[Case]) -> Servers:
    floors: dict[str, str] = {}
    waits: list[tuple[int, procs.Proc]] = []
    for loop in sorted({c.floor_loop for c in cases if c.server == "floor"}):
        port = procs.free_port()
        argv = [procs.PYTHON, __file__, "--serve-floor", str(port), "--floor-loop", loop]
        argv += [f"--server-option={k}={v}" for k, v in SERVER_OPTIONS]
        waits.append((port, group.spawn(f"floor-{loop}", argv)))
        floors[loop] = f"127.0.0.1:{port}"
    agents: dict[str, tuple[str, int]] = {}
    for loop in sorted({c.agent_loop for c in cases if c.server == "agent"}):
        http_port, grpc_port = procs.free_port(), procs.free_port()
        command = ["serve", f"{Path(__file__).relative_to(ROOT)}:agent", "--host", "127.0.0.1"]
        command += ["--port", str(http_port), "--grpc-port", str(grpc_port)]
        if loop == "uvloop":
            run_cli = (
                "import uvloop; uvloop.install(); from agentfn.functions.cli import main; main()"
            )
            argv = [procs.PYTHON, "-c", run_cli, *command]
        else:
            argv = [procs.AGENTFN, *command]
        served = group.spawn(f"agent-{loop}", argv)
        waits += [(http_port, served), (grpc_port, served)]
        agents[loop] = (f"127.0.0.1:{grpc_port}", http_port)
    for port, proc in waits:
        await procs.wait_for_port(port, proc)
    return Servers(floors, agents)


async def _cell(case: Case, servers: Servers, calls: int, level: int, run: str) -> Cell:
    if case.server == "floor":
        target, http_port = servers.floors[case.floor_loop], 0
    else:
        target, http_port = servers.agents[case.agent_loop]
    async with _callers(case, target, http_port, level) as callers:
        await _measure(callers, min(200, calls), f"{run}-warm")
        return await _measure(callers, calls, run)


def _bench(cases: list[Case], levels: list[int], calls: int, rounds: int) -> dict[str, list[Cell]]:
    best: dict[str, list[Cell | None]] = {case.key: [None] * len(levels) for case in cases}
    with tempfile.TemporaryDirectory(prefix="agentfn-bench-grpc-") as logs:
        group = procs.Procs(Path(logs))
        try:
            servers = asyncio.run(_start(group, cases))
            # Rounds alternate the cases, and each cell keeps its best run: a burst of load
            # from elsewhere on the machine hurts one run, not one case. Each cell runs in an
            # event loop of its own, so cases on different loops alternate too.
            for round_ in range(rounds):
                for case in cases:
                    for i, level in enumerate(levels):
                        run = f"r{round_}-c{level}"
                        cell = _run(_cell(case, servers, calls, level, run), case.client_loop)
                        kept = best[case.key][i]
                        if kept is None or cell.calls_per_s > kept.calls_per_s:
                            best[case.key][i] = cell
        finally:
            group.close()
    return {key: [c for c in cells if c is not None] for key, cells in best.items()}


def _options(given: list[str]) -> list[tuple[str, Any]]:
    pairs = [item.split("=", 1) for item in given]
    return [(key, int(value) if value.lstrip("-").isdigit() else value) for key, value in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per cell and run")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs per cell")
    parser.add_argument("--cases", default=",".join(c.key for c in CASES))
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls, one round")
    parser.add_argument(
        "--tuning",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the floor on the other event loops (callers' and server's)",
    )
    parser.add_argument("--channel-option", action="append", default=[], metavar="KEY=INT")
    parser.add_argument("--server-option", action="append", default=[], metavar="KEY=INT")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--floor-loop", default="uvloop", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    CHANNEL_OPTIONS.extend(_options(args.channel_option))
    SERVER_OPTIONS.extend(_options(args.server_option))
    if args.serve_floor:
        _run(_serve_floor(args.serve_floor), args.floor_loop)
        return
    if args.quick:
        args.calls, args.rounds = 300, 1
    levels = [int(c) for c in args.concurrency.split(",")]
    cases = [c for c in CASES if c.key in args.cases.split(",")]
    if args.tuning:
        cases += _tuning(cases)
    started = time.perf_counter()
    best = _bench(cases, levels, args.calls, args.rounds)
    seconds = time.perf_counter() - started
    rows = _rows(cases, levels, best)
    _print(rows, levels, args, seconds)
    params = {
        "calls": args.calls,
        "concurrency": levels,
        "best_of": args.rounds,
        "quick": args.quick,
        "client_loop": CASES[0].client_loop,
        "floor_server_loop": CASES[0].floor_loop,
        "agent_server": "agentfn serve --grpc-port (HTTP and gRPC in one process)",
        "idempotency": "embedded (the default store; every call a fresh id)",
        "channel_options": dict(CHANNEL_OPTIONS),
        "floor_server_options": dict(SERVER_OPTIONS),
        "seconds": round(seconds, 1),
    }
    # A smoke run never overwrites the result the README quotes.
    quick_path = Path(tempfile.gettempdir()) / "bench_grpc_quick.json"
    path = args.json or (quick_path if args.quick else report.script_result_path("bench_grpc"))
    path = report.write_script("bench_grpc", params, {"rows": rows}, path)
    print(f"wrote {path}")


def _tuning(cases: list[Case]) -> list[Case]:
    """The unary floor again on every other pairing of event loops (callers', server's), and
    the agent's unary door under uvloop: the evidence for the loops the table uses."""
    extra = []
    for case in cases:
        if case.key == "grpc_unary":
            extra.append(
                replace(
                    case,
                    key=f"{case.key}@uvloop",
                    label=f"{case.label} (agent under uvloop)",
                    agent_loop="uvloop",
                )
            )
        if case.key != "floor_unary":
            continue
        for client_loop, floor_loop in itertools.product(LOOPS, LOOPS):
            if (client_loop, floor_loop) == (case.client_loop, case.floor_loop):
                continue
            extra.append(
                replace(
                    case,
                    key=f"{case.key}@{client_loop}/{floor_loop}",
                    label=f"{case.label} (callers {client_loop}, server {floor_loop})",
                    client_loop=client_loop,
                    floor_loop=floor_loop,
                )
            )
    return extra


def _rows(
    cases: list[Case], levels: list[int], best: dict[str, list[Cell]]
) -> list[dict[str, Any]]:
    """Every cell, and for ours its ratios to the floor cell of the same concurrency:
    ``throughput_vs_floor`` (calls/s, ours over the floor: 1.0 is the floor's speed) and
    ``p50_vs_floor``/``p99_vs_floor`` (latency, ours over the floor: 1.0 is as fast)."""
    rows: list[dict[str, Any]] = []
    for case in cases:
        for i, level in enumerate(levels):
            cell = best[case.key][i]
            row: dict[str, Any] = {
                "case": case.key,
                "label": case.label,
                "server": case.server,
                "transport": case.transport,
                "concurrency": level,
                "client_loop": case.client_loop,
                "calls_per_s": cell.calls_per_s,
                "p50_us": cell.p50_us,
                "p99_us": cell.p99_us,
            }
            if case.floor is not None and case.floor in best:
                floor = best[case.floor][i]
                row["floor"] = case.floor
                row["throughput_vs_floor"] = cell.calls_per_s / floor.calls_per_s
                row["p50_vs_floor"] = cell.p50_us / floor.p50_us
                row["p99_vs_floor"] = cell.p99_us / floor.p99_us
            if case.server == "floor":
                row["floor_server_loop"] = case.floor_loop
            else:
                row["agent_loop"] = case.agent_loop
            rows.append(row)
    return rows


def _print(rows: list[dict[str, Any]], levels: list[int], args: Any, seconds: float) -> None:
    print(
        f"\n{args.calls} calls per cell, best of {args.rounds}, {seconds:.0f} s; "
        f"{os.cpu_count()} CPUs shared by the callers and both servers"
    )
    header = (
        f"{'case':<44}{'c':>3}{'p50 us':>9}{'p99 us':>9}{'calls/s':>9}  vs floor (calls/s, p50)"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = (
            f"  {row['throughput_vs_floor']:.2f}x, {row['p50_vs_floor']:.2f}x"
            if "floor" in row
            else ""
        )
        print(
            f"{row['label']:<44}{row['concurrency']:>3}{row['p50_us']:>9.0f}{row['p99_us']:>9.0f}"
            f"{row['calls_per_s']:>9.0f}{ratio}"
        )


if __name__ == "__main__":
    main()
