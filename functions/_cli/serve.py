"""``agentfn serve``: one agent over HTTP, as ``func run`` runs a Knative function locally.

``--grpc-port P`` adds the gRPC front door on P, in the same process and event loop: one app,
one pipeline, whichever door an event comes in by. ``--protocol h2c`` (``AGENTFN_PROTOCOL``,
as the ``<agent>-rpc`` Knative Service sets it) serves only gRPC, on ``PORT``: Knative's
``h2c`` port speaks HTTP/2 for every request, which the HTTP/1.1 CloudEvents server cannot
answer. On SIGTERM or SIGINT gRPC health says ``NOT_SERVING`` at once, calls in flight get
``AGENTFN_GRPC_GRACE_S`` to finish, HTTP drains, and only then the app closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

import typer
import uvicorn
from agentfn.functions._cli._process import tune_gc_for_serving
from agentfn.functions._loader import load_agent
from agentfn.functions.settings import Settings

from agentfn._asgi import run as run_loop

if TYPE_CHECKING:
    from agentfn.functions._asgi import AgentApp

_Target = Annotated[
    str | None,
    typer.Argument(
        help="MODULE:AGENT (dotted module or .py file; AGENT defaults to 'agent') "
        "[default: $AGENTFN_AGENT]",
        show_default=False,
    ),
]
_Port = Annotated[int | None, typer.Option(help="Port to listen on (default: $PORT, else 8080)")]
_Host = Annotated[str, typer.Option(help="Interface to bind")]
_Redis = Annotated[
    str | None,
    typer.Option(
        "--redis",
        help="Redis URL for idempotency records (default: $AGENTFN_REDIS_URL, else embedded)",
    ),
]
_GrpcPort = Annotated[
    int | None,
    typer.Option(
        "--grpc-port",
        help="Serve gRPC (agentfn.v1.Agent, health, reflection) on this port too "
        "(default: $AGENTFN_GRPC_PORT)",
        show_default=False,
    ),
]
_Protocol = Annotated[
    Literal["http1", "h2c"] | None,
    typer.Option(
        "--protocol",
        help="What PORT speaks: http1 (CloudEvents over HTTP) or h2c (only gRPC, for the "
        "<agent>-rpc Service) [default: $AGENTFN_PROTOCOL, else http1]",
        show_default=False,
    ),
]
_Broker = Annotated[
    str | None,
    typer.Option(
        "--broker", help="Broker ingress URL for published events (default: $AGENTFN_BROKER_URL)"
    ),
]


def serve(
    target: _Target = None,
    port: _Port = None,
    host: _Host = "0.0.0.0",
    redis: _Redis = None,
    broker: _Broker = None,
    grpc_port: _GrpcPort = None,
    protocol: _Protocol = None,
) -> None:
    """Serve one agent: POST CloudEvents to it; GET /healthz, /readyz, /metrics."""
    # One image runs every agent: each Knative Service names its own in AGENTFN_AGENT.
    target = target or os.environ.get("AGENTFN_AGENT")
    if not target:
        raise typer.BadParameter("give a TARGET or set AGENTFN_AGENT", param_hint="TARGET")
    # Like uvicorn's --app-dir: the user's modules live where the command runs.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        agent = load_agent(target)
    except LookupError as error:
        raise typer.BadParameter(str(error), param_hint="TARGET") from None
    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if redis is not None:
        overrides["redis_url"] = redis
    if broker is not None:
        overrides["broker_url"] = broker
    if grpc_port is not None:
        overrides["grpc_port"] = grpc_port
    if protocol is not None:
        overrides["protocol"] = protocol
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    app = agent.app(settings=settings, configure_tracing=True)
    spec = agent.spec
    # Through click, not rich: importing rich would cost the cold start ~20 ms.
    name = typer.style(f"agent {spec.name}", fg="green")
    if settings.protocol == "h2c":
        doors = f"grpc://{host}:{settings.port} (h2c)"
    elif settings.grpc_port is not None:
        doors = f"http://{host}:{settings.port} and grpc://{host}:{settings.grpc_port}"
    else:
        doors = f"http://{host}:{settings.port}"
    typer.echo(
        f"{name} on {doors} "
        f"consumes {', '.join(spec.consumes)}; emits {', '.join(spec.emits) or 'nothing'}; "
        f"idempotency: {settings.idempotency_backend}",
        err=True,
    )
    tune_gc_for_serving()
    # On uvloop, as uvicorn.run picks it for HTTP alone: measured by bench/bench_grpc.py, the
    # standard loop cost the unary door about half its speed against raw grpc.aio.
    if settings.protocol == "h2c":
        run_loop(_serve_grpc(app, host, settings.port, settings.grpc_grace_s))
    elif settings.grpc_port is not None:
        run_loop(_serve_both(app, host, settings))
    else:
        uvicorn.run(
            app,
            host=host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",  # an agent serves no WebSockets: not loading one saves ~10 ms
        )


class _HttpServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: the command stops both doors in
    order, and uvicorn would re-raise the signal afterwards, killing the process mid-way."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _on_stop_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


async def _serve_grpc(app: AgentApp, host: str, port: int, grace_s: float) -> None:
    # Only when asked: a process serving HTTP alone never imports grpcio.
    from agentfn.functions._grpc import GrpcServer

    stop = asyncio.Event()
    _on_stop_signal(stop)
    async with app, GrpcServer(app, host=host, port=port, grace_s=grace_s):
        await stop.wait()


async def _serve_both(app: AgentApp, host: str, settings: Settings) -> None:
    from agentfn.functions._grpc import GrpcServer

    assert settings.grpc_port is not None
    # The app's lifecycle is ours, not uvicorn's lifespan: it must outlive both servers.
    http = _HttpServer(
        uvicorn.Config(
            app,
            host=host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
        )
    )
    stop = asyncio.Event()
    _on_stop_signal(stop)
    async with (
        app,
        GrpcServer(app, host=host, port=settings.grpc_port, grace_s=settings.grpc_grace_s) as rpc,
    ):
        serving = asyncio.create_task(http.serve())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait((serving, stopped), return_when=asyncio.FIRST_COMPLETED)
        http.should_exit = True
        await asyncio.gather(rpc.aclose(), serving)
        stopped.cancel()
